"""``game24``: the Game of 24 on the Tree of Thoughts puzzles.

Four numbers; combine two of them with ``+ - * /`` per move until one number is left; it must be
24. One move per line with the numbers left (sorted), the last line the full expression::

    Input: 4 9 10 13
    13-9=4 (left: 4 4 10)
    10-4=6 (left: 4 6)
    4*6=24 (left: 24)
    Answer: (13-9)*(10-4)=24

Arithmetic is exact (fractions such as ``7/3`` are legal). The puzzles are ``24.csv`` of Tree of
Thoughts (MIT licence, in ``tasks/data``): ranks 901-1000 are the test split, every tenth other rank
the dev split, the rest train. The base model's documents come from random legal moves
(``teacher_solution``): it learns the rules, not the strategy.
"""

from __future__ import annotations

import csv
import functools
import itertools
import random
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from importlib import resources
from typing import Any, ClassVar

from alphallm.tasks.base import Problem, Task, row_id, solution_lines
from alphallm.tasks.expr import ExprError, evaluate_node, format_number, leaves, parse

__all__ = ["Game24Task", "legal_moves", "sample_solutions", "solve_numbers"]

TARGET = Fraction(24)
# A policy may give up on an attempt and start again from the puzzle's numbers in the same output
# (benchmarks/retry_traces.py): a line of its own, after which the moves start afresh.
RETRY_LINE = "back"
# In a move, a fractional operand is parenthesised so "1/(2/3)" cannot be misread as "(1/2)/3".
_OPERAND = r"-?\d+|\(-?\d+/\d+\)"
_NUMBER = r"-?\d+(?:/\d+)?"
_MOVE = re.compile(rf"^({_OPERAND})([-+*/])({_OPERAND})=({_NUMBER}) \(left: ([^)]*)\)$")
_OP_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
Move = tuple[Fraction, str, Fraction, Fraction]  # (a, op, b, result)


def _attempt(prefix: str) -> list[str]:
    """The non-blank lines of the attempt under way: those after the last ``back``."""
    lines = [line for line in solution_lines(prefix) if line.strip()]
    backs = [i for i, line in enumerate(lines) if line.strip() == RETRY_LINE]
    return lines[backs[-1] + 1 :] if backs else lines


def _number(text: str) -> Fraction:
    return Fraction(text.strip("()"))


def _operand(value: Fraction) -> str:
    text = format_number(value)
    return f"({text})" if value.denominator != 1 else text


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b if b != 0 else None


def _format_left(numbers: list[Fraction]) -> str:
    return " ".join(format_number(x) for x in sorted(numbers))


def legal_moves(numbers: tuple[Fraction, ...]) -> list[tuple[int, int, Move]]:
    """Moves on unordered pairs: ``a+b``, ``a*b``, ``larger-smaller`` and both divisions.

    Returns ``(i, j, move)`` with the indices of the two numbers used. Negative results are legal in
    the game but never proposed here, as in the Tree of Thoughts prompts.
    """
    moves = []
    for i, j in itertools.combinations(range(len(numbers)), 2):
        a, b = sorted((numbers[i], numbers[j]), reverse=True)
        candidates = [(a, "+", b), (a, "*", b), (a, "-", b), (a, "/", b), (b, "/", a)]
        seen = set()
        for x, op, y in candidates:
            result = _apply(x, op, y)
            if result is not None and (x, op, y) not in seen:
                seen.add((x, op, y))
                moves.append((i, j, (x, op, y, result)))
    return moves


@functools.lru_cache(maxsize=1 << 16)
def _solve_sorted(numbers: tuple[Fraction, ...]) -> tuple[Move, ...] | None:
    if len(numbers) == 1:
        return () if numbers[0] == TARGET else None
    for i, j, move in legal_moves(numbers):
        rest = tuple(sorted([x for k, x in enumerate(numbers) if k not in (i, j)] + [move[3]]))
        tail = _solve_sorted(rest)
        if tail is not None:
            return (move, *tail)
    return None


def solve_numbers(numbers: Sequence[int | Fraction]) -> list[Move] | None:
    """A sequence of moves reaching 24, or None when the puzzle has no solution."""
    found = _solve_sorted(tuple(sorted(Fraction(x) for x in numbers)))
    return None if found is None else list(found)


def sample_solutions(numbers: Sequence[int | Fraction], k: int, rng: random.Random) -> list[list[Move]]:
    """Up to ``k`` distinct move sequences that reach 24, in random order (a depth-first search
    over shuffled legal moves that stops after ``20 k`` solutions, so large counts stay cheap)."""
    found: dict[tuple[Move, ...], None] = {}  # equal numbers make the same moves twice: kept once
    path: list[Move] = []

    def walk(pool: tuple[Fraction, ...]) -> None:
        if len(found) >= 20 * k:
            return
        if len(pool) == 1:
            if pool[0] == TARGET:
                found[tuple(path)] = None
            return
        moves = legal_moves(pool)
        rng.shuffle(moves)
        for i, j, move in moves:
            path.append(move)
            walk(tuple(sorted([x for n, x in enumerate(pool) if n not in (i, j)] + [move[3]])))
            path.pop()

    walk(tuple(sorted(Fraction(x) for x in numbers)))
    out = [list(moves) for moves in found]
    rng.shuffle(out)
    return out[:k]


def _wrap(expr: str, prec: int, op: str, right: bool) -> str:
    need = prec < _OP_PRECEDENCE[op] or (right and prec == _OP_PRECEDENCE[op] and op in "-/")
    return f"({expr})" if need else expr


class _Pool:
    """Numbers left, each with the expression that produced it (to write the final answer)."""

    def __init__(self, numbers: list[Fraction]) -> None:
        self.items: list[tuple[Fraction, str, int]] = [(x, format_number(x), 3) for x in numbers]

    def combine(self, i: int, j: int, move: Move) -> None:
        a, op, _, result = move
        first = i if self.items[i][0] == a else j
        second = j if first == i else i
        _, ea, pa = self.items[first]
        _, eb, pb = self.items[second]
        expr = f"{_wrap(ea, pa, op, False)}{op}{_wrap(eb, pb, op, True)}"
        self.items = [it for k, it in enumerate(self.items) if k not in (i, j)] + [
            (result, expr, _OP_PRECEDENCE[op])
        ]

    def numbers(self) -> tuple[Fraction, ...]:
        return tuple(x for x, _, _ in self.items)


TEACHER_MAX = 100


def _teachable(result: Fraction) -> bool:
    return result.denominator == 1 and 0 <= result <= TEACHER_MAX


def _move_line(move: Move, left: tuple[Fraction, ...]) -> str:
    a, op, b, result = move
    return f"{_operand(a)}{op}{_operand(b)}={format_number(result)} (left: {_format_left(list(left))})"


class Game24Task(Task):
    """The Game of 24 with a rule verifier (exact rationals) and a solver."""

    name: ClassVar[str] = "game24"
    has_generator: ClassVar[bool] = True
    difficulty_keys: ClassVar[dict[str, Any]] = {"solvable": bool}
    problem_prefix: ClassVar[str] = "Input: "
    max_steps: ClassVar[int] = 6
    max_option_tokens: ClassVar[int] = 48
    max_solution_tokens: ClassVar[int] = 200
    retry_line: ClassVar[str | None] = RETRY_LINE
    test_ranks: ClassVar[range] = range(901, 1001)

    def __init__(self) -> None:
        self._ranked = self._load_puzzles()
        self._split_by_key = {self._key(q): self._split_of_rank(r) for r, q in self._ranked}

    # -- splits ---------------------------------------------------------------------------------
    @staticmethod
    def _load_puzzles() -> list[tuple[int, str]]:
        text = resources.files("alphallm.tasks").joinpath("data/game24.csv").read_text(encoding="utf-8")
        return [(int(row["Rank"]), row["Puzzles"].strip()) for row in csv.DictReader(text.splitlines())]

    def _split_of_rank(self, rank: int) -> str:
        if rank in self.test_ranks:
            return "test"
        return "dev" if rank % 10 == 0 else "train"

    @staticmethod
    def _key(question: str) -> tuple[int, ...]:
        return tuple(sorted(int(x) for x in question.split()))

    def split_of(self, question: str) -> str:
        """The split a puzzle belongs to; puzzles not in 24.csv (unsolvable ones) are train."""
        return self._split_by_key.get(self._key(question), "train")

    def problems(self, split: str) -> list[Problem]:
        if split not in ("train", "dev", "test"):
            raise ValueError(f"unknown split {split!r}; expected one of ['dev', 'test', 'train']")
        return [Problem(f"game24-{r}", q) for r, q in self._ranked if self._split_of_rank(r) == split]

    def generate(self, rng: random.Random, n: int, difficulty: dict[str, Any] | None = None) -> list[Problem]:
        """Random 4-number puzzles from 1-13 outside the dev and test splits.

        ``difficulty={"solvable": True}`` keeps only solvable ones (default: any, like a rules-only teacher).
        """
        solvable = bool((difficulty or {}).get("solvable", False))
        out: list[Problem] = []
        while len(out) < n:
            numbers = sorted(rng.randint(1, 13) for _ in range(4))
            question = " ".join(map(str, numbers))
            if self.split_of(question) != "train" or (solvable and solve_numbers(numbers) is None):
                continue
            out.append(Problem(f"game24-gen-{question.replace(' ', '-')}", question))
        return out

    # -- problems from users and from the model -------------------------------------------------
    def problem_from_row(self, row: dict[str, Any], *, default_id: str) -> Problem:
        numbers = row.get("numbers", row.get("problem", row.get("question", row.get("Puzzles"))))
        if isinstance(numbers, str):
            numbers = numbers.split()
        if not isinstance(numbers, list) or len(numbers) != 4:
            raise ValueError("expected 'numbers': four integers such as [4, 9, 10, 13]")
        # int() would read 4.7 as 4 and true as 1: a number must be written as an integer.
        if not all(
            (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, str) and x.isdigit())
            for x in numbers
        ):
            raise ValueError(f"'numbers' must be integers, got {numbers!r}")
        values = [int(x) for x in numbers]
        if not all(1 <= x <= 99 for x in values):
            raise ValueError(f"'numbers' must lie in 1..99, got {values}")
        return Problem(row_id(row, default_id), " ".join(map(str, sorted(values))))

    def parse_question(self, text: str) -> Problem | None:
        parts = text.strip().split()
        if len(parts) != 4 or not all(p.isdigit() and 1 <= int(p) <= 13 for p in parts):
            return None
        question = " ".join(sorted(parts, key=int))
        return Problem(f"game24-q-{question.replace(' ', '-')}", question)

    def solvable(self, problem: Problem) -> bool | None:
        return solve_numbers(self._key(problem.question)) is not None

    # -- solutions ------------------------------------------------------------------------------
    def solve(self, problem: Problem) -> str | None:
        """A reference solution from the solver, or None if the puzzle is unsolvable."""
        moves = solve_numbers(self._key(problem.question))
        return None if moves is None else self.write_solution(problem, moves)

    def solutions(self, problem: Problem, k: int, rng: random.Random) -> list[str]:
        """Up to ``k`` distinct solver solutions, written as the policy writes them (oracle data for
        the benchmarks that ask what supervision alone can reach)."""
        return [
            self.write_solution(problem, m) for m in sample_solutions(self._key(problem.question), k, rng)
        ]

    def teacher_solution(self, problem: Problem, rng: random.Random, *, noise: float = 0.0) -> str:
        """Random legal moves to the end, then the expression they built (whatever its value).

        The teacher keeps to whole numbers up to ``TEACHER_MAX`` (every test puzzle is solvable
        that way), so the base model learns arithmetic it can get right; it has no notion of
        which moves lead to 24.
        """
        pool = _Pool([Fraction(x) for x in self._key(problem.question)])
        lines = []
        while len(pool.items) > 1:
            moves = [m for m in legal_moves(pool.numbers()) if _teachable(m[2][3])] or legal_moves(
                pool.numbers()
            )
            i, j, move = rng.choice(moves)
            pool.combine(i, j, move)
            lines.append(_move_line(move, pool.numbers()))
        value, expr, _ = pool.items[0]
        lines.append(f"{self.answer_prefix} {expr}={format_number(value)}")
        return "".join(line + "\n" for line in lines)

    def write_solution(self, problem: Problem, moves: Sequence[Move]) -> str:
        """The solution document of a sequence of moves (one line each, then the expression)."""
        pool = _Pool([Fraction(x) for x in self._key(problem.question)])
        lines = []
        for a, op, b, result in moves:
            numbers = pool.numbers()
            i = numbers.index(a)
            j = next(k for k, x in enumerate(numbers) if x == b and k != i)
            pool.combine(i, j, (a, op, b, result))
            lines.append(_move_line((a, op, b, result), pool.numbers()))
        value, expr, _ = pool.items[0]
        lines.append(f"{self.answer_prefix} {expr}={format_number(value)}")
        return "".join(line + "\n" for line in lines)

    # -- answers and verifiers ------------------------------------------------------------------
    def normalize_answer(self, answer: str) -> str | None:
        expression = answer.split("=")[0].replace(" ", "")
        return expression or None

    def check(self, problem: Problem, solution: str) -> bool | None:
        """True iff the answer expression uses each input number once and equals 24 exactly, and
        the work before it holds: every move legal, the last one leaving 24 (``check_step``).

        Tree of Thoughts grades the expression alone. Sampled solutions sometimes end in an
        expression that happens to make 24 after moves that went elsewhere (``9+6=15``, ``15*2=30``,
        then ``Answer: (8+1)*2+6=30``): 7% of the verified solutions in game24-small's trees, 10% of
        the SFT rows taken from them. As training data they teach an answer unrelated to the work.

        A ``back`` line (``RETRY_LINE``) abandons the attempt before it and the moves after it start
        again from the puzzle's numbers (``check_step``); every attempt's moves must be legal.
        """
        prefix = ""
        for line in solution_lines(solution):
            if self.is_answer_line(line):
                return bool(self.check_step(problem, prefix, line))
            if line.strip() and not self.check_step(problem, prefix, line):
                return False
            prefix += line + "\n"
        return False

    def _solves(self, problem: Problem, expression: str) -> bool:
        try:
            node = parse(expression)
            value = evaluate_node(node)
        except ExprError:
            return False
        used = Counter(leaves(node))
        return value == TARGET and used == Counter(Fraction(x) for x in self._key(problem.question))

    def check_step(self, problem: Problem, prefix: str, step: str) -> bool | None:
        """A move is legal when it uses two available numbers, computes exactly and lists the
        numbers left correctly; the answer line is correct when it solves the puzzle, states 24 (if
        it states a value) and follows moves that left 24 (or no moves at all). ``back`` is legal after
        a move: it abandons the attempt, and the next move starts again from the puzzle's numbers."""
        step = step.rstrip("\n")
        if step.strip() == RETRY_LINE:
            return bool(_attempt(prefix))
        if self.is_answer_line(step):
            return self._answer_holds(problem, prefix, step[len(self.answer_prefix) :].strip())
        available = self._available(problem, prefix)
        match = _MOVE.match(step)
        if available is None or match is None:
            return False
        a, op, b, c = (match.group(k) for k in (1, 2, 3, 4))
        try:
            a_value, b_value, c_value = _number(a), _number(b), _number(c)
            left = Counter(_number(x) for x in match.group(5).split())
        except (ValueError, ZeroDivisionError):
            return False
        pool = Counter(available)
        pool.subtract([a_value, b_value])
        if min(pool.values(), default=0) < 0 or _apply(a_value, op, b_value) != c_value:
            return False
        pool[c_value] += 1
        return +pool == left

    def _answer_holds(self, problem: Problem, prefix: str, answer: str) -> bool:
        expression = self.normalize_answer(answer)
        stated = answer.split("=")[1:]
        try:
            states_24 = all(Fraction(value.strip()) == TARGET for value in stated)
        except (ValueError, ZeroDivisionError):
            return False
        left = self._available(problem, prefix) if _attempt(prefix) else [TARGET]
        return expression is not None and states_24 and left == [TARGET] and self._solves(problem, expression)

    def solvable_after(self, problem: Problem, prefix: str) -> bool | None:
        """24 is still reachable from the numbers left after ``prefix`` (the solver, exactly: its
        moves reach every reachable 24); None when the last line is not a move (an answer line, or
        garbage that ``check_step`` rejects)."""
        available = self._available(problem, prefix)
        return None if available is None else solve_numbers(available) is not None

    def _available(self, problem: Problem, prefix: str) -> list[Fraction] | None:
        lines = _attempt(prefix)
        if not lines:
            return [Fraction(x) for x in self._key(problem.question)]
        match = _MOVE.match(lines[-1])
        if match is None:
            return None
        try:
            return [_number(x) for x in match.group(5).split()]
        except (ValueError, ZeroDivisionError):
            return None
