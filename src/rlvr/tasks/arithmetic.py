"""arithmetic: integer expressions such as "23+45=" -> "68", for tiny character-level models.

1. Draw `terms` operands; each has a digit count drawn uniformly from `digits` ([min, max] or one int).
2. Join them with operators drawn from `ops` (a subset of "+-*"); `*` binds tighter, as usual.
3. The answer is the exact integer value (negative when '-' makes it so).
Score: 1.0 when the first line of the completion is exactly that integer (optional sign, digits only).
"""

from __future__ import annotations

import random
import re

from rlvr.batch import Sample
from rlvr.tasks.base import TASKS, ProceduralTask, first_line

_INT = re.compile(r"[+-]?\d{1,60}")  # bounded: never int() a 100,000-digit string


@TASKS.register("arithmetic")
class Arithmetic(ProceduralTask):
    """Integer arithmetic with short prompts ("{expr}=")."""

    name = "arithmetic"

    def __init__(
        self,
        *,
        seed: int = 0,
        size: int = 10_000,
        holdout: str | None = None,
        digits: int | list[int] | tuple[int, int] = 2,
        ops: str = "+-",
        terms: int = 2,
        prompt_format: str = "{expr}=",
    ):
        super().__init__(seed=seed, size=size, holdout=holdout)
        self.digits = _digit_range(digits)
        if not ops or set(ops) - set("+-*"):
            raise ValueError(f"arithmetic: ops must be a non-empty subset of '+-*', got {ops!r}")
        if not isinstance(terms, int) or terms < 2:
            raise ValueError(f"arithmetic: terms must be an integer >= 2, got {terms!r}")
        if "{expr}" not in prompt_format:
            raise ValueError(f"arithmetic: prompt_format must contain '{{expr}}', got {prompt_format!r}")
        self.ops = "".join(dict.fromkeys(ops))  # dedupe, keep order: the rng draws from a fixed sequence
        self.terms = terms
        self.prompt_format = prompt_format

    def generate(self, rng: random.Random, index: int) -> Sample:
        values = [_operand(rng, rng.randint(*self.digits)) for _ in range(self.terms)]
        ops = [rng.choice(self.ops) for _ in range(self.terms - 1)]
        expr = str(values[0]) + "".join(op + str(v) for op, v in zip(ops, values[1:]))
        answer = str(evaluate(values, ops))
        prompt = self.prompt_format.format(expr=expr)
        return Sample(prompt=prompt, answer=answer, task=self.name, index=index, meta={"expr": expr})

    def score(self, sample: Sample, text: str) -> float:
        line = first_line(text, limit=200)
        if not _INT.fullmatch(line):
            return 0.0
        return float(int(line) == int(sample.answer))

    def reference(self, sample: Sample) -> str:
        return str(sample.answer)


def evaluate(values: list[int], ops: list[str]) -> int:
    """Value of v0 op0 v1 op1 ... with `*` before `+`/`-` (left to right otherwise)."""
    terms, signs = [values[0]], [1]
    for op, v in zip(ops, values[1:]):
        if op == "*":
            terms[-1] *= v
        else:
            terms.append(v)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms))


def _operand(rng: random.Random, n_digits: int) -> int:
    low = 0 if n_digits == 1 else 10 ** (n_digits - 1)
    return rng.randint(low, 10**n_digits - 1)


def _digit_range(digits) -> tuple[int, int]:
    pair = (digits, digits) if isinstance(digits, int) else tuple(digits)
    if len(pair) != 2 or not all(isinstance(d, int) for d in pair) or not 1 <= pair[0] <= pair[1] <= 18:
        raise ValueError(f"arithmetic: digits must be an int or [min, max] with 1 <= min <= max <= 18, got {digits!r}")
    return pair
