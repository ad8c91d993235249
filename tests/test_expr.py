"""The derived-column expression language: parsing, evaluation, null rules, error positions."""

from __future__ import annotations

import inspect
import math
import pickle
import sys
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from liveagg import expr as expr_module
from liveagg.expr import MAX_DEPTH, MAX_LENGTH, Expr, ExprSyntaxError, ExprTooLong, parse_expr
from tests.support.oracle import parse_arith


def value(text: str, **values: object) -> object:
    return parse_expr(text).evaluate(values)


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),  # left-associative
        ("64 / 4 / 2", 8.0),
        ("-3 + 5", 2),
        ("--3", 3),
        ("-(2 + 3) * 2", -10),
        ("2 * -3", -6),
        ("1.5 * 2", 3.0),
        (".5 + 1", 1.5),
        ("1e3 + 1", 1001.0),
        ("2.5e-1 * 4", 1.0),
        ("  7  ", 7),
    ],
)
def test_arithmetic_and_precedence(text: str, expected: float) -> None:
    assert value(text) == expected


def test_arithmetic_is_in_floating_point() -> None:
    # As docs/semantics.md says and SQL's DOUBLE does: integer inputs become floats.
    result = value("a + b * c - 1", a=2, b=3, c=4)
    assert result == 13.0
    assert type(result) is float
    assert type(value("7")) is float
    # 2**53 + 1 has no double: the float sum is not the integer one.
    assert value("a + 1", a=2**53) == float(2**53)


def test_division_is_true_division() -> None:
    # Integer division would make every click-through rate 0.
    assert value("clicks / impressions", clicks=3, impressions=120) == 0.025


def test_names_are_listed_once_in_order_of_first_use() -> None:
    assert parse_expr("b / a + b * c").names == ("b", "a", "c")
    assert parse_expr("1 + 2").names == ()


def test_name_with_digits_and_underscores() -> None:
    assert value("p_99_ms * 2", p_99_ms=1.5) == 3.0


@pytest.mark.parametrize(
    "values",
    [
        {"clicks": None, "impressions": 10},
        {"clicks": 3, "impressions": None},
        {"impressions": 10},  # missing
        {},
    ],
)
def test_null_or_missing_operand_gives_none(values: dict[str, object]) -> None:
    assert parse_expr("clicks / impressions").evaluate(values) is None


@pytest.mark.parametrize("divisor", [0, 0.0, -0.0])
def test_division_by_zero_gives_none(divisor: float) -> None:
    assert value("a / b", a=1, b=divisor) is None


def test_division_by_zero_inside_a_larger_expression_gives_none() -> None:
    assert value("1 + a / (b - b)", a=1, b=5) is None


@pytest.mark.parametrize("bad", ["12", "abc", True, False, [1], {"v": 1}, object()])
def test_non_numeric_operand_gives_none(bad: object) -> None:
    assert value("a + 1", a=bad) is None


def test_non_finite_results_give_none() -> None:
    assert value("a * a", a=1e308) is None
    assert value("a + 1", a=math.inf) is None
    assert value("a + 1", a=math.nan) is None


def test_integers_too_large_for_a_float_give_none() -> None:
    # Python ints are unbounded; one beyond a double's range is not a number here.
    assert value("a * 1.5", a=10**400) is None
    assert value("a / 3", a=10**400) is None
    assert value("a", a=-(10**400)) is None
    assert value("a * a", a=10**200) is None  # 1e400 overflows a double


def test_expr_is_callable_and_picklable() -> None:
    expr = parse_expr("(a + b) / 2")
    assert expr({"a": 1, "b": 2}) == 1.5
    copy = pickle.loads(pickle.dumps(expr))
    assert isinstance(copy, Expr)
    assert copy.text == expr.text
    assert copy.names == expr.names
    assert copy.evaluate({"a": 3, "b": 5}) == 4.0


# --------------------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(
    ("text", "column", "expected", "found"),
    [
        ("", 1, "a number, a column name or '('", "the end of the expression"),
        ("   ", 4, "a number, a column name or '('", "the end of the expression"),
        ("clicks /", 9, "a number, a column name or '('", "the end of the expression"),
        ("(a + b", 7, "')' or an operator (+ - * /)", "the end of the expression"),
        ("a ** 2", 4, "a number, a column name or '('", "'*'"),
        ("a b", 3, "an operator (+ - * /) or the end of the expression", "'b'"),
        ("a + * b", 5, "a number, a column name or '('", "'*'"),
        ("a)", 2, "an operator (+ - * /) or the end of the expression", "')'"),
        ("2x", 2, "an operator (+ - * /) or the end of the expression", "'x'"),
        ("()", 2, "a number, a column name or '('", "')'"),
        ("+a", 1, "a number, a column name or '('", "'+'"),
    ],
)
def test_syntax_errors_name_the_column_and_what_was_expected(
    text: str, column: int, expected: str, found: str
) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expr(text)
    assert str(info.value) == (
        f"syntax error in {text!r} at column {column}: expected {expected}, found {found}"
    )
    assert info.value.position == column - 1
    assert info.value.expected == expected


def test_uppercase_names_are_refused_with_a_hint() -> None:
    with pytest.raises(
        ExprSyntaxError, match=r"at column 1: .* found 'C'; column names are lowercase"
    ):
        parse_expr("Clicks / impressions")


@pytest.mark.parametrize(
    ("text", "char", "column"), [("a % 2", "%", 3), ("a ^ 2", "^", 3), ("a, b", ",", 2)]
)
def test_characters_outside_the_language_are_refused(text: str, char: str, column: int) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expr(text)
    assert str(info.value) == (
        f"syntax error in {text!r} at column {column}: expected a number, a column name or '(' "
        f"or an operator, found {char!r}; only + - * / and parentheses are allowed"
    )


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "a.b",
        "a[0]",
        "f(a)",
        "lambda: 1",
        "'text'",
        "a if b else c",
    ],
)
def test_code_is_never_accepted(text: str) -> None:
    with pytest.raises(ExprSyntaxError):
        parse_expr(text)


def test_number_too_large_for_a_float_is_refused() -> None:
    with pytest.raises(ExprSyntaxError, match=r"at column 5: expected a number a float can hold"):
        parse_expr("a * 1e999")


def test_nesting_is_limited_instead_of_exhausting_the_stack() -> None:
    parse_expr("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH)
    with pytest.raises(ExprSyntaxError, match=f"at most {MAX_DEPTH} nested"):
        parse_expr("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(ExprSyntaxError, match=f"at most {MAX_DEPTH} nested"):
        parse_expr("-" * (MAX_DEPTH + 1) + "a")


def test_length_is_limited_before_anything_is_read() -> None:
    longest = "a + " * ((MAX_LENGTH - 1) // 4) + "a"
    assert len(longest) <= MAX_LENGTH
    assert value(longest, a=1) == (MAX_LENGTH - 1) // 4 + 1
    text = "a+" * 2500 + "a"
    with pytest.raises(ExprTooLong) as info:
        parse_expr(text)
    assert str(info.value) == (
        f"the expression is 5,001 characters long; at most {MAX_LENGTH:,} are accepted "
        "(split it into several derived columns)"
    )
    assert isinstance(info.value, ExprSyntaxError)  # the loader reports both alike


def test_a_number_of_thousands_of_digits_is_refused_cleanly() -> None:
    # int() refuses more than 4300 digits with a ValueError; the expression never gets there.
    with pytest.raises(ExprTooLong):
        parse_expr("1" * 5000)
    # Within the length limit, digits beyond a double's range are a syntax error, not inf.
    with pytest.raises(ExprSyntaxError, match=r"at column 5: expected a number a float can hold"):
        parse_expr("a + " + "9" * 400)
    assert value("1" * 300 + " / a", a=10**299) == pytest.approx(1.111111111111111)


def test_evaluation_needs_no_recursion(monkeypatch: pytest.MonkeyPatch) -> None:
    # A left-deep chain used to evaluate as nested closures, one stack frame per term:
    # 1,000 terms passed validation and raised RecursionError on the first row. Lift the
    # length limit and evaluate 100,000 terms under a recursion limit far below that.
    monkeypatch.setattr(expr_module, "MAX_LENGTH", 10**7)
    chain = parse_expr(" + ".join(["a"] * 100_000))
    nested = parse_expr("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH + " * -a" * 50_000)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 20)
    try:
        total = chain.evaluate({"a": 1})
        product = nested.evaluate({"a": 1})
    finally:
        sys.setrecursionlimit(limit)
    assert total == 100_000.0
    assert product == 1.0


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="an expression is a string, got int"):
        parse_expr(3)  # type: ignore[arg-type]


def test_syntax_error_is_a_value_error() -> None:
    # Callers that only know ValueError (configuration code) still catch it.
    with pytest.raises(ValueError):
        parse_expr("a +")


# --------------------------------------------------------------------------- properties

_OPS: dict[str, Callable[[float, float], float | None]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: None if b == 0 else a / b,
}


def _combine(op: str, a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return _OPS[op](a, b)


_leaf = st.integers(min_value=0, max_value=1000).map(lambda n: (str(n), float(n)))


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    binary = st.tuples(children, st.sampled_from(sorted(_OPS)), children).map(
        lambda t: (f"({t[0][0]}) {t[1]} ({t[2][0]})", _combine(t[1], t[0][1], t[2][1]))
    )
    negated = children.map(lambda c: (f"-({c[0]})", None if c[1] is None else -c[1]))
    return binary | negated


@given(st.recursive(_leaf, _extend, max_leaves=12))
def test_matches_a_reference_evaluation(case: tuple[str, float | None]) -> None:
    text, expected = case
    assert parse_expr(text).evaluate({}) == expected


@given(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from(sorted(_OPS)),
)
def test_names_and_literals_agree(a: int, b: int, op: str) -> None:
    by_name = parse_expr(f"x {op} y").evaluate({"x": a, "y": b})
    by_literal = parse_expr(f"({a}) {op} ({b})").evaluate({})
    assert by_name == by_literal == _combine(op, float(a), float(b))


# The oracle (tests/support/oracle.py) computes derived columns with its own parser; both must
# agree value for value, nulls and non-finite results included.
_operand = st.one_of(
    st.none(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 0.0, -0.0, 10**400, -(10**400), 2**63, True, "12", 1e308]),
)
_atom = st.one_of(
    st.sampled_from(["a", "b", "c"]),
    st.integers(min_value=0, max_value=10**20).map(str),
    st.floats(min_value=0, max_value=1e300, allow_nan=False).map(repr),
)


def _compose(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(sorted(_OPS)), children).map(
        lambda t: f"{t[0]} {t[1]} {t[2]}"
    )
    return binary | children.map(lambda c: f"-({c})") | children.map(lambda c: f"({c})")


@given(
    st.recursive(_atom, _compose, max_leaves=10),
    st.fixed_dictionaries({"a": _operand, "b": _operand, "c": _operand}),
)
@example("a * 2", {"a": 10**400, "b": 1, "c": 1})
@example("a / (b - c)", {"a": 1, "b": 2, "c": 2.0})
@example("1 / a + b", {"a": math.inf, "b": 1, "c": 1})
@example("a * b", {"a": 1e308, "b": 10, "c": 1})
@example("a - b", {"a": 2**53, "b": 1, "c": 1})
def test_agrees_with_the_oracle(text: str, values: dict[str, object]) -> None:
    ours = parse_expr(text).evaluate(values)
    theirs = parse_arith(text).evaluate(values)
    assert ours == theirs or (ours is None and theirs is None), (text, values, ours, theirs)
    assert ours is None or (type(ours) is float and math.isfinite(ours))
