"""View filters compiled to predicates over a decoded message.

SQL semantics, as Flink SQL and DuckDB apply them: a missing or null field matches no
comparison (``eq``, ``ne``, ``in``, ``not_in``, ``gt`` ...); only ``exists`` looks at presence.
Values of different kinds (a string against a number) never match an ordering comparison.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from liveagg.spec import AllOf, AnyOf, Filter, Predicate
from liveagg.transforms.fields import getter

Test = Callable[[dict], bool]

_ORDER = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _scalar_eq(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and a == b  # True must not equal 1


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


def _predicate(p: Predicate) -> Test:
    get = getter(p.field)
    op, want = p.op, p.value
    if op == "exists":
        expect = want is not False  # {"op": "exists", "value": false} asks for absence
        return lambda msg: (get(msg) is not None) == expect
    if op in ("in", "not_in"):
        options = list(want or [])
        inside = op == "in"

        def member(msg: dict) -> bool:
            value = get(msg)
            if value is None:
                return False
            return any(_scalar_eq(value, o) for o in options) == inside

        return member
    if op in ("eq", "ne"):
        equal = op == "eq"

        def compare(msg: dict) -> bool:
            value = get(msg)
            return value is not None and _scalar_eq(value, want) == equal

        return compare
    order = _ORDER[op]
    want_kind = _kind(want)

    def ordered(msg: dict) -> bool:
        value = get(msg)
        return value is not None and _kind(value) == want_kind and order(value, want)

    return ordered
