"""Redaction of secret values from everything a run stores, announces or logs.

A run's nodes get the workspace's secrets in the clear; what leaves the node (step input
and output, errors, the run's output, events, log lines) goes through a ``Redactor`` first.
It replaces each secret's value with ``[secret:NAME]``, also where an upstream echoed it
back inside a larger string, and also in the forms a value takes on its way through HTTP,
JSON, CEL and log lines: URL-encoded, JSON- and repr-escaped, trimmed or with its
whitespace collapsed (an error excerpt), base64 (CEL's ``bytes()``, Basic auth), and as the
start of a value cut off by an excerpt's "…" or by the step cap's truncation marker. JSON
values are walked: strings, object keys and numbers are redacted, and everything else is kept
as it is.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import json
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import orjson

from app.engine.caps import STRING_MARKER

# Values shorter than this are refused when set (see app.services.secrets.MIN_VALUE).
MIN_REDACTED = 4
# What an excerpt ends with when it cuts a text short (http.request, ai.generate).
CUT = "\u2026"
# A string cut to the step cap ends with this marker (app.engine.caps.STRING_MARKER).
TRUNCATION = STRING_MARKER.split("{}")[0]
_TRUNCATED = re.compile(
    re.escape(TRUNCATION) + r"\d+" + re.escape(STRING_MARKER.split("{}")[1]) + r"\Z"
)
# Characters the outbound client (httpx) leaves as they are in a URL's query and path.
_QUERY_KEPT = "!$&'()*+,-./:;=?@[\\]^_`{|}~"
_PATH_KEPT = "!$&'()*+,-./:;=@[\\]^_|~"


def _base64_forms(data: bytes) -> set[str]:
    """The value's base64, and the part of it that is the same wherever it sits in a longer
    base64 text (three alignments), in both alphabets."""
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(encode(data).decode())
        for offset in range(3):
            encoded = encode(bytes(offset) + data).decode()
            forms.add(encoded[-(-offset * 4 // 3) : (offset + len(data)) * 4 // 3])
    return forms


def _forms(value: str) -> set[str]:
    # Trimmed as ai.generate sends a key, collapsed as an error excerpt shows it.
    bases = {value, value.strip(), " ".join(value.split())}
    forms: set[str] = set()
    for base in bases:
        forms |= {
            base,
            quote(base, safe=""),
            quote_plus(base, safe=""),
            quote(base, safe=_QUERY_KEPT),
            quote(base, safe=_PATH_KEPT),
            repr(base)[1:-1],
            json.dumps(base)[1:-1],
            json.dumps(base, ensure_ascii=False)[1:-1],
            *_base64_forms(base.encode()),
        }
    return forms


def _anchor_regex(anchors: list[str]) -> str:
    """A regex matching any of the anchors (sorted, distinct, of one length), as a trie: one
    branch per distinct next character, so a search costs about the same for one secret or
    a thousand."""
    if len(anchors[0]) == 0:
        return ""
    alternatives = []
    for character, group in itertools.groupby(anchors, key=lambda anchor: anchor[0]):
        alternatives.append(re.escape(character) + _anchor_regex([a[1:] for a in group]))
    return alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"


class _Node:
    """A node of a radix tree of forms: the text of its edge, the form ending here, if any."""

    __slots__ = ("children", "form", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self.form: str | None = None
        self.children: dict[str, _Node] = {}


def _common_prefix(first: str, second: str) -> str:
    """The longest common prefix, by bisection (a value may be 65,536 characters long)."""
    low, high = 0, min(len(first), len(second))
    while low < high:
        middle = (low + high + 1) // 2
        if second.startswith(first[:middle]):
            low = middle
        else:
            high = middle - 1
    return first[:low]


def _radix_tree(forms: list[str]) -> _Node:
    """The forms (sorted, distinct) as a radix tree, built without recursion."""
    root = _Node("")
    pending: list[tuple[_Node, list[tuple[str, str]]]] = [(root, [(f, f) for f in forms])]
    while pending:
        parent, entries = pending.pop()
        for character, grouped in itertools.groupby(entries, key=lambda entry: entry[0][0]):
            group = list(grouped)
            first, last = group[0][0], group[-1][0]  # sorted: their prefix is everyone's
            label = first if len(group) == 1 else _common_prefix(first, last)
            child = parent.children[character] = _Node(label)
            rest = []
            for suffix, form in group:
                if len(suffix) == len(label):
                    child.form = form
                else:
                    rest.append((suffix[len(label) :], form))
            if rest:
                pending.append((child, rest))
    return root


class _Finder:
    """Finds forms in a text: a regex finds where one may start (by its first characters),
    then a walk down a radix tree finds the longest that does."""

    def __init__(self, forms: Mapping[str, str]) -> None:
        self._names = forms
        ordered = sorted(forms)
        anchors = sorted({form[:MIN_REDACTED] for form in ordered})
        self._anchor = re.compile(_anchor_regex(anchors)) if anchors else None
        self._tree = _radix_tree(ordered)

    def __bool__(self) -> bool:
        return self._anchor is not None

    def _longest_at(self, text: str, start: int) -> str | None:
        found, node, position = None, self._tree, start
        while (child := node.children.get(text[position : position + 1])) is not None:
            if not text.startswith(child.label, position):
                break
            position += len(child.label)
            found = child.form or found
            node = child
        return found

    def matches(self, text: str) -> Iterator[tuple[int, str]]:
        """(position, form) of each form in the text, left to right, not overlapping."""
        if self._anchor is None:
            return
        position = 0
        while found := self._anchor.search(text, position):
            start = found.start()
            form = self._longest_at(text, start)
            if form is None:
                position = start + 1
                continue
            yield start, form
            position = start + len(form)

    def replace(self, text: str) -> str:
        """The text with each form replaced by ``[secret:NAME]``."""
        parts: list[str] = []
        end = 0
        for start, form in self.matches(text):
            parts += (text[end:start], f"[secret:{self._names[form]}]")
            end = start + len(form)
        return "".join(parts) + text[end:] if parts else text


class Redactor:
    """Replaces the values of a set of secrets wherever they appear."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        names: dict[str, str] = {}
        for name, value in sorted(secrets.items()):
            for form in _forms(value):
                if len(form) >= MIN_REDACTED:
                    names.setdefault(form, name)
        self._names = names
        self._sorted = sorted(names)
        self._longest = max(map(len, names), default=0)
        self._text = _Finder(names)
        # The same forms as they appear inside JSON text (escaped as json.dumps escapes).
        escaped = {json.dumps(f, ensure_ascii=False)[1:-1]: n for f, n in names.items()}
        self._json = self._text if escaped == names else _Finder(escaped)

    def __bool__(self) -> bool:
        return bool(self._text)

    def text(self, value: str) -> str:
        """The string with every secret replaced by ``[secret:NAME]``."""
        if not self._text or not value:
            return value
        value = self._text.replace(value)
        if value.endswith(CUT):
            return self._cut_tail(value)
        truncated = _TRUNCATED.search(value)
        if truncated is not None:
            # A stored output cut to the step cap: its marker starts with "…" too.
            cut_at = truncated.start() + len(CUT)
            return self._cut_tail(value[:cut_at]) + value[cut_at:]
        return value

    def _cut_tail(self, value: str) -> str:
        """Replace the start of a secret that an excerpt cut off just before its "…"."""
        body = value[: -len(CUT)]
        for start in range(max(0, len(body) - self._longest + 1), len(body) - MIN_REDACTED + 1):
            tail = body[start:]
            index = bisect.bisect_left(self._sorted, tail)
            if index < len(self._sorted) and self._sorted[index].startswith(tail):
                return f"{body[:start]}[secret:{self._names[self._sorted[index]]}]{CUT}"
        return value

    def value(self, value: Any) -> Any:
        """A JSON value with every secret replaced, in strings, object keys and numbers."""
        if not self._json or value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self.text(value)
        # The usual case, nothing to replace, costs one encoding and one search; a value cut
        # to the step cap is walked, as a cut may have left the start of a secret.
        encoded = json.dumps(value, ensure_ascii=False)
        if next(self._json.matches(encoded), None) is None and TRUNCATION not in encoded:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(item) for item in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            # A secret used as a number (int(secrets.PIN)) becomes text like any other.
            written = json.dumps(value)
            redacted = self.text(written)
            return value if redacted == written else redacted
        return value

    def stored(self, value: Any) -> Any:
        """The value redacted and made storable in JSONB (see ``storable``)."""
        return storable(self.value(value))


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """A JSON value PostgreSQL's JSONB accepts: NUL characters and lone surrogates in
    strings (and keys) become U+FFFD, NaN and infinities become null.

    Upstreams send such values (a JSON body with \\u0000, a float division by zero); refusing
    them would fail the step's write, not the step, and look like a crashing worker.
    """
    try:
        encoded = orjson.dumps(value)  # NaN/Infinity → null; raises on lone surrogates
    except (orjson.JSONEncodeError, TypeError):
        return _clean(value, 0)
    if b"\\u0000" not in encoded:
        return value if b"null" not in encoded else orjson.loads(encoded)
    return _clean(orjson.loads(encoded), 0)


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if depth > 1000:
        return "[too deeply nested to store]"
    if isinstance(value, dict):
        return {_clean(str(k), depth): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return value


NO_SECRETS = Redactor({})

# Building a Redactor of a thousand secrets takes a tenth of a second; claims of runs of one
# workspace share one while its secrets stay the same.
_SHARED: OrderedDict[bytes, Redactor] = OrderedDict()
SHARED_REDACTORS = 32


def redactor_for(secrets: Mapping[str, str]) -> Redactor:
    """The Redactor of these secrets (shared, the most recently used few kept)."""
    if not secrets:
        return NO_SECRETS
    key = hashlib.sha256(orjson.dumps(sorted(secrets.items()))).digest()
    redactor = _SHARED.pop(key, None) or Redactor(secrets)
    _SHARED[key] = redactor
    if len(_SHARED) > SHARED_REDACTORS:
        _SHARED.popitem(last=False)
    return redactor
