"""A safe parser and evaluator for arithmetic written by models.

No verifier ever runs ``eval``/``exec`` on model text. This module parses ``+ - * / ** ^``, unary
signs, parentheses and decimal literals into a small tree and evaluates it with exact rationals
(``fractions.Fraction``). Every input is bounded before any work is done: its length, the digits of
a literal, the nesting depth and the size of every intermediate result, so hostile inputs such as
``9**9**9``, a 10,000-digit literal or ten thousand nested parentheses are refused in microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, TypeAlias

__all__ = ["ExprError", "Limits", "Node", "evaluate", "evaluate_node", "format_number", "leaves", "parse"]


class ExprError(ValueError):
    """The text is not an expression we accept, or evaluating it would exceed a limit."""


@dataclass(frozen=True)
class Limits:
    """Bounds that keep parsing and evaluation cheap whatever the input."""

    max_chars: int = 2000
    max_literal_digits: int = 40
    max_depth: int = 64
    max_bits: int = 4096  # of any numerator or denominator met during evaluation
    max_exponent: int = 256


DEFAULT_LIMITS: Final = Limits()

# A node is a number, a negation or a binary operation: ("num", Fraction) | ("neg", node) | (op, l, r).
Node: TypeAlias = tuple[str, Fraction] | tuple[str, "Node"] | tuple[str, "Node", "Node"]

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|(\*\*|[-+*/^()×÷]))")
_OP_ALIASES: Final = {"×": "*", "÷": "/", "^": "**"}


def _tokenize(text: str, limits: Limits) -> list[str]:
    if len(text) > limits.max_chars:
        raise ExprError(f"expression longer than {limits.max_chars} characters")
    tokens: list[str] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExprError(f"unexpected character {text[pos:].lstrip()[:1]!r}")
        number, op = match.groups()
        if number is not None and len(number) > limits.max_literal_digits:
            raise ExprError(f"number with more than {limits.max_literal_digits} digits")
        tokens.append(number if number is not None else _OP_ALIASES.get(op, op))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent with an explicit depth counter (refuses before Python's recursion limit)."""

    def __init__(self, tokens: list[str], limits: Limits) -> None:
        self.tokens, self.pos, self.limits, self.depth = tokens, 0, limits, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExprError("expression ends too early")
        self.pos += 1
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise ExprError(f"expression nested deeper than {self.limits.max_depth}")

    def expr(self) -> Node:
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            node = (op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            node = (op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.peek() in ("+", "-"):
            self.enter()
            op = self.take()
            inner = self.unary()
            self.depth -= 1
            return ("neg", inner) if op == "-" else inner
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.peek() == "**":
            self.take()
            self.enter()
            exponent = self.unary()  # right-associative: 2**3**2 == 2**(3**2)
            self.depth -= 1
            return ("**", base, exponent)
        return base

    def atom(self) -> Node:
        token = self.take()
        if token == "(":
            self.enter()
            node = self.expr()
            if self.take() != ")":
                raise ExprError("missing ')'")
            self.depth -= 1
            return node
        if token[0].isdigit() or token[0] == ".":
            return ("num", Fraction(token))
        raise ExprError(f"unexpected {token!r}")


def parse(text: str, *, limits: Limits = DEFAULT_LIMITS) -> Node:
    """Parses ``text`` into a node tree; raises ExprError on anything else."""
    parser = _Parser(_tokenize(text, limits), limits)
    node = parser.expr()
    if parser.peek() is not None:
        raise ExprError(f"unexpected {parser.peek()!r}")
    return node


def _check_size(value: Fraction, limits: Limits) -> Fraction:
    if value.numerator.bit_length() > limits.max_bits or value.denominator.bit_length() > limits.max_bits:
        raise ExprError(f"intermediate result larger than {limits.max_bits} bits")
    return value


def _power(base: Fraction, exponent: Fraction, limits: Limits) -> Fraction:
    if exponent.denominator != 1:
        raise ExprError("non-integer exponent")
    e = abs(exponent.numerator)
    if e > limits.max_exponent:
        raise ExprError(f"exponent above {limits.max_exponent}")
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if size * e > limits.max_bits:  # checked before computing, so 9**9**9 costs nothing
        raise ExprError(f"power larger than {limits.max_bits} bits")
    if base == 0 and exponent < 0:
        raise ExprError("division by zero")
    return base**exponent.numerator


def evaluate_node(node: Node, *, limits: Limits = DEFAULT_LIMITS) -> Fraction:
    """Evaluates a parsed tree exactly."""
    kind = node[0]
    if kind == "num":
        return node[1]  # type: ignore[return-value]  # a "num" node holds a Fraction
    if kind == "neg":
        return -evaluate_node(node[1], limits=limits)  # type: ignore[arg-type]
    left = evaluate_node(node[1], limits=limits)  # type: ignore[arg-type]
    right = evaluate_node(node[2], limits=limits)  # type: ignore[misc]
    if kind == "+":
        return _check_size(left + right, limits)
    if kind == "-":
        return _check_size(left - right, limits)
    if kind == "*":
        return _check_size(left * right, limits)
    if kind == "/":
        if right == 0:
            raise ExprError("division by zero")
        return _check_size(left / right, limits)
    return _check_size(_power(left, right, limits), limits)


def evaluate(text: str, *, limits: Limits = DEFAULT_LIMITS) -> Fraction:
    """Parses and evaluates ``text`` exactly. Raises ExprError for bad or oversized input."""
    return evaluate_node(parse(text, limits=limits), limits=limits)


def leaves(node: Node) -> list[Fraction]:
    """The number literals of a tree, left to right (Game of 24 checks each input is used once)."""
    out: list[Fraction] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current[0] == "num":
            out.append(current[1])  # type: ignore[arg-type]
        else:
            stack.extend(reversed(current[1:]))  # type: ignore[arg-type]
    return out


def format_number(value: Fraction) -> str:
    """``Fraction(7, 3)`` -> ``"7/3"``, ``Fraction(6)`` -> ``"6"``."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"
