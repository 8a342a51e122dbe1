"""``arith``: multi-step integer arithmetic, one calculation per line.

A problem is an expression such as ``38+7*6-19``. A solution reduces it one operation per line,
writing the calculation and the expression that is left, and ends with the answer::

    Q: 38+7*6-19
    7*6=42 -> 38+42-19
    38+42=80 -> 80-19
    80-19=61 -> 61
    Answer: 61

Difficulty is the number of operations and the operand size. All intermediate results are
non-negative integers (divisions are exact). Splits are assigned by a stable hash of the
expression, so train, dev and test never share a problem, whatever generator produced it.
"""

from __future__ import annotations

import random
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from alphallm.tasks.base import (
    Problem,
    Task,
    row_id,
    solution_lines,
    stable_bucket,
    stable_id,
    text_field,
)
from alphallm.tasks.expr import ExprError, evaluate, leaves, parse

__all__ = ["ArithDifficulty", "ArithTask", "reduce_once"]

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_STEP = re.compile(r"^(-?\d+)([-+*/])(-?\d+)=(-?\d+) -> (\S+)$")
_EXPRESSION = re.compile(r"^[0-9+\-*/() ]+$")


@dataclass(frozen=True)
class ArithDifficulty:
    """The difficulty knob: how many operations and how large the numbers are."""

    min_ops: int = 2
    max_ops: int = 5
    max_operand: int = 20
    max_value: int = 400  # bound on every intermediate result
    div_weight: float = 0.5  # relative to 1.0 for each of + - *

    def __post_init__(self) -> None:
        # Checked here, where every difficulty is made: the generator would fail mid-run instead.
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"min_ops {self.min_ops} must lie in 1..max_ops ({self.max_ops})")
        if self.max_operand < 1 or self.max_value < 1 or self.div_weight < 0:
            raise ValueError("max_operand and max_value must be at least 1, and div_weight not negative")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ArithDifficulty:
        return cls(**(data or {}))


BASE_DIFFICULTY = ArithDifficulty(min_ops=1, max_ops=5)
TEST_DIFFICULTY = ArithDifficulty(min_ops=4, max_ops=6)


def _tokens(expression: str) -> list[str]:
    return re.findall(r"\d+|[-+*/()]", expression)


def _apply(a: int, op: str, b: int) -> Fraction:
    if op == "+":
        return Fraction(a + b)
    if op == "-":
        return Fraction(a - b)
    if op == "*":
        return Fraction(a * b)
    if b == 0:
        raise ZeroDivisionError
    return Fraction(a, b)


def reduce_once(expression: str, *, result: int | None = None) -> tuple[str, str, Fraction]:
    """Performs the canonical next operation: innermost parentheses first, then ``* /`` before
    ``+ -``, left to right. Returns ``(calculation, rest, value)``, e.g. ``("7*6", "38+42-19", 42)``.

    ``result`` overrides what is written in the calculation's place (a noisy teacher's slip).
    """
    tokens = _tokens(expression)
    if ")" in tokens:
        close = tokens.index(")")
        open_ = max(i for i in range(close) if tokens[i] == "(")
        lo, hi = open_ + 1, close
    else:
        lo, hi = 0, len(tokens)
    group = tokens[lo:hi]
    ops = list(range(1, len(group), 2))
    high = [i for i in ops if _PRECEDENCE[group[i]] == 2]
    i = (high or ops)[0]
    a, op, b = int(group[i - 1]), group[i], int(group[i + 1])
    value = _apply(a, op, b)
    written = result if result is not None else value.numerator if value.denominator == 1 else None
    group[i - 1 : i + 2] = [str(written) if written is not None else "?"]
    if len(group) == 1 and lo > 0:  # a parenthesised group reduced to one number loses its parentheses
        tokens[lo - 1 : hi + 1] = group
    else:
        tokens[lo:hi] = group
    return f"{a}{op}{b}", "".join(tokens), value


def _canonical_path(expression: str, max_value: int) -> list[tuple[str, str, int]] | None:
    """The canonical reduction, or None if an intermediate result is negative, fractional or too big."""
    path: list[tuple[str, str, int]] = []
    current = expression
    while any(op in current for op in "+-*/"):
        try:
            calc, rest, value = reduce_once(current)
        except ZeroDivisionError:
            return None
        except (IndexError, KeyError, ValueError):
            # A shape with no canonical step, e.g. "(3)+4" or "2(3)": imagined problems can be anything.
            return None
        if value.denominator != 1 or not 0 <= value <= max_value:
            return None
        path.append((calc, rest, int(value)))
        current = rest
    return path


def _random_tree(rng: random.Random, n_ops: int, d: ArithDifficulty) -> tuple[str, int] | None:
    """A random expression with ``n_ops`` operations, rendered with minimal parentheses."""
    if n_ops == 0:
        value = rng.randint(1, d.max_operand)
        return str(value), value
    left_ops = rng.randint(0, n_ops - 1)
    left, right = _random_tree(rng, left_ops, d), _random_tree(rng, n_ops - 1 - left_ops, d)
    if left is None or right is None:
        return None
    (ltext, a), (rtext, b) = left, right
    choices = []
    if a + b <= d.max_value:
        choices.append(("+", 1.0))
    if a >= b:
        choices.append(("-", 1.0))
    if a * b <= d.max_value:
        choices.append(("*", 1.0))
    if b > 1 and a % b == 0:
        choices.append(("/", d.div_weight))
    if not choices:
        return None
    op = rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]
    value = int(_apply(a, op, b))
    lprec, rprec = _top_precedence(ltext), _top_precedence(rtext)
    if lprec < _PRECEDENCE[op]:
        ltext = f"({ltext})"
    if rprec < _PRECEDENCE[op] or (rprec == _PRECEDENCE[op] and op in "-/"):
        rtext = f"({rtext})"
    return f"{ltext}{op}{rtext}", value


def _top_precedence(text: str) -> int:
    """Precedence of the outermost operator of a rendered expression (3 for a bare number)."""
    depth, best = 0, 3
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and ch in _PRECEDENCE:
            best = min(best, _PRECEDENCE[ch])
    return best


class ArithTask(Task):
    """Multi-step arithmetic with an exact verifier and a step-recomputing tool verifier."""

    name: ClassVar[str] = "arith"
    has_generator: ClassVar[bool] = True
    difficulty_keys: ClassVar[dict[str, Any]] = typing.get_type_hints(ArithDifficulty)
    problem_prefix: ClassVar[str] = "Q: "
    max_steps: ClassVar[int] = 12
    max_option_tokens: ClassVar[int] = 48
    max_solution_tokens: ClassVar[int] = 400
    has_corruptions: ClassVar[bool] = True
    split_sizes: ClassVar[dict[str, int]] = {"train": 2000, "dev": 200, "test": 200}
    split_seeds: ClassVar[dict[str, int]] = {"train": 11, "dev": 12, "test": 13}

    # -- splits ---------------------------------------------------------------------------------
    def split_of(self, question: str) -> str:
        bucket = stable_bucket(question, salt="arith")
        return "test" if bucket < 10 else "dev" if bucket < 20 else "train"

    def problems(self, split: str) -> list[Problem]:
        if split not in self.split_sizes:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(self.split_sizes)}")
        difficulty = BASE_DIFFICULTY if split == "train" else TEST_DIFFICULTY
        rng = random.Random(self.split_seeds[split])
        return self._sample(rng, self.split_sizes[split], difficulty, split=split, id_prefix=f"arith-{split}")

    def check_difficulty(self, difficulty: dict[str, Any]) -> None:
        ArithDifficulty.from_dict(difficulty)

    def generate(self, rng: random.Random, n: int, difficulty: dict[str, Any] | None = None) -> list[Problem]:
        d = ArithDifficulty.from_dict(difficulty) if difficulty else BASE_DIFFICULTY
        problems = self._sample(rng, n, d, split="train", id_prefix="arith-gen")
        # Ids from the question, so problems generated in different rounds never share one.
        return [Problem(stable_id("arith-gen", p.question), p.question, p.answer) for p in problems]

    def _sample(
        self, rng: random.Random, n: int, d: ArithDifficulty, *, split: str, id_prefix: str
    ) -> list[Problem]:
        seen: set[str] = set()
        out: list[Problem] = []
        while len(out) < n:
            tree = _random_tree(rng, rng.randint(d.min_ops, d.max_ops), d)
            if tree is None or tree[0] in seen or self.split_of(tree[0]) != split:
                continue
            path = _canonical_path(tree[0], d.max_value)
            if path is None:
                continue
            seen.add(tree[0])
            out.append(Problem(f"{id_prefix}-{len(out)}", tree[0], str(tree[1])))
        return out

    # -- problems from users and from the model -------------------------------------------------
    def problem_from_row(self, row: dict[str, Any], *, default_id: str) -> Problem:
        question = text_field(row, "problem", "question", hint=' (an arithmetic expression such as "3+4*5")')
        question = question.replace(" ", "")
        value = self._value(question)
        if value is None or _canonical_path(question, 10**9) is None:
            raise ValueError(
                "'problem' must be an arithmetic expression whose every step is a non-negative integer: "
                f"{question!r}"
            )
        answer = row.get("answer")
        if answer is not None and str(answer).strip() != str(value):
            raise ValueError(f"'answer' {answer!r} does not equal the expression's value {value}")
        return Problem(row_id(row, default_id), question, str(value))

    def parse_question(self, text: str) -> Problem | None:
        question = text.strip().replace(" ", "")
        if not question or not any(op in question for op in "+-*/"):
            return None
        value = self._value(question)
        if value is None or _canonical_path(question, 10**6) is None:
            return None
        return Problem(stable_id("arith-q", question), question, str(value))

    @staticmethod
    def _value(question: str) -> int | None:
        if not _EXPRESSION.match(question):
            return None
        try:
            value = evaluate(question)
        except ExprError:
            return None
        return int(value) if value.denominator == 1 else None

    # -- solutions ------------------------------------------------------------------------------
    def solve(self, problem: Problem) -> str:
        """The reference solution (canonical reduction order)."""
        return self.teacher_solution(problem, random.Random(0), noise=0.0)

    def teacher_solution(self, problem: Problem, rng: random.Random, *, noise: float = 0.0) -> str:
        """The canonical solution, where each result is wrong with probability ``noise`` (a noisy
        teacher: the slip is carried forward consistently, so the final answer is wrong too)."""
        lines, current = [], problem.question
        while any(op in current for op in "+-*/"):
            calc, rest, value = reduce_once(current)
            result = int(value)
            if noise and rng.random() < noise:
                slip = result + rng.choice([-10, -2, -1, 1, 2, 10])
                _, slipped_rest, _ = reduce_once(current, result=slip)
                # Keep a slip only if the rest stays in the task's domain (no fractions, no negatives).
                if slip >= 0 and _canonical_path(slipped_rest, 10**6) is not None:
                    result, rest = slip, slipped_rest
            lines.append(f"{calc}={result} -> {rest}")
            current = rest
        lines.append(f"{self.answer_prefix} {current}")
        return "".join(line + "\n" for line in lines)

    def normalize_answer(self, answer: str) -> str | None:
        answer = answer.replace(",", "").strip()
        return answer if re.fullmatch(r"-?\d+", answer) else None

    def check(self, problem: Problem, solution: str) -> bool | None:
        if problem.answer is None:
            return None
        answer = self.extract_answer(solution)
        return answer is not None and int(answer) == int(problem.answer)

    def check_step(self, problem: Problem, prefix: str, step: str) -> bool | None:
        """Recomputes the step: the calculation must be exact, and the expression left must keep
        the value of the previous expression with exactly one operation fewer."""
        step = step.rstrip("\n")
        if self.is_answer_line(step):
            previous = _last_expression(problem.question, prefix)
            answer = self.normalize_answer(step[len(self.answer_prefix) :])
            return previous is not None and answer is not None and previous == answer
        match = _STEP.match(step)
        previous = _last_expression(problem.question, prefix)
        if match is None or previous is None:
            return False
        a, op, b, c, rest = match.groups()
        try:
            if _apply(int(a), op, int(b)) != int(c):
                return False
            before, after = parse(previous), parse(rest)
            if evaluate(rest) != evaluate(previous):
                return False
        except (ExprError, ZeroDivisionError):
            return False
        return len(leaves(after)) == len(leaves(before)) - 1 and Fraction(int(c)) in leaves(after)

    def corrupt(self, problem: Problem, solution: str, rng: random.Random) -> str | None:
        """One step of ``solution`` goes wrong in one of the ways this task's policies err, and the
        rest is reduced correctly from there (canonical order), so the answer is wrong too:

        - ``result``: the calculation's result slips (``80-19=62``);
        - ``operand``: an operand is miscopied and the calculation done right on it (``13+18``
          written as ``18+18=36``);
        - ``copy``: a number of the expression left is miscopied (``-> 80-91``)."""
        matches = [_STEP.match(line) for line in self.steps(solution)]
        answer = self.extract_answer(solution)
        steps = [m for m in matches if m is not None]
        if not steps or len(steps) != len(matches) or answer is None:
            return None
        i = rng.randrange(len(steps))
        previous = problem.question if i == 0 else steps[i - 1].group(5)
        a, op, b, c, rest = steps[i].groups()
        place = _reduction_place(previous, f"{a}{op}{b}", c, rest)
        if place is None:
            return None
        kind = rng.choice(("result", "operand", "copy"))
        numbers = [t for t in _tokens(previous) if t.isdigit()]
        if kind == "operand":
            operands = [a, b]
            side = rng.randrange(2)
            operands[side] = rng.choice([n for n in numbers if n != operands[side]] or [a])
            a, b = operands
            try:
                value = _apply(int(a), op, int(b))
            except ZeroDivisionError:
                return None
            if value.denominator != 1 or value < 0:
                return None
            c = str(value.numerator)
        elif kind == "result" or len(_tokens(rest)) == 1:
            c = str(_slip(int(c), rng))
        rest = place(c)
        if kind == "copy" and len(_tokens(rest)) > 1:
            tokens, result_at = _tokens(rest), _result_index(place)
            spots = [j for j, t in enumerate(tokens) if t.isdigit() and j != result_at]
            if not spots:
                return None
            j = rng.choice(spots)
            tokens[j] = str(_slip(int(tokens[j]), rng))
            rest = "".join(tokens)
        # No number larger than the solution's own (plus a slip): this policy's mistakes are near misses.
        bound = max(int(n) for n in re.findall(r"\d+", solution)) + 10
        path = _canonical_path(rest, bound)
        if path is None or int(c) > bound:
            return None
        lines = [m.group(0) for m in steps[:i]] + [f"{a}{op}{b}={c} -> {rest}"]
        lines += [f"{calc}={value} -> {left}" for calc, left, value in path]
        final = path[-1][1] if path else rest
        if self.normalize_answer(final) in (None, answer):
            return None
        return "".join(line + "\n" for line in [*lines, f"{self.answer_prefix} {final}"])

    def mistake(self, problem: Problem, solution: str) -> tuple[int, str] | None:
        """The first wrong line of ``solution`` (by the step verifier) and what went wrong there:
        ``result`` (the calculation's result is wrong), ``miscopy`` (the calculation is right but
        it or the expression left does not follow from the expression before), ``format`` (not a
        calculation line) or ``answer`` (the answer line); None when no line is wrong."""
        prefix = ""
        for i, line in enumerate(solution_lines(solution)):
            if self.check_step(problem, prefix, line) is False:
                if self.is_answer_line(line):
                    return i, "answer"
                match = _STEP.match(line)
                if match is None:
                    return i, "format"
                a, op, b, c, _ = match.groups()
                try:
                    right = _apply(int(a), op, int(b)) == int(c)
                except ZeroDivisionError:
                    right = False
                return i, "miscopy" if right else "result"
            prefix += line + "\n"
        return None


def _slip(value: int, rng: random.Random) -> int:
    """A nearby wrong number: off by one, two or ten (never negative)."""
    return abs(value + rng.choice([-10, -2, -1, 1, 2, 10]))


def _reduction_place(previous: str, calc: str, result: str, rest: str) -> Callable[[str], str] | None:
    """Where ``calc`` was reduced in ``previous`` to give ``rest``: a function that writes another
    result in its place, or None when ``rest`` is not ``previous`` with ``calc`` reduced."""
    tokens, want = _tokens(previous), _tokens(calc)
    for j in range(len(tokens) - 2):
        if tokens[j : j + 3] != want:
            continue
        lo, hi = j, j + 3
        # A parenthesised group reduced to one number loses its parentheses.
        if lo > 0 and hi < len(tokens) and tokens[lo - 1] == "(" and tokens[hi] == ")":
            lo, hi = lo - 1, hi + 1
        for start, stop in {(lo, hi), (j, j + 3)}:

            def place(value: str, start: int = start, stop: int = stop) -> str:
                return "".join([*tokens[:start], value, *tokens[stop:]])

            if place(result) == rest:
                return place
    return None


def _result_index(place: Callable[[str], str]) -> int:
    """The token index of the result that ``place`` writes."""
    marker = "0" * 40  # a number no expression holds
    return _tokens(place(marker)).index(marker)


def _last_expression(question: str, prefix: str) -> str | None:
    """The expression the next step must reduce: the question, or the rest of the last step."""
    lines = [line for line in solution_lines(prefix) if line.strip()]
    if not lines:
        return question
    match = _STEP.match(lines[-1])
    return match.group(5) if match else None
