"""What a query selects below a field, as the table columns the lean reads need to read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from schema.context import Info

# A field missing from a type's map needs every column (an unknown field reads them all).
Columns = Mapping[str, Sequence[str]]


def _names(selections: Iterable[Selection], below: Sequence[str], into: set[str]) -> None:
    for selection in selections:
        if isinstance(selection, SelectedField):
            if not below:
                into.add(selection.name)
            elif selection.name == below[0]:
                _names(selection.selections, below[1:], into)
        elif isinstance(selection, FragmentSpread | InlineFragment):
            _names(selection.selections, below, into)


def selected_names(info: Info, below: Sequence[str] = ()) -> frozenset[str]:
    """The field names selected under the current field (under ``below`` inside it, e.g.
    ``("edges", "node")`` of a connection), through fragments, once per request and place
    in the document (a list's items share it)."""
    place = (*(k for k in info.path.as_list() if isinstance(k, str)), *below)
    cache = info.context.loaders.selections
    found = cache.get(place)
    if found is None:
        names: set[str] = set()
        for field in info.selected_fields:
            _names(field.selections, below, names)
        found = cache[place] = frozenset(names)
    return found


def columns_for(names: Iterable[str], columns: Columns, every: Iterable[str]) -> frozenset[str]:
    """The columns the selected ``names`` need, by a type's field-to-columns map; every
    column when a name is not in the map."""
    needed: set[str] = set()
    for name in names:
        if name == "__typename":
            continue
        wanted = columns.get(name)
        if wanted is None:
            return frozenset(every)
        needed.update(wanted)
    return frozenset(needed)
