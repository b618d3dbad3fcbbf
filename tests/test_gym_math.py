"""Task gym math families: items are deterministic in (seed, index); the reference scores 1.0 at every difficulty;
wrong, garbage, empty and huge (100k digits, 1 MB) answers score < 1 and return fast; higher difficulty gives larger
problems; prime_factorization gives partial credit; bad options raise ValueError naming the option; holdout
train/eval prompts are disjoint; each family's answers are checked against an independent computation."""

import json
import math
import re
import time
from fractions import Fraction

import pytest

from rlvr.batch import Sample
from rlvr.tasks import TASKS
from rlvr.tasks.base import is_eval_item
from rlvr.tasks.countdown import parse_expression
from rlvr.tasks.gym.common import MAX_DIFFICULTY

FAMILIES = [
    "chain_arithmetic",
    "gcd_lcm",
    "base_conversion",
    "modular_arithmetic",
    "prime_factorization",
    "fraction_simplify",
    "linear_equation",
    "sequence_next",
]
HOSTILE = ["", "hello world", "12345678901234567", "9" * 100_000, "x" * 1_000_000, "(" * 100_000, "1*" * 500_000]
JUNK_TAIL = "\n" + "z" * 1_000_000


@pytest.mark.parametrize("name", FAMILIES)
def test_items_are_deterministic(name):
    a, b, other = TASKS.build(name, seed=3), TASKS.build(name, seed=3), TASKS.build(name, seed=4)
    assert [a[i] for i in range(20)] == [b[i] for i in range(20)]
    assert [a[i].prompt for i in range(20)] != [other[i].prompt for i in range(20)]
    s = a[7]
    assert s.task == name and s.index == 7 and s.prompt.isascii() and "\n" not in s.prompt
    assert s.prompt.endswith(("=", ":")) and "\n" not in s.answer
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
            assert task.score(s, task.reference(s) + "7") < 1.0  # a different number
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
        ("chain_arithmetic", {"ops": "+/"}, "ops"),
        ("chain_arithmetic", {"ops": ""}, "ops"),
        ("gcd_lcm", {"functions": ["gcd", "max"]}, "functions"),
        ("gcd_lcm", {"functions": []}, "functions"),
        ("gcd_lcm", {"count": 4}, "count"),
        ("base_conversion", {"bases": [2]}, "bases"),
        ("base_conversion", {"bases": [2, 17]}, "bases"),
        ("modular_arithmetic", {"forms": "power"}, "forms"),
        ("sequence_next", {"kinds": ["cubic"]}, "kinds"),
        ("linear_equation", {"size": 0}, "size"),
        ("fraction_simplify", {"difficult": 2}, "did you mean 'difficulty'"),
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


def test_chain_arithmetic_values_and_parentheses():
    task = TASKS.build("chain_arithmetic", difficulty=3, size=200)
    for s in task:
        value, used = parse_expression(s.meta["expr"])  # countdown's parser: an independent evaluator
        assert value == int(s.answer) and len(used) == 5 and s.prompt == s.meta["expr"] + "="
    assert sum("(" in s.prompt for s in task) > 150
    plus = TASKS.build("chain_arithmetic", ops="+", size=50)
    assert not any(set(s.prompt) & set("-*") for s in plus)


def test_gcd_lcm_values():
    task = TASKS.build("gcd_lcm", difficulty=4, size=100)
    for s in task:
        fn, args = re.fullmatch(r"(gcd|lcm)\((.*)\) =", s.prompt).groups()
        numbers, value = [int(v) for v in args.split(", ")], int(s.answer)
        assert len(numbers) == 3
        if fn == "gcd":
            assert all(n % value == 0 for n in numbers) and not any(
                all(n % k == 0 for n in numbers) for k in range(value + 1, min(numbers) + 1)
            )
        else:  # a common multiple; dividing by any of its prime factors loses that
            primes = [p for p in range(2, max(numbers) + 1) if value % p == 0 and all(p % q for q in range(2, p))]
            assert all(value % n == 0 for n in numbers)
            assert all(any((value // p) % n for n in numbers) for p in primes)
    assert all(s.prompt.startswith("lcm") for s in TASKS.build("gcd_lcm", functions="lcm", size=20))
    assert all(s.prompt.count(",") == 1 for s in TASKS.build("gcd_lcm", difficulty=5, count=2, size=20))


def test_base_conversion_values_and_scoring():
    task = TASKS.build("base_conversion", difficulty=3, size=100)
    for s in task:
        digits, src, dst = re.fullmatch(r"(\w+) \(base (\d+)\) to base (\d+) =", s.prompt).groups()
        assert int(digits, int(src)) == int(s.answer, int(dst)) == s.meta["value"] and src != dst
    meta = {"value": 31, "base": 16}
    s = Sample(prompt="11111 (base 2) to base 16 =", answer="1f", task="base_conversion", meta=meta)
    scores = [task.score(s, t) for t in ("1f", "1F", "01f", "0x1f", "1_f", "1g", "-1f", "31")]
    assert scores == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    two = TASKS.build("base_conversion", bases=[2, 8], size=20)
    assert all(re.search(r"\(base [28]\) to base [28] =$", s.prompt) for s in two)


def test_modular_arithmetic_values():
    task = TASKS.build("modular_arithmetic", difficulty=5, size=100)
    for s in task:
        if s.meta["form"] == "pow":
            a, b, m = map(int, re.fullmatch(r"(\d+)\^(\d+) mod (\d+) =", s.prompt).groups())
            assert int(s.answer) == a**b % m
        else:
            a, b, c, m = map(int, re.fullmatch(r"\((\d+)\*(\d+)\+(\d+)\) mod (\d+) =", s.prompt).groups())
            assert int(s.answer) == (a * b + c) % m
    assert {s.meta["form"] for s in task} == {"pow", "affine"}


def test_prime_factorization_values_and_partial_credit():
    task = TASKS.build("prime_factorization", difficulty=4, size=100)
    for s in task:
        factors = [int(f) for f in s.answer.split("*")]
        assert math.prod(factors) == int(s.prompt.split()[1]) and factors == sorted(factors)
        assert all(all(f % q for q in range(2, f)) for f in factors)
        k = len(factors)  # half the factors replaced by a prime never drawn: (k - k//2) of k right
        half = "*".join(["1009"] * (k // 2) + [str(f) for f in factors[k // 2 :]])
        assert 0.0 < task.score(s, half) == (k - k // 2) / k < 1.0
    s = Sample(prompt="factor 60 =", answer="2*2*3*5", task="prime_factorization", meta={"factors": [2, 2, 3, 5]})
    texts = ["2*2*3*5", "5 * 3 * 2 * 2", "2*2*7*11", "2*2*3", "2*2*3*5*7", "7*11", "60", "4*15", "2^2*3*5", "2**2*3"]
    assert [task.score(s, t) for t in texts] == [1.0, 1.0, 0.5, 0.75, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_fraction_simplify_values_and_scoring():
    task = TASKS.build("fraction_simplify", difficulty=3, size=100)
    for s in task:
        p, q = map(int, re.fullmatch(r"simplify (\d+)/(\d+) =", s.prompt).groups())
        assert math.gcd(p, q) > 1 and Fraction(p, q) == Fraction(s.answer)
    assert any("/" not in s.answer for s in task)  # some reduce to integers
    s = Sample(prompt="simplify 12/18 =", answer="2/3", task="fraction_simplify", meta={"p": 2, "q": 3})
    assert [task.score(s, t) for t in ("2/3", "2 / 3", "4/6", "3/2", "0.666", "2")] == [1, 1, 0, 0, 0, 0]
    whole = Sample(prompt="simplify 12/4 =", answer="3", task="fraction_simplify", meta={"p": 3, "q": 1})
    assert [task.score(whole, t) for t in ("3", "3/1", "6/2", "+3", "-3")] == [1, 1, 0, 1, 0]


def test_linear_equation_values_and_scoring():
    task = TASKS.build("linear_equation", difficulty=4, size=100)
    for s in task:
        lhs, c = s.prompt[: -len("; x =")].split("=")
        a, b = s.meta["a"], s.meta["b"]
        assert a != 0 and a * int(s.answer) + b == int(c) and "x" in lhs
    assert any(int(s.answer) < 0 for s in task)
    assert all(int(s.answer) >= 0 for s in TASKS.build("linear_equation", size=50))  # difficulty 1: x >= 0
    s = task[0]
    x = int(s.answer)
    texts = [f"x={x}", f"x = {x}", f"{x}", f"x={x + 1}", f"y={x}", "x="]
    assert [task.score(s, t) for t in texts] == [1, 1, 1, 0, 0, 0]


def test_sequence_next_kinds_follow_their_rule():
    task = TASKS.build("sequence_next", difficulty=4, size=150)
    for s in task:
        t = [int(v) for v in s.prompt[: -len(", next =")].split(", ")] + [int(s.answer)]
        d1 = [b - a for a, b in zip(t, t[1:])]
        d2 = [b - a for a, b in zip(d1, d1[1:])]
        rule = {
            "arithmetic": len(set(d1)) == 1,
            "quadratic": len(set(d2)) == 1,
            "geometric": t[0] != 0 and all(b == a * (t[1] // t[0]) for a, b in zip(t, t[1:])),
        }
        assert rule[s.meta["kind"]], s
    assert {s.meta["kind"] for s in task} == {"arithmetic", "geometric", "quadratic"}
    assert {s.meta["kind"] for s in TASKS.build("sequence_next", size=50)} == {"arithmetic"}
    assert {s.meta["kind"] for s in TASKS.build("sequence_next", kinds=["quadratic"], size=20)} == {"quadratic"}


def test_knob_lists_draw_the_same_items_in_any_order():
    a = TASKS.build("modular_arithmetic", forms=["affine", "pow"], size=20)
    b = TASKS.build("modular_arithmetic", forms=["pow", "affine", "pow"], size=20)
    assert list(a) == list(b)
    assert list(TASKS.build("base_conversion", bases=[16, 2], size=5)) == list(
        TASKS.build("base_conversion", bases=[2, 16], size=5)
    )
