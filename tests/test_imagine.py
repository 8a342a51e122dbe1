"""Imagination, the loop's first stage: problems written by the shipped policies, and what is kept."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from alphallm.evaluation import evaluate
from alphallm.imagine import agreed_answer, answer_by_agreement, imagine_problems, mix_problems
from alphallm.lm import load_lm
from alphallm.tasks import get_task
from alphallm.tasks.base import Problem


@pytest.fixture(scope="module")
def arith_lm() -> Any:
    return load_lm("arith-base")


def _accounted(stats: Any) -> int:
    return stats.kept + stats.invalid + stats.unsolvable + stats.not_train + stats.duplicate + stats.surplus


def test_imagined_arith_problems_are_new_train_items_and_a_pool_is_never_repeated(arith_lm: Any) -> None:
    task = get_task("arith")
    first, stats = imagine_problems(task, arith_lm, 24, seed=0)
    questions = [p.question for p in first]
    assert len(questions) == len(set(questions)) == 24
    assert all(task.split_of(q) == "train" and task.parse_question(q) == p for q, p in zip(questions, first))
    assert stats.sampled == 48 == _accounted(stats)  # one batch of 2n samples filled it
    assert stats.not_train > 0  # the policy writes dev and test items too; none was kept

    # the same samples again, with the first batch as the pool: all 24 come back as duplicates
    again, stats = imagine_problems(task, arith_lm, 24, pool=questions, seed=0)
    assert stats.duplicate >= 24 and stats.sampled == _accounted(stats)
    assert len(again) == 24 and not {p.question for p in again} & set(questions)


def test_few_shot_imagination_shows_examples_and_never_returns_one(arith_lm: Any) -> None:
    task = get_task("arith")
    shown = [Problem("a", "3+4"), Problem("b", "5*6-2")]
    assert task.imagine_prompt(shown) == "Q: 3+4\nQ: 5*6-2\nQ: " and task.imagine_prompt() == "Q: "
    examples = task.generate(random.Random(1), 40, {"min_ops": 1, "max_ops": 2})
    problems, stats = imagine_problems(task, arith_lm, 24, seed=0, examples=examples, shots=3)
    assert 0 < len(problems) <= 24 and stats.sampled == _accounted(stats)
    assert all(task.split_of(p.question) == "train" for p in problems)
    assert not {p.question for p in problems} & {p.question for p in examples}  # a copy is no new problem
    # The shipped models write documents (a problem, then its solution), not lists of problems: after
    # examples most samples are not a problem at all, which is why imagine.examples defaults to 0.
    assert stats.invalid > stats.sampled / 2
    # Without shots the prompts are the bare prefix, as before: the same problems as without examples.
    plain, _ = imagine_problems(task, arith_lm, 8, seed=0)
    assert imagine_problems(task, arith_lm, 8, seed=0, examples=examples, shots=0)[0] == plain
    # An example the policy writes again is a duplicate, not a new problem.
    again, stats = imagine_problems(task, arith_lm, 8, seed=0, examples=plain, shots=0)
    assert stats.duplicate >= 8 and not {p.question for p in again} & {p.question for p in plain}


def test_under_a_chat_template_imagination_asks_in_the_users_turn(tiny_chat_model_dir: Any) -> None:
    from alphallm.lm.loading import with_model_chat_template

    task = with_model_chat_template(get_task("gsm8k"), tiny_chat_model_dir)
    prompt = task.imagine_prompt([Problem("a", "How many eggs are left if 3 of 12 break?")])
    assert prompt.startswith("<|user|>Question: How many eggs are left if 3 of 12 break?\n")
    assert "Write one new problem" in prompt and prompt.endswith("<|assistant|>Question: ")
    assert task.imagine_prompt() == "Question: "  # no examples: the bare prefix, as for a base model


def test_imagined_game24_puzzles_are_solvable_and_never_dev_or_test() -> None:
    task = get_task("game24")
    puzzles, stats = imagine_problems(task, load_lm("game24-base"), 40, seed=0)
    assert len(puzzles) == 40
    assert all(task.solvable(p) and task.split_of(p.question) == "train" for p in puzzles)
    # the rules-only base writes unsolvable puzzles and Tree of Thoughts dev/test ones: both are dropped
    assert stats.unsolvable > 0 and stats.not_train > 0 and stats.sampled == _accounted(stats)


def test_a_mixed_batch_fills_the_rest_from_the_generator_without_repeats(arith_lm: Any) -> None:
    task = get_task("arith")
    pool = {p.question for p in imagine_problems(task, arith_lm, 10, seed=3)[0]}
    problems, stats = mix_problems(
        task, arith_lm, 30, imagined_fraction=0.5, pool=pool, difficulty={"min_ops": 4, "max_ops": 6}, seed=3
    )
    questions = [p.question for p in problems]
    assert len(questions) == len(set(questions)) == 30 and not set(questions) & pool
    assert stats["imagined"]["kept"] == 15 and stats["generated"] == 15
    assert all(task.split_of(q) == "train" for q in questions)
    assert all(4 <= sum(c in "+-*/" for c in q) <= 6 for q in questions[15:])  # the generator's difficulty


def test_an_agreed_answer_needs_its_share_of_all_samples_and_equal_answers_vote_together() -> None:
    task = get_task("gsm8k")
    problem = Problem("q", "Tom has 3 apples and buys 4 more. How many apples does he have?")
    # Five of eight reach 7 (as 7, 7.0 and 7.00: gsm8k compares numbers), two reach 8, one states nothing.
    # Finished solutions end in a newline (``finish_solution``); a cut-off last line states nothing.
    texts = ["3+4=7\n#### 7\n"] * 3 + ["#### 7.0\n", "#### 7.00\n", "#### 8\n", "#### 8\n", "I do not know\n"]
    assert agreed_answer(task, problem, texts, agreement=0.6) == "7"
    assert agreed_answer(task, problem, texts, agreement=0.7) is None  # 5/8 < 0.7
    assert agreed_answer(task, problem, [], agreement=0.1) is None
    # Text that only ends in a number states no answer, though gsm8k's check would read it: it does not vote.
    unstated = ["he has 3 and then 7\n"] * 6 + ["#### 7\n"] * 2
    assert task.check(Problem("q", problem.question, "7"), unstated[0])
    assert agreed_answer(task, problem, unstated, agreement=0.5) is None


def test_problems_without_answers_keep_the_one_the_policy_agrees_on_and_it_is_mostly_right(
    arith_lm: Any,
) -> None:
    task = get_task("arith")
    truth = task.problems("test")[:40]
    hidden = [replace(p, answer=None) for p in truth]
    mixed = [*hidden, *truth[:3]]  # the last three keep their gold answers and are left alone
    kept, stats = answer_by_agreement(task, arith_lm, mixed, samples=8, agreement=0.6, temperature=0.7)
    assert stats.to_dict() == {"unanswered": 40, "agreed": stats.agreed, "dropped": 40 - stats.agreed}
    assert 5 <= stats.agreed <= 35
    assert kept[-3:] == truth[:3]
    answered = {p.id: p.answer for p in kept[:-3]}
    assert all(answer is not None for answer in answered.values())
    by_id = {p.id: p for p in truth}
    right = sum(int(answer) == int(by_id[i].answer) for i, answer in answered.items()) / len(answered)
    greedy = evaluate(task, arith_lm, truth, method="greedy").metrics["accuracy"]
    # Agreement is the guard against training on wrong answers: kept answers beat the policy's greedy.
    assert right > greedy + 0.1, (right, greedy)
