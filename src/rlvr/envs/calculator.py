"""`calculator`: a tool the model calls by writing `<c>EXPR</c>`; the environment answers `<r>VALUE</r>`.

    123*456=  ->  model: <c>123*456</c>   env: <r>56088</r>   model: 56088<eos>

1. A turn that ends with a call (`</c>` is the turn's stop string) is answered with the value of its last call:
   integers and + - * only, at most 40 characters (bounded work on hostile text); anything else is `<r>error</r>`.
2. A turn without a call is the final answer: the episode ends. The environment's own reward is 0; the task scores
   the transcript.
The task `tool_arithmetic` (arithmetic problems, by default 3-digit multiplication, which a tiny model cannot do in
its head) scores the text after the last `</r>` as `arithmetic` does, and its reference is the scripted tool use.
"""

from __future__ import annotations

import re

from rlvr.batch import Sample
from rlvr.envs.base import ENVS
from rlvr.tasks.arithmetic import Arithmetic
from rlvr.tasks.base import TASKS

CALL, RESULT = ("<c>", "</c>"), ("<r>", "</r>")
_EXPR = re.compile(r"\d{1,12}(?:[+\-*]\d{1,12}){0,3}")  # bounded: never evaluate a 100,000-digit product


def calculate(expr: str) -> str:
    """The value of an expression of integers and + - * (usual precedence), or 'error'."""
    expr = expr.strip()
    if len(expr) > 40 or not _EXPR.fullmatch(expr):
        return "error"
    terms, signs, value, op = [], [], 0, "+"
    for tok in re.findall(r"\d+|[+\-*]", expr):
        if tok in "+-*":
            op = tok
            continue
        value = int(tok)
        if op == "*":
            terms[-1] *= value
        else:
            terms.append(value)
            signs.append(1 if op == "+" else -1)
    return str(sum(s * t for s, t in zip(signs, terms)))


@ENVS.register("calculator")
class Calculator:
    """Answers the last `<c>...</c>` call of a turn; a turn without a call ends the episode."""

    stop = (CALL[1],)

    def reset(self, sample: Sample) -> str | None:
        return None

    def step(self, turn: str) -> tuple[str | None, float, bool]:
        start = turn.rfind(CALL[0])
        if start < 0:
            return None, 0.0, True  # the final answer
        end = turn.find(CALL[1], start)
        value = calculate(turn[start + len(CALL[0]) : end]) if end >= 0 else "error"
        return f"{RESULT[0]}{value}{RESULT[1]}", 0.0, False


@TASKS.register("tool_arithmetic")
class ToolArithmetic(Arithmetic):
    """Arithmetic to be solved with the calculator environment (default: 3-digit multiplication)."""

    name = "tool_arithmetic"

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, digits=3, ops: str = "*",
                 terms: int = 2, prompt_format: str = "{expr}="):
        super().__init__(seed=seed, size=size, holdout=holdout, digits=digits, ops=ops, terms=terms,
                         prompt_format=prompt_format)

    def score(self, sample: Sample, text: str) -> float:
        """The answer after the last tool result, scored as `arithmetic` scores a completion."""
        return super().score(sample, final_answer(text))

    def reference_turns(self, sample: Sample) -> list[tuple[str, bool]]:
        """The scripted tool use: call, the calculator's reply (not trained on), the answer."""
        call = f"{CALL[0]}{sample.meta['expr']}{CALL[1]}"
        return [(call, True), (f"{RESULT[0]}{calculate(sample.meta['expr'])}{RESULT[1]}", False),
                (str(sample.answer), True)]


def final_answer(text: str) -> str:
    """The text after the last tool result (the whole text when there is none)."""
    cut = text.rfind(RESULT[1])
    return text if cut < 0 else text[cut + len(RESULT[1]) :]
