"""Task gym, logic families: boolean expressions, sorting, list statistics and order facts, for small models.

    task = TASKS.build("sorting", difficulty=2, seed=0)
    task[0].prompt                         # e.g. "sort descending: 41 7 93 12 60 ="
    task.score(task[0], "93 60 41 12 7")   # 1.0

1. Every family takes `difficulty` in [1, 5] (default 1): longer lists, larger or negative numbers, deeper
   expressions, more names; family knobs (ops, orders, stats, questions ...) narrow what is drawn.
2. Prompts are plain ASCII on one line ending in "=" or "Answer:"; `sample.answer` is the reference line.
3. Scoring reads only the completion's first line (bounded, see common.answer_line), with bounded regexes.
   sorting gives partial credit (the fraction of positions right) to a list of the right length, commas
   allowed; the rest are 0/1. True/False also score as 1/0 or yes/no, in any case; names are case-insensitive.
4. boolean_logic parenthesises every binary sub-expression below the top, so no precedence rules are
   needed; `not` binds to the operand right after it. comparison_chain's facts are the adjacent pairs of a
   hidden total order, each written X>Y or Y<X, shuffled.
"""

from __future__ import annotations

import random
import re
import string
from fractions import Fraction

from rlvr.batch import Sample
from rlvr.tasks.base import TASKS
from rlvr.tasks.gym.common import GymTask, answer_line, check_choices, check_int

_BINARY = {"and": lambda a, b: a and b, "or": lambda a, b: a or b, "xor": lambda a, b: a != b}
_TRUTH = {"true": True, "1": True, "false": False, "0": False, "yes": True, "no": False}
_LIST_INT = re.compile(r"-?\d{1,12}")
_DECIMAL = re.compile(r"[+-]?\d{1,20}(?:\.\d{1,10})?")


def _values(rng: random.Random, difficulty: int, n: int) -> list[int]:
    """n integers: one digit at difficulty 1, two at 2, three (and negative) from 3."""
    high = 10 ** min(difficulty, 3) - 1
    return [rng.randint(-high if difficulty >= 3 else 0, high) for _ in range(n)]


def _parse_list(line: str) -> list[int] | None:
    """Integers separated by spaces and/or commas, else None."""
    tokens = [t for t in re.split(r"[\s,]+", line) if t]
    if not tokens or not all(_LIST_INT.fullmatch(t) for t in tokens):
        return None
    return [int(t) for t in tokens]


@TASKS.register("boolean_logic")
class BooleanLogic(GymTask):
    """Evaluate and/or/xor/not over True/False, "(True xor False) and not False =" -> "True"; d binary ops."""

    name = "boolean_logic"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        ops: tuple[str, ...] | list[str] = ("and", "or", "xor", "not"),
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.ops = check_choices(self.name, "ops", ops, ("and", "or", "xor", "not"))
        self.binary = tuple(op for op in self.ops if op != "not")
        if not self.binary:
            raise ValueError(f"boolean_logic: ops needs at least one of and/or/xor, got {ops!r}")

    def generate(self, rng: random.Random, index: int) -> Sample:
        tree = self._tree(rng, self.difficulty)
        return self.make(index, f"{_bool_text(tree)} =", str(_bool_value(tree)))

    def _tree(self, rng: random.Random, n_ops: int):
        if n_ops == 0:
            node = rng.choice((True, False))
        else:
            k = rng.randint(0, n_ops - 1)
            node = (rng.choice(self.binary), self._tree(rng, k), self._tree(rng, n_ops - 1 - k))
        return ("not", node) if "not" in self.ops and rng.random() < 0.25 else node

    def score(self, sample: Sample, text: str) -> float:
        return float(_TRUTH.get(answer_line(text).lower()) == (sample.answer == "True"))


def _bool_value(tree) -> bool:
    if isinstance(tree, bool):
        return tree
    if tree[0] == "not":
        return not _bool_value(tree[1])
    return _BINARY[tree[0]](_bool_value(tree[1]), _bool_value(tree[2]))


def _bool_text(tree, top: bool = True) -> str:
    if isinstance(tree, bool):
        return str(tree)
    if tree[0] == "not":
        return "not " + _bool_text(tree[1], False)
    text = f"{_bool_text(tree[1], False)} {tree[0]} {_bool_text(tree[2], False)}"
    return text if top else f"({text})"


@TASKS.register("sorting")
class Sorting(GymTask):
    """Sort integers, "sort ascending: 5 3 9 =" -> "3 5 9"; 2d+1 numbers; credit = fraction of positions right."""

    name = "sorting"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        orders: tuple[str, ...] | list[str] = ("ascending", "descending"),
        length: int | None = None,
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.orders = check_choices(self.name, "orders", orders, ("ascending", "descending"))
        self.length = None if length is None else check_int(self.name, "length", length, 2, 30)

    def generate(self, rng: random.Random, index: int) -> Sample:
        order = rng.choice(self.orders)
        values = _values(rng, self.difficulty, self.length or 2 * self.difficulty + 1)
        answer = " ".join(map(str, sorted(values, reverse=order == "descending")))
        return self.make(index, f"sort {order}: {' '.join(map(str, values))} =", answer, values=values, order=order)

    def score(self, sample: Sample, text: str) -> float:
        truth = [int(v) for v in sample.answer.split()]
        given = _parse_list(answer_line(text, limit=400))  # 30 numbers of "-999, " fit in 180 characters
        if given is None or len(given) != len(truth):
            return 0.0
        return sum(g == t for g, t in zip(given, truth)) / len(truth)


_STATS = ("max", "min", "sum", "median")


@TASKS.register("list_stats")
class ListStats(GymTask):
    """max, min, sum or median of a list, "median of 4 1 7 2 =" -> "3" (a half, "3.5", when it falls between)."""

    name = "list_stats"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        stats: tuple[str, ...] | list[str] = _STATS,
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.stats = check_choices(self.name, "stats", stats, _STATS)

    def generate(self, rng: random.Random, index: int) -> Sample:
        d, stat = self.difficulty, rng.choice(self.stats)
        values = _values(rng, d, rng.randint(d + 2, 2 * d + 3))
        value = _statistic(stat, values)
        answer = str(value.numerator) if value.denominator == 1 else str(float(value))  # halves print exactly
        return self.make(index, f"{stat} of {' '.join(map(str, values))} =", answer, stat=stat, values=values)

    def score(self, sample: Sample, text: str) -> float:
        line = answer_line(text)
        return float(bool(_DECIMAL.fullmatch(line)) and Fraction(line) == Fraction(sample.answer))


def _statistic(stat: str, values: list[int]) -> Fraction:
    s, n = sorted(values), len(values)
    if stat == "median":
        return Fraction(s[n // 2]) if n % 2 else Fraction(s[n // 2 - 1] + s[n // 2], 2)
    return Fraction({"max": s[-1], "min": s[0], "sum": sum(s)}[stat])


_QUESTIONS = ("largest", "smallest", "compare")


@TASKS.register("comparison_chain")
class ComparisonChain(GymTask):
    """Order facts over d+2 names, "B>C, A>B. Which is largest? Answer:" -> "A", or "Is C>A? Answer:" -> "no"."""

    name = "comparison_chain"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        questions: tuple[str, ...] | list[str] = _QUESTIONS,
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.questions = check_choices(self.name, "questions", questions, _QUESTIONS)

    def generate(self, rng: random.Random, index: int) -> Sample:
        names = rng.sample(string.ascii_uppercase, self.difficulty + 2)  # largest first
        facts = [f"{a}>{b}" if rng.random() < 0.5 else f"{b}<{a}" for a, b in zip(names, names[1:])]
        rng.shuffle(facts)
        question = rng.choice(self.questions)
        if question == "compare":
            i, j = rng.sample(range(len(names)), 2)
            ask, answer = f"Is {names[i]}>{names[j]}?", "yes" if i < j else "no"
        else:
            ask, answer = f"Which is {question}?", names[0] if question == "largest" else names[-1]
        return self.make(index, f"{', '.join(facts)}. {ask} Answer:", answer, question=question, order=names)

    def score(self, sample: Sample, text: str) -> float:
        line = answer_line(text)
        if sample.meta["question"] == "compare":
            return float(_TRUTH.get(line.lower()) == (sample.answer == "yes"))
        return float(line.upper() == sample.answer)
