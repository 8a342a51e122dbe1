from __future__ import annotations

import functools
import itertools
import json
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from alphallm.errors import UserError
from alphallm.tasks import get_task, load_problems
from alphallm.tasks.arith import ArithTask
from alphallm.tasks.base import Problem
from alphallm.tasks.game24 import Game24Task, solve_numbers
from alphallm.tasks.gsm8k import GSM8KTask


def _step_verdicts(task, problem, solution):
    prefix, out = "", []
    for line in solution.splitlines():
        out.append(task.check_step(problem, prefix, line))
        prefix += line + "\n"
    return out


# -- arith ---------------------------------------------------------------------------------------
def test_arith_splits_are_deterministic_and_disjoint() -> None:
    task = ArithTask()
    splits = {s: task.problems(s) for s in ("train", "dev", "test")}
    assert [p.question for p in ArithTask().problems("test")] == [p.question for p in splits["test"]]
    questions = {s: {p.question for p in ps} for s, ps in splits.items()}
    assert not questions["train"] & questions["test"]
    assert not questions["dev"] & questions["test"]
    assert not questions["train"] & questions["dev"]
    assert all(task.split_of(q) == s for s, qs in questions.items() for q in qs)
    generated = task.generate(random.Random(5), 500, {"min_ops": 4, "max_ops": 6})
    assert not {p.question for p in generated} & questions["test"]


def test_arith_reference_solutions_verify() -> None:
    task = ArithTask()
    for problem in task.problems("test")[:50]:
        solution = task.solve(problem)
        assert task.check(problem, solution) is True
        assert all(_step_verdicts(task, problem, solution))
        assert solution.endswith(f"Answer: {problem.answer}\n")


def test_arith_step_verifier_catches_slips() -> None:
    task = ArithTask()
    problem = task.problem_from_row({"problem": "38+7*6-19"}, default_id="x")
    assert problem.answer == "61"
    good = "7*6=42 -> 38+42-19\n38+42=80 -> 80-19\n80-19=61 -> 61\nAnswer: 61\n"
    assert _step_verdicts(task, problem, good) == [True, True, True, True]
    slip = "7*6=43 -> 38+43-19\n38+43=81 -> 81-19\n81-19=62 -> 62\nAnswer: 62\n"
    assert _step_verdicts(task, problem, slip) == [False, True, True, True]
    assert task.check(problem, slip) is False
    skipped = "7*6=42 -> 80-19\n"
    assert _step_verdicts(task, problem, skipped) == [False]
    assert task.check_step(problem, "", "garbage") is False


def test_arith_noisy_teacher_slips_at_the_requested_rate() -> None:
    task = ArithTask()
    rng = random.Random(0)
    problems = task.generate(rng, 300)
    wrong = sum(not task.check(p, task.teacher_solution(p, rng, noise=0.3)) for p in problems)
    clean = sum(not task.check(p, task.teacher_solution(p, rng, noise=0.0)) for p in problems)
    assert clean == 0
    assert 0.3 < wrong / len(problems) < 0.9


def test_arith_corruptions_miswrite_one_step_and_carry_it_forward() -> None:
    # Hard negatives for the ORM: the steps before the miswritten one are the solution's own, the
    # miswritten one fails the step verifier, every step after it is right from there, and the
    # answer is wrong. Result slips and miscopies (right arithmetic on a wrong number) both occur.
    task, rng = ArithTask(), random.Random(0)
    kinds: list[str] = []
    for problem in task.problems("test")[:100]:
        solution = task.solve(problem)
        for _ in range(3):
            wrong = task.corrupt(problem, solution, rng)
            if wrong is None:
                continue
            assert task.check(problem, wrong) is False
            verdicts = _step_verdicts(task, problem, wrong)
            first = verdicts.index(False)
            assert verdicts[first + 1 :] == [True] * (len(verdicts) - first - 1)
            assert wrong.splitlines()[:first] == solution.splitlines()[:first]
            line, kind = task.mistake(problem, wrong) or (None, "")
            assert line == first
            kinds.append(kind)
    assert len(kinds) > 200 and kinds.count("result") > 50 and kinds.count("miscopy") > 50  # of 300 tries
    problem = task.problems("test")[0]
    assert task.corrupt(problem, "garbage\nAnswer: 3\n", rng) is None
    assert task.corrupt(problem, "", rng) is None


def test_arith_mistake_names_the_first_wrong_line() -> None:
    task = ArithTask()
    problem = task.problem_from_row({"problem": "38+7*6-19"}, default_id="x")
    right = "7*6=42 -> 38+42-19\n38+42=80 -> 80-19\n80-19=61 -> 61\nAnswer: 61\n"
    assert task.mistake(problem, right) is None
    assert task.mistake(problem, "7*6=43 -> 38+43-19\n38+43=81 -> 81-19\n") == (0, "result")
    assert task.mistake(problem, "7*6=42 -> 38+42-19\n38+42=80 -> 80-91\n") == (1, "miscopy")
    assert task.mistake(problem, "7*6=42 -> 38+42-19\n42+42=84 -> 84-19\n") == (1, "miscopy")
    assert task.mistake(problem, "7*6=42 -> 38+42-19\nsee above\n") == (1, "format")
    assert task.mistake(problem, right.replace("Answer: 61", "Answer: 60")) == (3, "answer")


# -- game24 --------------------------------------------------------------------------------------
def test_game24_splits_follow_tree_of_thoughts() -> None:
    task = Game24Task()
    test = task.problems("test")
    assert len(test) == 100
    assert [p.id for p in test] == [f"game24-{r}" for r in range(901, 1001)]
    train = {p.question for p in task.problems("train")}
    assert not train & {p.question for p in test}
    generated = task.generate(random.Random(0), 2000)
    assert all(task.split_of(p.question) == "train" for p in generated)
    assert not {p.question for p in generated} & {p.question for p in test}


def test_game24_solver_solves_every_test_puzzle() -> None:
    task = Game24Task()
    for problem in task.problems("test"):
        solution = task.solve(problem)
        assert solution is not None
        assert task.check(problem, solution) is True
        assert all(_step_verdicts(task, problem, solution))
    assert solve_numbers([1, 1, 1, 1]) is None
    assert solve_numbers([1, 5, 5, 5]) is not None  # needs a fraction: 5*(5-1/5)


def test_game24_sampled_solutions_are_distinct_and_verify() -> None:
    task = Game24Task()
    problem = Problem("p", "4 9 10 13")
    texts = task.solutions(problem, 9, random.Random(0))
    assert len(texts) == len(set(texts)) == 4  # (13-9)*(10-4) in two move orders, (10+9-13)*4, (9-(13-10))*4
    assert all(task.check(problem, t) and all(_step_verdicts(task, problem, t)) for t in texts)
    assert task.solutions(Problem("q", "1 1 1 1"), 3, random.Random(0)) == []


def test_game24_random_teacher_is_legal_but_rarely_wins() -> None:
    task = Game24Task()
    rng = random.Random(0)
    problems = task.generate(rng, 300)
    solutions = [task.teacher_solution(p, rng) for p in problems]
    for problem, solution in zip(problems, solutions):
        assert all(_step_verdicts(task, problem, solution)[:-1])
    assert sum(bool(task.check(p, s)) for p, s in zip(problems, solutions)) / len(problems) < 0.15


def test_game24_rule_verifier() -> None:
    task = Game24Task()
    problem = task.problem_from_row({"numbers": [4, 9, 10, 13]}, default_id="x")
    assert task.check(problem, "Answer: (13-9)*(10-4)=24\n")
    assert not task.check(problem, "Answer: (13-9)*(10-4)+0=24\n")  # uses a number that is not given
    assert not task.check(problem, "Answer: 13+9+10-4=28\n")
    assert not task.check(problem, "Answer: 24\n")
    # The expression makes 24, the work before it does not: not a solution.
    astray = "13+10=23 (left: 4 9 23)\n23-9=14 (left: 4 14)\n14+4=18 (left: 18)\n"
    assert not task.check(problem, astray + "Answer: (13-9)*(10-4)=18\n")
    assert not task.check(problem, astray + "Answer: (13-9)*(10-4)=24\n")
    assert not task.check_step(problem, astray, "Answer: (13-9)*(10-4)=24")
    work = "13-9=4 (left: 4 4 10)\n10-4=6 (left: 4 6)\n4*6=24 (left: 24)\n"
    assert task.check(problem, work + "Answer: (13-9)*(10-4)=24\n")
    assert not task.check(problem, work + "Answer: (13-9)*(10-4)=30\n")  # states a value it is not
    assert not task.check(problem, work.replace("10-4=6", "10-4=7") + "Answer: (13-9)*(10-4)=24\n")
    assert task.check_step(problem, "", "13-9=4 (left: 4 4 10)")
    assert not task.check_step(problem, "", "13-9=5 (left: 4 5 10)")  # wrong arithmetic
    assert not task.check_step(problem, "", "13-8=5 (left: 4 5 10)")  # 8 is not available
    assert not task.check_step(problem, "", "13-9=4 (left: 4 10)")  # numbers left are wrong
    assert task.solvable_after(problem, "13-9=4 (left: 4 4 10)\n") is True
    assert task.solvable_after(problem, "13+10=23 (left: 4 9 23)\n") is False
    assert task.solvable_after(problem, "garbage\n") is None
    fractional = task.problem_from_row({"numbers": [1, 5, 5, 5]}, default_id="y")
    steps = "1/5=1/5 (left: 1/5 5 5)\n5-(1/5)=24/5 (left: 24/5 5)\n5*(24/5)=24 (left: 24)\n"
    assert _step_verdicts(task, fractional, steps) == [True, True, True]
    assert task.solvable_after(fractional, "1/5=1/5 (left: 1/5 5 5)\n") is True  # through a fraction
    assert task.check(fractional, steps + "Answer: 5*(5-1/5)=24\n")
    assert Fraction(24, 5) * 5 == 24


def test_game24_retry_abandons_an_attempt_and_starts_again_from_the_puzzle() -> None:
    task = Game24Task()
    problem = task.problem_from_row({"numbers": [4, 9, 10, 13]}, default_id="x")
    failed = "13+10=23 (left: 4 9 23)\n23-9=14 (left: 4 14)\n"
    work = "13-9=4 (left: 4 4 10)\n10-4=6 (left: 4 6)\n4*6=24 (left: 24)\nAnswer: (13-9)*(10-4)=24\n"
    assert task.check(problem, failed + "back\n" + work)
    assert task.check(problem, failed + "back\n" + failed + "back\n" + work)
    assert task.check(
        problem, failed + "back\nAnswer: (13-9)*(10-4)=24\n"
    )  # an answer without moves, as before
    assert (
        task.check_step(problem, failed, "back") and task.solvable_after(problem, failed + "back\n") is True
    )
    # after back the numbers are the puzzle's again: a move on the abandoned attempt's numbers is illegal
    assert not task.check_step(problem, failed + "back\n", "23-9=14 (left: 4 14)")
    assert not task.check(problem, failed + "back\n" + failed + "Answer: (13-9)*(10-4)=24\n")
    # every attempt's moves must hold, and back needs an attempt to abandon
    assert not task.check(problem, failed.replace("23-9=14", "23-9=15") + "back\n" + work)
    assert not task.check(problem, "back\n" + work) and not task.check(
        problem, failed + "back\nback\n" + work
    )
    assert not task.check(problem, failed + "back\n")  # no answer


@functools.cache
def _reaches_24(numbers: tuple[Fraction, ...]) -> bool:
    """Brute force over every pair, every operation, both orders (negative results included)."""
    if len(numbers) == 1:
        return numbers[0] == 24
    for i, j in itertools.combinations(range(len(numbers)), 2):
        a, b = numbers[i], numbers[j]
        rest = [x for k, x in enumerate(numbers) if k not in (i, j)]
        results = {a + b, a - b, b - a, a * b} | ({a / b} if b else set()) | ({b / a} if a else set())
        if any(_reaches_24(tuple(sorted([*rest, r]))) for r in results):
            return True
    return False


def test_game24_solver_finds_every_reachable_24() -> None:
    """solvable_after relies on the solver, whose moves skip negative results: still exact."""
    sets = [*itertools.combinations_with_replacement(range(1, 14), 4)]
    sets += [*itertools.combinations_with_replacement(range(-6, 30), 2)]
    for numbers in sets:
        key = tuple(sorted(Fraction(x) for x in numbers))
        assert (solve_numbers(numbers) is not None) == _reaches_24(key), numbers


@pytest.mark.parametrize("name", ["arith", "game24", "gsm8k", "math"])
def test_problem_from_prompt_inverts_format_prompt(name: str) -> None:
    task = get_task(name)
    problem = Problem("p", "What is 2+3?\nTwo lines." if name in ("gsm8k", "math") else "4 9 10 13")
    assert task.problem_from_prompt(task.format_prompt(problem), "p") == Problem("p", problem.question)
    assert task.problem_from_prompt("something else entirely") is None


# -- gsm8k ---------------------------------------------------------------------------------------
def test_gsm8k_recovers_every_gold_answer() -> None:
    task = GSM8KTask()
    problems = task.problems("test")
    assert len(problems) == 1319
    data = Path(__file__).resolve().parents[1] / "src/alphallm/tasks/data/gsm8k_test.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    recovered = 0
    for problem, row in zip(problems, rows):
        gold = row["answer"].split("####")[-1].strip().replace(",", "")
        as_written = task.extract_answer(row["answer"] + "\n")
        free_text = row["answer"].split("####")[0] + f"So the answer is {gold}."
        if (
            as_written is not None
            and Fraction(as_written) == Fraction(gold)
            and task.check(problem, row["answer"] + "\n")
            and task.check(problem, free_text)
        ):
            recovered += 1
    assert recovered == 1319


def test_gsm8k_answer_forms_and_calculator_steps() -> None:
    task = GSM8KTask()
    problem = task.problem_from_row({"question": "How many?", "answer": "#### 1,000"}, default_id="x")
    assert problem.answer == "1000"
    for text in ["#### 1000", "The answer is $1,000.", "\\boxed{1000}", "so we get 1000.00"]:
        assert task.check(problem, text + "\n"), text
    assert not task.check(problem, "The answer is 999.\n")
    assert task.check_step(problem, "", "She makes 9 * 2 = $<<9*2=18>>18") is True
    assert task.check_step(problem, "", "She makes 9 * 2 = $<<9*2=19>>19") is False
    assert task.check_step(problem, "", "No calculation here.") is None


# -- user problem files --------------------------------------------------------------------------
def test_user_problem_files(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"problem": "3+4*5"}\n\n{"problem": "(2+3)*4", "id": "mine"}\n')
    problems = load_problems(get_task("arith"), good)
    assert [(p.id, p.answer) for p in problems] == [("good-1", "23"), ("mine", "20")]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "3+4"}\n{"problem": "3+"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: "):
        load_problems(get_task("arith"), bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"numbers": [1, 2, 3, 4]}\n{"numbers": [1, 2, 3\n')
    with pytest.raises(UserError, match=r"broken\.jsonl:2: not valid JSON"):
        load_problems(get_task("game24"), broken)
    with pytest.raises(UserError, match="no such problems file"):
        load_problems(get_task("game24"), tmp_path / "missing.jsonl")
    # A JSON array or a pretty-printed object is one JSON document, which line 1 alone cannot parse.
    rows = [{"numbers": [1, 2, 3, 4]}, {"numbers": [4, 6, 1, 1]}]
    for name, text in (("array.json", json.dumps(rows)), ("pretty.json", json.dumps(rows[0], indent=2))):
        (tmp_path / name).write_text(text)
        kind = "array" if name == "array.json" else "object"
        with pytest.raises(
            UserError, match=rf"{name}: one JSON {kind}, not JSON Lines \(one object per line"
        ):
            load_problems(get_task("game24"), tmp_path / name)
    (tmp_path / "one.jsonl").write_text(json.dumps(rows[0]) + "\n\n")  # one row, which parses whole too
    assert [p.question for p in load_problems(get_task("game24"), tmp_path / "one.jsonl")] == ["1 2 3 4"]
    with pytest.raises(UserError, match="unknown task"):
        get_task("chess")


def test_arith_parse_question_never_raises_on_garbage() -> None:
    # Imagined problems are model output: a shape the canonical reduction cannot walk is refused,
    # never a crash of the loop (it once was: "(3)+4" raised IndexError inside imagination).
    task = get_task("arith")
    for text in ["(3)+4", "2*(3)", "3+(4)", "(((1)))+2", "3(4+5)", "1+2(3)", "((3))4"]:
        assert task.parse_question(text) is None
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice("0123456789+-*/()") for _ in range(rng.randint(1, 14)))
        problem = task.parse_question(text)
        assert problem is None or task.check(problem, f"Answer: {problem.answer}\n")


def test_problem_files_refuse_what_would_lose_or_misread_problems(tmp_path: Path) -> None:
    arith = get_task("arith")
    cases = {
        # two trees saved under one id would overwrite each other
        "dup.jsonl": (
            b'{"problem": "1+2", "id": "a"}\n{"problem": "3+4", "id": "a"}\n',
            ":2: duplicate id 'a'",
        ),
        "latin1.jsonl": (b'{"problem": "1+2"}\n\n{"problem": "1+2", "id": "caf\xe9"}\n', ":3: not UTF-8"),
        "number.jsonl": (b'{"problem": 34}\n', ":1: 'problem' must be a string"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path / name) + message)}"):
            load_problems(arith, tmp_path / name)
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}: is a directory"):
        load_problems(arith, tmp_path)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"problem": "1+2", "id": "b"}\r\n{"problem": "2*3"}\r\n')
    assert [(p.id, p.answer) for p in load_problems(arith, bom)] == [("b", "3"), ("bom-2", "6")]


def test_problems_to_score_need_an_answer_where_the_verifier_checks_answers(tmp_path: Path) -> None:
    # Answers under a key the task does not read ("label") load as unanswered problems: fine for
    # training, but scored they would all count as unsolved, and the file would read as accuracy 0.
    rows = tmp_path / "gsm8k.jsonl"
    rows.write_text('{"question": "What is 2+3?", "answer": "#### 5"}\n{"question": "2+2?", "label": 4}\n')
    gsm8k = get_task("gsm8k")
    assert [p.answer for p in load_problems(gsm8k, rows)] == ["5", None]
    message = f"^{re.escape(str(rows))}:2: no answer to score solutions against \\(gsm8k checks answers"
    with pytest.raises(UserError, match=message):
        load_problems(gsm8k, rows, scored=True)
    # game24 judges a solution by its moves, which need no answer.
    puzzles = tmp_path / "game24.jsonl"
    puzzles.write_text('{"numbers": [4, 9, 10, 13]}\n')
    assert len(load_problems(get_task("game24"), puzzles, scored=True)) == 1


@pytest.mark.parametrize("name", ["arith", "gsm8k", "math"])
def test_a_problem_that_is_not_text_says_so(name: str) -> None:
    task = get_task(name)
    field = "question" if name == "gsm8k" else "problem"
    with pytest.raises(ValueError, match=f"^'{field}' must be a string"):
        task.problem_from_row({field: 34}, default_id="x")
    with pytest.raises(ValueError, match=f"^missing field '{field}'"):
        task.problem_from_row({"id": "x"}, default_id="x")


def test_a_number_or_an_id_of_the_wrong_type_is_refused_not_coerced() -> None:
    game24, arith = get_task("game24"), get_task("arith")
    for numbers in ([4.7, 9, 10, 13], [True, 9, 10, 13]):  # int() would read them as 4 and 1
        with pytest.raises(ValueError, match=r"^'numbers' must be integers"):
            game24.problem_from_row({"numbers": numbers}, default_id="x")
    assert game24.problem_from_row({"numbers": ["4", 9, 10, 13], "id": 7}, default_id="x").id == "7"
    assert arith.problem_from_row({"problem": "1+2", "id": None}, default_id="f-1").id == "f-1"  # not "None"
    with pytest.raises(ValueError, match=r"^'id' must be a non-empty string or an integer, got \[1\]"):
        arith.problem_from_row({"problem": "1+2", "id": [1]}, default_id="x")
