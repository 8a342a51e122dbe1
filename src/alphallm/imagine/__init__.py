"""Imagination (AlphaLLM §4.2): new training problems from the policy itself and from task generators,
and answers agreed by the policy's own samples for those that come without one."""

from __future__ import annotations

from alphallm.imagine.answers import AnswerStats, agreed_answer, answer_by_agreement
from alphallm.imagine.synthesize import ImagineStats, imagine_problems, mix_problems

__all__ = [
    "AnswerStats",
    "ImagineStats",
    "agreed_answer",
    "answer_by_agreement",
    "imagine_problems",
    "mix_problems",
]
