"""Task gym logic families: items are deterministic in (seed, index); the reference scores 1.0 at every difficulty;
wrong, garbage, empty and huge (100k digits, 1 MB) answers score < 1 and return fast; higher difficulty gives larger
problems; sorting gives partial credit; bad options raise ValueError naming the option; holdout train/eval prompts
are disjoint; each family's answers are checked against an independent computation."""

import json
import re
import statistics
import time

import pytest

from rlvr.batch import Sample
from rlvr.tasks import TASKS
from rlvr.tasks.base import is_eval_item
from rlvr.tasks.gym.common import MAX_DIFFICULTY

FAMILIES = ["boolean_logic", "sorting", "list_stats", "comparison_chain"]
HOSTILE = ["", "hello world", "maybe", "1 2 3 x", "9" * 100_000, "x" * 1_000_000, "1 " * 500_000, "(" * 100_000]
JUNK_TAIL = "\n" + "z" * 1_000_000


@pytest.mark.parametrize("name", FAMILIES)
def test_items_are_deterministic(name):
    a, b, other = TASKS.build(name, seed=3), TASKS.build(name, seed=3), TASKS.build(name, seed=4)
    assert [a[i] for i in range(20)] == [b[i] for i in range(20)]
    assert [a[i].prompt for i in range(20)] != [other[i].prompt for i in range(20)]
    s = a[7]
    assert s.task == name and s.index == 7 and s.prompt.isascii() and "\n" not in s.prompt
    assert s.prompt.endswith(("=", "Answer:")) and "\n" not in s.answer
    json.dumps({"answer": s.answer, "meta": s.meta})


@pytest.mark.parametrize("name", FAMILIES)
def test_reference_scores_one_at_every_difficulty(name):
    for difficulty in range(1, MAX_DIFFICULTY + 1):
        task = TASKS.build(name, difficulty=difficulty, size=50)
        for s in task:
            ref = task.reference(s)
            assert task.score(s, ref) == 1.0, (s, ref)
            assert task.score(s, " " + ref + "." + JUNK_TAIL) == 1.0  # first line only, stripped
            assert task.score(s, "Answer: " + ref) == 1.0


@pytest.mark.parametrize("name", FAMILIES)
def test_wrong_and_hostile_answers_score_below_one_fast(name):
    for difficulty in (1, MAX_DIFFICULTY):
        task = TASKS.build(name, difficulty=difficulty, size=20)
        for s in task:
            assert task.score(s, task.reference(s) + "7") < 1.0
            for text in HOSTILE:
                start = time.perf_counter()
                value = task.score(s, text)
                assert time.perf_counter() - start < 1.0 and value == 0.0, (s, text[:30])


@pytest.mark.parametrize("name", FAMILIES)
def test_difficulty_grows_the_problems(name):
    def mean_prompt_length(difficulty):
        task = TASKS.build(name, difficulty=difficulty, size=100)
        return sum(len(s.prompt) for s in task) / len(task)

    lengths = [mean_prompt_length(d) for d in (1, 3, MAX_DIFFICULTY)]
    assert lengths[0] < lengths[1] < lengths[2], lengths


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("difficulty", [0, MAX_DIFFICULTY + 1, "2", 1.5, True])
def test_bad_difficulty_is_rejected(name, difficulty):
    with pytest.raises(ValueError, match="difficulty"):
        TASKS.build(name, difficulty=difficulty)


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("boolean_logic", {"ops": ["not"]}, "ops"),
        ("boolean_logic", {"ops": ["and", "nand"]}, "ops"),
        ("sorting", {"orders": ["up"]}, "orders"),
        ("sorting", {"length": 1}, "length"),
        ("sorting", {"length": 31}, "length"),
        ("list_stats", {"stats": ["mean"]}, "stats"),
        ("list_stats", {"stats": []}, "stats"),
        ("comparison_chain", {"questions": "who"}, "questions"),
        ("comparison_chain", {"holdout": "test"}, "holdout"),
    ],
)
def test_bad_options_are_rejected(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TASKS.build(name, **kwargs)


@pytest.mark.parametrize("name", FAMILIES)
def test_holdout_split_is_disjoint(name):
    train = TASKS.build(name, seed=0, size=300, holdout="train")
    held = TASKS.build(name, seed=9, size=40, holdout="eval")
    held_prompts = {s.prompt for s in held}
    assert all(is_eval_item(s) for s in held) and not held_prompts & {s.prompt for s in train}
    for difficulty in range(2, MAX_DIFFICULTY + 1):  # every difficulty has problems on the eval side
        assert len(TASKS.build(name, difficulty=difficulty, size=3, holdout="eval")[2].prompt) > 0


def test_boolean_logic_values_and_scoring():
    # eval() of our own generated prompts (never of model text) as an independent evaluator: with every
    # binary sub-expression parenthesised, Python agrees with the task when xor (as !=) and not don't mix
    for ops, to_python in [(["and", "or", "not"], str), (["and", "or", "xor"], lambda p: p.replace("xor", "!="))]:
        task = TASKS.build("boolean_logic", difficulty=4, ops=ops, size=100)
        for s in task:
            assert str(eval(to_python(s.prompt[: -len(" =")]))) == s.answer, s.prompt
            assert s.prompt.count(" and ") + s.prompt.count(" or ") + s.prompt.count(" xor ") == 4
    s = Sample(prompt="True xor not False =", answer="True", task="boolean_logic")
    texts = ["True", "true", "TRUE", "1", "yes", "True.", "False", "0", "Tru", "True or False"]
    assert [task.score(s, t) for t in texts] == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]


def test_sorting_values_and_partial_credit():
    task = TASKS.build("sorting", difficulty=3, size=100)
    for s in task:
        order, values = re.fullmatch(r"sort (ascending|descending): (.*) =", s.prompt).groups()
        values = [int(v) for v in values.split()]
        assert len(values) == 7 and s.answer.split() == [str(v) for v in sorted(values, reverse=order == "descending")]
        n = len(values)  # the first n//2 positions wrong: (n - n//2) of n right
        half = " ".join(["1000000"] * (n // 2) + s.answer.split()[n // 2 :])
        assert 0.0 < task.score(s, half) == (n - n // 2) / n < 1.0
    assert any(v.startswith("-") for s in task for v in s.answer.split())
    s = Sample(prompt="sort ascending: 3 1 4 2 =", answer="1 2 3 4", task="sorting")
    texts = ["1 2 3 4", "1, 2, 3, 4", "1,2,3,4", "1 2 4 3", "4 3 2 1", "1 2 3", "1 2 3 4 5", "1 2 3 four", "[1,2,3,4]"]
    assert [task.score(s, t) for t in texts] == [1, 1, 1, 0.5, 0, 0, 0, 0, 0]
    long = TASKS.build("sorting", length=30, difficulty=5, orders="descending", size=5)
    assert all(len(s.answer.split()) == 30 and long.score(s, long.reference(s)) == 1.0 for s in long)


def test_list_stats_values_and_scoring():
    task = TASKS.build("list_stats", difficulty=3, size=200)
    fns = {"max": max, "min": min, "sum": sum, "median": statistics.median}
    for s in task:
        stat, values = re.fullmatch(r"(max|min|sum|median) of (.*) =", s.prompt).groups()
        assert float(s.answer) == fns[stat]([int(v) for v in values.split()])
    assert {s.meta["stat"] for s in task} == set(fns) and any("." in s.answer for s in task)
    s = Sample(prompt="median of 4 1 5 2 =", answer="3", task="list_stats")
    assert [task.score(s, t) for t in ("3", "3.0", "+3", "3.5", "6/2", "three")] == [1, 1, 1, 0, 0, 0]
    s.answer = "-2.5"
    assert [task.score(s, t) for t in ("-2.5", "-2.50", "2.5", "-2")] == [1, 1, 0, 0]


def test_comparison_chain_answers_follow_from_the_facts():
    task = TASKS.build("comparison_chain", difficulty=4, size=150)
    for s in task:
        facts, question = re.fullmatch(r"(.*)\. (.*) Answer:", s.prompt).groups()
        above = {}  # name -> names directly smaller than it, rebuilt from the text alone
        for x, op, y in (re.fullmatch(r"(\w)([<>])(\w)", f).groups() for f in facts.split(", ")):
            big, small = (x, y) if op == ">" else (y, x)
            above.setdefault(big, set()).add(small)
            above.setdefault(small, set())
        assert len(above) == 6
        if question.startswith("Is "):
            x, y = question[3], question[5]
            reach, frontier = set(), [x]
            while frontier:
                frontier = [z for n in frontier for z in above[n] if z not in reach]
                reach.update(frontier)
            assert s.answer == ("yes" if y in reach else "no")
        elif "largest" in question:
            assert s.answer == next(n for n in above if all(n not in v for v in above.values()))
        else:
            assert s.answer == next(n for n in above if not above[n])
    assert {s.meta["question"] for s in task} == {"largest", "smallest", "compare"}
    s = Sample(
        prompt="A>B, C<B. Which is largest? Answer:", answer="A", task="comparison_chain", meta={"question": "largest"}
    )
    assert [task.score(s, t) for t in ("A", "a", "A.", "B", "AB", "yes")] == [1, 1, 1, 0, 0, 0]
    s.meta["question"], s.answer = "compare", "no"
    assert [task.score(s, t) for t in ("no", "No", "false", "0", "yes", "n")] == [1, 1, 1, 1, 0, 0]
