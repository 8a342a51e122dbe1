"""Imagination (AlphaLLM §4.2): new training problems from the policy itself and from task generators."""

from __future__ import annotations

from alphallm.imagine.synthesize import ImagineStats, imagine_problems, mix_problems

__all__ = ["ImagineStats", "imagine_problems", "mix_problems"]
