"""Routed rewards (Intern-S1 mixture of rewards, arXiv 2508.15763): each row is scored by its own task's sources.

    rewards, sources = route_rewards(routes, samples, completions, lengths=..., normalize="none", log=log)

1. `routes` maps a task key (Sample.task) to that task's (name, weight, fn) reward sources; one task is one route.
   A sample whose task has no route is an error naming the task (never a silent zero).
2. Every source of a route scores that task's rows (crashes reported with the sample, rlvr.rewards.core). A source
   is keyed by its name, numbered when the name repeats in its route (`python`, `python#1`), so two sources with
   one name keep their own values and weights; sources with the same key in different tasks share a column
   (`sources[key]`, NaN on rows it did not score).
3. normalize="per_source": before the weighted sum, each column is z-scored over the rows it scored (population
   std, +1e-6; pooled over every data-parallel rank when `world` has several), so a 0/1 verifier and a reward model
   of another scale add up comparably. The group-relative advantage afterwards removes per-prompt offsets as usual.
4. Metrics (into `log`): rewards/<key>/mean|errors|none_frac and rewards/total/mean; with several routes prefixed
   `tasks/<task>/`, plus tasks/<task>/reward.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch

from rlvr.distributed import World, all_reduce
from rlvr.metrics import Metrics
from rlvr.rewards.core import run_reward, source_keys

NORMALIZE = ("none", "per_source")


def route_rewards(routes: dict, samples: list, completions: list[str], *, lengths=None, on_error: str = "raise",
                  step: int | None = None, normalize: str = "none", group_ids=None, extra: dict | None = None,
                  world: World | None = None, log: Metrics | None = None, runner=None) -> tuple[torch.Tensor, dict]:
    """Rewards (N,) (NaN = no source applied) and each source's values {key: (N,)} before weighting.

    extra: more call-time keywords for the reward fns, per row (lists of N) or for the whole call.
    runner: runs the reward fns in place of `score_rows`, with its arguments and result (Ray reward workers,
    rlvr.distributed.ray_reward).
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {list(NORMALIZE)}, got {normalize!r}")
    log, world = Metrics() if log is None else log, World() if world is None else world
    rows_by_task = _rows_by_task(routes, samples)
    call_extra = {"lengths": _as_list(lengths), "group_ids": _as_list(group_ids), "step": step, **(extra or {})}
    scored = (runner or score_rows)(routes, samples, completions, call_extra, on_error, step)
    sources = {key: torch.full((len(samples),), math.nan, dtype=torch.float64) for key in _all_keys(routes)}
    many = len(routes) > 1
    for task, rows in rows_by_task.items():
        prefix = f"tasks/{task}/" if many else ""
        for key, (values, errors) in scored[task].items():
            sources[key][rows] = torch.tensor([math.nan if v is None else v for v in values], dtype=torch.float64)
            _source_metrics(log, f"{prefix}rewards/{key}", values, errors)
    if normalize == "per_source":
        _zscore(sources, world)
    rewards = _weighted_total(routes, rows_by_task, sources, len(samples))
    _total_metrics(log, rewards, rows_by_task, many)
    return rewards.float(), {k: v.float() for k, v in sources.items()}


def score_rows(routes: dict, samples: list, completions: list[str], call_extra: dict, on_error: str,
               step: int | None) -> dict[str, dict[str, tuple[list[float | None], int]]]:
    """{task: {source key: (values on the task's rows in row order, failed samples)}}: every source of each row's
    task on that task's rows (module docstring 2); call_extra's lists hold one entry per row."""
    out = {}
    for task, rows in _rows_by_task(routes, samples).items():
        picked = {k: [v[i] for i in rows] if isinstance(v, list) else v for k, v in call_extra.items()}
        keyed = zip(source_keys([name for name, _, _ in routes[task]]), routes[task])
        out[task] = {key: run_reward(name, fn, [samples[i] for i in rows], [completions[i] for i in rows], picked,
                                     on_error, step) for key, (name, _, fn) in keyed}
    return out


def _rows_by_task(routes: dict, samples: list) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if s.task not in routes:
            raise ValueError(f"no reward route for task '{s.task}' (sample {i}); routes: {sorted(routes)}")
        rows[s.task].append(i)
    return rows


def _all_keys(routes: dict) -> list[str]:
    """Every source key of every route (the same list on every rank, whatever rows it holds)."""
    keys = [k for fns in routes.values() for k in source_keys([name for name, _, _ in fns])]
    return list(dict.fromkeys(keys))


def _as_list(x: Any) -> list | None:
    return x.tolist() if isinstance(x, torch.Tensor) else (None if x is None else list(x))


def _source_metrics(log: Metrics, prefix: str, values: list[float | None], errors: int) -> None:
    got = [v for v in values if v is not None]
    log.sum(f"{prefix}/errors", errors)
    log.mean(f"{prefix}/mean", sum(got) / len(got) if got else math.nan, weight=len(got))
    log.mean(f"{prefix}/none_frac", 1 - len(got) / len(values) if values else math.nan, weight=len(values))


def _zscore(sources: dict[str, torch.Tensor], world: World) -> None:
    """In place: each column -> (v - mean) / (std + 1e-6) over its scored rows on every rank (population std)."""
    keys = sorted(sources)
    stats = torch.tensor([[float((~torch.isnan(sources[k])).sum()), float(sources[k].nansum()),
                           float(sources[k].pow(2).nansum())] for k in keys], dtype=torch.float64).reshape(-1, 3)
    stats = all_reduce(stats, world)
    for k, (n, total, squares) in zip(keys, stats.tolist()):
        if n:
            mean = total / n
            std = math.sqrt(max(squares / n - mean * mean, 0.0))
            sources[k] = (sources[k] - mean) / (std + 1e-6)


def _weighted_total(routes: dict, rows_by_task: dict, sources: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    total = torch.full((n,), math.nan, dtype=torch.float64)
    for task, rows in rows_by_task.items():
        idx = torch.tensor(rows, dtype=torch.long)
        acc = torch.zeros(len(rows), dtype=torch.float64)
        applied = torch.zeros(len(rows), dtype=torch.bool)
        for key, (_, weight, _) in zip(source_keys([name for name, _, _ in routes[task]]), routes[task]):
            v = sources[key][idx]
            ok = ~torch.isnan(v)
            acc += torch.where(ok, weight * v, 0.0)
            applied |= ok
        total[idx] = torch.where(applied, acc, math.nan)
    return total


def _total_metrics(log: Metrics, rewards: torch.Tensor, rows_by_task: dict, many: bool) -> None:
    for task, rows in rows_by_task.items():
        r = rewards[rows]
        got = r[~torch.isnan(r)]
        value = float(got.mean()) if len(got) else math.nan
        log.mean(f"tasks/{task}/rewards/total/mean" if many else "rewards/total/mean", value, weight=len(got))
        if many:
            log.mean(f"tasks/{task}/reward", value, weight=len(got))
