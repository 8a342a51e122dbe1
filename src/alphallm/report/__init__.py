"""Human-readable reports of runs: a self-contained HTML viewer for saved search trees, the loop's
run report, and whether a change between rounds is beyond noise (``report.stats``)."""

from __future__ import annotations

from alphallm.report.tree_html import render_tree_html

__all__ = ["render_tree_html"]
