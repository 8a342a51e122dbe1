"""``gsm8k``: grade-school math word problems (Cobbe et al., 2021; MIT licence, in ``tasks/data``).

Gold solutions are lines of reasoning with calculator annotations ``<<48/2=24>>`` and a last line
``#### 72``. Models that did not learn that format write "The answer is 72." or ``\\boxed{72}``;
``extract_answer`` reads all of them and answers are compared as numbers (``1,000`` = ``1000.0``).
Only the test split ships with the package; pass ``--problems train.jsonl`` for training problems.
"""

from __future__ import annotations

import functools
import json
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from importlib import resources
from typing import Any, ClassVar

from alphallm.errors import UserError
from alphallm.tasks.base import Problem, Task, row_id, stable_id, text_field
from alphallm.tasks.expr import ExprError, evaluate

__all__ = ["GSM8KTask", "parse_number"]

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?"
_ANSWER_PATTERNS = (
    re.compile(rf"####\s*({_NUMBER})"),
    re.compile(rf"\\boxed\{{\s*({_NUMBER})"),
    re.compile(rf"(?:the )?answer is[:\s]*({_NUMBER})", re.IGNORECASE),
    re.compile(rf"^Answer:\s*({_NUMBER})", re.MULTILINE),
)
_ANY_NUMBER = re.compile(_NUMBER)
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")


def parse_number(text: str) -> Decimal | None:
    """``"$1,234.50"`` -> ``Decimal("1234.50")``; None when the text is not a number."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def _clean(text: str) -> str:
    return text.replace(",", "").replace("$", "").replace("%", "")


def _normalize(value: Decimal) -> str:
    """A canonical text for a number: ``18.00`` -> ``18``, ``0.50`` -> ``0.5``."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


class GSM8KTask(Task):
    """GSM8K with numeric answer checking and a calculator-annotation step verifier."""

    name: ClassVar[str] = "gsm8k"
    shipped_splits: ClassVar[tuple[str, ...]] = ("test",)
    problem_prefix: ClassVar[str] = "Question: "
    answer_prefix: ClassVar[str] = "####"
    max_steps: ClassVar[int] = 12
    max_option_tokens: ClassVar[int] = 96
    max_solution_tokens: ClassVar[int] = 512

    @functools.cached_property
    def _test(self) -> list[Problem]:
        text = resources.files("alphallm.tasks").joinpath("data/gsm8k_test.jsonl").read_text(encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [self.problem_from_row(row, default_id=f"gsm8k-test-{i}") for i, row in enumerate(rows)]

    @functools.cached_property
    def _test_questions(self) -> frozenset[str]:
        return frozenset(p.question for p in self._test)

    def split_of(self, question: str) -> str:
        return "test" if question.strip() in self._test_questions else "train"

    def problems(self, split: str) -> list[Problem]:
        if split == "test":
            return list(self._test)
        raise UserError(
            f"gsm8k ships only its test split; pass --problems FILE.jsonl for {split!r} problems "
            "(rows with 'question' and 'answer', as in the GSM8K release)"
        )

    def format_prompt(self, problem: Problem) -> str:
        return f"{self.problem_prefix}{problem.question}\nSolution:\n"

    # -- problems from users and from the model -------------------------------------------------
    def problem_from_row(self, row: dict[str, Any], *, default_id: str) -> Problem:
        question = text_field(row, "question", "problem")
        raw = row.get("answer")
        if raw is None:
            return Problem(row_id(row, default_id), question.strip())
        answer = self.extract_answer(str(raw) + "\n") if not isinstance(raw, (int, float)) else str(raw)
        value = parse_number(answer) if answer is not None else None
        if value is None:
            raise ValueError(
                f"'answer' has no final number (expected '#### N' or a number): {str(raw)[-60:]!r}"
            )
        return Problem(row_id(row, default_id), question.strip(), _normalize(value))

    def parse_question(self, text: str) -> Problem | None:
        question = text.strip()
        if len(question) < 20 or not question.endswith("?"):
            return None
        return Problem(stable_id("gsm8k-q", question), question)

    # -- answers and verifiers ------------------------------------------------------------------
    def is_answer_line(self, line: str) -> bool:
        return any(pattern.search(line) for pattern in _ANSWER_PATTERNS)

    def extract_answer(self, solution: str) -> str | None:
        """The final number: ``#### N``, ``\\boxed{N}``, "the answer is N", or else the last number."""
        for pattern in _ANSWER_PATTERNS:
            matches = pattern.findall(solution)
            if matches:
                return self.normalize_answer(matches[-1])
        numbers = _ANY_NUMBER.findall(solution)
        return self.normalize_answer(numbers[-1]) if numbers else None

    def normalize_answer(self, answer: str) -> str | None:
        value = parse_number(answer)
        return None if value is None else _normalize(value)

    def check(self, problem: Problem, solution: str) -> bool | None:
        if problem.answer is None:
            return None
        answer = self.extract_answer(self.truncate(solution))
        return answer is not None and parse_number(answer) == parse_number(problem.answer)

    def check_step(self, problem: Problem, prefix: str, step: str) -> bool | None:
        """Recomputes every ``<<expression=result>>`` annotation; None when a step has none."""
        annotations = _ANNOTATION.findall(step)
        if not annotations:
            return None
        for expression, result in annotations:
            try:
                value = evaluate(_clean(expression))
                expected = evaluate(_clean(result))  # usually a number, sometimes "3/4"
            except ExprError:
                return False
            if abs(value - expected) > Fraction(1, 100):  # results are often rounded to cents
                return False
        return True

    def steps(self, solution: str) -> list[str]:
        return [line for line in super().steps(solution) if line.strip()]
