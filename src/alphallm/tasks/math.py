"""``math``: competition mathematics in the MATH format (Hendrycks et al., 2021).

Rows have a ``problem`` and a ``solution`` whose final answer is in ``\\boxed{...}`` (an ``answer``
field, as in MATH-500, wins when present). No MATH data ships with the package (its licence and
size): pass ``--problems FILE.jsonl``; a ``datasets`` split becomes such a file with
``load_dataset(...)["test"].to_json("math.jsonl")``.

Answers are compared with ``math-verify`` (symbolic and numeric equivalence: ``\\frac12`` =
``0.5`` = ``\\dfrac{1}{2}``) when it is installed (the ``train`` extra). Without it the fallback
compares normalised strings, which misses equivalent forms: a correct ``0.5`` for a gold ``\\frac12``
counts as wrong, so accuracies are lower bounds.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Any, ClassVar

from alphallm.errors import UserError
from alphallm.tasks.base import Problem, Task, row_id, solution_lines, stable_id, text_field

__all__ = ["MATHTask", "answers_equal", "last_boxed", "normalize_latex"]

log = logging.getLogger(__name__)

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(r"^(?:Answer:|The answer is)", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (braces balanced), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip()
    return None  # unclosed: the answer is not complete yet


def normalize_latex(answer: str) -> str:
    """A canonical string for the fallback comparison: spacing, sizing and text wrappers removed."""
    text = answer.strip().strip("$").rstrip(".")
    text = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", text)
    for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", "")):
        text = text.replace(old, new)
    text = re.sub(r"\\[,!;: ]|\s+", "", text)  # LaTeX spacing commands and whitespace
    text = text.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("\\$", "")
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)  # \frac12 -> \frac{1}{2}
    return text[2:] if text.startswith(("x=", "y=")) else text


@functools.cache
def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError:
        log.warning("math-verify is not installed: MATH answers are compared as normalised strings")
        return None
    return math_verify


def answers_equal(gold: str, predicted: str) -> bool:
    """Whether two final answers are equivalent (math-verify, else normalised strings)."""
    if normalize_latex(gold) == normalize_latex(predicted):
        return True
    verifier = _math_verify()
    if verifier is None:
        return False
    # math-verify bounds its sympy work with SIGALRM, which exists only in the main thread;
    # elsewhere (threads of a server or a Ray actor) it runs without a time limit.
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed = verifier.parse(f"\\boxed{{{gold}}}", parsing_timeout=limit)
    predicted_parsed = verifier.parse(f"\\boxed{{{predicted}}}", parsing_timeout=limit)
    if not gold_parsed or not predicted_parsed:
        return False
    return bool(verifier.verify(gold_parsed, predicted_parsed, timeout_seconds=limit))


class MATHTask(Task):
    """MATH-format problems with a boxed final answer, checked for mathematical equivalence."""

    name: ClassVar[str] = "math"
    shipped_splits: ClassVar[tuple[str, ...]] = ()
    problem_prefix: ClassVar[str] = "Problem: "
    answer_prefix: ClassVar[str] = "Answer:"
    max_steps: ClassVar[int] = 16
    max_option_tokens: ClassVar[int] = 128
    max_solution_tokens: ClassVar[int] = 1024
    has_step_verifier: ClassVar[bool] = False

    def problems(self, split: str) -> list[Problem]:
        raise UserError(
            "math ships no problems; pass --problems FILE.jsonl "
            "(rows with 'problem' and 'solution' with a \\boxed{} answer, as in the MATH release)"
        )

    def split_of(self, question: str) -> str:
        # With no shipped test set there is nothing to exclude; users keep their test file apart.
        return "train"

    def format_prompt(self, problem: Problem) -> str:
        return f"{self.problem_prefix}{problem.question}\nSolution:\n"

    # -- problems from users and from the model -------------------------------------------------
    def problem_from_row(self, row: dict[str, Any], *, default_id: str) -> Problem:
        question = text_field(row, "problem", "question")
        answer = row.get("answer")
        if answer is None and row.get("solution") is not None:
            answer = last_boxed(str(row["solution"]))
            if answer is None:
                raise ValueError("'solution' has no \\boxed{...} final answer")
        problem_id = row_id(row, default_id, "id", "unique_id")
        return Problem(problem_id, question.strip(), None if answer is None else str(answer).strip())

    def parse_question(self, text: str) -> Problem | None:
        question = text.strip()
        if len(question) < 10:
            return None
        return Problem(stable_id("math-q", question), question)

    # -- answers and verifiers ------------------------------------------------------------------
    def is_answer_line(self, line: str) -> bool:
        return last_boxed(line) is not None or bool(_ANSWER_LINE.match(line.strip()))

    def extract_answer(self, solution: str) -> str | None:
        """The last boxed answer, else the text of the first ``Answer:`` line."""
        boxed = last_boxed(solution)
        if boxed is not None:
            return boxed or None
        for line in solution_lines(solution):
            match = _ANSWER_LINE.match(line.strip())
            if match:
                return line.strip()[match.end() :].strip(" :").strip() or None
        return None

    def check(self, problem: Problem, solution: str) -> bool | None:
        if problem.answer is None:
            return None
        answer = self.extract_answer(self.truncate(solution))
        return answer is not None and answers_equal(problem.answer, answer)
