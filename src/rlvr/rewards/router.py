"""Mixture of rewards (Intern-S1, arXiv 2508.15763): route each sample to its own task's reward sources.

    rewards, metrics = route_rewards(routes, samples, completions, lengths=..., normalize="none")

1. `routes` maps a task key (Sample.task) to that task's (name, weight, fn) reward sources; a sample whose task
   has no route is an error naming the task (never a silent zero).
2. Each task's rows are scored by `combine_rewards` (weighted, None-aware sum; crashes reported with the sample).
3. normalize="per_source": before the weighted sum, each source's values are z-scored over the rows it scored
   in this batch (population std, +1e-6), so a 0/1 verifier and a reward model of another scale add up
   comparably. The group-relative advantage afterwards removes per-prompt offsets as usual (spec §3.4).
4. Metrics: rewards/<source>/mean etc. from combine_rewards, prefixed `tasks/<key>/`, and tasks/<key>/reward.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from rlvr.rewards.core import combine_rewards


def route_rewards(routes: dict, samples: list, completions: list[str], *, lengths=None, on_error: str = "raise",
                  step: int | None = None, normalize: str = "none",
                  group_ids=None) -> tuple[torch.Tensor, dict[str, float]]:
    """Rewards (N,) (NaN = no source applied) and per-task metrics."""
    rows_by_task: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if s.task not in routes:
            raise ValueError(f"no reward route for task '{s.task}' (sample {i}); routes: {sorted(routes)}")
        rows_by_task[s.task].append(i)
    lengths = lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths
    group_ids = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else group_ids
    values: dict[tuple[str, str], dict[int, float]] = {}  # (task, source) -> row -> value
    metrics: dict[str, float] = {}
    for key, rows in rows_by_task.items():
        _, per_fn, m = combine_rewards(routes[key], _pick(samples, rows), _pick(completions, rows),
                                       _pick(lengths, rows), on_error=on_error, step=step,
                                       group_ids=_pick(group_ids, rows))
        metrics.update({f"tasks/{key}/{k}": v for k, v in m.items()})
        for name, vals in per_fn.items():
            values[(key, name)] = {r: v for r, v in zip(rows, vals) if v is not None}
    if normalize == "per_source":
        _zscore_per_source(values)
    weights = {(key, name): w for key, fns in routes.items() for name, w, _ in fns}
    total = [None] * len(samples)
    for (key, name), by_row in values.items():
        for r, v in by_row.items():
            total[r] = (total[r] or 0.0) + weights[(key, name)] * v
    rewards = torch.tensor([math.nan if t is None else t for t in total], dtype=torch.float32)  # (N,)
    for key, rows in rows_by_task.items():
        got = [total[r] for r in rows if total[r] is not None]
        metrics[f"tasks/{key}/reward"] = sum(got) / len(got) if got else math.nan
    return rewards, metrics


def _pick(xs, rows: list[int]):
    return None if xs is None else [xs[i] for i in rows]


def _zscore_per_source(values: dict[tuple[str, str], dict[int, float]]) -> None:
    """In place: each source name's values (pooled over the tasks that use it) -> (v - mean) / (std + 1e-6)."""
    by_source: dict[str, list[float]] = defaultdict(list)
    for (_, name), by_row in values.items():
        by_source[name].extend(by_row.values())
    stats = {}
    for name, vs in by_source.items():
        mean = sum(vs) / len(vs)
        std = math.sqrt(sum((v - mean) ** 2 for v in vs) / len(vs))
        stats[name] = (mean, std)
    for (_, name), by_row in values.items():
        mean, std = stats[name]
        for r in by_row:
            by_row[r] = (by_row[r] - mean) / (std + 1e-6)
