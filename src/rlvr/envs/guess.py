"""`guess_number`: the model guesses a secret integer, one guess per turn; the environment answers higher / lower.

    guess 1-16:  ->  model: 8\\n   env: higher\\n   model: 12\\n   env: lower\\n   model: 10\\n   env: correct\\n

1. A turn is one line (`\\n` is the turn's stop string); its first integer is the guess. The reply is `higher`,
   `lower` or `correct` (which ends the episode with reward 1) on a line of its own; a turn without an integer gets
   `a number please`.
2. The task `guess_number` holds the secret in its sample; its scorer replays the transcript's guesses (the model's
   lines, every other line) and gives 1 when one of them is the secret, so `task` and `env` rewards agree.
   Its reference is the binary search, which finds the secret within ceil(log2(hi)) + 1 turns.
"""

from __future__ import annotations

import random
import re

from rlvr.batch import Sample
from rlvr.envs.base import ENVS
from rlvr.tasks.base import TASKS, ProceduralTask

_INT = re.compile(r"-?\d{1,9}")  # bounded


def _guess(line: str) -> int | None:
    match = _INT.search(line[:100])
    return None if match is None else int(match.group())


def _reply(guess: int | None, secret: int) -> str:
    if guess is None:
        return "a number please"
    return "correct" if guess == secret else ("higher" if guess < secret else "lower")


@ENVS.register("guess_number")
class GuessNumber:
    """Answers each guess with higher / lower / correct against the sample's secret."""

    stop = ("\n",)

    def reset(self, sample: Sample) -> str | None:
        self.secret = int(sample.answer)
        return None

    def step(self, turn: str) -> tuple[str | None, float, bool]:
        reply = _reply(_guess(turn), self.secret)
        return reply + "\n", float(reply == "correct"), reply == "correct"


@TASKS.register("guess_number")
class GuessNumberTask(ProceduralTask):
    """A secret in [1, hi]; prompt "guess 1-{hi}:". Every prompt reads the same, so there is no held-out split by
    prompt (`holdout` is not passed): evaluation items differ by their secrets' seed only."""

    name = "guess_number"
    needs = ("seed",)

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None, hi: int = 16):
        super().__init__(seed=seed, size=size, holdout=holdout)
        if not isinstance(hi, int) or not 2 <= hi <= 10**6:
            raise ValueError(f"guess_number: hi must be an integer in [2, 1000000], got {hi!r}")
        self.hi = hi

    def generate(self, rng: random.Random, index: int) -> Sample:
        secret = rng.randint(1, self.hi)
        return Sample(prompt=f"guess 1-{self.hi}:", answer=str(secret), task=self.name, index=index,
                      meta={"secret": secret})

    def score(self, sample: Sample, text: str) -> float:
        guesses = text[:2000].split("\n")[0::2]  # the model's lines; the environment's replies in between
        return float(any(_guess(g) == int(sample.answer) for g in guesses))

    def reference(self, sample: Sample) -> str:
        return "".join(text for text, _ in self.reference_turns(sample))

    def reference_turns(self, sample: Sample) -> list[tuple[str, bool]]:
        lo, hi, secret, turns = 1, self.hi, int(sample.answer), []
        while True:
            guess = (lo + hi) // 2
            reply = _reply(guess, secret)
            turns += [(f"{guess}\n", True), (f"{reply}\n", False)]
            if reply == "correct":
                return turns[:-1]  # the episode ends at the correct guess: its reply is never seen
            lo, hi = (guess + 1, hi) if reply == "higher" else (lo, guess - 1)
