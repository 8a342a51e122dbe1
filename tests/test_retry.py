"""Retry traces (learn.retry_mix): the failed attempts are the policy's own dead ends, a trace puts
them before a solution that starts otherwise, and the loop's SFT stage trains on such traces."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from alphallm.errors import UserError
from alphallm.lm import load_lm
from alphallm.loop_config import EvalSettings, LoopConfig, build
from alphallm.tasks.base import Problem
from alphallm.tasks.game24 import RETRY_LINE, Game24Task
from alphallm.train.retry import failed_attempts, retry_rows

TASK = Game24Task()
PUZZLE = Problem("p", "2 5 8 11")
PROMPT = TASK.format_prompt(PUZZLE)
SOLUTION = "11-5=6 (left: 2 6 8)\n8/2=4 (left: 4 6)\n6*4=24 (left: 24)\nAnswer: (11-5)*8/2=24\n"
DEAD_ENDS = [
    "8*2=16 (left: 5 11 16)\n11-5=6 (left: 6 16)\n",
    "5+2=7 (left: 7 8 11)\n11-8=3 (left: 3 7)\n",
    "11-5=6 (left: 2 6 8)\n8+2=10 (left: 6 10)\n",  # starts like the solution: never before it
]


def test_the_dead_ends_above_are_what_failed_attempts_keeps() -> None:
    assert all(TASK.check_step(PUZZLE, "", a.split("\n")[0]) for a in DEAD_ENDS)
    assert all(TASK.solvable_after(PUZZLE, a) is False for a in DEAD_ENDS)
    assert TASK.check(PUZZLE, SOLUTION)


def test_a_trace_puts_attempts_that_start_otherwise_before_the_solution() -> None:
    rows = [(PROMPT, SOLUTION)] * 50
    fails = {PROMPT: DEAD_ENDS}
    traces = retry_rows(rows, fails, mix=[0.0, 0.0, 1.0], retry_line=RETRY_LINE, seed=0)
    for prompt, trace in traces:
        attempts = trace.split(RETRY_LINE + "\n")
        assert prompt == PROMPT and attempts[-1] == SOLUTION
        assert sorted(attempts[:-1]) == sorted(DEAD_ENDS[:2])  # two asked for, two usable
        assert TASK.check(PUZZLE, trace)  # the task reads the retry: the trace is a solution
    one = retry_rows(rows, fails, mix=[0.5, 0.5], retry_line=RETRY_LINE, seed=0)
    assert 10 < sum(RETRY_LINE in trace for _, trace in one) < 40  # about half the rows retry
    assert all(trace.count(RETRY_LINE) <= 1 for _, trace in one)
    assert retry_rows(rows, fails, mix=[1.0], retry_line=RETRY_LINE, seed=0) == rows
    assert retry_rows(rows, {}, mix=[0.0, 1.0], retry_line=RETRY_LINE, seed=0) == rows


def test_failed_attempts_are_the_policys_legal_moves_that_leave_24_unreachable() -> None:
    puzzles = TASK.problems("train")[:12]
    prompts = [TASK.format_prompt(p) for p in puzzles]
    fails = failed_attempts(TASK, load_lm("game24-base"), prompts, samples=6, seed=0)
    assert set(fails) == set(prompts) and sum(map(len, fails.values())) >= 12
    for problem, prompt in zip(puzzles, prompts):
        assert len(fails[prompt]) <= 6
        assert len({a.split("\n")[0] for a in fails[prompt]}) == len(fails[prompt])
        for attempt in fails[prompt]:
            first, second = attempt.splitlines()
            assert TASK.check_step(problem, "", first) and TASK.check_step(problem, first + "\n", second)
            assert TASK.solvable_after(problem, attempt) is False


def test_retry_settings_are_checked() -> None:
    with pytest.raises(UserError, match=r"learn.retry_mix: task 'arith' has no retry line"):
        build(LoopConfig, {"task": "arith", "learn": {"retry_mix": [0.5, 0.5]}})
    with pytest.raises(UserError, match=r"retry_mix must be non-negative"):
        build(LoopConfig, {"task": "game24", "policy": "game24-base", "learn": {"retry_mix": [0.0]}})
    with pytest.raises(UserError, match=r"max_tokens"):
        build(EvalSettings, {"max_tokens": 0})
    sampled = build(EvalSettings, {"gate_metric": "sampled", "max_tokens": 400})
    assert sampled.gate_score != build(EvalSettings, {"gate_metric": "sampled"}).gate_score


def test_the_loops_sft_stage_trains_on_retry_traces_and_its_gate_decodes_longer(tmp_path: Path) -> None:
    from alphallm.loop import Loop
    from alphallm.loop_learn import sft_stage

    rng = random.Random(0)
    rows = [
        (TASK.format_prompt(p), s) for p in TASK.problems("train")[:16] for s in TASK.solutions(p, 2, rng)
    ]
    config = {
        "name": "retry",
        "task": "game24",
        "policy": "game24-base",
        "out_dir": str(tmp_path),
        "learn": {"retry_mix": [0.0, 1.0], "sft": {"epochs": 1, "batch_size": 8}},
        "evaluate": {"dev_problems": 4, "max_tokens": 7},
    }
    loop = Loop(build(LoopConfig, config))
    loop.round_dir(1).mkdir(parents=True)
    (loop.round_dir(1) / "data.json").write_text(json.dumps({"sft": rows, "pairs": []}))
    record = sft_stage(loop, 1)
    assert record["rows"] == len(rows) and record["retry"]["prompts"] == 16
    assert record["retry"]["rows_with_a_retry"] > len(rows) // 2
    for prompt, trace in record["retry"]["examples"]:
        assert RETRY_LINE in trace and TASK.check(TASK.problem_from_prompt(prompt), trace)
    assert (loop.round_dir(1) / "sft" / "config.json").is_file()
    assert all(r.tokens <= 7 for r in loop.dev_evaluation("game24-base").records)


def test_the_legal_step_rate_counts_moves_not_retry_lines() -> None:
    from alphallm.evaluation import _record
    from alphallm.lm.base import Completion

    # An illegal move (2*5 is not 12), back, then the four lines of the solution.
    trace = "2*5=12 (left: 8 11 12)\nback\n" + SOLUTION
    record = _record(TASK, PUZZLE, Completion(trace, finish_reason="eos"))
    assert not record.correct  # its attempt was abandoned, but every attempt's moves must hold
    assert (record.legal_steps, record.checked_steps) == (3, 1 + 3)  # the moves; answer lines are not steps
