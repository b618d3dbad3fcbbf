"""Tasks: items are deterministic in (seed, index); each task's reference scores 1.0 and wrong answers do not;
countdown's scorer accepts only the given numbers, each once, and never evaluates model text as Python."""

import pytest

from rlvr.batch import Sample
from rlvr.tasks import TASKS, Task
from rlvr.tasks.countdown import parse_expression

PROCEDURAL = [
    ("arithmetic", {}),
    ("arithmetic", {"digits": [1, 3], "ops": "+-*", "terms": 3}),
    ("countdown", {}),
    ("countdown", {"num_numbers": 4, "max_number": 30, "target_range": [50, 500]}),
]


def test_registered_names():
    assert {"arithmetic", "countdown", "dataset"} <= set(TASKS.names())
    with pytest.raises(ValueError, match="choose from"):
        TASKS.build("arithmetc")


@pytest.mark.parametrize("name,kwargs", PROCEDURAL)
def test_items_are_deterministic(name, kwargs):
    a, b = TASKS.build(name, seed=3, **kwargs), TASKS.build(name, seed=3, **kwargs)
    assert isinstance(a, Task) and len(a) == 10_000 and a.name == name
    assert [a[i] for i in (0, 7, 9_999)] == [b[i] for i in (0, 7, 9_999)]
    assert a[5] == a[5] and a[-1] == a[9_999]
    assert a[5].index == 5 and a[5].task == name
    other = TASKS.build(name, seed=4, **kwargs)
    assert [a[i].prompt for i in range(20)] != [other[i].prompt for i in range(20)]
    # reasoning-gym style: item i of seed s is item i-1 of seed s+1
    assert a[1].prompt == TASKS.build(name, seed=4, **kwargs)[0].prompt
    with pytest.raises(IndexError):
        a[10_000]


@pytest.mark.parametrize("name,kwargs", PROCEDURAL)
def test_reference_scores_one(name, kwargs):
    task = TASKS.build(name, seed=0, size=300, **kwargs)
    for sample in task:
        assert task.score(sample, task.reference(sample)) == 1.0, (sample, task.reference(sample))
        assert task.score(sample, "") == 0.0


def test_arithmetic_values_and_scoring():
    task = TASKS.build("arithmetic", digits=1, ops="*", terms=2)
    s = task[0]
    a, b = map(int, s.meta["expr"].split("*"))
    assert s.prompt == f"{a}*{b}=" and s.answer == str(a * b)
    assert task.score(s, f" {a * b}\nmore text") == 1.0  # first line, stripped
    assert task.score(s, str(a * b + 1)) == 0.0
    assert task.score(s, f"{a * b}.5") == 0.0
    assert task.score(s, "9" * 100_000) == 0.0  # no int() of a huge digit string
    # '*' binds tighter than '+' / '-', and negative results are allowed
    neg = Sample(prompt="2-3*4=", answer="-10", task="arithmetic")
    assert task.score(neg, "-10") == 1.0 and task.score(neg, "10") == 0.0


def test_arithmetic_precedence_in_generated_items():
    task = TASKS.build("arithmetic", digits=[1, 2], ops="+-*", terms=4)
    for s in (task[i] for i in range(200)):
        # independent check of the answer: parse with the countdown parser (same precedence rules)
        value, _ = parse_expression(s.meta["expr"])
        assert value == int(s.answer)
    assert any(int(task[i].answer) < 0 for i in range(200))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"ops": "+/"}, "ops"),
        ({"digits": [3, 1]}, "digits"),
        ({"terms": 1}, "terms"),
        ({"prompt_format": "Q:"}, "expr"),
        ({"size": 0}, "size"),
        ({"digit": 2}, "did you mean 'digits'"),
    ],
)
def test_arithmetic_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TASKS.build("arithmetic", **kwargs)


def countdown_sample(numbers, target):
    return Sample(prompt="", answer="", task="countdown", meta={"numbers": numbers, "target": target})


def test_countdown_items_are_solvable_and_in_range():
    task = TASKS.build("countdown", num_numbers=3, max_number=20, target_range=(10, 60))
    for s in (task[i] for i in range(200)):
        assert 10 <= s.meta["target"] <= 60 and len(s.meta["numbers"]) == 3
        assert all(1 <= n <= 20 for n in s.meta["numbers"])
        assert s.prompt == f"{' '.join(map(str, s.meta['numbers']))} -> {s.meta['target']}:"
        value, used = parse_expression(s.answer)
        assert value == s.meta["target"] and sorted(used) == sorted(s.meta["numbers"])


@pytest.mark.parametrize(
    "text,expected",
    [
        ("3*5+7", 1.0),
        ("7+5*3", 1.0),
        ("(3*5)+7", 1.0),
        ("3*5+7=22", 1.0),  # a stated result equal to the target is fine
        ("3*5+7=23", 0.0),  # ... a wrong one is not
        (" 3 * 5 + 7 \nsome explanation", 1.0),  # first line only, spaces allowed
        ("(7+5)*3-14", 0.0),  # 14 is not given
        ("3*5+7+7-7", 0.0),  # 7 used three times
        ("22", 0.0),  # target not among the numbers
        ("3*5", 0.0),  # wrong value
        ("3/0+7", 0.0),  # division by zero is invalid, not a crash
        ("(3*5+7", 0.0),  # unbalanced
        ("3*-5+7", 0.0),  # no unary minus
        ("3**5", 0.0),
        ("__import__('os').system('echo pwned')", 0.0),
        ("22 if True else 0", 0.0),
        ("(" * 5000 + "3" + ")" * 5000, 0.0),  # too long / too deep, bounded
        ("", 0.0),
    ],
)
def test_countdown_scoring(text, expected):
    task = TASKS.build("countdown")
    assert task.score(countdown_sample([3, 5, 7], 22), text) == expected


def test_countdown_uses_exact_fractions():
    task = TASKS.build("countdown")
    # 8 / (3 - 8/3) = 24 exactly; floats would give 23.999999999999993
    assert task.score(countdown_sample([8, 3, 8, 3], 24), "8/(3-8/3)") == 1.0
    assert task.score(countdown_sample([3, 3], 1), "3/3") == 1.0  # repeated numbers may each be used once
    assert task.score(countdown_sample([3], 1), "3/3") == 0.0


def test_countdown_rejects_impossible_settings():
    with pytest.raises(ValueError, match="target_range"):
        TASKS.build("countdown", target_range=(5, 1))
    task = TASKS.build("countdown", num_numbers=2, max_number=2, target_range=(90, 100))
    with pytest.raises(ValueError, match="widen target_range"):
        task[0]


def test_holdout_split_is_disjoint():
    """holdout='eval' and holdout='train' items never share a prompt, on a space small enough to collide."""
    from rlvr.tasks import TASKS

    train = TASKS.build("arithmetic", digits=1, ops="+", seed=0, size=2000, holdout="train")
    held = TASKS.build("arithmetic", digits=1, ops="+", seed=5, size=200, holdout="eval")
    plain = TASKS.build("arithmetic", digits=1, ops="+", seed=5, size=200)
    train_prompts = {s.prompt for s in train}
    held_prompts = {s.prompt for s in held}
    assert held_prompts and not train_prompts & held_prompts
    assert {s.prompt for s in plain} & train_prompts  # without the split the two would overlap
    assert held[3] == held[3]  # still deterministic per index
