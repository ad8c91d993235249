"""Load view files into frozen :class:`~liveagg.spec.ViewSpec` objects, in phases.

1. **Load**: find ``*.json`` files, parse them (syntax errors carry line and column), and flag
   duplicate keys, which JSON parsers otherwise resolve silently.
2. **Schema**: validate against ``view_schemas/view.schema.json`` and turn each jsonschema
   error into a :class:`~liveagg.errors.ViewError` that names the field, the value and what is
   accepted (jsonschema's own messages, such as "is not valid under any of the given schemas",
   say neither).
3. **Semantics**: what a schema cannot express -- known aggregation names and params, unique
   output columns, grouping sets within ``grouping_cols``, derived expressions, window
   lengths, view names unique across files. Runs only on views that passed the schema, so that
   every check can rely on the shape of the data.
4. **Normalize**: short forms become the typed spec (durations parsed, window type defaulted,
   filters into predicate trees).

Every problem is collected rather than raised at the first one, so that ``liveagg validate``
reports all of them in one CI run.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from liveagg import combiners
from liveagg.combiners._common import normalize_number
from liveagg.combiners.registry import (
    CombinerNotFound,
    check_params,
    class_params,
    is_builtin,
    resolve,
)
from liveagg.errors import COMMAND_LINE, ViewError, ViewErrors
from liveagg.expr import ExprSyntaxError, parse_expr
from liveagg.spec import (
    DEFAULT_FILE_FORMAT,
    INPUT_DEAD_LETTERS,
    Aggregation,
    AllOf,
    AnyOf,
    Derived,
    Duration,
    Eager,
    EventTime,
    Filter,
    Milestone,
    Predicate,
    Rollup,
    Sink,
    ViewSpec,
    Window,
)
from liveagg.view_schemas import schema as view_schema

__all__ = [
    "MAX_DURATION",
    "MAX_NESTING",
    "MAX_WINDOWS_PER_MESSAGE",
    "NUMERIC_AGGREGATIONS",
    "RESERVED_COLUMNS",
    "load_views",
    "output_problem",
    "parse_view",
    "validate_paths",
]

#: Keys every output row carries (SPEC section 3); no grouping, aggregated or derived column
#: may take one of these names, or it would overwrite them.
RESERVED_COLUMNS = (
    "view",
    "window_start",
    "window_end",
    "grouping_set",
    "granularity",
    "pane_timing",
    "pane_index",
)

#: Keys a milestone event carries besides the view's grouping columns and window (SPEC
#: section 1b): a grouping column of a view with milestones may not take one of these names.
MILESTONE_KEYS = ("column", "threshold", "value", "milestone_id")

#: Objects and arrays nest at most this deep in a view document. JSON parsers and JSON Schema
#: validators recurse once (jsonschema about five frames) per level; this keeps them far from
#: Python's recursion limit. A real view nests about 5 levels, and each all/any level of a
#: filter takes two, so filters may still nest 29 deep.
MAX_NESTING = 64

#: The longest duration a view may give (window sizes and periods, session gaps,
#: allowed_lateness, emit.early, roll-up sizes): 36,500 days, about 100 years. A window
#: ends less than one window length after its event times, so for every event time of the
#: years 101 to 9899 its window stays within the years 0001-9999 that output rows carry
#: (RFC 3339). Running totals over all time are not windows of 100 years.
MAX_DURATION = Duration("36500d", 36_500 * 86_400_000_000)

#: Aggregations whose values are numbers: what ``emit.eager`` and ``milestones`` may watch.
NUMERIC_AGGREGATIONS = (
    "count",
    "count_distinct",
    "count_distinct_exact",
    "sum",
    "mean",
    "min",
    "max",
    "variance",
    "stddev",
)

#: A message falls in at most this many windows of one view (sliding windows put it in
#: size / period of them, each granularity of a list of sizes adds its own): each is an
#: accumulator update per message and an accumulator per key in state.
MAX_WINDOWS_PER_MESSAGE = 1000

Part = str | int
Parts = tuple[Part, ...]

_DURATION_PATTERN = "^[0-9]+(ms|s|m|h|d)$"
_NAME_PATTERN = "^[a-z][a-z0-9_]{0,62}$"
#: A view's ``source``: what ``--input SOURCE=GLOB`` and ``--kafka-topic SOURCE=TOPIC`` bind.
#: No ``=`` (the binding's separator) and no ``/``: Beam names a step ``full_label =
#: '/'.join([self._current_transform().full_label, transform.label])`` (pipeline.py, 2.77)
#: and refuses a label that ``already exists in the pipeline``, so a source
#: ``events/PreAggregate`` would name a step of source ``events``.
SOURCE_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,248}$"
#: A file sink's path (the schema's): a local folder or a bucket's prefix on S3 or GCS. Beam's
#: file systems fail a run on another scheme, or on S3 or GCS without a bucket.
_OUTPUT_PATTERN = "^((s3|gs)://[^/]|(?![A-Za-z][-A-Za-z0-9+.]*://))"
_DURATION_HELP = "an integer and a unit (ms, s, m, h, d), e.g. '500ms', '90s', '10m', '1d'"

# pattern -> (what it is, what is expected)
_PATTERN_HINTS: dict[str, tuple[str, str]] = {
    _DURATION_PATTERN: ("a duration", _DURATION_HELP),
    _NAME_PATTERN: (
        "a valid name",
        "a lowercase letter, then up to 62 lowercase letters, digits or '_', "
        "e.g. 'clicks_per_campaign'",
    ),
    "^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$": (
        "a combine_fn reference",
        "'package.module:ClassName'",
    ),
    SOURCE_PATTERN: (
        "a source name",
        "a letter, digit or '_', then up to 248 letters, digits, '.', '_' or '-', "
        "e.g. 'events' or 'page-views'",
    ),
    "^s3://[^/]": ("an S3 path", "'s3://bucket/prefix'"),
    "^gs://[^/]": ("a GCS path", "'gs://bucket/prefix'"),
    _OUTPUT_PATTERN: (
        "a local folder, S3 or GCS path",
        "a local folder ('out'), 's3://bucket/prefix' or 'gs://bucket/prefix'",
    ),
    "^[A-Za-z][A-Za-z0-9_]{0,47}$": (
        "a Cassandra identifier",
        "a letter, then up to 47 letters, digits or '_'",
    ),
    "^[A-Za-z0-9._-]{1,249}$": (
        "a Kafka topic name",
        "1 to 249 letters, digits, '.', '_' or '-'",
    ),
}

_DURATION_UNIT_ALIASES = {
    "ms": "ms",
    "msec": "ms",
    "msecs": "ms",
    "millis": "ms",
    "millisecond": "ms",
    "milliseconds": "ms",
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "m",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
}
_DURATION_UNIT_SCALE = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

# Names users bring from SQL engines and other stream processors.
_AGGREGATION_ALIASES = {
    "avg": "mean",
    "average": "mean",
    "std": "stddev",
    "stdev": "stddev",
    "var": "variance",
    "distinct_count": "count_distinct",
    "approx_count_distinct": "count_distinct",
    "approx_distinct": "count_distinct",
    "uniq": "count_distinct",
    "hll": "hll_sketch",
    "median": "approx_quantiles",
    "percentile": "approx_quantiles",
    "percentiles": "approx_quantiles",
    "quantiles": "approx_quantiles",
    "topk": "top_k",
    "top": "top_k",
    "set": "collect_set",
    "array_agg": "collect_set",
}
# Spellings from other systems for enum values; offered only when the target is accepted.
_VALUE_ALIASES = {
    "tumbling": "fixed",
    "hopping": "sliding",
    "sessions": "session",
    "equal": "eq",
    "equals": "eq",
    "not_equal": "ne",
    "=": "eq",
    "==": "eq",
    "!=": "ne",
    "<>": "ne",
    "not_equals": "ne",
    ">": "gt",
    ">=": "ge",
    "<": "lt",
    "<=": "le",
    "not in": "not_in",
    "notin": "not_in",
    "exist": "exists",
    "json": "jsonl",
    "ndjson": "jsonl",
    "iso": "iso8601",
    "epoch": "epoch_s",
}

_REQUIRED_HINTS = {
    "name": 'e.g. "name": "clicks_per_campaign"',
    "event_time": 'where event time is read from, e.g. "event_time": {"field": "ts"}',
    "grouping_cols": (
        'the dimensions, e.g. "grouping_cols": ["campaign_id"] ([] for one group per window)'
    ),
    "window": 'e.g. "window": {"size": "10m"}',
    "aggregation_info": (
        'what to compute, e.g. "aggregation_info": '
        '[{"aggregation": "count", "aggregated_col_name": "events"}]'
    ),
    "aggregation": "the aggregation name, e.g. 'sum'",
    "aggregated_col_name": "the output column name, e.g. 'total_bytes'",
    "field": "the message field name, e.g. 'ts'",
    "size": 'the window length, e.g. "size": "10m"',
    "period": 'how often a sliding window starts, e.g. "period": "5m"',
    "gap": 'the inactivity that closes a session, e.g. "gap": "30m"',
    "early": 'how often early results are emitted, e.g. "early": "30s"',
    "step": 'how often a cumulative window grows, e.g. "step": "1h"',
    "column": 'an aggregated_col_name of the view, e.g. "likes"',
    "below": 'the value from which emit.early applies again, e.g. "below": 10',
    "at": 'the thresholds, ascending, e.g. "at": [10, 100, 1000]',
    "op": "one of eq, ne, in, not_in, exists, gt, ge, lt, le",
    "expr": 'e.g. "expr": "clicks / impressions"',
    "bounds": 'the bucket bounds, e.g. "bounds": [0, 10, 100]',
    "combine_fn": "the CombineFn class as 'package.module:ClassName'",
    "path": "where the files go",
    "keyspace": "the Cassandra keyspace",
    "table": "the Cassandra table",
    "topic": "the Kafka topic",
    "type": "one of file, s3, gcs, cassandra, kafka",
    "views": "a list of views",
}

_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}

_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


# --------------------------------------------------------------------------- public API


def load_views(paths: Iterable[str | Path] | str | Path) -> list[ViewSpec]:
    """Load every view in ``paths`` (files, or folders searched recursively for ``*.json``).

    Raises:
        ViewErrors: with every problem found in every file, when there is any.
    """
    specs, errors = _load(paths, construct=True)
    if errors:
        raise ViewErrors(errors)
    return specs


def output_problem(path: str) -> str | None:
    """What is wrong with ``--output PATH``, by the rule of a file sink's path; None if
    nothing."""
    if _ecma_regex(_OUTPUT_PATTERN).search(path):
        return None
    noun, detail = _PATTERN_HINTS[_OUTPUT_PATTERN]
    return f"is not {noun}; expected {detail}"


def is_source_name(text: str) -> bool:
    """Whether ``text`` is a source name as a view may give it (:data:`SOURCE_PATTERN`)."""
    return _ecma_regex(SOURCE_PATTERN).search(text) is not None


def validate_paths(
    paths: Iterable[str | Path] | str | Path,
    checks: Sequence[Callable[[list[ViewSpec]], list[ViewError]]] = (),
) -> list[ViewError]:
    """Every problem in the views under ``paths``; an empty list when all are valid.

    Never raises for a bad view: this is what ``liveagg validate`` prints, one line each.
    Never calls a custom or registered aggregation class either: its params are checked
    against the signature of its ``__init__`` (see :func:`load_views`). ``checks`` add the
    problems that layers above this one find in the valid views (their sinks, say).
    """
    specs, errors = _load(paths, construct=False)
    for check in checks:
        errors.extend(check(specs))
    return errors


def parse_view(obj: Any, origin: str = "<memory>", path: str = "$") -> ViewSpec:
    """Validate and normalize one view given as a dict (tests, programmatic use).

    Args:
        obj: The view, as ``json.load`` would return it.
        origin: What to call its source in messages and in ``ViewSpec.origin``.
        path: JSON path of the view within its document, prefixed to every error path.

    Raises:
        ViewErrors: with every schema or semantic problem of the view.
    """
    problems = _Problems()
    deep = _too_deep(obj)
    if deep is not None:
        problems.add(deep, _nesting_message("here"))
    else:
        problems.extend(_schema_problems(obj, _view_validator(), ()))
    spec = None
    if not problems:
        spec = _check_and_build(obj, origin, problems, (), construct=True)
    if problems or spec is None:
        raise ViewErrors(problems.to_errors(origin, path, obj))
    return spec


def parse_sinks(texts: Sequence[str], origin: str = COMMAND_LINE) -> tuple[Sink, ...]:
    """Sinks given as JSON texts (``--sink``), checked against the view schema's ``sink``
    entry and built with its defaults, exactly as a view file's ``sinks``; errors name
    ``origin`` and the option's place (``$.sink[1].keyspace``).

    One ``--sink`` serves every view, so a Cassandra sink may leave out ``table``: each
    view then writes to the table of its own name (the sink's default).

    Raises:
        ViewErrors: with every problem of every text.
    """
    errors: list[ViewError] = []
    sinks: list[Sink] = []
    for i, text in enumerate(texts):
        where = f"$.sink[{i}]"
        document, problems = _parse_json(text)
        if document is _UNREADABLE:
            detail = "; ".join(p.message for p in problems.items)
            errors.append(_error(origin, where, f"--sink {_show(text)}: {detail}"))
            continue
        if not problems:
            checked = document
            if isinstance(document, dict) and document.get("type") == "cassandra":
                checked = {"table": "view_name", **document}
            problems.extend(_schema_problems(checked, _sink_validator(), ()))
        if problems:
            errors.extend(problems.to_errors(origin, where, document))
            continue
        sinks.append(replace(_build_sink(document), origin=origin, at=where))
    if errors:
        raise ViewErrors(errors)
    return tuple(sinks)


# --------------------------------------------------------------------------- collecting


@dataclass(frozen=True)
class _Problem:
    parts: Parts
    message: str


class _Problems:
    """Problems of one document, kept with their path as parts until the end.

    Keeping parts (not strings) lets the errors be sorted in document order and prefixed with
    the view's place in a ``{"views": [...]}`` file.
    """

    def __init__(self) -> None:
        self.items: list[_Problem] = []
        self._seen: set[_Problem] = set()  # a view may hold thousands of problems

    def add(self, parts: Parts, message: str) -> None:
        problem = _Problem(tuple(parts), message)
        if problem not in self._seen:
            self._seen.add(problem)
            self.items.append(problem)

    def extend(self, problems: Iterable[_Problem]) -> None:
        for problem in problems:
            self.add(problem.parts, problem.message)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def to_errors(self, file: str, prefix: str, document: Any) -> list[ViewError]:
        positions: dict[int, dict[Any, int]] = {}
        ordered = sorted(self.items, key=lambda p: _document_order(document, p.parts, positions))
        return [_error(file, prefix + _render(p.parts), p.message) for p in ordered]


# Characters that end a line for str.splitlines() or a terminal, escaped in messages.
_LINE_BREAKS = {
    ord(c): c.encode("unicode_escape").decode() for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
}


def _error(file: str, path: str, message: str) -> ViewError:
    """A ViewError whose ``str()`` is one printable line, whatever the view held.

    Keys and values are quoted as written, so a view (or a file name) could carry line
    breaks or lone surrogates (JSON's "\\ud800"), which UTF-8 output cannot encode.
    """
    parts = [file, path, message]
    for i, text in enumerate(parts):
        parts[i] = text.encode("utf-8", "backslashreplace").decode("utf-8").translate(_LINE_BREAKS)
    return ViewError(*parts)


def _render(parts: Sequence[Part]) -> str:
    """JSON path suffix: ``.key`` for identifiers, ``['odd key']`` otherwise, ``[0]`` for items."""
    out = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(f".{part}")
        else:
            out.append("[" + json.dumps(part, ensure_ascii=False).replace('"', "'") + "]")
    return "".join(out)


def _document_order(
    document: Any, parts: Parts, positions: dict[int, dict[Any, int]]
) -> tuple[int, ...]:
    """Sort key of a path: the place of each part in its object or array.

    ``positions`` caches each object's key positions by ``id``, so that thousands of
    problems in one object sort in linear time.
    """
    key = []
    node = document
    for part in parts:
        if isinstance(node, dict):
            places = positions.get(id(node))
            if places is None:
                places = positions[id(node)] = {k: i for i, k in enumerate(node)}
            key.append(places.get(part, len(places)))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            key.append(part)
            node = node[part] if 0 <= part < len(node) else None
        else:
            key.append(0)
            node = None
    return tuple(key)


# --------------------------------------------------------------------------- phase 1: load


def _load(
    paths: Iterable[str | Path] | str | Path, construct: bool
) -> tuple[list[ViewSpec], list[ViewError]]:
    """Specs and errors of every view under ``paths``.

    ``construct``: also build custom and registered aggregation classes with their params, as
    a run is about to (``load_views``); ``liveagg validate`` only imports and inspects them.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files, errors = _discover(paths)
    specs: list[ViewSpec] = []
    names: dict[str, tuple[str, str]] = {}  # view name -> (file, JSON path of its name)
    for path, shown in files:
        document, problems = _read_json(path)
        if document is _UNREADABLE:
            errors.extend(problems.to_errors(shown, "$", None))
            continue
        problems.extend(_schema_problems(document, _root_validator(), ()))
        for view, parts in _views_of(document):
            if any(p.parts[: len(parts)] == parts for p in problems.items):
                continue  # fix the shape first; semantic checks assume it
            spec = _check_and_build(view, shown, problems, parts, construct)
            if spec is None:
                continue
            where = "$" + _render((*parts, "name"))
            if spec.name in names:
                other_file, other_where = names[spec.name]
                place = other_where if other_file == shown else f"{other_file} ({other_where})"
                problems.add(
                    (*parts, "name"),
                    f"view name {spec.name!r} is already used at {place}; view names must be "
                    "unique, as they name sink tables, topics and folders",
                )
                continue
            names[spec.name] = (shown, where)
            specs.append(spec)
        errors.extend(problems.to_errors(shown, "$", document))
    return specs, errors


def _discover(paths: Iterable[str | Path]) -> tuple[list[tuple[Path, str]], list[ViewError]]:
    """Files to read, each with the name to show in messages; folders are searched recursively.

    Hidden files and folders (``.git``, ``.vscode``) are skipped: they are not views.
    """
    files: list[tuple[Path, str]] = []
    errors: list[ViewError] = []
    seen: set[Path] = set()

    def add(path: Path, shown: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append((path, shown))

    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*.json")
                if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)
            )
            if not found:
                errors.append(
                    _error(str(given), "$", "no view files (*.json) in this folder or below")
                )
            for p in found:
                add(p, str(p))
        elif path.exists():
            add(path, str(given))
        else:
            errors.append(_error(str(given), "$", "no such file or folder"))
    return files, errors


_UNREADABLE = object()


def _read_json(path: Path) -> tuple[Any, _Problems]:
    problems = _Problems()
    try:
        raw = path.read_bytes()
    except OSError as e:
        problems.add((), f"cannot read the file: {e.strerror or e}")
        return _UNREADABLE, problems
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.add((), f"not UTF-8 text (bad byte at offset {e.start}); save the file as UTF-8")
        return _UNREADABLE, problems
    if not text.strip():
        problems.add(
            (), 'the file is empty; expected a view object {"name": ...} or {"views": [...]}'
        )
        return _UNREADABLE, problems
    return _parse_json(text)


def _parse_json(text: str) -> tuple[Any, _Problems]:
    """A JSON document read as views are (view files and ``--sink``): too deep nesting,
    ``NaN``, numbers out of range and repeated keys are problems; ``_UNREADABLE`` when the
    text is not JSON."""
    problems = _Problems()
    deep = _deepest_bracket(text)
    if deep is not None:
        problems.add((), _nesting_message(f"at {_line_column(text, deep)}"))
        return _UNREADABLE, problems
    duplicates: list[tuple[dict[str, Any], list[str]]] = []

    def object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        repeated = []
        for key, value in pairs:
            if key in obj:
                repeated.append(key)
            obj[key] = value
        if repeated:
            duplicates.append((obj, repeated))
        return obj

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number; write a number or null")

    try:
        document = json.loads(
            text,
            object_pairs_hook=object_pairs,
            parse_constant=constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except _OutOfRange as e:
        where = _line_column(text, _find_number(text, e.text))
        problems.add((), f"invalid JSON at {where}: {e}")
        return _UNREADABLE, problems
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        problems.add((), f"invalid JSON at {where}: {e.msg}{_json_hint(e)}")
        return _UNREADABLE, problems
    except ValueError as e:
        problems.add((), f"invalid JSON: {e}")
        return _UNREADABLE, problems
    if _SURROGATE_ESCAPE.search(text):
        for parts, message in _lone_surrogates(document, ()):
            problems.add(parts, message)
    if duplicates:
        marked = {id(obj): keys for obj, keys in duplicates}
        for parts, keys in _find_marked(document, marked, ()):
            for key in dict.fromkeys(keys):
                problems.add(
                    (*parts, key),
                    f"key {key!r} appears more than once in this object; JSON keeps only the "
                    "last value, so remove or rename the others",
                )
    return document, problems


# A JSON string (an unterminated one runs to the end), or a bracket. The unrolled loop
# ``[^"\\]*(?:\\.[^"\\]*)*`` matches a string in one pass, without backtracking.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_STRING_OR_NUMBER = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|-?[0-9][0-9.eE+-]*', re.DOTALL)


def _deepest_bracket(text: str) -> int | None:
    """Offset of the first ``[`` or ``{`` nested deeper than :data:`MAX_NESTING`, if any.

    A linear scan before parsing: Python's JSON parser recurses per level and raises
    RecursionError near 1,000 levels, and JSON Schema validation fails far earlier.
    """
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return match.start()
        elif char in "]}":
            depth -= 1
    return None


def _too_deep(node: Any) -> Parts | None:
    """For a document given as objects: the path of the first value nested too deep."""
    stack: list[tuple[Any, Parts]] = [(node, ())]
    while stack:
        value, parts = stack.pop()
        if isinstance(value, dict | list):
            if len(parts) >= MAX_NESTING:
                return parts
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, (*parts, k)) for k, v in items)
    return None


def _nesting_message(where: str) -> str:
    return (
        f"objects and arrays nest deeper than {MAX_NESTING} levels {where}; a view file may "
        f"nest at most {MAX_NESTING} (each all/any of a filter takes two)"
    )


def _line_column(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    return f"line {line}, column {column}"


class _OutOfRange(ValueError):
    """A JSON number beyond a double's range; ``text`` is the number as written."""

    def __init__(self, text: str) -> None:
        shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text):,} characters)"
        super().__init__(
            f"the number {shown} is out of range; numbers in a view are at most "
            f"{sys.float_info.max:.1e} in magnitude (a double's range)"
        )
        self.text = text


def _parse_int(text: str) -> int:
    # Refuse before int(): it is quadratic in the digits and refuses more than 4300.
    if len(text.lstrip("-")) > 309 or abs(value := int(text)) > sys.float_info.max:
        raise _OutOfRange(text)
    return value


def _parse_float(text: str) -> float:
    value = float(text)  # linear in the digits; out of range gives inf
    if not math.isfinite(value):
        raise _OutOfRange(text)
    return value


def _find_number(text: str, number: str) -> int:
    """Offset of ``number`` as a JSON number token (not inside a string) in ``text``."""
    for match in _STRING_OR_NUMBER.finditer(text):
        if match.group() == number:
            return match.start()
    return 0


def _json_hint(e: json.JSONDecodeError) -> str:
    before = e.doc[: e.pos].rstrip()
    if e.doc.startswith(("//", "/*", "#"), e.pos):
        return ' (JSON has no comments; use the "description" field)'
    if before.endswith(",") and e.msg.startswith(("Expecting property name", "Expecting value")):
        return " (JSON does not allow a trailing comma)"
    if e.doc.startswith("'", e.pos):
        return " (JSON strings and keys use double quotes)"
    if e.msg.startswith("Invalid control character"):  # Python's text ends with "at"
        code = ord(e.doc[e.pos]) if e.pos < len(e.doc) else 0
        return (
            f" U+{code:04X} in a string (JSON strings hold control characters only escaped, "
            "such as \\n, \\t or \\u0000)"
        )
    return ""


#: An escaped UTF-16 surrogate (``\\ud800``): JSON decodes a pair of them into one character,
#: a lone one into a string that is not Unicode text (it cannot be encoded as UTF-8).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogates(node: Any, parts: Parts) -> Iterator[tuple[Parts, str]]:
    """Where a key or string value holds a lone surrogate: a name or value no sink, Arrow
    or Beam can encode, which failed the run with a traceback."""
    what = "is not Unicode text: it holds a lone UTF-16 surrogate"
    fix = "write the character itself, or an escaped pair such as \\ud83d\\ude00"
    if isinstance(node, str):
        if found := _SURROGATE.search(node):
            yield parts, f"{node!a} {what} ({found[0]!a}); {fix}"
    elif isinstance(node, dict):
        for key, value in node.items():
            if _SURROGATE.search(key):
                yield (*parts, key), f"key {key!a} {what}; {fix}"
            yield from _lone_surrogates(value, (*parts, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _lone_surrogates(value, (*parts, index))


def _find_marked(
    node: Any, marked: Mapping[int, list[str]], parts: Parts
) -> Iterator[tuple[Parts, list[str]]]:
    if isinstance(node, dict):
        if id(node) in marked:
            yield parts, marked[id(node)]
        for key, value in node.items():
            yield from _find_marked(value, marked, (*parts, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _find_marked(value, marked, (*parts, index))


def _views_of(document: Any) -> list[tuple[Any, Parts]]:
    if isinstance(document, dict) and "views" in document:
        views = document["views"]
        if not isinstance(views, list):
            return []
        return [(view, ("views", i)) for i, view in enumerate(views)]
    return [(document, ())]


# --------------------------------------------------------------------------- phase 2: schema


@cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    # In JSON Schema's regular expressions (ECMA 262) a final "$" is the end of the string;
    # jsonschema checks "pattern" with Python's re.search (jsonschema 4.26
    # _keywords.py:218, `not re.search(patrn, instance)`), whose "$" also matches before a
    # final newline, which would let "clicks\n" pass as a name. The schema's patterns end
    # with "$".
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(
    validator: Draft202012Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


@cache
def _root_validator() -> Draft202012Validator:
    return _Validator(view_schema())


@cache
def _sink_validator() -> Draft202012Validator:
    root = view_schema()
    return _Validator({"$schema": root["$schema"], "$defs": root["$defs"], "$ref": "#/$defs/sink"})


@cache
def _view_validator() -> Draft202012Validator:
    root = view_schema()
    return _Validator({"$schema": root["$schema"], "$defs": root["$defs"], "$ref": "#/$defs/view"})


def _schema_problems(
    document: Any, validator: Draft202012Validator, prefix: Parts
) -> list[_Problem]:
    raw = list(validator.iter_errors(document))
    # A value of the wrong type makes every other keyword at that place noise.
    typed = {tuple(e.absolute_path) for e in raw if e.validator == "type"}
    # A misspelled required key is reported once, as the unknown key with its correction,
    # not a second time as a missing key.
    corrected = {
        (tuple(e.absolute_path), fix)
        for e in raw
        if e.validator == "additionalProperties"
        for fix in _corrections(e)
    }
    problems: list[_Problem] = []
    for error in raw:
        at = tuple(error.absolute_path)
        if at in typed and error.validator != "type":
            continue
        if error.validator == "required":
            for key in _missing(error):
                if (at, key) not in corrected:
                    message = _missing_message(key, error.instance)
                    problems.append(_Problem((*prefix, *at), message))
            continue
        for parts, message in _explain(error, document):
            problems.append(_Problem((*prefix, *parts), message))
    return problems


def _missing(error: ValidationError) -> list[str]:
    instance = error.instance
    return [k for k in error.validator_value if isinstance(instance, dict) and k not in instance]


def _corrections(error: ValidationError) -> list[str]:
    """Allowed keys that an unknown key of this object looks like a misspelling of."""
    allowed = list(error.schema.get("properties", {}))
    fixes = []
    for key in error.instance:
        if key not in allowed:
            fixes += difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return fixes


def _explain(error: ValidationError, root: Any) -> list[tuple[Parts, str]]:
    """Turn one jsonschema error into ``(path parts, message)`` pairs a user can act on."""
    parts: Parts = tuple(error.absolute_path)
    instance = error.instance
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.validator_value

    if kind == "required":
        return [(parts, _missing_message(k, instance)) for k in _missing(error)]
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extras = [k for k in instance if k not in allowed]
        return [((*parts, k), _unknown_key_message(k, allowed, parts, root)) for k in extras]
    if kind == "oneOf":
        return _explain_one_of(error, root)
    if kind == "enum":
        return [(parts, _not_one_of(instance, value))]
    if kind == "const":
        return [(parts, f"expected {_show(value)}, got {_show(instance)}")]
    if kind == "type":
        return [(parts, _type_message(instance, value, schema))]
    if kind == "pattern":
        return [(parts, _pattern_message(instance, value))]
    if kind == "minLength" and value == 1:
        return [(parts, "must not be empty")]
    if kind == "maxItems":
        return [(parts, f"has {len(instance)} items; at most {value} are accepted")]
    if kind == "minItems":
        return [(parts, _min_items_message(parts, value))]
    if kind == "minProperties" and value == 1:
        keys = [k for k in schema.get("properties", {}) if k != "$schema"]
        return [(parts, f"must not be empty; give {' or '.join(keys) or 'a key'}")]
    if kind == "exclusiveMinimum":
        return [(parts, f"{_show(instance)} is too small; expected a number above {value}")]
    if kind == "uniqueItems":
        return [(parts, _unique_message(instance))]
    if kind in ("minimum", "maximum"):
        return [(parts, _range_message(instance, schema))]
    return [(parts, error.message)]


def _explain_one_of(error: ValidationError, root: Any) -> list[tuple[Parts, str]]:
    """Report the branch the user meant instead of "not valid under any of the given schemas".

    The branches of a ``oneOf`` (window: fixed / sliding / session) are told apart by their
    ``type`` const. A branch whose ``type`` does not match is ruled out; if exactly one is left,
    its own errors are the real ones. If all are ruled out, the ``type`` itself is wrong.
    """
    parts: Parts = tuple(error.absolute_path)
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)

    def rules_out(sub: ValidationError) -> bool:
        on_type = list(sub.relative_path) == ["type"] and sub.validator in ("const", "enum")
        type_missing = sub.validator == "required" and "type" not in sub.instance
        return on_type or (type_missing and "type" in sub.validator_value)

    left = {i: subs for i, subs in branches.items() if not any(rules_out(s) for s in subs)}
    if len(left) == 1:
        ((index, subs),) = left.items()
        out: list[tuple[Parts, str]] = []
        for sub in subs:
            for sub_parts, message in _explain(sub, root):
                if sub.validator == "additionalProperties":
                    message += _other_branch_hint(sub_parts[-1], index, branches)
                out.append((sub_parts, message))
        return out
    if not left and isinstance(error.instance, dict):
        consts = [
            s.validator_value
            for subs in branches.values()
            for s in subs
            if list(s.relative_path) == ["type"] and s.validator == "const"
        ]
        if "type" in error.instance and consts:
            given = error.instance["type"]
            return [((*parts, "type"), _not_one_of(given, consts))]
    if isinstance(error.instance, str) and re.match(_DURATION_PATTERN, error.instance):
        return [
            (
                parts,
                f"expected an object, got {_describe(error.instance)} (did you mean "
                f'{{"size": {json.dumps(error.instance)}}}?)',
            )
        ]
    best = best_match(error.context)
    return _explain(best, root) if best is not None else [(parts, error.message)]


def _other_branch_hint(key: Part, chosen: int, branches: dict[int, list[ValidationError]]) -> str:
    """For a key that other branches accept: say which ``type`` each of them has."""
    types: list[str] = []
    for index, subs in branches.items():
        if index == chosen:
            continue
        unknown_there = any(
            s.validator == "additionalProperties"
            and key in s.instance
            and key not in s.schema.get("properties", {})
            for s in subs
        )
        consts = [_type_const(s) for s in subs if _type_const(s) is not None]
        if not unknown_there and consts and json.dumps(consts[0]) not in types:
            types.append(json.dumps(consts[0]))
    if not types:
        return ""
    return f' ({key!r} belongs to "type": {" or ".join(types)})'


def _type_const(error: ValidationError) -> Any:
    """The ``type`` const of the branch an error comes from, when the error says it."""
    if list(error.relative_path) == ["type"] and error.validator == "const":
        return error.validator_value
    schema = error.schema if isinstance(error.schema, dict) else {}
    return schema.get("properties", {}).get("type", {}).get("const")


# --------------------------------------------------------------------------- messages


def _show(value: Any) -> str:
    """A value as the user wrote it: strings quoted, JSON literals as JSON, long ones cut."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"the number {_show(value)}"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, list):
        return "an array"
    return "an object"


#: Fuzzy suggestions compare a word with every choice; beyond this many choices (a view of
#: thousands of columns) they are skipped, or one problem per column would take quadratic time.
_MOST_CHOICES_TO_SUGGEST_FROM = 200


def _suggest(word: Any, choices: Collection[str], aliases: Mapping[str, str] | None = None) -> str:
    if not isinstance(word, str) or len(choices) > _MOST_CHOICES_TO_SUGGEST_FROM:
        return ""
    if aliases and aliases.get(word.lower()) in choices:
        return f" (did you mean {aliases[word.lower()]!r}?)"
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close and word.lower() in choices:
        close = [word.lower()]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _not_one_of(
    given: Any, accepted: Sequence[Any], aliases: Mapping[str, str] | None = None
) -> str:
    choices = ", ".join(_show(a) for a in accepted)
    hint = _suggest(given, [a for a in accepted if isinstance(a, str)], aliases or _VALUE_ALIASES)
    return f"{_show(given)} is not accepted; expected one of {choices}{hint}"


def _missing_message(key: str, instance: Mapping[str, Any]) -> str:
    if key == "col_name":
        hint = f"{instance.get('aggregation')} needs the message field to aggregate"
    elif key == "value":
        hint = f"op {instance.get('op')!r} compares the field with it"
    elif key == "params" and instance.get("aggregation") == "histogram":
        hint = 'histogram needs "params": {"bounds": [0, 10, 100]}'
    elif key == "params" and instance.get("aggregation") == "custom":
        hint = 'custom needs "params": {"combine_fn": "package.module:ClassName"}'
    else:
        hint = _REQUIRED_HINTS.get(key, "")
    return f"missing required key {key!r}" + (f": {hint}" if hint else "")


def _unknown_key_message(key: str, allowed: list[str], parts: Parts, root: Any) -> str:
    shown = [k for k in allowed if k != "$schema"]
    hint = _suggest(key, shown)
    if shown:
        return f"unknown key {key!r}{hint}; allowed here: {', '.join(shown)}"
    # Only the params of aggregations that take none are closed objects without keys.
    owner = root
    for part in parts[:-1]:
        owner = owner[part]
    return f"unknown key {key!r}; {owner.get('aggregation')} takes no params"


def _type_message(instance: Any, expected: str | list[str], schema: Mapping[str, Any]) -> str:
    if schema.get("pattern") in _PATTERN_HINTS:
        noun, detail = _PATTERN_HINTS[schema["pattern"]]
        return f"expected {noun}: {detail}; got {_describe(instance)}"
    types = [expected] if isinstance(expected, str) else list(expected)
    names = [_TYPE_NAMES.get(t, t) for t in types]
    wanted = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"expected {wanted}, got {_describe(instance)}"


def _pattern_message(instance: str, pattern: str) -> str:
    noun, detail = _PATTERN_HINTS.get(pattern, ("accepted", f"a string matching {pattern}"))
    message = f"{_show(instance)} is not {noun}; expected {detail}"
    if pattern == _DURATION_PATTERN:
        fixed = _fix_duration(instance)
    elif pattern == _NAME_PATTERN:
        fixed = re.sub(r"[^a-z0-9_]+", "_", instance.strip().lower()).strip("_")
        fixed = fixed if re.match(_NAME_PATTERN, fixed) else None
    else:
        fixed = None
    return message + (f" (did you mean {fixed!r}?)" if fixed and fixed != instance else "")


def _fix_duration(text: str) -> str | None:
    """``'10 min'`` -> ``'10m'``, ``'1.5h'`` -> ``'90m'``: the spelling the user meant."""
    match = re.match(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$", text)
    if not match:
        return None
    unit = _DURATION_UNIT_ALIASES.get(match.group(2).lower())
    if unit is None:
        return None
    millis = float(match.group(1)) * _DURATION_UNIT_SCALE[unit]
    if not math.isfinite(millis) or millis != int(millis):
        return None
    return _duration_text(int(millis))


def _duration_text(millis: int) -> str:
    """In the largest unit that divides it: 86,400,000 -> '1d', 500 -> '500ms'."""
    name = next(n for n in ("d", "h", "m", "s", "ms") if millis % _DURATION_UNIT_SCALE[n] == 0)
    return f"{millis // _DURATION_UNIT_SCALE[name]}{name}"


def _micros(text: str) -> int | None:
    """A schema-valid duration in microseconds; None when it has too many digits to be one
    that a view accepts (see :data:`MAX_DURATION`)."""
    try:
        return Duration.parse(text).micros
    except ValueError:
        return None


def _min_items_message(parts: Parts, count: int) -> str:
    what = {"aggregation_info": "a view needs at least one aggregation", "views": "no views"}
    last = parts[-1] if parts else None
    if last in what:
        return f"must not be empty: {what[last]}"
    return "must not be empty" if count == 1 else f"needs at least {count} items"


def _unique_message(instance: list[Any]) -> str:
    # jsonschema found a repeat, so one of the items equals an earlier one (as JSON compares:
    # 1 equals 1.0, true does not equal 1). Keys make the search linear on long arrays.
    seen: set[Any] = set()
    repeated = instance[0]
    for item in instance:
        key = _unique_key(item)
        if key in seen:
            repeated = item
            break
        seen.add(key)
    return f"{_show(repeated)} is listed more than once; list each item once"


def _unique_key(value: Any) -> Any:
    """A hashable key under which JSON-equal values are equal."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return ("array", tuple(_unique_key(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _unique_key(v)) for k, v in value.items()))
    return value


def _range_message(instance: Any, schema: Mapping[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if high is None:
        return f"{_show(instance)} is too small; expected at least {low}"
    return f"{_show(instance)} is out of range; expected {low} to {high}"


# --------------------------------------------------------------------------- phase 3: semantics


def _check_and_build(
    view: dict[str, Any], origin: str, problems: _Problems, at: Parts, construct: bool
) -> ViewSpec | None:
    """Run the semantic checks on a schema-valid view; build the spec when they pass."""
    before = len(problems)
    _Checker(view, problems, at, construct).run()
    if len(problems) > before:
        return None
    return _build(view, origin, "$" + _render(at))


class _Checker:
    """Semantic checks of one schema-valid view; ``at`` is the view's place in its file.

    ``construct``: build custom and registered aggregation classes with their params; without
    it they are imported and inspected, never called (``liveagg validate``).
    """

    def __init__(
        self, view: dict[str, Any], problems: _Problems, at: Parts, construct: bool
    ) -> None:
        self.view = view
        self.problems = problems
        self.at = at
        self.construct = construct
        self.grouping_cols: list[str] = list(view["grouping_cols"])
        self.grouping_names = frozenset(self.grouping_cols)
        self.outputs: dict[str, int] = {}

    def add(self, parts: Parts, message: str) -> None:
        self.problems.add((*self.at, *parts), message)

    def where(self, *parts: Part) -> str:
        return "$" + _render((*self.at, *parts))

    def run(self) -> None:
        if self.view["name"] == INPUT_DEAD_LETTERS:
            self.add(
                ("name",),
                f"{INPUT_DEAD_LETTERS!r} names the file of the dead letters no view could read "
                f"(OUTPUT/_dead_letter/{INPUT_DEAD_LETTERS}.jsonl), beside each view's "
                "<view>.jsonl; choose another name",
            )
        self.check_event_time()
        self.check_grouping()
        self.check_window()
        self.check_emit()
        if "allowed_lateness" in self.view:
            lateness = self.view["allowed_lateness"]
            self.length(("allowed_lateness",), lateness, "allowed_lateness", may_be_zero=True)
        self.check_aggregations()
        self.check_derived()
        self.check_case()
        self.check_rollup()
        self.check_counters()
        if "hot_key_fanout" in self.view and self.view["window"].get("type") == "session":
            self.add(
                ("hot_key_fanout",),
                "session windows cannot fan out: a sub-key's session changes shape as it "
                "merges; remove hot_key_fanout or use a fixed or sliding window",
            )

    def check_event_time(self) -> None:
        if not self.view["event_time"]["field"].strip():
            self.add(
                ("event_time", "field"),
                "is blank; name the message field that holds the event time, e.g. 'ts'",
            )

    def check_grouping(self) -> None:
        events = bool(self.view.get("milestones"))
        for i, col in enumerate(self.grouping_cols):
            if message := _reserved_message(col, "grouping column"):
                self.add(("grouping_cols", i), message)
            elif events and col.casefold() in MILESTONE_KEYS:
                self.add(
                    ("grouping_cols", i),
                    f"{col!r} cannot be a grouping column of a view with milestones: each "
                    f"milestone event carries the grouping columns beside its own keys "
                    f"({', '.join(MILESTONE_KEYS)}), and one would hide the other",
                )
        seen: dict[frozenset[str], int] = {}
        listed = _listing(self.grouping_cols)
        for i, grouping_set in enumerate(self.view.get("grouping_sets") or []):
            for j, col in enumerate(grouping_set):
                if col not in self.grouping_names:
                    self.add(
                        ("grouping_sets", i, j),
                        f"{col!r} is not in grouping_cols ({listed}); a grouping set may only "
                        f"use grouping columns{_suggest(col, self.grouping_cols)}",
                    )
            key = frozenset(grouping_set)
            if key in seen:
                self.add(
                    ("grouping_sets", i),
                    f"repeats the grouping set at {self.where('grouping_sets', seen[key])}; "
                    "each set would produce the same rows twice",
                )
            else:
                seen[key] = i

    def check_window(self) -> None:
        window = self.view["window"]
        kind = window.get("type", "fixed")
        if kind == "session":
            self.length(("window", "gap"), window["gap"], "a session gap")
            return
        if kind == "global":
            return
        size = window["size"]
        sizes = size if isinstance(size, list) else [size]
        lengths: dict[int, str] = {}
        for k, text in enumerate(sizes):
            parts: Parts = ("window", "size", k) if isinstance(size, list) else ("window", "size")
            length = self.length(parts, text, "a window size")
            if length is None:
                continue
            if length in lengths:
                self.add(
                    parts,
                    f"{text!r} is as long as {lengths[length]!r}; list each granularity once",
                )
            lengths[length] = text
        if kind == "cumulative":
            self.check_cumulative(lengths)
            return
        if kind != "sliding":
            if len(sizes) > MAX_WINDOWS_PER_MESSAGE:
                self.add(
                    ("window", "size"),
                    f"{len(sizes):,} sizes put each message in {len(sizes):,} windows; at most "
                    f"{MAX_WINDOWS_PER_MESSAGE:,} are accepted",
                )
            return
        period = self.length(("window", "period"), window["period"], "a sliding period")
        if period is None:
            return
        for length, text in lengths.items():
            if period > length:
                self.add(
                    ("window", "period"),
                    f"period {window['period']!r} is longer than size {text!r}; windows "
                    "would leave gaps between them. Use a period up to the size "
                    "(a period equal to the size is a fixed window)",
                )
        self.check_windows_per_message(lengths, period)

    def check_cumulative(self, lengths: Mapping[int, str]) -> None:
        """Each size a whole multiple of the step; a message falls in at most size / step
        windows of each size (the first step's message in all of them)."""
        window = self.view["window"]
        step = self.length(("window", "step"), window["step"], "a cumulative step")
        if step is None:
            return
        size = window["size"]
        for k, (length, text) in enumerate(lengths.items()):
            parts: Parts = ("window", "size", k) if isinstance(size, list) else ("window", "size")
            if length % step:
                self.add(
                    parts,
                    f"size {text!r} is not a whole multiple of step {window['step']!r}; a "
                    "cumulative window grows by whole steps until it is the size "
                    "(e.g. size '1d' with step '1h')",
                )
                return
        self.check_windows_per_message(lengths, step, "step")

    def check_windows_per_message(
        self, lengths: Mapping[int, str], period: int, key: str = "period"
    ) -> None:
        """A sliding window puts each message in ceil(size / period) windows, per size; a
        cumulative window in up to size / step."""
        counts = {text: -(-length // period) for length, text in lengths.items()}
        total = sum(counts.values())
        if total <= MAX_WINDOWS_PER_MESSAGE:
            return
        every = self.view["window"][key]
        if len(counts) == 1:
            ((text, count),) = counts.items()
            # The shortest period that fits, rounded up to whole milliseconds.
            shortest = -(-max(lengths) // MAX_WINDOWS_PER_MESSAGE // 1000)
            self.add(
                ("window", key),
                f"size {text!r} every {key} {every!r} puts each message in {count:,} windows; "
                f"at most {MAX_WINDOWS_PER_MESSAGE:,} are accepted (a {key} of at least "
                f"{_duration_text(shortest)!r} for this size)",
            )
            return
        listed = " + ".join(f"{c:,}" for c in counts.values())
        self.add(
            ("window", key),
            f"sizes {', '.join(repr(t) for t in counts)} every {key} {every!r} put each "
            f"message in {listed} = {total:,} windows; at most {MAX_WINDOWS_PER_MESSAGE:,} are "
            "accepted",
        )

    def check_emit(self) -> None:
        early = self.view.get("emit", {}).get("early")
        if early is not None:
            self.length(("emit", "early"), early, "an early-firing period")

    def check_counters(self) -> None:
        """``emit.eager``, ``milestones``, ``state_ttl`` and what a global window needs.

        Runs after the aggregations are checked: eager and milestone columns must be
        aggregated columns with numbers for values.
        """
        view = self.view
        window_type = view["window"].get("type", "fixed")
        eager = view.get("emit", {}).get("eager")
        if eager is not None:
            self.check_numeric_column(("emit", "eager", "column"), eager["column"], "emit.eager")
        seen: dict[str, int] = {}
        for i, milestone in enumerate(view.get("milestones") or ()):
            column = milestone["column"]
            self.check_numeric_column(("milestones", i, "column"), column, "a milestone")
            if column in seen:
                self.add(
                    ("milestones", i, "column"),
                    f"{column!r} already has milestones at {self.where('milestones', seen[column])}"
                    "; list all of its thresholds there",
                )
            seen.setdefault(column, i)
            at = milestone["at"]
            for k in range(1, len(at)):
                if at[k] <= at[k - 1]:
                    self.add(
                        ("milestones", i, "at", k),
                        f"thresholds must increase: {_show(at[k])} follows {_show(at[k - 1])}",
                    )
                    break
        if "state_ttl" in view:
            self.length(("state_ttl",), view["state_ttl"], "state_ttl")
            if window_type != "global":
                self.add(
                    ("state_ttl",),
                    f"a {window_type} window's state is dropped when the window expires (its "
                    "end plus allowed_lateness); state_ttl applies to global windows only",
                )
        if window_type != "global":
            return
        if view.get("emit", {}).get("early") is None:
            self.add(
                ("emit",) if "emit" in view else (),
                'a global window never closes, so it has no on-time result: give "emit": '
                '{"early": "10s"}, how often its running value is written',
            )
        if "state_ttl" not in view:
            self.add(
                (),
                'a global window keeps each key for all time: give "state_ttl", how long a '
                'key without messages is kept (event time), e.g. "state_ttl": "30d"',
            )
        lateness = view.get("allowed_lateness")
        if lateness is not None and (_micros(lateness) or 0) > 0:
            self.add(
                ("allowed_lateness",),
                "a global window never closes, so no message is late; remove allowed_lateness",
            )

    def check_numeric_column(
        self,
        parts: Parts,
        column: str,
        what: str,
        verb: str = "watches",
        kinds: Sequence[str] = NUMERIC_AGGREGATIONS,
    ) -> None:
        """``column`` must be an aggregated column whose values are numbers (of one of the
        built-in ``kinds``, or a custom one with a numeric output type)."""
        index = self.outputs.get(column)
        if index is None:
            derived = {d["name"] for d in self.view.get("derived") or ()}
            if column in derived:
                why = f"{column!r} is a derived column; {what} watches an aggregated column"
            else:
                why = f"unknown aggregated column {column!r}{_suggest(column, self.outputs)}"
            self.add(parts, f"{why}; aggregated columns: {_listing(list(self.outputs))}")
            return
        item = self.view["aggregation_info"][index]
        kind = item["aggregation"]
        if kind in kinds:
            return
        if is_builtin(kind) or not self.construct:
            if is_builtin(kind):
                article = "an" if kind[0] in "aeiou" else "a"
                self.add(
                    parts,
                    f"{column!r} is {article} {kind} aggregation, whose values are not "
                    f"numbers; {what} {verb} one of {', '.join(kinds)}",
                )
            return  # a custom class is only built by a run, which checks its output type
        try:
            output_type = combiners.create(kind, dict(item.get("params") or {})).output_type()
        except Exception:  # its own problem is reported at its params
            return
        if output_type not in ("bigint", "double"):
            self.add(
                parts,
                f"{column!r} ({kind}) has output type {output_type!r}; {what} {verb} "
                "columns of numbers (output type bigint or double)",
            )

    def check_rollup(self) -> None:
        rollup = self.view.get("rollup")
        if rollup is None:
            return
        listed = _listing(self.grouping_cols)
        for j, col in enumerate(rollup.get("grouping_cols", ())):
            if col not in self.grouping_names:
                self.add(
                    ("rollup", "grouping_cols", j),
                    f"{col!r} is not in grouping_cols ({listed}); a roll-up keeps a subset of "
                    f"the view's grouping columns{_suggest(col, self.grouping_cols)}",
                )
        if self.view.get("grouping_sets"):
            self.add(
                ("rollup",),
                "a view with grouping_sets cannot also roll up; write the rolled-up "
                "grouping as its own view",
            )
        window = self.view["window"]
        size = window.get("size")
        if window.get("type", "fixed") != "fixed" or isinstance(size, list):
            self.add(
                ("rollup",),
                'a roll-up needs a fixed window of one size ("window": {"size": "1m"}); '
                "sliding, session, cumulative, global and multi-granularity windows do not "
                "roll up",
            )
            return
        target = rollup.get("window", {}).get("size")
        if target is None:
            return
        longer = self.length(("rollup", "window", "size"), target, "a roll-up window size")
        base = _micros(size)
        if (
            longer is not None
            and base is not None
            and base > 0
            and (longer < base or longer % base)
        ):
            self.add(
                ("rollup", "window", "size"),
                f"{target!r} is not a whole multiple of the view's window size {size!r}; "
                "each level-1 window must fall in exactly one rolled-up window",
            )

    def length(self, parts: Parts, text: str, what: str, may_be_zero: bool = False) -> int | None:
        """The duration in microseconds, or None once its problem is reported.

        Every duration is at most :data:`MAX_DURATION`, and longer than 0 unless
        ``may_be_zero`` (``allowed_lateness``).
        """
        micros = _micros(text)
        shortest = "0s" if may_be_zero else "1ms"
        if micros is None or micros > MAX_DURATION.micros:
            self.add(
                parts,
                f"{_show(text)} is too long for {what}; accepted: from {shortest!r} to "
                f"{MAX_DURATION.text!r} (about 100 years)",
            )
            return None
        if micros <= 0 and not may_be_zero:
            self.add(parts, f"{what} must be longer than 0, got {text!r}")
            return None
        return micros

    def check_aggregations(self) -> None:
        known = combiners.known()
        for i, item in enumerate(self.view["aggregation_info"]):
            self.check_output_name(i, item["aggregated_col_name"])
            kind = item["aggregation"]
            if kind not in known:
                self.add(
                    ("aggregation_info", i, "aggregation"),
                    f"unknown aggregation {kind!r}{_suggest(kind, known, _AGGREGATION_ALIASES)}; "
                    f"known: {', '.join(known)}",
                )
                continue
            self.check_params(i, kind, dict(item.get("params") or {}), "col_name" in item)

    def check_output_name(self, i: int, name: str) -> None:
        parts: Parts = ("aggregation_info", i, "aggregated_col_name")
        if message := _reserved_message(name, "column name (aggregated_col_name)"):
            self.add(parts, message)
        elif name in self.grouping_names:
            kind = self.view["aggregation_info"][i]["aggregation"]
            self.add(
                parts,
                f"{name!r} is also a grouping column, and output rows carry both; choose "
                f"another name, e.g. {f'{name}_{kind}'!r}",
            )
        elif name in self.outputs:
            self.add(
                parts,
                f"{name!r} is already the aggregated_col_name of "
                f"{self.where('aggregation_info', self.outputs[name])}; each must be unique "
                "within the view",
            )
        else:
            self.outputs[name] = i

    def check_params(self, i: int, kind: str, params: dict[str, Any], has_column: bool) -> None:
        at: Parts = ("aggregation_info", i, "params")
        if kind == "histogram":
            bounds = params["bounds"]
            for k in range(1, len(bounds)):
                if bounds[k] <= bounds[k - 1]:
                    self.add(
                        (*at, "bounds", k),
                        f"bounds must increase: {_show(bounds[k])} follows {_show(bounds[k - 1])}",
                    )
                    return
        # Resolve the class and check it is an aggregation before anything in it is called.
        try:
            cls = resolve(kind, params)
        except CombinerNotFound as e:
            where = (
                (*at, "combine_fn") if kind == "custom" else ("aggregation_info", i, "aggregation")
            )
            self.add(where, str(e))
            return
        if not has_column and not getattr(cls, "counts_rows", False):
            # The schema cannot know a class's attribute: a class attribute, read, not called.
            self.add(
                ("aggregation_info", i),
                f"missing required key 'col_name': {kind} ({cls.__name__}) needs the message "
                "field to aggregate (a class that counts messages sets counts_rows = True)",
            )
            return
        arguments = class_params(kind, params)
        ours = is_builtin(kind)
        try:
            check_params(kind, cls, arguments)
            if ours or self.construct:
                combiners.create(kind, params)
        except (ValueError, TypeError, ImportError) as e:
            message = str(e)
            # "<aggregation>: params.<name> must ...", as the built-ins word it: at that param
            named = re.match(rf"{re.escape(kind)}: params\.(\w+) ", message)
            where = (*at, named[1]) if named and named[1] in params else at
            self.add(where, message if kind in message else f"invalid params for {kind}: {message}")
        except (Exception, SystemExit) as e:
            if ours:
                raise
            # A user's class may raise anything from __init__ (or exit): report it with the
            # view. KeyboardInterrupt still stops the run.
            self.add(at, f"{cls.__name__}(**params) raised {type(e).__name__}: {e}")

    def check_derived(self) -> None:
        derived = self.view.get("derived") or []
        available = set(self.outputs)
        later = {d["name"]: k for k, d in enumerate(derived)}
        first: dict[str, int] = {}  # derived name -> index of its first definition
        for i, item in enumerate(derived):
            name = item["name"]
            self.check_derived_name(i, name, first)
            first.setdefault(name, i)
            try:
                expr = parse_expr(item["expr"])
            except ExprSyntaxError as e:
                self.add(("derived", i, "expr"), str(e))
            else:
                for ref in expr.names:
                    if ref not in available:
                        message = self.unknown_ref(ref, i, name, later, available)
                        self.add(("derived", i, "expr"), message)
                    elif ref in self.outputs:  # earlier derived columns are numbers
                        # first and last keep a message's value: a number, or null here
                        kinds = (*NUMERIC_AGGREGATIONS, "first", "last")
                        self.check_numeric_column(
                            ("derived", i, "expr"), ref, "an expression", "computes over", kinds
                        )
            available.add(name)

    def check_case(self) -> None:
        """No two columns of a row differ only in case: Parquet readers in Spark and Hive,
        and SQL engines such as DuckDB, match column names ignoring case and would see one
        column (names that are equal are reported where they are checked)."""
        columns: list[tuple[str, Parts]] = [
            (col, ("grouping_cols", i)) for i, col in enumerate(self.grouping_cols)
        ]
        for i, item in enumerate(self.view["aggregation_info"]):
            output = ("aggregation_info", i, "aggregated_col_name")
            columns.append((item["aggregated_col_name"], output))
        for i, item in enumerate(self.view.get("derived") or ()):
            columns.append((item["name"], ("derived", i, "name")))
        first: dict[str, tuple[str, Parts]] = {}
        for name, parts in columns:
            seen = first.setdefault(name.casefold(), (name, parts))
            if seen[0] != name:
                self.add(
                    parts,
                    f"{name!r} differs from {seen[0]!r} (at {self.where(*seen[1])}) only in "
                    "case, and readers that ignore case (Parquet in Spark or Hive, DuckDB) "
                    "would see one column; choose another name",
                )

    def check_derived_name(self, i: int, name: str, earlier: Mapping[str, int]) -> None:
        parts: Parts = ("derived", i, "name")
        if message := _reserved_message(name, "derived column"):
            self.add(parts, message)
        elif name in self.grouping_names:
            self.add(parts, f"{name!r} is a grouping column; choose another name")
        elif name in self.outputs:
            self.add(
                parts,
                f"{name!r} is already the aggregated_col_name of "
                f"{self.where('aggregation_info', self.outputs[name])}; choose another name",
            )
        elif name in earlier:
            self.add(
                parts,
                f"{name!r} is already defined at {self.where('derived', earlier[name])}; "
                "derived names must be unique",
            )

    def unknown_ref(
        self, ref: str, i: int, name: str, later: Mapping[str, int], available: set[str]
    ) -> str:
        if ref == name:
            return f"{name!r} refers to itself"
        if ref in later and later[ref] > i:
            return (
                f"{ref!r} is defined later, at {self.where('derived', later[ref])}; a derived "
                "column may only use aggregated columns and earlier derived columns"
            )
        if ref in self.grouping_names:
            return (
                f"{ref!r} is a grouping column; expressions compute over aggregated columns "
                "(add an aggregation of it and use its aggregated_col_name)"
            )
        listed = _listing(sorted(available))
        return (
            f"unknown column {ref!r}{_suggest(ref, available)}; expressions may use the "
            f"aggregated columns and earlier derived columns: {listed}"
        )


def _listing(names: Sequence[str], most: int = 20) -> str:
    """Names for a message: all of a short list, the first ``most`` of a long one."""
    if not names:
        return "none"
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])}, ... ({len(names):,} in all)"


def _reserved_message(name: str, what: str) -> str | None:
    """Why ``name`` may not be a column of the view's rows, or None: it is a key every row
    has, or one only in case (Parquet readers in Spark and Hive, and SQL engines such as
    DuckDB, match column names ignoring case, so ``Pane_Index`` would stand for
    ``pane_index``)."""
    key = next((k for k in RESERVED_COLUMNS if k == name.casefold()), None)
    if key is None:
        return None
    also = "" if key == name else ", and readers that ignore case take one for the other"
    return (
        f"{name!r} cannot be a {what}: every output row already has a {key!r} key{also} "
        f"(reserved: {', '.join(RESERVED_COLUMNS)})"
    )


# --------------------------------------------------------------------------- phase 4: normalize


def _build(view: Mapping[str, Any], origin: str, at: str = "$") -> ViewSpec:
    event_time = view["event_time"]
    grouping_cols = tuple(view["grouping_cols"])
    sets = view.get("grouping_sets")
    early = view.get("emit", {}).get("early")
    eager = view.get("emit", {}).get("eager")
    return ViewSpec(
        name=view["name"],
        event_time=EventTime(event_time["field"], event_time.get("format")),
        grouping_cols=grouping_cols,
        window=_build_window(view["window"]),
        aggregations=tuple(_build_aggregation(a) for a in view["aggregation_info"]),
        source=view.get("source", "events"),
        description=view.get("description", ""),
        # Columns in grouping_cols order, so that a set's key does not depend on how it was
        # spelled.
        grouping_sets=(
            tuple(tuple(c for c in grouping_cols if c in s) for s in sets) if sets else None
        ),
        allowed_lateness=Duration.parse(view.get("allowed_lateness", "0s")),
        early=Duration.parse(early) if early is not None else None,
        eager=Eager(eager["column"], eager["below"]) if eager is not None else None,
        milestones=tuple(
            Milestone(m["column"], tuple(_canonical_number(t) for t in m["at"]))
            for m in view.get("milestones", ())
        ),
        state_ttl=Duration.parse(view["state_ttl"]) if "state_ttl" in view else None,
        filter=_build_filter(view["filter"]) if "filter" in view else None,
        derived=tuple(Derived(d["name"], d["expr"]) for d in view.get("derived", ())),
        sinks=tuple(_build_sink(s) for s in view.get("sinks", ())),
        rollup=_build_rollup(view) if "rollup" in view else None,
        # An integer to JSON Schema may be written 4.0; sub-keys are counted in ints.
        hot_key_fanout=int(view["hot_key_fanout"]) if "hot_key_fanout" in view else None,
        origin=origin,
        at=at,
    )


def _build_rollup(view: Mapping[str, Any]) -> Rollup:
    rollup = view["rollup"]
    keep = set(rollup.get("grouping_cols", view["grouping_cols"]))
    return Rollup(
        # In grouping_cols order, like grouping sets: the key does not depend on spelling.
        grouping_cols=tuple(c for c in view["grouping_cols"] if c in keep),
        size=Duration.parse(rollup.get("window", {}).get("size", view["window"]["size"])),
    )


def _build_window(window: Mapping[str, Any]) -> Window:
    kind = window.get("type", "fixed")
    if kind == "session":
        return Window("session", gap=Duration.parse(window["gap"]))
    if kind == "global":
        return Window("global")
    size = window["size"]
    many = isinstance(size, list)
    return Window(
        kind,
        sizes=tuple(Duration.parse(s) for s in (size if many else [size])),
        period=Duration.parse(window["period"]) if kind == "sliding" else None,
        multi_granularity=many,
        step=Duration.parse(window["step"]) if kind == "cumulative" else None,
    )


def _canonical_number(value: int | float) -> int | float:
    """A threshold in the canonical form values take (``100.0`` is ``100``), so that its
    ``milestone_id`` does not depend on how it was written."""
    return normalize_number(value)


def _build_aggregation(item: Mapping[str, Any]) -> Aggregation:
    return Aggregation(
        kind=item["aggregation"],
        output=item["aggregated_col_name"],
        column=item.get("col_name"),
        params=MappingProxyType(copy.deepcopy(dict(item.get("params") or {}))),
    )


def _build_filter(node: Mapping[str, Any]) -> Filter:
    if "all" in node:
        return AllOf(tuple(_build_filter(n) for n in node["all"]))
    if "any" in node:
        return AnyOf(tuple(_build_filter(n) for n in node["any"]))
    value = node.get("value")
    if node["op"] in ("in", "not_in"):
        value = tuple(value)
    elif node["op"] == "exists" and value is None:
        value = True  # presence; {"op": "exists", "value": false} asks for absence
    return Predicate(node["field"], node["op"], value)


_FILE_SINKS = ("file", "s3", "gcs")


def _build_sink(sink: Mapping[str, Any]) -> Sink:
    options = {k: copy.deepcopy(v) for k, v in sink.items() if k != "type"}
    if sink["type"] in _FILE_SINKS:
        options.setdefault("format", DEFAULT_FILE_FORMAT)
    return Sink(sink["type"], MappingProxyType(options))
