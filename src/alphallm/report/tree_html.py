"""One self-contained HTML page that browses saved search trees (``Tree.to_dict`` plus ``problem_id``).

The page needs no network: CSS and a small vanilla-JS script are inline and the trees are embedded
as JSON, so a file copied off a cluster opens anywhere. The JS builds the tree on load.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

__all__ = ["render_tree_html"]

# Placeholders are filled in one pass (see render_tree_html) so a title can never inject the data
# marker or the other way round. No ``{}`` formatting: the CSS and JS are full of braces.
_PLACEHOLDER = re.compile(r"__(TITLE|DATA)__")

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
  background: #f6f8fa; }
header { position: sticky; top: 0; z-index: 1; padding: 10px 16px; background: #fff;
  border-bottom: 1px solid #d0d7de; }
header h1 { margin: 0; font-size: 16px; }
.bar-line { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; margin-top: 6px; }
#prompt { margin: 6px 0 0; padding: 4px 8px; max-height: 6em; overflow: auto; background: #f0f2f5;
  border-radius: 4px; font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  white-space: pre-wrap; }
button, select { font: inherit; padding: 2px 10px; border: 1px solid #d0d7de; border-radius: 6px;
  background: #f6f8fa; cursor: pointer; }
.legend, .muted { color: #656d76; font-size: 12px; }
main { display: flex; align-items: flex-start; gap: 12px; padding: 12px 16px; }
#tree { flex: 1; min-width: 0; overflow-x: auto; padding: 6px; background: #fff;
  border: 1px solid #d0d7de; border-radius: 6px; }
#details { position: sticky; top: 120px; flex: none; width: 380px; overflow: auto; padding: 8px 12px;
  background: #fff; border: 1px solid #d0d7de; border-radius: 6px; }
#details h2 { margin: 0 0 6px; font-size: 15px; }
#details h3 { margin: 10px 0 4px; font-size: 13px; }
#details pre { margin: 2px 0; padding: 4px 6px; max-height: 12em; overflow: auto; background: #f6f8fa;
  border-radius: 4px; font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  white-space: pre-wrap; }
#details table { border-collapse: collapse; font-size: 13px; }
#details td { padding: 1px 10px 1px 0; font-variant-numeric: tabular-nums; }
.kids { margin-left: 20px; padding-left: 4px; border-left: 1px dashed #d0d7de; }
.row { display: flex; align-items: center; gap: 8px; padding: 1px 6px; border-left: 3px solid transparent;
  border-radius: 3px; cursor: pointer; white-space: nowrap; }
.row:hover { background: #ddf4ff; }
.row.best { border-left-color: #0969da; }
.row.best .text { color: #0550ae; font-weight: 600; }
.row.selected { background: #b6e3ff; }
.toggle { width: 12px; color: #8c959f; text-align: center; }
.qbar { flex: none; width: 56px; height: 8px; overflow: hidden; background: #eaeef2; border-radius: 4px; }
.qbar > span { display: block; height: 100%; }
.text { max-width: 60em; overflow: hidden; text-overflow: ellipsis;
  font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.stats { color: #656d76; font-size: 12px; font-variant-numeric: tabular-nums; }
.mark { font-weight: 700; }
.ok { color: #1a7f37; }
.bad { color: #cf222e; }
</style>
</head>
<body>
<header>
  <h1 id="problem"></h1>
  <pre id="prompt"></pre>
  <div class="bar-line">
    <select id="pick" hidden></select>
    <button id="expand">expand all</button>
    <button id="collapse">collapse all</button>
    <span id="summary" class="muted"></span>
    <span class="legend">bar = Q (red 0 &rarr; green 1) &middot; blue = most-visited path &middot;
      &#10003;/&#10007; = verified terminal &middot; click: fold/unfold and pin details</span>
  </div>
</header>
<main>
  <div id="tree"></div>
  <aside id="details"></aside>
</main>
<script type="application/json" id="tree-data">__DATA__</script>
<script>
(function () {
  "use strict";
  const TREES = JSON.parse(document.getElementById("tree-data").textContent);
  const $ = (id) => document.getElementById(id);
  let pinned = null;  // {node, row} shown in the details panel when the mouse leaves the tree

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const num = (x, digits) => (typeof x === "number" ? x.toFixed(digits) : "\\u2013");
  const oneLine = (text) => (text || "").replace(/\\n+$/, "").replace(/\\n/g, " \\u23ce ");
  const qColour = (q) => "hsl(" + Math.round(120 * Math.max(0, Math.min(1, q || 0))) + ", 65%, 45%)";
  function pairs(rows) {  // [[name, value], ...] -> a two-column table
    const table = el("table");
    rows.forEach(([k, v]) => {
      const tr = el("tr");
      tr.append(el("td", "muted", k), el("td", null, String(v ?? "\\u2013")));
      table.append(tr);
    });
    return table;
  }
  function verdict(v) {
    if (v === true) return el("span", "mark ok", "\\u2713");
    if (v === false) return el("span", "mark bad", "\\u2717");
    return null;
  }

  function setFolded(wrap, folded) {
    const box = wrap.querySelector(":scope > .kids");
    if (!box) return;
    box.hidden = folded;
    wrap.firstChild.firstChild.textContent = folded ? "\\u25b8" : "\\u25be";
  }
  function foldAll(folded) {
    document.querySelectorAll("#tree .node").forEach((wrap) => setFolded(wrap, folded));
  }

  function render(index) {
    const tree = TREES[index];
    const nodes = tree.nodes || [];
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const kidsOf = (n) => (n.children || []).map((c) => byId.get(c)).filter(Boolean)
      .sort((a, b) => (b.visits || 0) - (a.visits || 0) || a.id - b.id);
    const root = nodes.find((n) => n.parent === -1 || n.parent == null) || nodes[0];
    const best = new Set();  // the most-visited path: follow the max-visits child from the root
    for (let n = root; n; n = kidsOf(n)[0]) best.add(n.id);
    const openAll = nodes.length <= 60;  // big trees open along the best path only

    function section(box, title, items) {
      if (!items.length) return;
      box.append(el("h3", null, title));
      items.forEach((item) => box.append(item));
    }
    function show(node) {
      const box = $("details");
      box.replaceChildren(el("h2", null, node === root ? "root" : "node " + node.id + " \\u00b7 depth " +
        node.depth));
      const verified = { true: "\\u2713 right", false: "\\u2717 wrong" }[String(node.verified)];
      box.append(pairs([["visits N", node.visits], ["Q", num(node.q, 4)], ["value", num(node.value, 4)],
        ["logprob", num(node.logprob, 3)], ["tokens", node.tokens], ["width", node.width],
        ["terminal", node.terminal ? "yes" : "no"], ["verified", verified]]));
      if (node !== root) section(box, "option", [el("pre", null, node.text || "")]);
      const critics = Object.entries(node.critics || {}).map(([k, v]) => [k, num(v, 4)]);
      if (critics.length) section(box, "critics", [pairs(critics)]);
      section(box, "rollouts (" + (node.rollouts || []).length + ")", (node.rollouts || []).map((r) => {
        const div = el("div");
        const head = el("div", "muted", "score " + num(r.score, 3) + " ");
        const v = verdict(r.verified); if (v) head.append(v);
        div.append(head, el("pre", null, r.text || ""));
        return div;
      }));
      const merged = (node.merged || []).map((t) => el("pre", null, t));
      section(box, "merged options (" + merged.length + ")", merged);
      const path = [];
      for (let n = node; n && n !== root; n = byId.get(n.parent)) path.unshift(n.text || "");
      section(box, "state", [el("pre", null, (tree.root || "") + path.join(""))]);
    }

    function build(node) {
      const wrap = el("div", "node");
      wrap.dataset.id = node.id;
      const row = el("div", best.has(node.id) ? "row best" : "row");
      const kids = kidsOf(node);
      const fill = el("span");
      fill.style.width = Math.round(100 * Math.max(0, Math.min(1, node.q || 0))) + "%";
      fill.style.background = qColour(node.q);
      const qbar = el("span", "qbar");
      qbar.append(fill);
      row.append(el("span", "toggle", kids.length ? "\\u25be" : "\\u00b7"), qbar,
        el("span", "text", node === root ? "(root)" : oneLine(node.text)));
      const v = verdict(node.verified);
      if (v) row.append(v);
      const stats = "N=" + (node.visits ?? 0) + "  Q=" + num(node.q, 3) + "  v=" + num(node.value, 2);
      row.append(el("span", "stats", stats));
      wrap.append(row);
      if (kids.length) {
        const box = el("div", "kids");
        kids.forEach((k) => box.append(build(k)));
        wrap.append(box);
        setFolded(wrap, !(openAll || best.has(node.id)));
      }
      row.addEventListener("mouseenter", () => show(node));
      row.addEventListener("click", () => {
        setFolded(wrap, !wrap.querySelector(":scope > .kids")?.hidden);
        if (pinned) pinned.row.classList.remove("selected");
        pinned = { node, row };
        row.classList.add("selected");
        show(node);
      });
      return wrap;
    }

    $("problem").textContent = tree.problem_id || "tree " + (index + 1);
    $("prompt").textContent = tree.root || "";
    const terminals = nodes.filter((n) => n.terminal);
    const right = terminals.filter((n) => n.verified === true).length;
    $("summary").textContent = nodes.length + " nodes \\u00b7 " + terminals.length + " terminal (" + right +
      " \\u2713) \\u00b7 root N=" + (root ? root.visits : 0);
    pinned = null;
    $("tree").replaceChildren();
    if (!root) return;
    $("tree").append(build(root));
    $("tree").onmouseleave = () => show(pinned ? pinned.node : root);
    show(root);
    // The header's height depends on the prompt: keep the sticky details panel just below it.
    const top = document.querySelector("header").offsetHeight + 12;
    $("details").style.top = top + "px";
    $("details").style.maxHeight = "calc(100vh - " + (top + 12) + "px)";
  }

  const pick = $("pick");
  if (TREES.length > 1) {
    TREES.forEach((t, i) => pick.append(new Option((t.problem_id || "tree " + (i + 1)) + " (" +
      (t.nodes || []).length + " nodes)", String(i))));
    pick.hidden = false;
    pick.addEventListener("change", () => render(Number(pick.value)));
  }
  $("expand").addEventListener("click", () => foldAll(false));
  $("collapse").addEventListener("click", () => foldAll(true));
  if (TREES.length) render(0);
})();
</script>
</body>
</html>
"""


def _script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` become ``\\u`` escapes (valid JSON, decoded by JSON.parse), so option text
    such as ``</script>`` or ``<!--`` cannot end or confuse the script element (Django's json_script
    does the same).
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_tree_html(trees: list[dict[str, Any]], *, title: str) -> str:
    """One self-contained HTML page for ``trees`` (each ``Tree.to_dict(b)``, optionally with ``problem_id``).

    Several trees get a selector that shows one at a time. Raises ValueError for an empty list or a
    tree without a ``nodes`` list.
    """
    if not trees:
        raise ValueError("no trees to render")
    for tree in trees:
        if not isinstance(tree, dict) or not isinstance(tree.get("nodes"), list):
            raise ValueError("every tree needs a 'nodes' list (Tree.to_dict output)")
    values = {"TITLE": html.escape(title), "DATA": _script_json(trees)}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], TEMPLATE)
