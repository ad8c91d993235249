"""The arithmetic language of derived columns, e.g. ``"clicks / impressions"``.

A derived column is computed from a window's aggregated values after the combine step. The
language is deliberately tiny -- numbers, lowercase names, ``+ - * /``, unary minus and
parentheses -- and is parsed by a hand-written recursive-descent parser into a postfix
program that a loop evaluates. User text is never passed to ``eval`` or ``compile``.

Bounded by construction, so that a view that passes ``liveagg validate`` cannot fail at run
time: an expression has at most :data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels
of parentheses and minus signs (the parser recurses once per level), and evaluation uses no
recursion at all, so a long chain ``a + b + c + ...`` needs no more stack than ``a + b``.

Arithmetic is in floating point (IEEE 754 doubles), as in SQL engines' ``DOUBLE``: integer
inputs and literals are converted to floats, so ``events - clicks`` is ``1788.0``. Evaluation
follows SQL's null rules, because the inputs are aggregates that may be null (an all-null
group): any null or non-numeric operand gives ``None``, and so do operands beyond a double's
range, division by zero and results that are not finite (``inf``/``nan`` cannot be written to
JSON or Cassandra).

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

import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from math import isfinite
from typing import Any

#: Deeper nesting than this is certainly a mistake; it bounds the parser's recursion.
MAX_DEPTH = 64
#: Longer expressions are not formulas anyone reads; it bounds the work per output row.
MAX_LENGTH = 1000

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


def _quoted(text: str) -> str:
    """The expression as shown in messages: quoted, and cut when long."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


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
            f"syntax error in {_quoted(text)} at column {position + 1}: expected {expected}, "
            f"found {found}"
        )


class ExprTooLong(ExprSyntaxError):
    """The expression is longer than :data:`MAX_LENGTH`; it is not read at all."""

    def __init__(self, text: str) -> None:
        ValueError.__init__(
            self,
            f"the expression is {len(text):,} characters long; at most {MAX_LENGTH:,} are "
            "accepted (split it into several derived columns)",
        )
        self.text = text
        self.position = MAX_LENGTH
        self.expected = f"at most {MAX_LENGTH:,} characters"


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


def _as_float(value: Any) -> float | None:
    """An operand as a finite float, or ``None`` (SQL's null) when it cannot be one."""
    kind = type(value)
    if kind is float:  # the common cases first: no isinstance against an ABC
        return value if isfinite(value) else None
    # bool is an int subclass, but True + True is not an aggregate anyone meant to compute.
    if kind is bool or (kind is not int and not isinstance(value, numbers.Real)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond a double's range
        return None
    return number if isfinite(number) else None


# Postfix instructions, each ``(code, argument)``: push a constant, push a column's value,
# negate the top of the stack, or combine the two top values with an operator.
_CONST, _LOAD, _NEG, _ADD, _SUB, _MUL, _DIV = range(7)
_BINARY = {"+": _ADD, "-": _SUB, "*": _MUL, "/": _DIV}
_Program = tuple[tuple[int, Any], ...]


def _run(program: _Program, values: Mapping[str, Any]) -> float | None:
    """Evaluate a postfix program with an explicit stack: no recursion, whatever its length.

    Every operator propagates null, so the first null operand, division by zero or
    non-finite intermediate result makes the whole value null: evaluation stops there.
    """
    stack: list[float] = []
    push, pop = stack.append, stack.pop
    for code, arg in program:
        if code == _LOAD:
            value = _as_float(values.get(arg))
            if value is None:
                return None
            push(value)
        elif code == _CONST:
            push(arg)
        elif code == _NEG:
            stack[-1] = -stack[-1]
        else:
            b = pop()
            a = stack[-1]
            if code == _ADD:
                result = a + b
            elif code == _SUB:
                result = a - b
            elif code == _MUL:
                result = a * b
            elif b == 0:
                return None
            else:
                result = a / b
            if not isfinite(result):
                return None
            stack[-1] = result
    return stack[0]


class _Parser:
    """``expr := term (('+'|'-') term)*``; ``term := unary (('*'|'/') unary)*``;
    ``unary := '-' unary | primary``; ``primary := number | name | '(' expr ')'``.

    Emits postfix code as it goes; it recurses only into parentheses and minus signs, at most
    :data:`MAX_DEPTH` deep.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        self.names: list[str] = []
        self.code: list[tuple[int, Any]] = []

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def fail(self, expected: str) -> ExprSyntaxError:
        token = self.current
        found = "the end of the expression" if token.kind == "end" else _quoted(token.text)
        return ExprSyntaxError(self.text, token.position, expected, found)

    def parse(self) -> _Program:
        if self.current.kind == "end":
            raise self.fail(_OPERAND)
        self.expr()
        if self.current.kind != "end":
            raise self.fail("an operator (+ - * /) or the end of the expression")
        return tuple(self.code)

    def expr(self) -> None:
        self.term()
        while self.current.kind == "op" and self.current.text in "+-":
            op = self.current.text
            self.index += 1
            self.term()
            self.code.append((_BINARY[op], None))

    def term(self) -> None:
        self.unary()
        while self.current.kind == "op" and self.current.text in "*/":
            op = self.current.text
            self.index += 1
            self.unary()
            self.code.append((_BINARY[op], None))

    def unary(self) -> None:
        if self.current.kind == "op" and self.current.text == "-":
            self.index += 1
            self.enter()
            self.unary()
            self.depth -= 1
            self.code.append((_NEG, None))
            return
        self.primary()

    def primary(self) -> None:
        token = self.current
        if token.kind == "number":
            value = float(token.text)  # no digit limit, unlike int(); huge ones become inf
            if not isfinite(value):
                raise self.fail("a number a float can hold")
            self.index += 1
            self.code.append((_CONST, value))
            return
        if token.kind == "name":
            self.index += 1
            if token.text not in self.names:
                self.names.append(token.text)
            self.code.append((_LOAD, token.text))
            return
        if token.kind == "op" and token.text == "(":
            self.index += 1
            self.enter()
            self.expr()
            self.depth -= 1
            if not (self.current.kind == "op" and self.current.text == ")"):
                raise self.fail("')' or an operator (+ - * /)")
            self.index += 1
            return
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
        evaluate: ``values -> float | None``; a missing, null, non-numeric or out-of-range
            operand, division by zero and non-finite results give ``None``. It runs the
            expression's postfix program (bound once: derived columns are on the row path).
    """

    text: str
    names: tuple[str, ...]
    evaluate: Callable[[Mapping[str, Any]], float | None] = field(repr=False, compare=False)

    def __call__(self, values: Mapping[str, Any]) -> float | None:
        return self.evaluate(values)

    def __reduce__(self) -> tuple[Any, ...]:
        # The text is the whole state.
        return (parse_expr, (self.text,))


def parse_expr(text: str) -> Expr:
    """Parse a derived-column expression.

    Raises:
        ExprSyntaxError: naming the column where parsing stopped and what was expected there;
            :class:`ExprTooLong` (a subclass) for text longer than :data:`MAX_LENGTH`.
    """
    if not isinstance(text, str):
        raise TypeError(f"an expression is a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExprTooLong(text)
    parser = _Parser(text)
    program = parser.parse()
    return Expr(text, tuple(parser.names), partial(_run, program))
