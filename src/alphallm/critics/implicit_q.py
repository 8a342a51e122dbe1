"""The implicit-Q critic of "From r to Q*" (Rafailov et al., 2024).

For an option o = (a_1..a_m) taken at state s, with pi the (DPO-trained) policy and pi_A a fixed
anchor (the base model)::

    rho(s, o) = beta * sum_j [log pi(a_j | s_j) - log pi_A(a_j | s_j)]

By r->Q* eq. 10 telescoped over the option, rho is the option's implicit reward plus a value
difference, V(s') - V(s): between siblings (same s) it ranks options by Q. Its absolute level
drifts with the reference, so it is only used relatively: each option's rho is compared with the
mean rho of its siblings seen so far and squashed to [0, 1]. Before any preference training
pi == pi_A and every score is 0.5 (no information), as it should be.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from alphallm.critics.base import CriticInput
from alphallm.lm.base import LanguageModel, Metered, Usage
from alphallm.tasks.base import Task

__all__ = ["ImplicitQCritic", "split_last_option"]


def split_last_option(solution: str) -> tuple[str, str]:
    """``("prefix lines\\n", "last line\\n")`` of a solution whose last option is one line."""
    body = solution[:-1] if solution.endswith("\n") else solution
    cut = body.rfind("\n") + 1
    return solution[:cut], solution[cut:]


class ImplicitQCritic:
    """Scores a new node by its option's implicit Q relative to its siblings.

    Args:
        beta: the DPO beta the policy was trained with.
        scale: temperature of the squashing ``sigmoid((rho - mean sibling rho) / scale)``.
    """

    name = "implicit_q"

    def __init__(
        self,
        task: Task,
        policy: LanguageModel,
        anchor: LanguageModel,
        *,
        beta: float = 0.1,
        scale: float = 0.5,
    ) -> None:
        self.task, self.beta, self.scale = task, beta, scale
        self.policy, self.anchor = Metered(policy), Metered(anchor)
        self._siblings: dict[str, list[float]] = defaultdict(list)

    @property
    def usage(self) -> Usage:
        """What scoring cost: the policy's and the anchor's passes over every option (a search
        reports it as ``critic:implicit_q``, apart from the policy's sampling)."""
        total = self.policy.usage.copy()
        total.add(self.anchor.usage)
        return total

    def rho(self, items: Sequence[CriticInput]) -> list[float | None]:
        """beta * sum of per-token log-ratios over each item's last option (None for the root)."""
        wanted = [i for i, item in enumerate(items) if item.solution]
        parents, options = [], []
        for i in wanted:
            prefix, option = split_last_option(items[i].solution)
            parents.append(self.task.format_prompt(items[i].problem) + prefix)
            options.append(option)
        out: list[float | None] = [None] * len(items)
        if not wanted:
            return out
        policy_lp = self.policy.logprobs(parents, options)
        anchor_lp = self.anchor.logprobs(parents, options)
        for i, lp, lp_anchor in zip(wanted, policy_lp, anchor_lp):
            out[i] = self.beta * (sum(lp) - sum(lp_anchor))
        return out

    def score(self, items: Sequence[CriticInput]) -> list[float | None]:
        values = self.rho(items)
        keys = [self.task.format_prompt(item.problem) + split_last_option(item.solution)[0] for item in items]
        for key, value in zip(keys, values):
            if value is not None:
                self._siblings[key].append(value)
        out: list[float | None] = []
        for key, value in zip(keys, values):
            if value is None:
                out.append(None)
                continue
            siblings = self._siblings[key]
            relative = value - sum(siblings) / len(siblings)
            out.append(1.0 / (1.0 + math.exp(-relative / self.scale)))
        return out
