"""countdown: combine the given numbers with + - * / and parentheses to hit a target, e.g. "3 5 7 -> 22:".

1. Draw `num_numbers` integers in [1, max_number].
2. Build a random expression over all of them with the operators in `ops`: a random tree (division only when
   exact, subtraction never below 0), or with `parentheses=False` a flat chain such as 3 * 4 - 2 under the usual
   precedence (its value must be an integer; a chain never needs parentheses). Redraw until the value is an
   integer in `target_range`. That expression is the reference answer.
3. Score: 1.0 when the completion's first line is an expression that uses only the given numbers, each at
   most once, only the operators in `ops` (no parentheses when `parentheses=False`), and equals the target
   exactly (Fractions). An optional "=<target>" suffix is accepted.
4. `answer_format="equation"` (DIVER's learning check, docs/methods.md §3.9): the reference is `$3 * 4 - 2 = 10$`,
   spaces around operators, wrapped in `$` so DIVER-ED's equation regex finds exactly one equation; the scorer
   accepts the first line with or without the `$` pair and requires the "= <target>" part.
`countdown_lite` is that check's preset: 3 numbers in 1-9, + - *, no parentheses, equation answers.
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
_FORMATS = ("expr", "equation")
_TARGET = re.compile(r"\s*(\d{1,9})\s*")


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
        ops: str = "+-*/",
        parentheses: bool = True,
        answer_format: str = "expr",
    ):
        super().__init__(seed=seed, size=size, holdout=holdout)
        if not isinstance(ops, str) or not ops or set(ops) - set(_PREC):
            raise ValueError(f"countdown: ops must be a non-empty subset of '+-*/', got {ops!r}")
        if answer_format not in _FORMATS:
            raise ValueError(f"countdown: answer_format must be one of {list(_FORMATS)}, got {answer_format!r}")
        if not isinstance(num_numbers, int) or not 2 <= num_numbers <= 8:
            raise ValueError(f"countdown: num_numbers must be an integer in [2, 8], got {num_numbers!r}")
        if not isinstance(max_number, int) or max_number < 1:
            raise ValueError(f"countdown: max_number must be a positive integer, got {max_number!r}")
        lo, hi = _pair(target_range)
        if "{numbers}" not in prompt_format or "{target}" not in prompt_format:
            raise ValueError(f"countdown: prompt_format needs '{{numbers}}' and '{{target}}', got {prompt_format!r}")
        self.num_numbers, self.max_number, self.target_range = num_numbers, max_number, (lo, hi)
        self.prompt_format = prompt_format
        self.ops = "".join(dict.fromkeys(ops))  # dedupe, keep order: the rng draws from a fixed sequence
        self.parentheses, self.answer_format = bool(parentheses), answer_format

    def generate(self, rng: random.Random, index: int) -> Sample:
        lo, hi = self.target_range
        spaced = self.answer_format == "equation"  # DIVER's check writes `3 * 4 - 2 = 10`: whitespace tokens for BLEU
        for _ in range(1000):
            numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
            for _ in range(20):
                value, expr = (_random_expression(rng, numbers, self.ops, spaced=spaced) if self.parentheses
                               else _random_chain(rng, numbers, self.ops, spaced=spaced))
                if value.denominator == 1 and lo <= value <= hi:
                    target = int(value)
                    prompt = self.prompt_format.format(numbers=" ".join(map(str, numbers)), target=target)
                    meta = {"numbers": numbers, "target": target}
                    answer = f"${expr} = {target}$" if spaced else expr
                    return Sample(prompt=prompt, answer=answer, task=self.name, index=index, meta=meta)
        raise ValueError(
            f"countdown: found no instance with target in {self.target_range} from {self.num_numbers} numbers "
            f"<= {self.max_number}; widen target_range or change max_number"
        )

    def score(self, sample: Sample, text: str) -> float:
        line = first_line(text, limit=_MAX_CHARS * 2)
        if self.answer_format == "equation":
            line = _equation_lhs(line, sample.meta["target"])
        banned = set(_PREC) - set(self.ops) | (set() if self.parentheses else set("()"))
        if line is None or banned & set(line):
            return 0.0
        try:
            value, used = parse_expression(line)
        except ValueError:
            return 0.0
        if Counter(used) - Counter(sample.meta["numbers"]):  # a number not given, or used too often
            return 0.0
        return float(value == sample.meta["target"])

    def reference(self, sample: Sample) -> str:
        return str(sample.answer)


@TASKS.register("countdown_lite")
class CountdownLite(Countdown):
    """DIVER's learning-check task (docs/methods.md §3.9): 3 numbers in 1-9, + - *, no parentheses, `$a * b - c = t$`.

    Targets 10-40 are never one of the given numbers (no one-number answers) and have >= 2 correct expressions
    for nearly every prompt (tests/test_tasks.py enumerates them), so a policy can keep several correct answers.
    """

    name = "countdown_lite"

    def __init__(
        self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, num_numbers: int = 3,
        max_number: int = 9, target_range: tuple[int, int] | list[int] = (10, 40),
        prompt_format: str = "{numbers} -> {target}:", ops: str = "+-*", parentheses: bool = False,
        answer_format: str = "equation",
    ):
        super().__init__(seed=seed, size=size, holdout=holdout, num_numbers=num_numbers, max_number=max_number,
                         target_range=target_range, prompt_format=prompt_format, ops=ops, parentheses=parentheses,
                         answer_format=answer_format)


def _equation_lhs(line: str, target: int) -> str | None:
    """The expression of "<expr> = <target>" or "$<expr> = <target>$"; None without the "= target" part."""
    if len(line) >= 2 and line[0] == line[-1] == "$":
        line = line[1:-1]
    lhs, eq, rhs = line.partition("=")
    m = _TARGET.fullmatch(rhs)
    return lhs if eq and m and int(m.group(1)) == target else None


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


def _random_expression(
    rng: random.Random, numbers: list[int], allowed: str = "+-*/", *, spaced: bool = False
) -> tuple[Fraction, str]:
    """Combine random pairs until one tree is left; returns its value and minimally parenthesised text."""
    nodes = [(Fraction(n), n) for n in numbers]
    rng.shuffle(nodes)
    while len(nodes) > 1:
        i, j = rng.sample(range(len(nodes)), 2)
        (a, ta), (b, tb) = nodes[i], nodes[j]
        ops = [op for op in allowed if (op != "-" or a >= b) and (op != "/" or (b != 0 and (a / b).denominator == 1))]
        if not ops:  # e.g. ops="-" and a < b: no valid operator for this pair; the caller redraws
            return Fraction(1, 2), ""
        op = rng.choice(ops)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else a}[op]
        nodes = [n for k, n in enumerate(nodes) if k not in (i, j)] + [(value, (op, ta, tb))]
    return nodes[0][0], _format(nodes[0][1], spaced=spaced)


def _random_chain(rng: random.Random, numbers: list[int], allowed: str, *, spaced: bool) -> tuple[Fraction, str]:
    """All numbers in random order joined by random operators, no parentheses (usual precedence); value and text."""
    order = list(numbers)
    rng.shuffle(order)
    sep = " " if spaced else ""
    text = str(order[0]) + "".join(f"{sep}{rng.choice(allowed)}{sep}{n}" for n in order[1:])
    return parse_expression(text)[0], text  # numbers are >= 1, so no division by zero


def _format(tree, parent: str | None = None, is_right: bool = False, *, spaced: bool = False) -> str:
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    sep = " " if spaced else ""
    text = _format(left, op, False, spaced=spaced) + sep + op + sep + _format(right, op, True, spaced=spaced)
    if parent and (_PREC[op] < _PREC[parent] or (is_right and _PREC[op] == _PREC[parent] and parent in "-/")):
        return f"({text})"
    return text


def _pair(target_range) -> tuple[int, int]:
    pair = tuple(target_range)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair) or pair[0] > pair[1]:
        raise ValueError(f"countdown: target_range must be [low, high] integers with low <= high, got {target_range!r}")
    return pair
