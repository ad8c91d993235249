"""View filters compiled to predicates over a decoded message.

SQL semantics, as Flink SQL and DuckDB apply them: a missing or null field matches no
comparison (``eq``, ``ne``, ``in``, ``not_in``, ``gt`` ...); only ``exists`` looks at presence.
Values compare with their JSON type: ``200 == 200.0``, but ``"200"`` is not ``200`` and
``true`` is not ``1``; values of different kinds never match. A filter value that is null,
an object or a list matches nothing (``x = NULL`` is never true in SQL).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from liveagg.spec import AllOf, AnyOf, Filter, Predicate
from liveagg.transforms.fields import getter

Test = Callable[[dict], bool]

_ORDER = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


# JSON kinds: a value matches only values of its kind (numbers: int and float together).
_KIND = {bool: "bool", int: "number", float: "number", str: "str"}


def _kind(value: Any) -> str | None:
    return _KIND.get(type(value))


def compile_filter(spec: Filter | None) -> Test | None:
    """Return a predicate, or None when the view has no filter."""
    if spec is None:
        return None
    if isinstance(spec, AllOf):
        tests = [compile_filter(item) for item in spec.items]
        return lambda msg: all(t(msg) for t in tests)  # type: ignore[misc]
    if isinstance(spec, AnyOf):
        tests = [compile_filter(item) for item in spec.items]
        return lambda msg: any(t(msg) for t in tests)  # type: ignore[misc]
    return _predicate(spec)


def _never(msg: dict) -> bool:
    return False


def _comparable(value: Any) -> bool:
    return _kind(value) is not None


def _predicate(p: Predicate) -> Test:
    get = getter(p.field)
    op, want = p.op, p.value
    if op == "exists":
        expect = want is not False  # {"op": "exists", "value": false} asks for absence
        return lambda msg: (get(msg) is not None) == expect
    if op in ("in", "not_in"):
        given = list(want or [])
        options = {(_kind(o), o) for o in given if _comparable(o)}
        inside = op == "in"
        if not inside and any(not _comparable(o) for o in given):
            return _never  # SQL: x NOT IN (..., NULL) is never true

        def member(msg: dict) -> bool:
            value = get(msg)
            kind = _KIND.get(type(value))
            return kind is not None and ((kind, value) in options) == inside

        return member
    if not _comparable(want):
        return _never
    want_kind = _kind(want)
    if op in ("eq", "ne"):
        equal = op == "eq"

        def compare(msg: dict) -> bool:
            value = get(msg)
            kind = _KIND.get(type(value))
            return kind is not None and (kind == want_kind and value == want) == equal

        return compare
    if want_kind == "bool":
        return _never  # booleans have no order in SQL
    order = _ORDER[op]

    def ordered(msg: dict) -> bool:
        value = get(msg)
        return _KIND.get(type(value)) == want_kind and order(value, want)

    return ordered
