"""The task contract: problems by split, prompt format, option termination, answers and verifiers.

A *solution* is the text the model writes after the prompt: one option (step) per line, the last
line an answer line. A task owns everything that depends on the domain; the search, the critics and
the loop only call these methods.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from alphallm.errors import UserError
from alphallm.io import read_input

__all__ = [
    "SPLITS",
    "Problem",
    "Task",
    "load_problems",
    "solution_lines",
    "stable_bucket",
    "stable_id",
    "text_field",
]

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Problem:
    """One problem. ``question`` is the task-native statement (``"38+7*6-19"``, ``"4 9 10 13"``).

    ``answer`` is the gold answer as text when one is known; tasks with a rule verifier (game24)
    need none.
    """

    id: str
    question: str
    answer: str | None = None


def stable_bucket(text: str, *, salt: str = "") -> int:
    """A platform-independent hash of ``text`` into [0, 100), used to assign problems to splits."""
    digest = hashlib.blake2b(f"{salt}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def stable_id(prefix: str, text: str) -> str:
    """A short id that is the same on every machine and run (Python's ``hash`` is salted)."""
    return f"{prefix}-{hashlib.blake2b(text.encode(), digest_size=6).hexdigest()}"


def text_field(row: dict[str, Any], *names: str, hint: str = "") -> str:
    """The text of a problems-file row's first field of ``names`` that it has (``problem``, else
    ``question``); ValueError naming the field when it is missing, not a string, or blank."""
    name = next((n for n in names if n in row), names[0])
    value = row.get(name)
    if value is None:
        raise ValueError(f"missing field {name!r}{hint}")
    if not isinstance(value, str):
        raise ValueError(f"{name!r} must be a string{hint}, got {type(value).__name__} {str(value)[:40]}")
    if not value.strip():
        raise ValueError(f"{name!r} is empty{hint}")
    return value


def row_id(row: dict[str, Any], default_id: str, *names: str) -> str:
    """A problems-file row's id: its first field of ``names`` (``id``) that is set, a string or an
    integer, else ``default_id`` (the file's name and line); ValueError for any other value."""
    for name in names or ("id",):
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise ValueError(f"{name!r} must be a non-empty string or an integer, got {value!r}")
        return str(value)
    return default_id


def solution_lines(solution: str) -> list[str]:
    """The complete lines of a solution (a trailing partial line is dropped), without newlines."""
    return solution.split("\n")[:-1]


class Task(ABC):
    """Base class of every task. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    problem_prefix: ClassVar[str]  # every document starts with it; sampling from it imagines problems
    answer_prefix: ClassVar[str] = "Answer:"
    stop: ClassVar[tuple[str, ...]] = ("\n",)  # option termination rule: one option per line
    max_steps: ClassVar[int] = 12  # options in a solution, answer line included
    max_option_tokens: ClassVar[int] = 48
    max_solution_tokens: ClassVar[int] = 400
    has_step_verifier: ClassVar[bool] = True
    has_corruptions: ClassVar[bool] = False  # ``corrupt`` writes wrong variants of solutions
    # A line that abandons the attempt before it, after which the solution starts again from the
    # problem (None: the format has none; learn.retry_mix needs one).
    retry_line: ClassVar[str | None] = None
    # The splits ``problems`` ships (others come from the user's files: ``--problems``, and in the loop
    # ``imagine.problems_file``, ``evaluate.dev_file``, ``evaluate.test_file``).
    shipped_splits: ClassVar[tuple[str, ...]] = ("train", "dev", "test")
    has_generator: ClassVar[bool] = False  # ``generate`` writes fresh training problems
    difficulty_keys: ClassVar[dict[str, Any]] = {}  # what ``generate`` reads from ``difficulty``, typed

    def check_difficulty(self, difficulty: dict[str, Any]) -> None:
        """ValueError if ``generate`` would refuse ``difficulty`` (its keys known and typed)."""
        return None  # most tasks take any difficulty their keys allow

    def token_limit(self, max_tokens: int | None) -> int:
        """Tokens a whole solution may take: ``max_tokens`` when given, else the task's own limit."""
        return max_tokens or self.max_solution_tokens

    # -- problems -------------------------------------------------------------------------------
    @abstractmethod
    def problems(self, split: str) -> list[Problem]:
        """The fixed problems of a split (``train``, ``dev`` or ``test``)."""

    @abstractmethod
    def split_of(self, question: str) -> str:
        """The split a question belongs to; training and imagination keep only ``train`` ones."""

    @abstractmethod
    def problem_from_row(self, row: dict[str, Any], *, default_id: str) -> Problem:
        """Builds a problem from one JSONL row; raises ValueError with the reason when it is invalid."""

    @abstractmethod
    def parse_question(self, text: str) -> Problem | None:
        """A problem from a question written by a model (imagination), or None if it is not valid."""

    def solvable(self, problem: Problem) -> bool | None:
        """Whether the problem has a solution at all (None: the task cannot tell cheaply)."""
        return None

    def generate(self, rng: random.Random, n: int, difficulty: dict[str, Any] | None = None) -> list[Problem]:
        """Fresh training problems from a procedural generator (never a dev or test item)."""
        raise NotImplementedError(f"task {self.name!r} has no problem generator")

    def teacher_solution(self, problem: Problem, rng: random.Random, *, noise: float = 0.0) -> str:
        """A solution written by the task's teacher, for the base model's pretraining documents."""
        raise NotImplementedError(f"task {self.name!r} has no teacher")

    # -- text formats ---------------------------------------------------------------------------
    def format_prompt(self, problem: Problem) -> str:
        """The model-facing prefix; the solution follows it directly."""
        return f"{self.problem_prefix}{problem.question}\n"

    def imagine_prompt(self, examples: Sequence[Problem] = ()) -> str:
        """What the policy continues to write a new problem: the problem prefix, after ``examples``
        written the same way (few-shot: a new problem in their pattern, AlphaLLM's
        x = g(x_1, ..., x_m, pi)). Without examples, the bare prefix: the shipped models write whole
        documents from it."""
        return "".join(f"{self.problem_prefix}{p.question}\n" for p in examples) + self.problem_prefix

    def problem_from_prompt(self, prompt: str, problem_id: str = "") -> Problem | None:
        """The problem (without its gold answer) whose ``format_prompt`` is ``prompt``, or None:
        saved trees keep prompts, and a tool verifier needs the problem back."""
        head, _, tail = self.format_prompt(Problem("", "\x00")).partition("\x00")
        if len(prompt) < len(head) + len(tail) or not (prompt.startswith(head) and prompt.endswith(tail)):
            return None
        return Problem(problem_id, prompt[len(head) : len(prompt) - len(tail)])

    def format_document(self, problem: Problem, solution: str) -> str:
        """Problem and solution as one document (the policy LM models whole documents)."""
        return self.format_prompt(problem) + solution

    def is_answer_line(self, line: str) -> bool:
        return line.startswith(self.answer_prefix)

    def is_terminal(self, solution: str) -> bool:
        """True once the solution holds a complete answer line."""
        return any(self.is_answer_line(line) for line in solution_lines(solution))

    def truncate(self, solution: str) -> str:
        """The solution up to and including its first complete answer line (what a verifier should
        read); unchanged when it has none."""
        kept: list[str] = []
        for line in solution_lines(solution):
            kept.append(line)
            if self.is_answer_line(line):
                return "".join(k + "\n" for k in kept)
        return solution

    # -- answers and verifiers ------------------------------------------------------------------
    def extract_answer(self, solution: str) -> str | None:
        """The final answer in normalised form, or None if there is none."""
        for line in solution_lines(solution):
            if self.is_answer_line(line):
                return self.normalize_answer(line[len(self.answer_prefix) :].strip())
        return None

    def normalize_answer(self, answer: str) -> str | None:
        return answer or None

    @abstractmethod
    def check(self, problem: Problem, solution: str) -> bool | None:
        """Exact outcome verifier: True/False, or None when it cannot tell (no gold answer)."""

    def votes_for(self, problem: Problem, answer: str, solutions: Sequence[str]) -> int:
        """How many of ``solutions`` reach ``answer``, by this task's own check (so that answers it
        deems equal, ``7`` and ``7.0``, vote together); the problem's gold answer is not consulted."""
        judged = replace(problem, answer=answer)
        return sum(bool(self.check(judged, solution)) for solution in solutions)

    def checks_answers(self, problem: Problem) -> bool:
        """The verifier judges ``problem``'s solutions by their answer alone: without an answer to
        compare with, it cannot tell (arith, gsm8k, math). False where it checks a solution by rule
        and any answer will do (game24: every right solution reaches 24 its own way)."""
        return self.check(replace(problem, answer=None), "") is None

    def check_step(self, problem: Problem, prefix: str, step: str) -> bool | None:
        """Step-level tool verifier: is ``step`` (one line) a correct move after ``prefix``?

        Returns None when the task cannot judge the step.
        """
        return None

    def solvable_after(self, problem: Problem, prefix: str) -> bool | None:
        """Can ``problem`` still be solved after ``prefix`` (complete steps)? An exact tool check of
        the state, beside ``check_step``'s check of the move; None when the task cannot tell."""
        return None

    def corrupt(self, problem: Problem, solution: str, rng: random.Random) -> str | None:
        """A plausible wrong variant of a correct ``solution`` whose answer differs from it (a kind of
        mistake the task's policies make), or None when none could be made from this one: made
        negatives for an outcome critic (``train-critic --negatives``)."""
        raise NotImplementedError(f"task {self.name!r} has no model of wrong solutions")

    def steps(self, solution: str) -> list[str]:
        """The step lines of a solution that the step verifier judges (the answer line excluded)."""
        out = []
        for line in solution_lines(solution):
            if self.is_answer_line(line):
                break
            out.append(line)
        return out


def load_problems(task: Task, path: str | Path, *, scored: bool = False) -> list[Problem]:
    """Reads a user's problems from a JSONL file; a bad row raises UserError naming ``file:line``.

    Ids must be distinct: they key the results and name the saved tree files, so a repeated one would
    silently lose a problem's tree. A UTF-8 byte-order mark (Windows editors write one) is skipped.
    ``scored``: every problem is to be scored, so a row whose solutions the verifier cannot judge (no
    answer, where the task checks answers) is an error; it would otherwise count as unsolved, and a file
    whose answers sit under another key would read as accuracy 0. Training problems may lack answers."""
    path = Path(path)
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    data = read_input(path, "problems file").removeprefix(b"\xef\xbb\xbf")
    _check_json_lines(path, data)
    # Each line decoded alone, so that a line that is not UTF-8 is reported by its number.
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        row = _json_row(path, lineno, raw)
        if row is None:
            continue
        try:
            problem = task.problem_from_row(row, default_id=f"{path.stem}-{lineno}")
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{path}:{lineno}: {exc}") from None
        if scored and problem.answer is None and task.checks_answers(problem):
            raise UserError(
                f"{path}:{lineno}: no answer to score solutions against ({task.name} checks answers; "
                "problems to evaluate need one, training problems need not)"
            )
        if problem.id in first_line:
            raise UserError(
                f"{path}:{lineno}: duplicate id {problem.id!r} (first on line {first_line[problem.id]})"
            )
        first_line[problem.id] = lineno
        problems.append(problem)
    if not problems:
        raise UserError(f"{path}: no problems in file")
    return problems


def _check_json_lines(path: Path, data: bytes) -> None:
    """Refuses a file that is one JSON document spanning it (an array of rows, a pretty-printed object),
    which a line-by-line read would report as line 1's error, whatever the rows hold. A JSON Lines file
    fails to parse whole at its second row; one of a single row is one object on one line, and valid."""
    try:
        whole = json.loads(data)
    except ValueError:
        return
    if isinstance(whole, list):
        kind = "array"
    elif isinstance(whole, dict) and len(data.strip().splitlines()) > 1:
        kind = "object"
    else:
        return
    raise UserError(
        f"{path}: one JSON {kind}, not JSON Lines (one object per line); "
        "jq -c '.[]' converts an array of rows"
    )


def _json_row(path: Path, lineno: int, raw: bytes) -> dict[str, Any] | None:
    """One JSONL line as an object (None for a blank line)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}:{lineno}: not UTF-8") from None
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    return row
