"""A mixture of tasks: many tasks at once, each with a sampling weight (Intern-S1, arXiv 2508.15763 §RL data).

Item i draws its task from `Random(seed + i)` in proportion to the weights and takes that task's item i
(modulo its size), so the stream is deterministic per index like every procedural task. `Sample.task` is
the task's key in the mixture, which routes scoring and rewards (mixture of rewards) and names per-task
metrics.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import random

from rlvr.batch import Sample
from rlvr.tasks.base import Task, check_index


class MixtureTask(Task):
    """Several tasks under keys, sampled by weight; scores and references route to the item's own task."""

    name = "mixture"

    def __init__(self, tasks: dict[str, Task], weights: dict[str, float], *, seed: int = 0, size: int = 100_000):
        if not tasks:
            raise ValueError("mixture: give at least one task")
        bad = {k: w for k, w in weights.items() if not w > 0}
        if bad:
            raise ValueError(f"mixture: task weights must be > 0, got {bad}")
        self.tasks, self.seed, self.size = dict(tasks), seed, size
        self.keys = list(tasks)
        self._cum = list(itertools.accumulate(weights[k] for k in self.keys))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Sample:
        i = check_index(i, self.size, self.name)
        draw = random.Random(self.seed + i).random() * self._cum[-1]
        key = self.keys[min(bisect.bisect_right(self._cum, draw), len(self.keys) - 1)]
        task = self.tasks[key]
        return dataclasses.replace(task[i % len(task)], task=key)

    def score(self, sample: Sample, text: str) -> float:
        return self.tasks[sample.task].score(sample, text)

    def reference(self, sample: Sample) -> str:
        return self.tasks[sample.task].reference(sample)
