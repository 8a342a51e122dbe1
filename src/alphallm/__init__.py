"""alphallm: self-improving language models via imagination, eta-MCTS search and criticizing."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
