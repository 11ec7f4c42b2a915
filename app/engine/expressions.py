"""CEL expressions inside ``{{ }}`` in node configs: compile once, render many times, safely.

A string that is exactly one ``{{ expr }}`` (whitespace around it allowed) renders to the
expression's value with its type; any other string with ``{{`` renders to text, each value
written as itself (a string), nothing (null) or compact JSON. The first ``}}`` ends an
expression. Values are made JSON: timestamps become RFC 3339 strings, durations
``"<seconds>s"``, bytes base64, map keys strings, NaN and infinities null.

Two paths (``app.engine.cel_sandbox`` runs them). Inline, in microseconds, when the cost
is provably small: no loop (comprehension macro), only functions of linear cost, little data,
and length² * (length + data bytes) within a budget (without loops, each of at most `length`
operations touches values of at most `length` * the largest value read). Otherwise in a
sandbox process that is killed and replaced when it overruns its time. Expressions are
capped at 4,000 characters, the data one reads at 16 MB of JSON, and each rendered value at
1 MB of JSON.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cel
import orjson

from app.engine.cel_sandbox import (
    MAX_RESULT_BYTES,
    SHOWN_CHARS,
    ExpressionError,
    run_in_sandbox,
    run_programs,
    shown,
)

__all__ = [
    "CompiledConfig",
    "CompiledTemplate",
    "ExpressionError",
    "compile_config",
    "compile_template",
    "evaluate_template",
    "render_config",
    "syntax_errors",
    "to_text",
]

MAX_EXPRESSION_LENGTH = 4_000
MAX_DATA_BYTES = 16_000_000
EVALUATION_TIMEOUT_SECONDS = 1.0
INLINE_MAX_DATA_BYTES = 32_000
INLINE_WORK_BUDGET = 10_000_000

# The sandbox turns about 10 MB/s of JSON data into CEL values; allow for half that speed.
_CONVERSION_BYTES_PER_SECOND = 5_000_000
_CACHE_SIZE = 256
# Words that may start a comprehension (a loop); a false match only means the sandbox path.
_LOOP_WORDS = re.compile(r"\b(?:map|filter|all|exists|exists_one|bind|transform\w*)\b")
# ``nodes.<id>`` or ``nodes['<id>']``; any other use of the word may read any node.
_NODE_READ = re.compile(
    r"""\bnodes\b(?:\s*\.\s*([A-Za-z_]\w*)|\s*\[\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*\])?"""
)
# ``secrets.NAME`` or ``secrets['NAME']``: the secrets an expression reads by name.
_SECRET_READ = re.compile(
    r"""\bsecrets\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*\])"""
)
_LINEAR_NAMES = """_+_ _-_ _*_ _/_ _%_ -_ !_ _==_ _!=_ _<_ _<=_ _>_ _>=_ _&&_ _||_ _?_:_ _[_] @in
    @not_strictly_false size string int uint double bool bytes dyn type contains startsWith
    endsWith timestamp duration"""
_LINEAR_FUNCTIONS = frozenset(_LINEAR_NAMES.split())  # functions whose cost is linear


@dataclass(frozen=True, slots=True, eq=False)
class _Expression:
    source: str
    program: cel.Program
    variables: frozenset[str]
    node_ids: frozenset[str] | None  # the nodes it reads from ``nodes``; None: maybe any
    linear: bool  # no comprehension and only functions of linear cost


@dataclass(frozen=True, slots=True, eq=False)
class CompiledTemplate:
    """A string with ``{{ }}`` expressions, compiled: its literal text and expressions in order."""

    text: str
    parts: tuple[str | _Expression, ...]
    expressions: tuple[_Expression, ...]
    typed: bool  # the string is exactly one expression, so it renders to a typed value


@dataclass(frozen=True, slots=True, eq=False)
class CompiledConfig:
    """A JSON value with its expression strings compiled, ready to render many times."""

    raw: object
    compiled: object  # the same shape, a CompiledTemplate in place of each expression string


def _compile_expression(source: str) -> _Expression:
    """Compile the text between one pair of braces."""
    if not source:
        raise ExpressionError("Empty expression {{ }}: write an expression between the braces.")
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"{shown(source)} is {len(source):,} characters long; "
            f"the maximum is {MAX_EXPRESSION_LENGTH:,}."
        )
    try:
        program = cel.compile(source)
    except Exception as exc:  # the cel package raises ValueError; be robust to others
        detail = str(exc).removeprefix(f"Failed to parse expression '{source}': ")
        raise ExpressionError(f"Syntax error in {shown(source)}: {detail}") from None
    references = program.references()
    linear = not _LOOP_WORDS.search(source) and _LINEAR_FUNCTIONS.issuperset(
        references["functions"]
    )
    variables = frozenset(references["variables"])
    return _Expression(source, program, variables, _node_ids(source), linear)


def _node_ids(source: str) -> frozenset[str] | None:
    """The ids of the nodes an expression reads from ``nodes``, or None when it may read any."""
    ids: set[str] = set()
    for match in _NODE_READ.finditer(source):
        node_id = next((group for group in match.groups() if group is not None), None)
        if node_id is None:  # a bare ``nodes``: enumerated, indexed by a value, or in a string
            return None
        ids.add(node_id)
    return frozenset(ids)


def compile_template(text: str) -> CompiledTemplate:
    """Compile a string with ``{{ }}`` expressions; raise ExpressionError on a syntax error."""
    parts: list[str | _Expression] = []
    position = 0
    while (start := text.find("{{", position)) != -1:
        end = text.find("}}", start + 2)
        if end == -1:
            raise ExpressionError(f"'{{{{' at character {start} has no closing '}}}}'.")
        if start > position:
            parts.append(text[position:start])
        parts.append(_compile_expression(text[start + 2 : end].strip()))
        position = end + 2
    if position < len(text):
        parts.append(text[position:])
    expressions = tuple(part for part in parts if isinstance(part, _Expression))
    if len(expressions) == 1 and all(isinstance(p, _Expression) or not p.strip() for p in parts):
        return CompiledTemplate(text, expressions, expressions, typed=True)
    return CompiledTemplate(text, tuple(parts), expressions, typed=False)


_cached_template = functools.lru_cache(maxsize=_CACHE_SIZE)(compile_template)


def _walk(value: object, leaf: Callable[[Any, tuple[str, ...]], object]) -> object:
    """Rebuild a JSON value, passing every item that is not an object or array through leaf."""

    def walk(item: object, path: tuple[str, ...]) -> object:
        if isinstance(item, dict):
            return {key: walk(child, (*path, str(key))) for key, child in item.items()}
        if isinstance(item, list):
            return [walk(child, (*path, str(index))) for index, child in enumerate(item)]
        return leaf(item, path)

    return walk(value, ())


def compile_config(data: object) -> CompiledConfig:
    """Compile every expression string in a JSON value; raise ExpressionError on a syntax error."""

    def compile_at(item: object, path: tuple[str, ...]) -> object:
        if not (isinstance(item, str) and "{{" in item):
            return item
        try:
            return compile_template(item)
        except ExpressionError as exc:
            raise ExpressionError(f"{'.'.join(path)}: {exc}" if path else str(exc)) from None

    return CompiledConfig(data, _walk(data, compile_at))


def syntax_errors(data: object) -> list[tuple[tuple[str, ...], str]]:
    """(path, message) for every string in a JSON value whose expressions do not compile."""
    found: list[tuple[tuple[str, ...], str]] = []

    def check(item: object, path: tuple[str, ...]) -> None:
        try:
            if isinstance(item, str) and "{{" in item:
                _cached_template(item)
        except ExpressionError as exc:
            found.append((path, str(exc)))

    _walk(data, check)
    return found


def secret_reads(data: object) -> list[tuple[tuple[str, ...], str]]:
    """(path, name) for each secret an expression in a JSON value reads by name
    (``secrets.NAME``, ``secrets['NAME']``); strings that do not compile are passed over."""
    found: list[tuple[tuple[str, ...], str]] = []

    def check(item: object, path: tuple[str, ...]) -> None:
        if not (isinstance(item, str) and "secrets" in item and "{{" in item):
            return
        try:
            template = _cached_template(item)
        except ExpressionError:
            return
        for expression in template.expressions:
            if "secrets" in expression.variables:
                for match in _SECRET_READ.finditer(expression.source):
                    found.append((path, next(g for g in match.groups() if g is not None)))

    _walk(data, check)
    return found


def _reads(expression: _Expression, env: Mapping[str, Any]) -> dict[str, Any]:
    """The variables an expression reads; of ``nodes``, only the nodes it names, if it does."""
    reads = {name: env[name] for name in expression.variables & env.keys()}
    nodes = reads.get("nodes")
    if isinstance(nodes, dict) and expression.node_ids is not None:
        reads["nodes"] = {key: nodes[key] for key in expression.node_ids if key in nodes}
    return reads


def _data_bytes(source: str, reads: dict[str, Any], sizes: dict[int, int]) -> int:
    """Bytes of JSON in the variables read (sizes cached per render, by value identity)."""
    total = 0
    for name, value in reads.items():
        for part in value.values() if name == "nodes" and isinstance(value, dict) else (value,):
            if id(part) not in sizes:
                data = orjson.dumps(part, default=str, option=orjson.OPT_NON_STR_KEYS)
                sizes[id(part)] = len(data)
            total += sizes[id(part)]
    if total > MAX_DATA_BYTES:
        raise ExpressionError(
            f"{shown(source)} reads {total:,} bytes of data; the maximum is {MAX_DATA_BYTES:,}."
        )
    return total


@dataclass(slots=True)
class _Batch:
    """Expressions to evaluate together, and the variables they read."""

    sources: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    data_bytes: int = 0

    def add(self, source: str, reads: dict[str, Any], data_bytes: int) -> None:
        """Add an expression, merging what it reads (of ``nodes``, the union of nodes)."""
        self.sources.append(source)
        self.data_bytes += data_bytes
        for name, value in reads.items():
            known = self.variables.get(name)
            if name == "nodes" and isinstance(known, dict) and isinstance(value, dict):
                value = {**known, **value}
            self.variables[name] = value


async def _evaluate(expressions: Sequence[_Expression], env: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate distinct expressions, inline or in the sandbox; their JSON values by source."""
    sizes: dict[int, int] = {}
    programs: dict[str, cel.Program] = {}
    inline, sandboxed = _Batch(), _Batch()
    for expression in {item.source: item for item in expressions}.values():
        reads = _reads(expression, env)
        data, length = _data_bytes(expression.source, reads, sizes), len(expression.source)
        # Provably cheap (see the module docstring): evaluate it right here.
        cheap = data <= INLINE_MAX_DATA_BYTES and length**2 * (length + data) <= INLINE_WORK_BUDGET
        if expression.linear and cheap and expression.variables <= env.keys():
            programs[expression.source] = expression.program
            inline.add(expression.source, reads, data)
        else:
            sandboxed.add(expression.source, reads, data)
    results = run_programs(programs.items(), inline.variables) if programs else {}
    if sandboxed.sources:
        seconds = EVALUATION_TIMEOUT_SECONDS * len(sandboxed.sources)
        seconds += sandboxed.data_bytes / _CONVERSION_BYTES_PER_SECOND
        results.update(await run_in_sandbox(sandboxed.sources, sandboxed.variables, seconds))
    return results


def to_text(value: object) -> str:
    """Write a JSON value as text: a string as it is, null as nothing, others as compact JSON."""
    if isinstance(value, str):
        return value
    return "" if value is None else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _fill(template: CompiledTemplate, results: Mapping[str, Any]) -> object:
    """A template's rendered value, from the values of its expressions."""
    values = [part if isinstance(part, str) else results[part.source] for part in template.parts]
    if template.typed:
        return values[0]
    text = "".join(to_text(value) for value in values)
    if len(text) > MAX_RESULT_BYTES and len(text.encode()) > MAX_RESULT_BYTES:
        raise ExpressionError(
            f"The text rendered from {template.text[:SHOWN_CHARS]!r} is longer than "
            f"{MAX_RESULT_BYTES:,} bytes."
        )
    return text


async def render_config(
    compiled: CompiledConfig, env: dict[str, Any], *, skip: tuple[str, ...] = ()
) -> object:
    """Render a compiled config against env; the top-level keys in ``skip`` stay raw."""
    value, raw = compiled.compiled, compiled.raw
    if skip and isinstance(value, dict) and isinstance(raw, dict):
        value = {key: child for key, child in value.items() if key not in skip}
    expressions: list[_Expression] = []

    def collect(item: object, _: tuple[str, ...]) -> None:
        if isinstance(item, CompiledTemplate):
            expressions.extend(item.expressions)

    def fill(item: object, _: tuple[str, ...]) -> object:
        return _fill(item, results) if isinstance(item, CompiledTemplate) else item

    _walk(value, collect)
    results = await _evaluate(expressions, env) if expressions else {}
    rendered = _walk(value, fill)
    if isinstance(rendered, dict) and isinstance(raw, dict):
        return {key: raw[key] if key in skip else rendered[key] for key in raw}
    return rendered


async def evaluate_template(text: str, env: dict[str, Any]) -> object:
    """Compile (through a small cache) and render one string against env."""
    return await render_config(CompiledConfig(text, _cached_template(text)), env)
