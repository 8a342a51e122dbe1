"""The report of an ``alphallm improve`` run: plots, a self-contained HTML page, tree pages and the
r->Q* credit-assignment view.

Written to ``runs/<name>/report/``: ``accuracy.png`` (accuracy per round per method),
``tokens.png`` (generated tokens per problem), ``trees-round-<k>.html`` (example trees in the tree
viewer) and ``index.html``, which embeds the plots and shows, for one preference pair of the last
round with DPO, every token coloured by beta * log pi(token) / pi_ref(token) — the implicit reward
the DPO-trained policy assigns (Rafailov et al. 2024, §5.1).
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any

from alphallm.extras import install_hint, missing_modules
from alphallm.io import write_text
from alphallm.report.stats import binomial_se, round_changes
from alphallm.report.tree_html import render_tree_html
from alphallm.trees import round_dirs

__all__ = ["credit_assignment", "critic_rounds", "write_report"]

log = logging.getLogger(__name__)

METHOD_LABELS = {
    "greedy": "greedy",
    "mcts": "eta-MCTS (verifier)",
    "mcts_critics": "eta-MCTS (learned critics)",
    "sc": "self-consistency (matched tokens)",
}


def _labels(metrics: list[dict[str, Any]]) -> dict[str, str]:
    """The methods' names; the learned critics' search says when its PRM pruned as a soft verifier."""
    labels = dict(METHOD_LABELS)
    taus = sorted(
        {
            m["mcts_critics"]["prm_prunes_below"]
            for m in metrics
            if "prm_prunes_below" in m.get("mcts_critics", {})
        }
    )
    if taus:
        labels["mcts_critics"] = (
            f"eta-MCTS (learned critics, PRM prunes ≤ {', '.join(f'{t:g}' for t in taus)})"
        )
    return labels


def _plot(metrics: list[dict[str, Any]], key: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, label in _labels(metrics).items():
        points = [(m["round"], m[method][key], _error(m[method], key)) for m in metrics if method in m]
        if points:
            xs, ys, errors = zip(*points)
            ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_xticks([m["round"] for m in metrics])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def credit_assignment(
    policy: str, reference: str, prompt: str, completions: list[str], beta: float
) -> list[list[tuple[str, float]]]:
    """Per token of each completion: (token text, beta * [log pi - log pi_ref])."""
    from alphallm.lm import load_lm
    from alphallm.lm.hf import encode_pair

    lm, ref = load_lm(policy), load_lm(reference)
    ours = lm.logprobs([prompt] * len(completions), completions)
    theirs = ref.logprobs([prompt] * len(completions), completions)
    out = []
    tokenizer = lm.tokenizer  # type: ignore[attr-defined]
    for completion, a, b in zip(completions, ours, theirs):
        ids = encode_pair(tokenizer, prompt, completion)[1]  # the tokens lm.logprobs scored
        out.append([(tokenizer.decode([i]), beta * (x - y)) for i, x, y in zip(ids, a, b)])
    return out


def _heat(tokens: list[tuple[str, float]]) -> str:
    scale = max((abs(v) for _, v in tokens), default=1.0) or 1.0
    spans = []
    for text, value in tokens:
        alpha = min(1.0, abs(value) / scale)
        colour = f"rgba(40,160,60,{alpha:.2f})" if value >= 0 else f"rgba(210,50,50,{alpha:.2f})"
        shown = html.escape(text).replace("\n", "⏎<br>")
        spans.append(f'<span title="{value:+.3f}" style="background:{colour}">{shown}</span>')
    return "".join(spans)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{path.stem}" src="data:image/png;base64,{data}">'


def _error(record: dict[str, Any], key: str) -> float:
    """The error bar of an accuracy: one binomial standard error over the problems it was measured on
    (none for records without per-problem outcomes, or for other quantities)."""
    solved = record.get("solved")
    return binomial_se(record[key], len(solved)) if key == "accuracy" and solved else 0.0


def _change(change: dict[str, float] | None) -> str:
    """`` +0.050 (z 1.8)``: the change from the round before, paired over the same problems; bold
    when it is beyond noise (|z| > 2)."""
    if change is None:
        return ""
    text = f"{change['change']:+.3f} (z {change['z']:+.1f})"
    return f"<br><small>{'<b>' + text + '</b>' if abs(change['z']) > 2 else text}</small>"


def critic_rounds(critics: dict[str, int] | None) -> str:
    """``value 2, prm 1, orm 2``: the round that trained each critic a round used (the critic gate can
    keep an earlier round's); ``-`` when none (round 0, or a record from before the gate)."""
    return ", ".join(f"{kind} {j}" for kind, j in critics.items()) if critics else "-"


def _kept(m: dict[str, Any], gate: dict[str, Any] | None) -> str:
    """Whether the round's policy was kept, and if not, which test it failed (with the gate's record):
    the dev score, or the search guard (``evaluate.gate_search``). When DPO ran, which candidate was
    kept, and SFT + DPO's dev change over SFT alone (it must be beyond noise)."""
    if m["round"] == 0:
        return "base"
    if m.get("accepted"):
        if not gate or "sft" not in gate.get("candidates", {}):
            return "yes"
        kept = "SFT + DPO" if gate.get("kept") == "policy" else "SFT"
        dpo = gate.get("dpo_over_sft")
        versus = f" <small>(DPO − SFT {dpo['change']:+.3f} ± {dpo['se']:.3f})</small>" if dpo else ""
        return f"yes: {kept}{versus}"
    if not gate:
        return "no"
    if gate.get("nothing_trained"):
        return "no: nothing to train on"
    guard = gate.get("search_guard", {}).get("candidates", {})
    if guard:  # a candidate passed the dev score; the first one tried is the best of them
        first = next(iter(guard.values()))
        return f"no: dev search {first['accuracy']:.2f} &lt; {first['reference']['accuracy']:.2f}"
    return f"no: dev {gate['dev_accuracy']:.2f} &lt; {gate['previous_dev_accuracy']:.2f}"


def _table(metrics: list[dict[str, Any]], gates: dict[int, dict[str, Any]] | None = None) -> str:
    head = (
        "<tr><th>round</th><th>policy kept</th>"
        + "".join(f"<th>{v}</th>" for v in _labels(metrics).values())
        + "<th>critics (trained in round)</th></tr>"
    )
    changes = {method: round_changes(metrics, method) for method in METHOD_LABELS}
    rows = []
    for m in metrics:
        cells = [
            f"<td>{m['round']}</td>",
            f"<td>{_kept(m, (gates or {}).get(m['round']))}</td>",
        ]
        for method in METHOD_LABELS:
            value = m.get(method)
            change = _change(changes[method].get(m["round"]))
            cells.append(
                f"<td>{value['accuracy']:.3f} <small>({value['tokens_per_problem']:.0f} tok)</small>"
                f"{change}{_other_readouts(value)}</td>"
                if value
                else "<td>-</td>"
            )
        cells.append(f"<td>{critic_rounds(m.get('critics'))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _other_readouts(record: dict[str, Any]) -> str:
    """The same search's accuracy under its other read-outs (evaluate_policy's ``other_readouts``)."""
    others = record.get("other_readouts") or {}
    return "".join(f"<br><small>read out by {n}: {o['accuracy']:.3f}</small>" for n, o in others.items())


def write_report(
    run_dir: Path,
    metrics: list[dict[str, Any]],
    *,
    policies: dict[int, str],
    beta: float = 0.1,
    tree_examples: int = 20,
) -> Path:
    """Writes the report of a run directory; ``policies[k]`` is the policy kept after round k.
    Returns the path of ``index.html``."""
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    missing = missing_modules(["matplotlib"])  # the optional "plot" extra
    if missing:
        why = f"matplotlib is not installed ({install_hint(missing)})"
        log.warning("the report has no plots: %s", why)
        figures = f"No plots: {html.escape(why)}."
    else:
        _plot(metrics, "accuracy", "test accuracy", out / "accuracy.png")
        _plot(metrics, "tokens_per_problem", "generated tokens per problem", out / "tokens.png")
        figures = f"{_img(out / 'accuracy.png')} {_img(out / 'tokens.png')}"
    tree_links = []
    for round_dir in round_dirs(run_dir):
        trees_path = round_dir / "trees.json"
        if trees_path.exists():
            trees = json.loads(trees_path.read_text())["trees"][:tree_examples]
            page = out / f"trees-{round_dir.name}.html"
            write_text(page, render_tree_html(trees, title=f"{run_dir.name} {round_dir.name}: search trees"))
            tree_links.append(
                f'<li><a href="{page.name}">{round_dir.name}: {len(trees)} example trees</a></li>'
            )
    credit = _credit_section(run_dir, metrics, policies, beta)
    name = html.escape(run_dir.name)
    body = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>alphallm run {name}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
.tokens{{font-family:monospace;white-space:normal;line-height:1.8;border:1px solid #ddd;padding:8px}}
img{{max-width:49%}}</style></head><body>
<h1>alphallm run: {html.escape(run_dir.name)}</h1>{_kept_policy(run_dir, metrics, policies)}
<h2>Accuracy by round</h2>{_table(metrics, _gates(run_dir, metrics))}
<p><small>Under each accuracy: its change from the round before on the same test problems, and z, that
change over its paired standard error (bold beyond 2). Error bars in the plot: one binomial standard
error.</small></p>
<p>{figures}</p>
<h2>Search trees</h2><ul>{"".join(tree_links) or "<li>none</li>"}</ul>
{credit}
</body></html>"""
    index = out / "index.html"
    write_text(index, body)
    return index


def _kept_policy(run_dir: Path, metrics: list[dict[str, Any]], policies: dict[int, str]) -> str:
    """Which policy the run kept last: a round's ``policy`` directory is only its SFT + DPO candidate."""
    from alphallm.lm.loading import KEPT_POLICY

    last = metrics[-1]["round"] if metrics else None
    if last not in policies:
        return ""
    where = Path(policies[last])
    shown = where.relative_to(run_dir) if where.is_relative_to(run_dir) else where
    linked = (run_dir / KEPT_POLICY).is_symlink()
    link = f" (the run directory's <code>{KEPT_POLICY}</code> links to it)" if linked else ""
    return f"<p>The policy kept after round {last}: <code>{html.escape(str(shown))}</code>{link}.</p>"


def _gates(run_dir: Path, metrics: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each round's gate record (``round-<k>/gate.json``), where there is one."""
    paths = {m["round"]: run_dir / f"round-{m['round']}" / "gate.json" for m in metrics}
    return {k: json.loads(path.read_text()) for k, path in paths.items() if k and path.exists()}


def _credit_section(
    run_dir: Path, metrics: list[dict[str, Any]], policies: dict[int, str], beta: float
) -> str:
    """The r->Q* view on one DPO pair of the last round that trained with DPO."""
    for m in reversed(metrics):
        k = m["round"]
        round_dir = run_dir / f"round-{k}"
        dpo_path, data_path = round_dir / "dpo.json", round_dir / "data.json"
        if k == 0 or not dpo_path.exists() or json.loads(dpo_path.read_text()).get("skipped"):
            continue
        pairs = json.loads(data_path.read_text())["pairs"]
        if not pairs:
            continue
        previous = policies[k - 1]
        pair = pairs[0]
        chosen, rejected = credit_assignment(
            str(round_dir / "policy"), previous, pair["prompt"], [pair["chosen"], pair["rejected"]], beta
        )
        prompt = html.escape(pair["prompt"]).replace("\n", "<br>")
        return f"""<h2>Credit assignment (r&rarr;Q*)</h2>
<p>Round {k}'s DPO-trained policy against its reference (the policy before round {k}). Each token is
coloured by its implicit reward &beta;&middot;log &pi;/&pi;<sub>ref</sub> (&beta; = {beta}): green where the
policy now prefers the token, red where it now avoids it. Hover a token for its value.</p>
<p><b>State</b><br><span class="tokens">{prompt}</span></p>
<p><b>Verified correct continuation</b> (sum {sum(v for _, v in chosen):+.3f})</p>
<div class="tokens">{_heat(chosen)}</div>
<p><b>Verified wrong continuation</b> (sum {sum(v for _, v in rejected):+.3f})</p>
<div class="tokens">{_heat(rejected)}</div>"""
    return "<h2>Credit assignment (r&rarr;Q*)</h2><p>No round trained with DPO.</p>"
