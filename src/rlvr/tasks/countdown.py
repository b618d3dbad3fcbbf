"""countdown: combine the given numbers with + - * / and parentheses to hit a target, e.g. "3 5 7 -> 22:".

1. Draw `num_numbers` integers in [1, max_number].
2. Build a random expression tree over all of them (division only when exact, subtraction never below 0);
   redraw until its value is an integer in `target_range`. That expression is the reference answer.
3. Score: 1.0 when the completion's first line is an expression that uses only the given numbers, each at
   most once, and equals the target exactly (Fractions). An optional "=<target>" suffix is accepted.
Model text is parsed by the small recursive-descent parser below, never by Python's eval.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

from rlvr.batch import Sample
from rlvr.tasks.base import TASKS, ProceduralTask, first_line

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_TOKEN = re.compile(r"\s*(?:(\d{1,9})|([-+*/()=]))")
_MAX_CHARS = 200  # an answer longer than this is wrong for any sensible num_numbers
_MAX_DEPTH = 32


@TASKS.register("countdown")
class Countdown(ProceduralTask):
    """Reach the target from the given numbers (each used at most once) with + - * / and parentheses."""

    name = "countdown"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        num_numbers: int = 3,
        max_number: int = 20,
        target_range: tuple[int, int] | list[int] = (1, 100),
        prompt_format: str = "{numbers} -> {target}:",
    ):
        super().__init__(seed=seed, size=size, holdout=holdout)
        if not isinstance(num_numbers, int) or not 2 <= num_numbers <= 8:
            raise ValueError(f"countdown: num_numbers must be an integer in [2, 8], got {num_numbers!r}")
        if not isinstance(max_number, int) or max_number < 1:
            raise ValueError(f"countdown: max_number must be a positive integer, got {max_number!r}")
        lo, hi = _pair(target_range)
        if "{numbers}" not in prompt_format or "{target}" not in prompt_format:
            raise ValueError(f"countdown: prompt_format needs '{{numbers}}' and '{{target}}', got {prompt_format!r}")
        self.num_numbers, self.max_number, self.target_range = num_numbers, max_number, (lo, hi)
        self.prompt_format = prompt_format

    def generate(self, rng: random.Random, index: int) -> Sample:
        lo, hi = self.target_range
        for _ in range(1000):
            numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
            for _ in range(20):
                value, expr = _random_expression(rng, numbers)
                if value.denominator == 1 and lo <= value <= hi:
                    target = int(value)
                    prompt = self.prompt_format.format(numbers=" ".join(map(str, numbers)), target=target)
                    meta = {"numbers": numbers, "target": target}
                    return Sample(prompt=prompt, answer=expr, task=self.name, index=index, meta=meta)
        raise ValueError(
            f"countdown: found no instance with target in {self.target_range} from {self.num_numbers} numbers "
            f"<= {self.max_number}; widen target_range or change max_number"
        )

    def score(self, sample: Sample, text: str) -> float:
        line = first_line(text, limit=_MAX_CHARS * 2)
        try:
            value, used = parse_expression(line)
        except ValueError:
            return 0.0
        if Counter(used) - Counter(sample.meta["numbers"]):  # a number not given, or used too often
            return 0.0
        return float(value == sample.meta["target"])

    def reference(self, sample: Sample) -> str:
        return str(sample.answer)


def parse_expression(text: str) -> tuple[Fraction, list[int]]:
    """Value and number literals of an arithmetic expression, optionally followed by "=<number>".

    Grammar: expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ; factor := INT | '(' expr ')'.
    Raises ValueError on anything else (unknown characters, division by zero, too long, too deep).
    """
    if len(text) > _MAX_CHARS:
        raise ValueError("expression too long")
    parser = _Parser(_tokenize(text))
    value = parser.expr(0)
    used = list(parser.used)  # literals after '=' state the result; they are not uses of the numbers
    if parser.peek() == "=":
        parser.take()
        if parser.expr(0) != value:
            raise ValueError("the stated result differs from the expression's value")
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()!r}")
    return value, used


def _tokenize(text: str) -> list[str]:
    tokens, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"unexpected character {text[pos]!r}")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens, self.pos = tokens, 0
        self.used: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ValueError("unexpected end of expression")
        self.pos += 1
        return tok

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            value = value + self.term(depth) if self.take() == "+" else value - self.term(depth)
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op, rhs = self.take(), self.factor(depth)
            if op == "/" and rhs == 0:
                raise ValueError("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def factor(self, depth: int) -> Fraction:
        if depth > _MAX_DEPTH:
            raise ValueError("expression nested too deeply")
        tok = self.take()
        if tok == "(":
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise ValueError("missing ')'")
            return value
        if not tok.isdigit():
            raise ValueError(f"expected a number, got {tok!r}")
        self.used.append(int(tok))
        return Fraction(int(tok))


def _random_expression(rng: random.Random, numbers: list[int]) -> tuple[Fraction, str]:
    """Combine random pairs until one tree is left; returns its value and minimally parenthesised text."""
    nodes = [(Fraction(n), n) for n in numbers]
    rng.shuffle(nodes)
    while len(nodes) > 1:
        i, j = rng.sample(range(len(nodes)), 2)
        (a, ta), (b, tb) = nodes[i], nodes[j]
        ops = [op for op in "+-*/" if (op != "-" or a >= b) and (op != "/" or (b != 0 and (a / b).denominator == 1))]
        op = rng.choice(ops)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else a}[op]
        nodes = [n for k, n in enumerate(nodes) if k not in (i, j)] + [(value, (op, ta, tb))]
    return nodes[0][0], _format(nodes[0][1])


def _format(tree, parent: str | None = None, is_right: bool = False) -> str:
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    text = _format(left, op, False) + op + _format(right, op, True)
    if parent and (_PREC[op] < _PREC[parent] or (is_right and _PREC[op] == _PREC[parent] and parent in "-/")):
        return f"({text})"
    return text


def _pair(target_range) -> tuple[int, int]:
    pair = tuple(target_range)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair) or pair[0] > pair[1]:
        raise ValueError(f"countdown: target_range must be [low, high] integers with low <= high, got {target_range!r}")
    return pair
