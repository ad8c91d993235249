"""Property: whatever a view file holds, validation prints ``FILE: $.path: message`` lines.

Valid views (the shipped examples and a few more) are mutated -- keys deleted, renamed or
duplicated, values replaced by other types, huge or negative numbers, long or odd strings,
deep nesting, hostile ``combine_fn`` references, truncated text -- and ``liveagg validate``
must accept the file or report it, one line per problem, never with a traceback, and never
run anything the file names. The examples are derandomized, so the test cannot flake.
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveagg.errors import ViewErrors
from liveagg.loader import load_views, validate_paths
from liveagg.view_schemas import SCHEMA_PATH
from tests.support.cli import liveagg

EXAMPLES = sorted((SCHEMA_PATH.parent / "examples").glob("*.json"))

#: Marker files a hostile reference would create if anything it names were called.
MARKER = Path(tempfile.gettempdir()) / "liveagg-validate-property-PWNED"

SEEDS: list[Any] = [json.loads(p.read_text(encoding="utf-8")) for p in EXAMPLES] + [
    {
        "name": "sessions",
        "event_time": {"field": "ts", "format": "iso8601"},
        "grouping_cols": ["user"],
        "window": {"type": "session", "gap": "30m"},
        "allowed_lateness": "5m",
        "aggregation_info": [
            {"aggregation": "count", "aggregated_col_name": "events"},
            {
                "aggregation": "custom",
                "col_name": "price",
                "aggregated_col_name": "price_range",
                "params": {"combine_fn": "examples.custom_combiners:RangeFn", "scale": 0.01},
            },
            {
                "aggregation": "histogram",
                "col_name": "price",
                "aggregated_col_name": "h",
                "params": {"bounds": [0, 10, 100]},
            },
        ],
        "derived": [{"name": "scaled", "expr": "(events + 1) * -2 / price_range"}],
        "sinks": [
            {"type": "file", "path": "out", "format": "csv"},
            {"type": "cassandra", "keyspace": "ks", "table": "t"},
            {"type": "kafka", "topic": "rows.sessions"},
        ],
    },
    {
        "views": [
            {
                "name": "rolled",
                "event_time": {"field": "ts", "format": "epoch_ms"},
                "grouping_cols": ["a", "b"],
                "window": {"size": "1m"},
                "rollup": {"grouping_cols": ["a"], "window": {"size": "1h"}},
                "hot_key_fanout": 4,
                "filter": {
                    "any": [{"field": "k", "op": "exists"}, {"field": "n", "op": "ge", "value": 3}]
                },
                "aggregation_info": [
                    {"aggregation": "sum", "col_name": "n", "aggregated_col_name": "total"}
                ],
            }
        ]
    },
]


@dataclass
class Deep:
    """``levels`` nested arrays around ``inner``, written as text (too deep to build here)."""

    levels: int
    inner: Any


class Repeated(dict):  # type: ignore[type-arg]
    """An object written with one key twice (JSON allows it; a dict cannot hold it)."""

    repeated: tuple[str, Any] = ("", None)


def dumps(value: Any) -> str:
    """JSON text for a document that may hold :class:`Deep` and :class:`Repeated`."""
    if isinstance(value, Deep):
        return "[" * value.levels + dumps(value.inner) + "]" * value.levels
    if isinstance(value, dict):
        pairs = list(value.items())
        if isinstance(value, Repeated):
            pairs.append(value.repeated)
        return "{" + ", ".join(f"{json.dumps(k)}: {dumps(v)}" for k, v in pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, -0.0, 2**63, -(2**63), 10**308, -(10**308), 10**400,
    1e308, 1e-320, "", " ", "x" * 5000, "é😀", "\u0000", "\ud800", "\u2028", "a\nb",
    "0s", "0ms", "1ms", "1d", "36500d", "36501d", "1" * 5000 + "ms", "9" * 30 + "d", "-1m",
    "1e3m", "10m\n", "10 minutes", "os:system", "subprocess:Popen", "builtins:eval",
    "pip.__main__:X", "examples.custom_combiners:RangeFn", "examples.custom_combiners:Nope",
    "apache_beam.transforms.combiners:CountCombineFn", "liveagg.combiners:LiveaggCombineFn",
    "a" * 300 + ":B", "count", "custom", "histogram", "sliding", "session", "fixed", "eq",
    "in", "exists", "a / 0", "(" * 70 + "a" + ")" * 70, "a+" * 600 + "a", "1" * 400,
    "events - clicks", [], {}, [[]], {"": {}}, ["1m", "1m"], [0, 0], [3, 2, 1],
    {"combine_fn": "os:system", "command": f"touch {MARKER}"},
    {"combine_fn": "subprocess:Popen", "args": ["touch", str(MARKER)]},
    Deep(70, 1), Deep(5000, {}),
]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
values = st.sampled_from(ODD_VALUES) | json_values
keys = st.sampled_from(
    ["name", "window", "size", "type", "params", "combine_fn", "", "é", "\ud800", "a'b"]
) | st.text(max_size=10)


def containers(node: Any) -> Iterator[Any]:
    """Every object and array of a document."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            yield item
            stack.extend(item.values() if isinstance(item, dict) else item)


def mutate(document: Any, data: st.DataObject) -> Any:
    """One change somewhere in ``document`` (changed in place where it can be)."""
    found = list(containers(document))
    if not found or data.draw(st.integers(0, 19)) == 0:
        return data.draw(values)  # the whole document replaced
    target = data.draw(st.sampled_from(found))
    places = list(target) if isinstance(target, dict) else list(range(len(target)))
    op = data.draw(st.sampled_from(["delete", "replace", "replace", "add", "rename", "repeat"]))
    if not places or op == "add":
        if isinstance(target, dict):
            target[data.draw(keys)] = data.draw(values)
        else:
            target.insert(data.draw(st.integers(0, len(target))), data.draw(values))
        return document
    place = data.draw(st.sampled_from(places))
    if op == "delete":
        del target[place]
    elif op == "replace":
        target[place] = data.draw(values)
    elif isinstance(target, list):
        target.append(copy.deepcopy(target[place]))
    elif op == "rename":
        target[data.draw(keys)] = target.pop(place)
    else:  # the same key twice, with another value the second time
        twice = Repeated(target)
        twice.repeated = (place, data.draw(values))
        target.clear()
        return _replace(document, target, twice)
    return document


def _replace(document: Any, old: Any, new: Any) -> Any:
    if document is old:
        return new
    for node in containers(document):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            if value is old:
                node[key] = new
                return document
    return document


def text_of(document: Any, data: st.DataObject) -> str:
    text = dumps(document)
    cut = data.draw(st.sampled_from(["none"] * 8 + ["truncate", "insert"]))
    if cut == "truncate":
        return text[: data.draw(st.integers(0, len(text)))]
    if cut == "insert":
        at = data.draw(st.integers(0, len(text)))
        extra = data.draw(st.sampled_from(["{", "]", '"', ",", "\\", "\x00", "//"]))
        return text[:at] + extra + text[at:]
    return text


def check_lines(path: Path, lines: list[str]) -> None:
    segment = r"\.[A-Za-z_$][A-Za-z0-9_$]*|\[[0-9]+\]|\['.*?'\]"
    pattern = re.compile(rf"{re.escape(str(path))}: \$({segment})*: \S.*")
    for line in lines:
        assert pattern.fullmatch(line), line
        assert line.splitlines() == [line], line
        line.encode("utf-8")  # printable to a UTF-8 terminal: no lone surrogates


@settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.sampled_from(range(len(SEEDS))), st.integers(1, 3), st.data())
def test_validate_reports_every_mutated_view_in_lines(
    tmp_path_factory: pytest.TempPathFactory, seed: int, changes: int, data: st.DataObject
) -> None:
    document = copy.deepcopy(SEEDS[seed])
    for _ in range(changes):
        document = mutate(document, data)
    path = tmp_path_factory.mktemp("views") / "view.json"
    path.write_text(text_of(document, data), encoding="utf-8", errors="surrogatepass")
    errors = validate_paths([path])
    check_lines(path, [str(e) for e in errors])
    try:
        load_views([path])
    except ViewErrors as e:
        check_lines(path, [str(x) for x in e])
    else:
        assert not errors
    assert not MARKER.exists()


def test_the_command_prints_only_lines(tmp_path: Path) -> None:
    """The real ``liveagg validate`` over a folder of mutated views: lines and exit 1."""
    folder = tmp_path / "views"
    folder.mkdir()
    for i, seed in enumerate(SEEDS):
        document = copy.deepcopy(seed)
        (folder / f"ok{i}.json").write_text(dumps(document), encoding="utf-8")
        for j, value in enumerate(ODD_VALUES):
            changed = copy.deepcopy(document)
            view = changed["views"][0] if "views" in changed else changed
            key = ["window", "name", "aggregation_info", "derived", "filter"][j % 5]
            view[key] = value
            text = dumps(changed)
            (folder / f"v{i}_{j}.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    result = liveagg("validate", str(folder), ok=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr == ""
    lines = result.stdout.split("\n")
    assert lines[-1] == ""
    reported = set()
    for line in lines[:-1]:
        name = Path(line.split(": ", 1)[0]).name
        check_lines(folder / name, [line])
        reported.add(name)
    assert len(reported) > len(ODD_VALUES)  # most changes break a view
    assert not reported & {f"ok{i}.json" for i in range(len(SEEDS))}
    assert not MARKER.exists()
