"""Task gym, math families: short integer problems with one-line answers, for small models.

    task = TASKS.build("gcd_lcm", difficulty=3, seed=0)
    task[0].prompt                         # e.g. "lcm(12, 18, 30) ="
    task.score(task[0], "180")             # 1.0

1. Every family takes `difficulty` in [1, 5] (default 1): higher means larger numbers, more
   operations or more terms; family knobs (ops, bases, forms ...) narrow what is drawn.
2. Prompts are plain ASCII on one line and end in a cue ("=" or ":"); `sample.answer` is the reference line.
3. Scoring reads only the completion's first line (first 200 characters), drops an "Answer:" prefix and a
   trailing period, and parses it with bounded regexes: no eval(), no int() of unbounded digit strings.
   prime_factorization gives partial credit (the fraction of the factor multiset right); the rest are 0/1.
4. Notes per family: sequence_next without `kinds` draws arithmetic at difficulty 1, adds geometric at 2 and
   quadratic at 3, with negative steps/ratios from 4; five terms are shown, which fixes any quadratic.
   linear_equation has x >= 0 and a, b >= 0 at difficulty 1. Knob lists keep the order of their allowed
   values whatever order they are given in, so the same set of choices draws the same items.
GymTask and the scoring helpers (answer_line, parse_int, score_int, check_int, check_choices) live in common.py.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from fractions import Fraction

from rlvr.batch import Sample
from rlvr.tasks.base import TASKS
from rlvr.tasks.gym.common import GymTask, answer_line, check_choices, check_int, parse_int, score_int

_FRACTION = re.compile(r"(\d{1,20}) ?/ ?(\d{1,20})")
_SOLUTION = re.compile(r"(?:x ?= ?)?([+-]?\d{1,40})")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_PREC = {"+": 1, "-": 1, "*": 2}


@TASKS.register("chain_arithmetic")
class ChainArithmetic(GymTask):
    """A multi-step integer expression with parentheses, "(3+4)*5-2=" -> "33"; difficulty d has d+1 operators."""

    name = "chain_arithmetic"

    def __init__(
        self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1, ops: str = "+-*"
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        if not isinstance(ops, str) or not ops or set(ops) - set("+-*"):
            raise ValueError(f"chain_arithmetic: ops must be a non-empty subset of '+-*', got {ops!r}")
        self.ops = "".join(dict.fromkeys(ops))

    def generate(self, rng: random.Random, index: int) -> Sample:
        d = self.difficulty
        for attempt in range(100):  # prefer expressions that need parentheses and stay below 10^(d+2)
            tree = _random_tree(rng, [rng.randint(1, 5 * d + 5) for _ in range(d + 2)], self.ops)
            value, expr = _tree_value(tree), _tree_text(tree)
            if abs(value) <= 10 ** (d + 2) and ("(" in expr or attempt >= 50):
                break
        return self.make(index, f"{expr}=", str(value), expr=expr)

    def score(self, sample: Sample, text: str) -> float:
        return score_int(text, sample.answer)


def _random_tree(rng: random.Random, leaves: list[int], ops: str):
    """A random binary tree (op, left, right) over `leaves` in order."""
    if len(leaves) == 1:
        return leaves[0]
    k = rng.randint(1, len(leaves) - 1)
    return rng.choice(ops), _random_tree(rng, leaves[:k], ops), _random_tree(rng, leaves[k:], ops)


def _tree_value(tree) -> int:
    if isinstance(tree, int):
        return tree
    op, left, right = tree
    a, b = _tree_value(left), _tree_value(right)
    return a + b if op == "+" else a - b if op == "-" else a * b


def _tree_text(tree, parent: str | None = None, is_right: bool = False) -> str:
    """Infix text with only the parentheses that precedence and left-to-right evaluation require."""
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    text = _tree_text(left, op) + op + _tree_text(right, op, True)
    if parent and (_PREC[op] < _PREC[parent] or (is_right and parent == "-" and _PREC[op] == 1)):
        return f"({text})"
    return text


@TASKS.register("gcd_lcm")
class GcdLcm(GymTask):
    """gcd or lcm of 2-3 numbers with a common factor, "gcd(12, 18) =" -> "6"; 3 numbers from difficulty 3."""

    name = "gcd_lcm"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        functions: tuple[str, ...] | list[str] = ("gcd", "lcm"),
        count: int | None = None,
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.functions = check_choices(self.name, "functions", functions, ("gcd", "lcm"))
        self.count = None if count is None else check_int(self.name, "count", count, 2, 3)

    def generate(self, rng: random.Random, index: int) -> Sample:
        d = self.difficulty
        count = self.count or (2 if d <= 2 else 3)
        fn = rng.choice(self.functions)
        common = rng.randint(1, 3 * d + 2)
        numbers = [common * rng.randint(1, 4 * d + 2) for _ in range(count)]
        value = math.gcd(*numbers) if fn == "gcd" else math.lcm(*numbers)
        return self.make(index, f"{fn}({', '.join(map(str, numbers))}) =", str(value), numbers=numbers)

    def score(self, sample: Sample, text: str) -> float:
        return score_int(text, sample.answer)


@TASKS.register("base_conversion")
class BaseConversion(GymTask):
    """Rewrite a number in another base (2-16), "1011 (base 2) to base 16 =" -> "b"; case-insensitive."""

    name = "base_conversion"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        bases: tuple[int, ...] | list[int] = tuple(range(2, 17)),
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        chosen = sorted(set(bases)) if isinstance(bases, (list, tuple)) else []
        if len(chosen) < 2 or any(not isinstance(b, int) or isinstance(b, bool) or not 2 <= b <= 16 for b in chosen):
            raise ValueError(f"base_conversion: bases must list at least two integers in [2, 16], got {bases!r}")
        self.bases = chosen

    def generate(self, rng: random.Random, index: int) -> Sample:
        value = rng.randint(2, 2 ** (4 * self.difficulty + 2))  # difficulty 1: up to 64, 5: up to 4,194,304
        src, dst = rng.sample(self.bases, 2)
        prompt = f"{to_base(value, src)} (base {src}) to base {dst} ="
        return self.make(index, prompt, to_base(value, dst), value=value, base=dst)

    def score(self, sample: Sample, text: str) -> float:
        line, base = answer_line(text).lower(), sample.meta["base"]
        if not 1 <= len(line) <= 64 or any(_DIGITS.find(c) not in range(base) for c in line):
            return 0.0  # checked by hand: int(s, 16) would also accept "0x", "_" and spaces
        return float(int(line, base) == sample.meta["value"])


def to_base(value: int, base: int) -> str:
    """`value` >= 0 written in `base` with lower-case digits."""
    digits = ""
    while True:
        value, r = divmod(value, base)
        digits = _DIGITS[r] + digits
        if value == 0:
            return digits


@TASKS.register("modular_arithmetic")
class ModularArithmetic(GymTask):
    """Modular arithmetic, "3^4 mod 7 =" -> "4" (form "pow") or "(3*4+5) mod 7 =" -> "3" (form "affine")."""

    name = "modular_arithmetic"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        forms: tuple[str, ...] | list[str] = ("pow", "affine"),
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.forms = check_choices(self.name, "forms", forms, ("pow", "affine"))

    def generate(self, rng: random.Random, index: int) -> Sample:
        d = self.difficulty
        form, m, a = rng.choice(self.forms), rng.randint(3, 5 * d * d + 5), rng.randint(2, 10 * d)
        if form == "pow":
            b = rng.randint(2, 2 * d + 2)
            return self.make(index, f"{a}^{b} mod {m} =", str(pow(a, b, m)), form=form)
        b, c = rng.randint(2, 10 * d), rng.randint(0, 10 * d)
        return self.make(index, f"({a}*{b}+{c}) mod {m} =", str((a * b + c) % m), form=form)

    def score(self, sample: Sample, text: str) -> float:
        return score_int(text, sample.answer)


@TASKS.register("prime_factorization")
class PrimeFactorization(GymTask):
    """Factor n into primes, "factor 60 =" -> "2*2*3*5"; partial credit for the part of the multiset right."""

    name = "prime_factorization"

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        self.primes = [p for p in range(2, 10 * self.difficulty + 10) if all(p % q for q in range(2, p))]

    def generate(self, rng: random.Random, index: int) -> Sample:
        factors = sorted(rng.choice(self.primes) for _ in range(rng.randint(2, self.difficulty + 2)))
        return self.make(index, f"factor {math.prod(factors)} =", "*".join(map(str, factors)), factors=factors)

    def score(self, sample: Sample, text: str) -> float:
        """|given & true| / max(|given|, |true|) over factor multisets: 1.0 only for the exact multiset."""
        tokens = [t.strip() for t in answer_line(text).split("*")]
        if not all(re.fullmatch(r"\d{1,12}", t) for t in tokens):
            return 0.0
        given, truth = Counter(map(int, tokens)), Counter(sample.meta["factors"])
        return sum((given & truth).values()) / max(len(tokens), len(sample.meta["factors"]))


@TASKS.register("fraction_simplify")
class FractionSimplify(GymTask):
    """Reduce a fraction to lowest terms, "simplify 12/18 =" -> "2/3"; an integer (or "n/1") when q = 1."""

    name = "fraction_simplify"

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)

    def generate(self, rng: random.Random, index: int) -> Sample:
        d = self.difficulty
        reduced = Fraction(rng.randint(1, 5 * d + 5), rng.randint(1, 5 * d + 5))
        p, q, k = reduced.numerator, reduced.denominator, rng.randint(2, 3 * d + 2)
        answer = str(p) if q == 1 else f"{p}/{q}"
        return self.make(index, f"simplify {p * k}/{q * k} =", answer, p=p, q=q)

    def score(self, sample: Sample, text: str) -> float:
        line = answer_line(text)
        m = _FRACTION.fullmatch(line)
        given = (int(m[1]), int(m[2])) if m else (parse_int(line), 1)
        return float(given == (sample.meta["p"], sample.meta["q"]))


@TASKS.register("linear_equation")
class LinearEquation(GymTask):
    """Solve a*x+b=c for an integer x, "3*x+4=19; x =" -> "5" ("x=5" also scores); negatives from difficulty 2."""

    name = "linear_equation"

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, difficulty: int = 1):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)

    def generate(self, rng: random.Random, index: int) -> Sample:
        d = self.difficulty
        if d == 1:
            x, a, b = rng.randint(0, 9), rng.randint(1, 3), rng.randint(0, 10)
        else:
            x, b = rng.randint(-5 * d, 5 * d), rng.randint(-10 * d, 10 * d)
            a = rng.choice((1, -1)) * rng.randint(1, 2 * d + 1)
        lhs = {1: "x", -1: "-x"}.get(a, f"{a}*x") + (f"{b:+d}" if b else "")
        return self.make(index, f"{lhs}={a * x + b}; x =", str(x), a=a, b=b)

    def score(self, sample: Sample, text: str) -> float:
        m = _SOLUTION.fullmatch(answer_line(text))
        return float(m is not None and int(m[1]) == int(sample.answer))


_SEQUENCE_LEVEL = {"arithmetic": 1, "geometric": 2, "quadratic": 3}


@TASKS.register("sequence_next")
class SequenceNext(GymTask):
    """Next term of an arithmetic, geometric or quadratic sequence, "2, 5, 8, 11, 14, next =" -> "17"."""

    name = "sequence_next"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        difficulty: int = 1,
        kinds: tuple[str, ...] | list[str] | None = None,
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, difficulty=difficulty)
        default = tuple(k for k, level in _SEQUENCE_LEVEL.items() if level <= self.difficulty)
        self.kinds = default if kinds is None else check_choices(self.name, "kinds", kinds, tuple(_SEQUENCE_LEVEL))

    def generate(self, rng: random.Random, index: int) -> Sample:
        d, kind = self.difficulty, rng.choice(self.kinds)
        sign = rng.choice((1, -1)) if d >= 4 else 1
        if kind == "arithmetic":
            start, step = rng.randint(0, 10 * d + 10), sign * rng.randint(1, 3 * d + 2)
            terms = [start + step * n for n in range(6)]
        elif kind == "geometric":
            start, ratio = rng.randint(1, 2 * d + 1), sign * rng.randint(2, max(2, d + 1))
            terms = [start * ratio**n for n in range(6)]
        else:
            a, b, c = sign * rng.randint(1, d), rng.randint(-d, 2 * d), rng.randint(0, 5 * d)
            terms = [a * n * n + b * n + c for n in range(6)]
        return self.make(index, f"{', '.join(map(str, terms[:5]))}, next =", str(terms[5]), kind=kind)

    def score(self, sample: Sample, text: str) -> float:
        return score_int(text, sample.answer)
