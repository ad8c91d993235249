"""The arithmetic language of derived columns, e.g. ``"clicks / impressions"``.

A derived column is computed from a window's aggregated values after the combine step. The
language is deliberately tiny -- numbers, lowercase names, ``+ - * /``, unary minus and
parentheses -- and is parsed by a hand-written recursive-descent parser into plain closures.
User text is never passed to ``eval`` or ``compile``.

Evaluation follows SQL's null rules, because the inputs are aggregates that may be null
(an all-null group): any null or non-numeric operand gives ``None``, and so do division by
zero and results that are not finite (``inf``/``nan`` cannot be written to JSON or Cassandra).

Example:
    >>> ctr = parse_expr("clicks / impressions")
    >>> ctr.names
    ('clicks', 'impressions')
    >>> ctr.evaluate({"clicks": 3, "impressions": 120})
    0.025
    >>> ctr.evaluate({"clicks": 3, "impressions": 0}) is None
    True
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Number = int | float
Evaluator = Callable[[Mapping[str, Any]], Number | None]

#: Deeper nesting than this is certainly a mistake and would exhaust Python's stack.
MAX_DEPTH = 64

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[a-z][a-z0-9_]*)
  | (?P<op>[-+*/()])
    """,
    re.VERBOSE,
)

_OPERAND = "a number, a column name or '('"


class ExprSyntaxError(ValueError):
    """The expression does not parse. ``position`` is 0-based; the message uses 1-based columns.

    Attributes:
        text: The expression as written.
        position: Offset of the offending character (``len(text)`` at the end).
        expected: What the parser would have accepted there.
    """

    def __init__(self, text: str, position: int, expected: str, found: str) -> None:
        self.text = text
        self.position = position
        self.expected = expected
        super().__init__(
            f"syntax error in {text!r} at column {position + 1}: expected {expected}, found {found}"
        )


@dataclass(frozen=True)
class _Token:
    kind: str  # number | name | op | end
    text: str
    position: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            char = text[position]
            hint = (
                "; column names are lowercase"
                if char.isalpha()
                else "; only + - * / and parentheses are allowed"
            )
            raise ExprSyntaxError(text, position, _OPERAND + " or an operator", f"{char!r}{hint}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _as_number(value: Any) -> Number | None:
    # bool is an int subclass, but True + True is not an aggregate anyone meant to compute.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return value  # type: ignore[return-value]


def _finite(value: Number) -> Number | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _constant(value: Number) -> Evaluator:
    def evaluate(values: Mapping[str, Any]) -> Number | None:
        return value

    return evaluate


def _lookup(name: str) -> Evaluator:
    def evaluate(values: Mapping[str, Any]) -> Number | None:
        return _as_number(values.get(name))

    return evaluate


def _negate(operand: Evaluator) -> Evaluator:
    def evaluate(values: Mapping[str, Any]) -> Number | None:
        value = operand(values)
        return None if value is None else -value

    return evaluate


def _binary(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    def evaluate(values: Mapping[str, Any]) -> Number | None:
        a = left(values)
        if a is None:
            return None
        b = right(values)
        if b is None:
            return None
        try:
            if op == "+":
                result = a + b
            elif op == "-":
                result = a - b
            elif op == "*":
                result = a * b
            else:
                if b == 0:
                    return None
                result = a / b
        except (OverflowError, ZeroDivisionError):
            return None
        return _finite(result)

    return evaluate


class _Parser:
    """``expr := term (('+'|'-') term)*``; ``term := unary (('*'|'/') unary)*``;
    ``unary := '-' unary | primary``; ``primary := number | name | '(' expr ')'``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        self.names: list[str] = []

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def fail(self, expected: str) -> ExprSyntaxError:
        token = self.current
        found = "the end of the expression" if token.kind == "end" else repr(token.text)
        return ExprSyntaxError(self.text, token.position, expected, found)

    def parse(self) -> Evaluator:
        if self.current.kind == "end":
            raise self.fail(_OPERAND)
        evaluator = self.expr()
        if self.current.kind != "end":
            raise self.fail("an operator (+ - * /) or the end of the expression")
        return evaluator

    def expr(self) -> Evaluator:
        result = self.term()
        while self.current.kind == "op" and self.current.text in "+-":
            op = self.current.text
            self.index += 1
            result = _binary(op, result, self.term())
        return result

    def term(self) -> Evaluator:
        result = self.unary()
        while self.current.kind == "op" and self.current.text in "*/":
            op = self.current.text
            self.index += 1
            result = _binary(op, result, self.unary())
        return result

    def unary(self) -> Evaluator:
        if self.current.kind == "op" and self.current.text == "-":
            self.index += 1
            self.enter()
            operand = self.unary()
            self.depth -= 1
            return _negate(operand)
        return self.primary()

    def primary(self) -> Evaluator:
        token = self.current
        if token.kind == "number":
            self.index += 1
            is_float = any(c in token.text for c in ".eE")
            value: Number = float(token.text) if is_float else int(token.text)
            if _finite(value) is None:
                self.index -= 1
                raise self.fail("a number a float can hold")
            return _constant(value)
        if token.kind == "name":
            self.index += 1
            if token.text not in self.names:
                self.names.append(token.text)
            return _lookup(token.text)
        if token.kind == "op" and token.text == "(":
            self.index += 1
            self.enter()
            inner = self.expr()
            self.depth -= 1
            if not (self.current.kind == "op" and self.current.text == ")"):
                raise self.fail("')' or an operator (+ - * /)")
            self.index += 1
            return inner
        raise self.fail(_OPERAND)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprSyntaxError(
                self.text,
                self.current.position,
                f"at most {MAX_DEPTH} nested parentheses or minus signs",
                "deeper nesting",
            )


@dataclass(frozen=True)
class Expr:
    """A parsed expression.

    Attributes:
        text: The expression as written.
        names: The column names it reads, in order of first use.
        evaluate: ``values -> number | None``; missing, null or non-numeric inputs, division by
            zero and non-finite results give ``None``.
    """

    text: str
    names: tuple[str, ...]
    evaluate: Evaluator = field(repr=False, compare=False)

    def __call__(self, values: Mapping[str, Any]) -> Number | None:
        return self.evaluate(values)

    def __reduce__(self) -> tuple[Any, ...]:
        # Closures do not pickle with the standard library; the text is the whole state.
        return (parse_expr, (self.text,))


def parse_expr(text: str) -> Expr:
    """Parse a derived-column expression.

    Raises:
        ExprSyntaxError: naming the column where parsing stopped and what was expected there.
    """
    if not isinstance(text, str):
        raise TypeError(f"an expression is a string, got {type(text).__name__}")
    parser = _Parser(text)
    evaluator = parser.parse()
    return Expr(text, tuple(parser.names), evaluator)
