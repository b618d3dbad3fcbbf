"""Shared base class and scoring helpers of the task gym families (math, logic, puzzles, text).

GymTask is a ProceduralTask with a validated integer `difficulty` in [1, max_difficulty] (a class attribute
per family, MAX_DIFFICULTY by default) whose reference answer is `sample.answer` itself. The helpers read
only the completion's first line (bounded) and parse it with anchored, bounded regexes: no eval(), no int()
of an unbounded digit string.
"""

from __future__ import annotations

import re

from rlvr.batch import Sample
from rlvr.tasks.base import ProceduralTask, first_line

MAX_DIFFICULTY = 5
_INT = re.compile(r"[+-]?\d{1,40}")  # bounded: never int() a 100,000-digit string


class GymTask(ProceduralTask):
    """A ProceduralTask with an integer `difficulty` in [1, max_difficulty]; the reference is `sample.answer`."""

    max_difficulty = MAX_DIFFICULTY

    def __init__(self, *, seed: int, size: int, holdout: str | None, difficulty: int):
        super().__init__(seed=seed, size=size, holdout=holdout)
        self.difficulty = check_int(self.name, "difficulty", difficulty, 1, self.max_difficulty)

    def make(self, index: int, prompt: str, answer: str, **meta) -> Sample:
        return Sample(prompt=prompt, answer=answer, task=self.name, index=index, meta=meta)

    def reference(self, sample: Sample) -> str:
        return str(sample.answer)


def answer_line(text: str, *, limit: int = 200) -> str:
    """The completion's first line (within `limit` chars) without an echoed "Answer:", surrounding whitespace
    or trailing periods."""
    line = first_line(text, limit=limit)
    if line[:7].lower() == "answer:":
        line = line[7:]
    return line.strip().rstrip(".").rstrip()


def parse_int(text: str) -> int | None:
    """The integer `text` spells (optional sign, at most 40 digits), else None."""
    return int(text) if _INT.fullmatch(text) else None


def score_int(text: str, answer: str) -> float:
    """1.0 when the completion's answer line is the integer `answer` (optional sign; at most 40 digits)."""
    return float(parse_int(answer_line(text)) == int(answer))


def check_int(task: str, option: str, value, low: int, high: int) -> int:
    """`value` when it is an int (not a bool) in [low, high]; else a ValueError naming `task` and `option`."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{task}: {option} must be an integer in [{low}, {high}], got {value!r}")
    return value


def check_choices(task: str, option: str, value, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A non-empty subset of `allowed` (one name or a list), deduplicated in `allowed` order (stable rng draws)."""
    chosen = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if not chosen or not all(isinstance(v, str) and v in allowed for v in chosen):
        raise ValueError(f"{task}: {option} must be a non-empty subset of {list(allowed)}, got {value!r}")
    return tuple(v for v in allowed if v in chosen)
