from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from alphallm.search import (
    EvalRequest,
    Evaluation,
    ExpandRequest,
    MCTSConfig,
    Option,
    Tree,
    beam_search,
    best_first,
    read_out,
    sample_chains,
    search,
)
from alphallm.search.readout import best_value, most_visited, vote
from alphallm.search.selection import (
    allowed_children,
    importance,
)
from alphallm.search.tree import ROOT


def _h(*parts: object) -> int:
    return int(hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest(), 16)


class FakeModel:
    """A seeded fake policy and critic: options and values are pure functions of their inputs."""

    def __init__(self, depth: int = 3, letters: int = 5) -> None:
        self.depth, self.letters = depth, letters
        self.expand_calls = self.eval_calls = 0

    def option(self, state: str, depth: int, seed: int, index: int, greedy: bool) -> Option:
        h = _h(state, "greedy") if greedy else _h(state, seed, index)
        text = f"{chr(97 + h % self.letters)}{h % 7}\n"
        return Option(text=text, num_tokens=3, logprob=-(h % 5) / 2, terminal=depth + 1 >= self.depth)

    def value(self, state: str) -> float:
        return (_h(state, "value") % 1000) / 1000

    def expand(self, requests: Sequence[ExpandRequest]) -> list[list[Option]]:
        self.expand_calls += 1
        return [[self.option(r.state, r.depth, r.seed, k, r.greedy) for k in range(r.n)] for r in requests]

    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        self.eval_calls += 1
        return [Evaluation(value=self.value(r.state), verified=None) for r in requests]


# -- the small formulas ------------------------------------------------------------------------------
def test_importance_and_widening_formula() -> None:
    assert importance(np.array([0.2, 0.9, 0.5]), 0.4) == pytest.approx(0.5)
    assert importance(np.array([0.2, 0.6]), None) == pytest.approx(0.2)  # root: spread around the mean
    kwargs = {"alpha": 8.0, "c_min_root": 4, "c_max_root": 12, "c_min": 2, "c_max": 6}
    assert allowed_children(0.0, 0, **kwargs) == 4
    assert allowed_children(0.5, 0, **kwargs) == 5  # floor(8 * 0.5) + 1
    assert allowed_children(0.9, 0, **kwargs) == 8
    assert allowed_children(0.05, 2, **kwargs) == 2
    assert allowed_children(0.9, 2, **kwargs) == 6  # capped by c_max


# -- search invariants ---------------------------------------------------------------------------
def _check_backups(tree: Tree, b: int, revisits: dict[int, int] | None = None) -> None:
    """Visits and value sums of every node equal its own backups plus its children's."""
    for node in range(int(tree.num_nodes[b])):
        kids = tree.child_ids(b, node)
        own = 0 if node == ROOT else 1 + (revisits or {}).get(node, 0)
        assert tree.visits[b, node] >= own + tree.visits[b, kids].sum()
        if not tree.terminal[b, node]:
            assert tree.visits[b, node] == own + tree.visits[b, kids].sum()
            expected = (0 if node == ROOT else tree.raw_value[b, node]) + tree.value_sum[b, kids].sum()
            assert tree.value_sum[b, node] == pytest.approx(expected)


def test_batched_search_is_consistent_and_seeded() -> None:
    model = FakeModel()
    config = MCTSConfig(num_simulations=30, leaves_per_wave=4, merge="off")
    roots = [f"problem {i}\n" for i in range(5)]
    tree = search(
        roots, expand_fn=model.expand, evaluate_fn=model.evaluate, config=config, rng=np.random.default_rng(1)
    )
    assert (tree.simulations == 30).all()
    assert tree.visits[:, ROOT].tolist() == [30] * 5
    for b in range(5):
        _check_backups(tree, b)
    # One batched model call per wave for all five trees: far fewer calls than simulations.
    assert model.expand_calls <= 2 * math.ceil(30 / 4) + 2
    again = search(
        roots, expand_fn=model.expand, evaluate_fn=model.evaluate, config=config, rng=np.random.default_rng(1)
    )
    other = search(
        roots, expand_fn=model.expand, evaluate_fn=model.evaluate, config=config, rng=np.random.default_rng(2)
    )
    assert [tree.to_dict(b) for b in range(5)] == [again.to_dict(b) for b in range(5)]
    assert [tree.to_dict(b) for b in range(5)] != [other.to_dict(b) for b in range(5)]


def test_adaptive_branching_widens_important_nodes() -> None:
    model = FakeModel(depth=2, letters=26)

    def split_values(requests: Sequence[EvalRequest]) -> list[Evaluation]:
        # Children of the root disagree sharply (0 or 1): the root is important and must widen.
        return [Evaluation(value=float(ord((r.option.text or "a")[0]) % 2)) for r in requests]

    def flat_values(requests: Sequence[EvalRequest]) -> list[Evaluation]:
        return [Evaluation(value=0.5) for _ in requests]

    config = MCTSConfig(
        num_simulations=40, alpha=20.0, c_min_root=2, c_max_root=10, c_min=2, c_max=3, merge="off"
    )
    rng = np.random.default_rng
    tree = search(["x\n"], expand_fn=model.expand, evaluate_fn=split_values, config=config, rng=rng(0))
    values = tree.raw_value[0, tree.child_ids(0, ROOT)]
    assert values.min() == 0.0 and values.max() == 1.0
    assert tree.width[0, ROOT] == 10 and tree.num_children[0, ROOT] > 2
    assert all(tree.num_children[0, n] <= 3 for n in range(1, int(tree.num_nodes[0])))
    tree = search(["x\n"], expand_fn=model.expand, evaluate_fn=flat_values, config=config, rng=rng(0))
    assert tree.width[0, ROOT] == 2 and tree.num_children[0, ROOT] == 2
    fixed = MCTSConfig(num_simulations=40, adaptive_branching=False, fixed_width=3, merge="off")
    tree = search(["x\n"], expand_fn=model.expand, evaluate_fn=split_values, config=fixed, rng=rng(0))
    assert all(tree.num_children[0, n] <= 3 for n in range(int(tree.num_nodes[0])))
    assert tree.num_children[0, ROOT] == 3


def test_virtual_loss_spreads_a_wave_over_paths() -> None:
    model = FakeModel(depth=4, letters=26)
    config = MCTSConfig(
        num_simulations=12,
        leaves_per_wave=4,
        c_min_root=2,
        c_max_root=2,
        alpha=0.0,
        c_min=2,
        c_max=2,
        merge="off",
        virtual_loss=1.0,
    )
    selected: list[list[int]] = []

    def expand(requests: Sequence[ExpandRequest]) -> list[list[Option]]:
        selected.append([r.node for r in requests for _ in range(r.n)])
        return model.expand(requests)

    search(["x\n"], expand_fn=expand, evaluate_fn=model.evaluate, config=config, rng=np.random.default_rng(0))
    later = [nodes for nodes in selected[1:] if len(nodes) > 1]
    assert later and all(len(set(nodes)) > 1 for nodes in later)


def test_state_merge_modes() -> None:
    calls = [0]

    def first_call_repeats(requests: Sequence[ExpandRequest]) -> list[list[Option]]:
        # The first wave's samples are all the same line; re-samples are all different.
        calls[0] += 1
        return [
            [
                Option("same step\n" if calls[0] == 1 else f"fresh step {calls[0]}.{r.node}.{k}\n")
                for k in range(r.n)
            ]
            for r in requests
        ]

    def evaluate(requests: Sequence[EvalRequest]) -> list[Evaluation]:
        return [Evaluation(value=0.5) for _ in requests]

    base = {
        "num_simulations": 12,
        "c_min_root": 4,
        "c_max_root": 4,
        "alpha": 0.0,
        "greedy_first_child": False,
        "max_depth": 2,
        "merge_threshold": 0.8,
    }

    def root_texts(mode: str) -> tuple[Tree, list[str]]:
        calls[0] = 0
        tree = search(
            ["x\n"],
            expand_fn=first_call_repeats,
            evaluate_fn=evaluate,
            config=MCTSConfig(merge=mode, **base),
            rng=np.random.default_rng(0),
        )
        return tree, [tree.options[0][c].text for c in tree.child_ids(0, ROOT)]

    _, texts_off = root_texts("off")
    assert texts_off == ["same step\n"] * 4
    _, texts_resample = root_texts("resample")
    assert texts_resample.count("same step\n") == 1 and len(set(texts_resample)) == 4
    merged = search(
        ["x\n"],
        expand_fn=lambda rs: [[Option("same step\n")] * r.n for r in rs],
        evaluate_fn=evaluate,
        config=MCTSConfig(merge="merge", **base),
        rng=np.random.default_rng(0),
    )
    assert merged.num_children[0, ROOT] == 1
    only = int(merged.child_ids(0, ROOT)[0])
    assert len(merged.merged[0][only]) >= 3 and merged.visits[0, only] >= 4


def test_drop_twins_closes_a_node_whose_policy_repeats_itself() -> None:
    # A policy that can write only one line at the root and two at depth 1: every further sample repeats.
    def expand(requests: Sequence[ExpandRequest]) -> list[list[Option]]:
        out = []
        for r in requests:
            lines = ["only\n"] if r.depth == 0 else ["left\n", "right\n"]
            picks = [lines[(r.seed + k) % len(lines)] for k in range(r.n)]
            out.append([Option(text, terminal=r.depth >= 1) for text in picks])
        return out

    def evaluate(requests: Sequence[EvalRequest]) -> list[Evaluation]:
        return [Evaluation(value=0.5) for _ in requests]

    base = {"num_simulations": 10, "c_min_root": 3, "c_max_root": 3, "c_min": 3, "c_max": 3, "alpha": 0.0}

    def run(drop: bool) -> Tree:
        return search(
            ["x\n"],
            expand_fn=expand,
            evaluate_fn=evaluate,
            config=MCTSConfig(drop_twins=drop, leaves_per_wave=1, **base),
            rng=np.random.default_rng(0),
        )

    kept = run(False)
    assert [kept.options[0][c].text for c in kept.child_ids(0, ROOT)] == ["only\n"] * 3  # twins kept
    dropped = run(True)
    (only,) = dropped.child_ids(0, ROOT)
    assert dropped.closed[0, ROOT] and dropped.options[0][only].text == "only\n"
    below = sorted(dropped.options[0][c].text for c in dropped.child_ids(0, int(only)))
    assert below == ["left\n", "right\n"] and dropped.closed[0, only]
    # Nothing new was left to find: the two answers are revisited, and no simulation went to a twin.
    assert dropped.num_nodes[0] == 4 and dropped.simulations[0] == 10
    assert dropped.visits[0, ROOT] == 10


def test_dead_ends_do_not_count_toward_width() -> None:
    def expand(requests: Sequence[ExpandRequest]) -> list[list[Option]]:
        return [
            [Option(f"step {r.seed % 1000}\n", terminal=r.depth >= 1) for _ in range(r.n)] for r in requests
        ]

    def evaluate(requests: Sequence[EvalRequest]) -> list[Evaluation]:
        # Only steps whose number is divisible by 7 pass the "verifier"; the rest are dead ends.
        out = []
        for r in requests:
            if not r.option.text:
                out.append(Evaluation(value=0.5))
                continue
            ok = int(r.option.text.split()[1]) % 7 == 0
            out.append(Evaluation(value=float(ok), critics={"tool": float(ok)}, prune=not ok))
        return out

    config = MCTSConfig(
        num_simulations=40, c_min_root=1, c_max_root=12, c_min=1, c_max=2, alpha=0.0, merge="off"
    )
    tree = search(
        ["x\n"], expand_fn=expand, evaluate_fn=evaluate, config=config, rng=np.random.default_rng(3)
    )
    kids = tree.child_ids(0, ROOT)
    assert tree.pruned[0, kids].sum() >= 1  # rejected steps stay in the tree as dead ends...
    assert tree.live_children(0, ROOT) >= 1  # ...and the root kept sampling until one passed
    dead = np.flatnonzero(tree.pruned[0, : tree.num_nodes[0]])
    assert all(tree.num_children[0, n] == 0 for n in dead)
    # A dead end is backed up once, when it is found: selection spends no simulation on it again
    # while the root has a live child or a new one on its way (it would only back up the same 0).
    assert (tree.visits[0, kids[tree.pruned[0, kids]]] == 1).all()


def test_root_is_evaluated_when_a_critic_can_judge_it() -> None:
    seen: list[str] = []

    def evaluate(requests: Sequence[EvalRequest]) -> list[Evaluation]:
        seen.extend(r.state for r in requests if r.node == ROOT)
        return [Evaluation(value=0.25, critics={"rollout": 0.25}) for _ in requests]

    model = FakeModel()
    tree = search(
        ["r\n"],
        expand_fn=model.expand,
        evaluate_fn=evaluate,
        config=MCTSConfig(num_simulations=4),
        rng=np.random.default_rng(0),
    )
    assert seen == ["r\n"] and tree.raw_value[0, ROOT] == 0.25
    assert tree.visits[0, ROOT] == 4  # the root's own evaluation is not backed up


# -- equivalence with a plain object-based MCTS --------------------------------------------------------
@dataclass
class _Node:
    text: str
    depth: int
    terminal: bool = False
    raw: float = float("nan")
    visits: int = 0
    value_sum: float = 0.0
    width: int = 0
    children: list[_Node] = field(default_factory=list)


def _reference_mcts(root_text: str, model: FakeModel, config: MCTSConfig, rng: np.random.Generator) -> _Node:
    """MCTS written the plain way: objects, one simulation at a time, the paper's rules."""
    root = _Node("", 0, width=config.c_min_root)

    def backup(path: list[_Node], value: float) -> None:
        for n in path:
            n.visits += 1
            n.value_sum += value

    for _ in range(config.num_simulations):
        path, node = [root], root
        while True:
            if node.terminal:  # a terminal reached again backs up its cached value
                backup(path, node.raw)
                break
            if len(node.children) < node.width:  # progressive widening: expand here
                state = root_text + "".join(n.text for n in path)
                greedy = config.greedy_first_child and not node.children
                option = model.option(state, node.depth, int(rng.integers(0, 2**31 - 1)), 0, greedy)
                child = _Node(
                    option.text, node.depth + 1, option.terminal or node.depth + 1 >= config.max_depth
                )
                child.width = config.c_min
                child.raw = model.value(state + option.text)
                node.children.append(child)
                backup([*path, child], child.raw)
                kids = np.array([c.raw for c in node.children])
                own = None if node is root else node.raw
                low, high = (
                    (config.c_min_root, config.c_max_root) if node is root else (config.c_min, config.c_max)
                )
                node.width = max(
                    node.width, max(low, min(math.floor(config.alpha * importance(kids, own)) + 1, high))
                )
                break
            parent = node
            node = max(
                parent.children,
                key=lambda c: (
                    c.value_sum / c.visits + config.c_uct * math.sqrt(math.log(parent.visits) / c.visits)
                ),
            )
            path.append(node)
    return root


def _flatten(node: _Node) -> list[tuple[str, int, float]]:
    out = [(node.text, node.visits, round(node.value_sum, 9))]
    for child in node.children:
        out.extend(_flatten(child))
    return out


def _flatten_tree(tree: Tree, b: int, node: int = ROOT) -> list[tuple[str, int, float]]:
    option = tree.options[b][node]
    out = [
        (option.text if option else "", int(tree.visits[b, node]), round(float(tree.value_sum[b, node]), 9))
    ]
    for child in tree.child_ids(b, node):
        out.extend(_flatten_tree(tree, b, int(child)))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_array_tree_equals_plain_mcts(seed: int) -> None:
    model = FakeModel(depth=3, letters=4)
    config = MCTSConfig(
        num_simulations=40,
        leaves_per_wave=1,
        merge="off",
        alpha=6.0,
        c_min_root=2,
        c_max_root=6,
        c_min=2,
        c_max=4,
    )
    fast = search(
        ["root\n"],
        expand_fn=model.expand,
        evaluate_fn=model.evaluate,
        config=config,
        rng=np.random.default_rng(seed),
    )
    plain = _reference_mcts("root\n", model, config, np.random.default_rng(seed))
    assert _flatten_tree(fast, 0) == _flatten(plain)


# -- read-outs and baselines ---------------------------------------------------------------------
def _hand_tree() -> Tree:
    tree = Tree.create(["Q\n"], max_nodes=8, max_children=3)
    a = tree.add_child(0, ROOT, Option("a\n"))
    b = tree.add_child(0, ROOT, Option("b\n"))
    a1 = tree.add_child(0, a, Option("Answer: 1\n", terminal=True))
    b1 = tree.add_child(0, b, Option("Answer: 2\n", terminal=True))
    b2 = tree.add_child(0, b, Option("Answer: 2 \n", terminal=True))
    for node, value in [(a, 0.6), (b, 0.4), (a1, 0.9), (b1, 0.5), (b2, 0.45)]:
        tree.set_evaluation(0, node, Evaluation(value=value))
        tree.backup(0, node, value)
    tree.backup(0, b1, 0.5)  # b's subtree is visited more
    return tree


def test_read_outs_on_a_hand_made_tree() -> None:
    tree = _hand_tree()

    def answer(text: str) -> str:
        return text.strip().split()[-1]

    assert most_visited(tree, 0).solution == "b\nAnswer: 2\n"
    assert best_value(tree, 0).solution == "a\nAnswer: 1\n"
    assert vote(tree, 0, answer).solution.endswith("2\n")  # 0.5 + 0.45 > 0.9
    assert vote(tree, 0, answer, weighted=False).readout == "majority"
    assert read_out(tree, 0, "auto", answer).readout == "most_visited"


def test_baselines_share_the_harness() -> None:
    model = FakeModel(depth=3)
    rng = np.random.default_rng(0)
    roots = ["p\n", "q\n"]
    chains = sample_chains(
        roots, expand_fn=model.expand, evaluate_fn=model.evaluate, n=4, max_depth=3, rng=rng
    )
    assert [len(chains.terminals(b)) for b in range(2)] == [4, 4]
    assert all(not np.isnan(chains.raw_value[b, t]) for b in range(2) for t in chains.terminals(b))
    greedy = sample_chains(
        roots, expand_fn=model.expand, evaluate_fn=None, n=1, max_depth=3, rng=rng, greedy=True
    )
    assert [greedy.solution(b, int(greedy.terminals(b)[0])) for b in range(2)] == [
        greedy.solution(b, int(greedy.terminals(b)[0])) for b in range(2)
    ]
    beam = beam_search(
        roots,
        expand_fn=model.expand,
        evaluate_fn=model.evaluate,
        beam_width=2,
        expansions=3,
        max_depth=3,
        rng=rng,
    )
    assert all(len(beam.terminals(b)) >= 2 for b in range(2))
    bfs = best_first(
        roots,
        expand_fn=model.expand,
        evaluate_fn=model.evaluate,
        expansions=2,
        budget=5,
        max_depth=3,
        rng=rng,
        stop_at_first=False,
    )
    assert all(bfs.num_nodes[b] <= 1 + 5 * 2 for b in range(2))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_simulations": 2.5}, "num_simulations: expected an integer, not 2.5"),
        ({"num_simulations": True}, "num_simulations: expected an integer, not True"),
        ({"adaptive_branching": "no"}, "adaptive_branching: expected true or false, not 'no'"),
        ({"c_uct": float("nan")}, "c_uct: expected a finite number, not nan"),
        ({"merge": 1}, "merge: expected a string, not 1"),
    ],
)
def test_mcts_settings_of_the_wrong_type_are_refused(settings: dict[str, object], message: str) -> None:
    """YAML hands over what was written: a float count would fail deep in numpy, "no" would read as true."""
    with pytest.raises(ValueError, match=re.escape(message)):
        MCTSConfig.from_dict(settings)
    with pytest.raises(ValueError, match="expected a mapping of search settings, not 48"):
        MCTSConfig.from_dict(48)  # type: ignore[arg-type]
    # numpy's integers count, and an int is a float
    assert MCTSConfig(num_simulations=np.int64(4), c_uct=2).num_simulations == 4  # type: ignore[arg-type]


def test_type_problem_reads_nested_annotations() -> None:
    from alphallm.search.config import type_problem

    assert type_problem({"a": 1.0}, dict[str, float], "w") is None
    assert type_problem({"a": "x"}, dict[str, float], "w") == "w.a: expected a finite number, not 'x'"
    assert type_problem({1: 1.0}, dict[str, float], "w") == "w: key 1: expected a string, not 1"
    assert type_problem(["vote", 3], list[str], "r") == "r[1]: expected a string, not 3"
    assert type_problem(None, int | None, "m") is None
    assert type_problem(2.5, int | None, "m") == "m: expected an integer or null, not 2.5"
