from __future__ import annotations

import time
from fractions import Fraction

import pytest

from alphallm.tasks.expr import ExprError, evaluate, leaves, parse


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1+2*3", 7),
        ("(1+2)*3", 9),
        ("8/3", Fraction(8, 3)),
        ("2**3**2", 512),  # right-associative
        ("-3+5", 2),
        ("2^10", 1024),
        ("1.5*4", 6),
        ("6 × 4 ÷ 3", 8),
        ("((((7))))", 7),
    ],
)
def test_evaluates_exactly(text: str, value: Fraction | int) -> None:
    assert evaluate(text) == value


@pytest.mark.parametrize(
    "text", ["", "1+", "(1+2", "1+2)", "2**0.5", "1/0", "abc", "__import__('os')", "1;2", "1e5"]
)
def test_rejects_bad_input(text: str) -> None:
    with pytest.raises(ExprError):
        evaluate(text)


@pytest.mark.parametrize(
    "hostile",
    [
        "9**9**9",
        "9**9**9**9**9",
        "2**256**256",
        "10**4000",
        "1" * 10_000,
        "1" * 10_000 + "+1",
        "(" * 10_000 + "1" + ")" * 10_000,
        "-" * 10_000 + "1",
        "2**" * 3000 + "2",
        "99999999999999999999*" * 200 + "9",
    ],
)
def test_refuses_hostile_input_fast(hostile: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ExprError):
        evaluate(hostile)
    assert time.perf_counter() - start < 0.05


def test_leaves_in_order() -> None:
    assert leaves(parse("(13-9)*(10-4)")) == [13, 9, 10, 4]
