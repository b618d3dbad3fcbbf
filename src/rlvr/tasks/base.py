"""The Task protocol: an indexable, deterministic collection of Samples that scores its own answers.

    task = TASKS.build("arithmetic", seed=0, size=1000)
    sample = task[3]                      # Sample(prompt="23+45=", answer="68", task="arithmetic", index=3)
    task.score(sample, "68")              # 1.0; any float in [0, 1]
    task.reference(sample)                # a completion that scores 1.0 (supervised warm start, tests)
    task.reference_turns(sample)          # the same as (text, trained) segments; multi-turn tasks interleave the
                                          # environment's replies (trained=False), which SFT attends to, never learns

Procedural tasks follow reasoning-gym: item i is drawn from `random.Random(seed + i)`, so an item never
depends on which other items were generated, and two processes agree on every item without sharing state.

Small problem spaces (2-digit addition has 8,100 problems) make a different seed no guarantee of held-out
items. `holdout="train" | "eval"` partitions the space by a stable hash of `holdout_key(sample)` (the prompt,
unless a task adds more): one bucket in HOLDOUT_BUCKETS is reserved for evaluation, and item i redraws from its
own generator until it lands on its side, so the trainer's evaluation problems never occur in training.
"""

from __future__ import annotations

import random
import zlib

from rlvr.batch import Sample
from rlvr.registry import Registry

TASKS = Registry("task")
HOLDOUT_BUCKETS = 10


class Task:
    """Base class. Subclasses set `name` and implement `__len__`, `__getitem__`, `score`, `reference`."""

    name: str = ""
    needs: tuple[str, ...] = ()  # keywords rlvr.run passes when it builds the task (seed, holdout)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        raise NotImplementedError

    def score(self, sample: Sample, text: str) -> float:
        """1.0 for a correct completion `text` of `sample`, 0.0 for a wrong one (partial credit in between)."""
        raise NotImplementedError

    def reference(self, sample: Sample) -> str:
        """A completion text for `sample` that `score` rates 1.0."""
        raise NotImplementedError

    def reference_turns(self, sample: Sample) -> list[tuple[str, bool]]:
        """The reference as (text, trained) segments: one trained segment unless the task is multi-turn."""
        return [(self.reference(sample), True)]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, size={len(self)})"


class ProceduralTask(Task):
    """A generated task: item i comes from `random.Random(seed + i)` via `generate(rng, i)`."""

    needs = ("seed", "holdout")

    def __init__(self, *, seed: int = 0, size: int = 10_000, holdout: str | None = None):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"task '{self.name}': size must be a positive integer, got {size!r}")
        if holdout not in (None, "train", "eval"):
            raise ValueError(f"task '{self.name}': holdout must be 'train', 'eval' or null, got {holdout!r}")
        self.seed = int(seed)
        self.size = size
        self.holdout = holdout

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Sample:
        i = check_index(i, self.size, self.name)
        rng = random.Random(self.seed + i)
        for _ in range(1000):
            sample = self.generate(rng, i)
            in_eval = zlib.crc32(self.holdout_key(sample).encode()) % HOLDOUT_BUCKETS == 0
            if self.holdout is None or (self.holdout == "eval") == in_eval:
                return sample
        raise ValueError(f"task '{self.name}': item {i} found no problem on the '{self.holdout}' side of the "
                         "holdout split in 1000 draws; the problem space is too small, set holdout: null")

    def generate(self, rng: random.Random, index: int) -> Sample:
        raise NotImplementedError

    def holdout_key(self, sample: Sample) -> str:
        """What the holdout split hashes: the prompt; tasks whose prompts repeat across items (a fixed question about
        a drawn image) add the problem itself, so one problem never lands on both sides."""
        return str(sample.prompt)


def is_eval_item(sample: Sample) -> bool:
    """Whether `sample` falls in the evaluation bucket of the holdout split (a stable hash of its prompt)."""
    return zlib.crc32(str(sample.prompt).encode()) % HOLDOUT_BUCKETS == 0


def check_index(i: int, size: int, name: str) -> int:
    """Normalise a (possibly negative) index; IndexError when out of range, as Python sequences do."""
    if not isinstance(i, int) or isinstance(i, bool):
        raise TypeError(f"task '{name}' indices must be integers, got {type(i).__name__}")
    j = i + size if i < 0 else i
    if not 0 <= j < size:
        raise IndexError(f"task '{name}' index {i} out of range for size {size}")
    return j


def first_line(text: str, *, limit: int = 1000) -> str:
    """The first line of `text`, stripped; looks at no more than `limit` characters (hostile outputs)."""
    head = text[:limit].lstrip()
    return head.split("\n", 1)[0].strip()
