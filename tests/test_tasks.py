"""Tasks: items are deterministic in (seed, index); each task's reference scores 1.0 and wrong answers do not;
countdown's scorer accepts only the given numbers, each once, and never evaluates model text as Python; its
options (ops, parentheses, equation answers) and the countdown_lite preset of DIVER's learning check."""

import itertools

import pytest

from rlvr.batch import Sample
from rlvr.tasks import TASKS, Task
from rlvr.tasks.countdown import parse_expression

PROCEDURAL = [
    ("arithmetic", {}),
    ("arithmetic", {"digits": [1, 3], "ops": "+-*", "terms": 3}),
    ("countdown", {}),
    ("countdown", {"num_numbers": 4, "max_number": 30, "target_range": [50, 500]}),
    ("countdown", {"ops": "+-", "parentheses": False}),
    ("countdown", {"ops": "*-+", "answer_format": "equation"}),
    ("countdown_lite", {}),
]


def test_registered_names():
    assert {"arithmetic", "countdown", "countdown_lite", "dataset"} <= set(TASKS.names())
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


@pytest.mark.parametrize(
    "kwargs,match", [({"ops": "+^"}, "ops"), ({"ops": ""}, "ops"), ({"answer_format": "latex"}, "answer_format")]
)
def test_countdown_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TASKS.build("countdown", **kwargs)


def lite_sample(numbers, target):
    return Sample(prompt="", answer="", task="countdown_lite", meta={"numbers": numbers, "target": target})


@pytest.mark.parametrize(
    "numbers,target,text,expected",
    [
        ([3, 4, 2], 10, "$3 * 4 - 2 = 10$", 1.0),
        ([3, 4, 2], 10, "3 * 4 - 2 = 10", 1.0),  # the $ pair is optional
        ([3, 4, 2], 10, "$4*3-2=10$\nmore", 1.0),  # spacing free, first line only
        ([3, 4, 2], 10, "$3 * 4 - 2$", 0.0),  # the "= target" part is required
        ([3, 4, 2], 10, "3 * 4 - 2", 0.0),
        ([3, 4, 2], 10, "$3 * 4 - 2 = 11$", 0.0),  # a wrong stated target
        ([3, 4, 2], 10, "$3 * 4 - 2 = 5 + 5$", 0.0),  # the right-hand side is the target itself
        ([3, 4, 2], 10, "$3 * 4 + 2 = 10$", 0.0),  # wrong value (14)
        ([3, 4, 2], 10, "$4 + 4 + 2 = 10$", 0.0),  # 4 used twice
        ([3, 4, 2], 10, "$5 * 2 = 10$", 0.0),  # 5 is not given
        ([3, 4, 2], 10, "$3 * 4 - 2 = 10", 0.0),  # unbalanced $
        ([3, 2, 2], 10, "$(3 + 2) * 2 = 10$", 0.0),  # parentheses are not allowed
        ([8, 4, 6], 8, "$8 / 4 + 6 = 8$", 0.0),  # '/' is not allowed
        ([3, 4, 2], 10, "", 0.0),
    ],
)
def test_countdown_lite_scoring(numbers, target, text, expected):
    assert TASKS.build("countdown_lite").score(lite_sample(numbers, target), text) == expected


def test_options_gate_operators_and_parentheses():
    with_parens = TASKS.build("countdown", answer_format="equation")
    assert with_parens.score(lite_sample([3, 2, 2], 10), "$(3 + 2) * 2 = 10$") == 1.0
    assert with_parens.score(lite_sample([8, 4, 6], 8), "$8 / 4 + 6 = 8$") == 1.0
    assert TASKS.build("countdown", ops="+*").score(countdown_sample([3, 5, 7], 8), "3-5+7") == 0.0
    for name, kwargs, banned in [("countdown_lite", {}, "/()"), ("countdown", {"ops": "+-"}, "*/")]:
        task = TASKS.build(name, size=200, **kwargs)
        assert all(not set(s.answer) & set(banned) for s in task), (name, kwargs)


def test_equation_answers_round_trip_and_give_ed_one_equation():
    from rlvr.rewards.diversity import extract_equations

    task = TASKS.build("countdown_lite", size=200)
    for s in task:
        assert s.answer.startswith("$") and s.answer.endswith(f" = {s.meta['target']}$")
        (eq,) = extract_equations(s.answer)  # DIVER-ED sees exactly one equation, the whole answer
        assert eq == s.answer[1:-1]
        lhs = eq.rsplit(" = ", 1)[0]
        value, used = parse_expression(lhs)
        assert value == s.meta["target"] and sorted(used) == sorted(s.meta["numbers"])
        assert 10 <= s.meta["target"] <= 40 and all(1 <= n <= 9 for n in s.meta["numbers"])
        assert all(tok in "+-*" for tok in lhs.split()[1::2])  # spaces around every operator


def flat_solutions(numbers, target, ops="+-*"):
    """Brute force: every parenthesis-free expression over >= 2 of the numbers (each once) equal to target."""
    out = set()
    for r in range(2, len(numbers) + 1):
        for idx in itertools.permutations(range(len(numbers)), r):
            for chosen in itertools.product(ops, repeat=r - 1):
                text = str(numbers[idx[0]]) + "".join(f" {op} {numbers[i]}" for op, i in zip(chosen, idx[1:]))
                if parse_expression(text)[0] == target:
                    out.add(text)
    return out


def test_countdown_lite_has_several_correct_answers():
    """The learning check needs many correct answers: most prompts have >= 2 (commuted or different numbers and
    operators), and the scorer accepts every one the enumerator finds."""
    task = TASKS.build("countdown_lite", size=50)
    counts = []
    for s in task:
        found = flat_solutions(s.meta["numbers"], s.meta["target"])
        assert s.answer[1:-1].rsplit(" = ", 1)[0] in found
        assert all(task.score(s, f"${e} = {s.meta['target']}$") == 1.0 for e in found)
        counts.append(len(found))
    assert sum(c >= 2 for c in counts) >= 45, counts


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
