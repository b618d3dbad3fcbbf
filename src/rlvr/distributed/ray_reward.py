"""Reward workers as Ray actors (`distributed: {backend: ray, reward_workers: N}`; `pip install 'rlvr[ray]'`).

    pool = RewardPool.start(routes, workers=2)       # a runner for rlvr.rewards.router.route_rewards
    scorer = dataclasses.replace(scorer, runner=pool)
    pool.close()

1. Each worker holds the run's reward routes (task -> its (name, weight, fn) sources) once, built in the trainer:
   a reward model is loaded once per worker, not per call, and a user's reward file is shipped by value
   (rlvr.distributed.ray_cluster).
2. A step's rows are split over the workers by whole groups (a group never spans workers, as a group never spans
   data-parallel ranks), contiguous groups per worker in row order; each worker runs every source of its rows' tasks
   (rlvr.rewards.router.score_rows) and the trainer puts the values back in row order. Rewards that read a group
   (diversity, group-level schedules) see their whole group; the per-source z-scoring, weighting and metrics stay
   in the trainer, so the rewards equal the in-process ones (tests/test_ray.py).
3. A reward that raises is reported as in one process (the RewardError of rlvr.rewards.core, chained), not as a
   Ray traceback. A worker that dies is replaced (its routes shipped again) and its shard re-issued: no batch is
   lost, and `ray/reward_restarts` counts it.
4. Each worker takes `reward_cpus` Ray CPUs; a sandboxing verifier that runs subprocesses can ask for more.
"""

from __future__ import annotations

import dataclasses

from rlvr.distributed.ray_cluster import ActorPool, ensure_ray, ray_module
from rlvr.rewards.router import score_rows


class _RewardWorker:
    def __init__(self, routes):
        import torch

        torch.set_num_threads(1)
        self.routes = routes

    def score(self, samples, completions, call_extra, on_error, step):
        return score_rows(self.routes, samples, completions, call_extra, on_error, step)


@dataclasses.dataclass
class RewardPool(ActorPool):
    """A route_rewards runner whose reward calls run on Ray actors (module docstring)."""

    what = "reward workers"

    routes: dict
    workers: list
    cpus: float = 1.0
    restarts: int = 0
    owns_ray: bool = False

    @classmethod
    def start(cls, routes: dict, *, workers: int, cpus: float = 1.0) -> RewardPool:
        owns = ensure_ray(workers * cpus)
        out = cls(routes, [], cpus, 0, owns)
        out.workers = [out._new_worker() for _ in range(workers)]
        return out

    def _new_worker(self):
        ray = ray_module()
        return ray.remote(num_cpus=self.cpus, max_restarts=0)(_RewardWorker).remote(self.routes)

    def __call__(self, routes, samples, completions, call_extra, on_error, step):
        """score_rows(routes, ...) on the workers; `routes` must be the ones the workers hold."""
        if routes is not self.routes:
            raise ValueError("RewardPool: called with other reward routes than the workers were started with")
        ray = ray_module()
        shards = group_shards(call_extra.get("group_ids"), len(samples), len(self.workers))
        refs = [self._issue(i, rows, samples, completions, call_extra, on_error, step) for i, rows in enumerate(shards)]
        parts = []
        for i, (rows, ref) in enumerate(zip(shards, refs)):
            if not rows:
                continue
            issue = lambda i=i, rows=rows: self._issue(i, rows, samples, completions, call_extra, on_error, step)  # noqa: E731
            try:
                parts.append((rows, self._result(i, ref, issue)))
            except ray.exceptions.RayTaskError as err:  # a reward raised: the error one process would give
                raise err.cause from None
        return merge_shards(parts, samples)

    def _issue(self, i, rows, samples, completions, call_extra, on_error, step):
        if not rows:
            return None
        extra = {k: [v[r] for r in rows] if isinstance(v, list) else v for k, v in call_extra.items()}
        return self.workers[i].score.remote([samples[r] for r in rows], [completions[r] for r in rows], extra,
                                            on_error, step)

def group_shards(group_ids: list | None, n: int, workers: int) -> list[list[int]]:
    """Row indices per worker: groups in order of first appearance, cut into `workers` contiguous runs of about
    equal rows; without group ids every row is its own group."""
    ids = list(range(n)) if group_ids is None else list(group_ids)
    members: dict = {}
    for row, g in enumerate(ids):
        members.setdefault(g, []).append(row)
    shards: list[list[int]] = [[] for _ in range(workers)]
    done = 0
    for rows in members.values():
        shards[min(done * workers // max(n, 1), workers - 1)].extend(rows)
        done += len(rows)
    return [sorted(s) for s in shards]


def merge_shards(parts: list[tuple[list[int], dict]], samples: list) -> dict:
    """The shards' score_rows results as one score_rows result over every row (values in row order, errors summed)."""
    by_row: dict[str, dict[str, dict[int, float | None]]] = {}
    errors: dict[str, dict[str, int]] = {}
    for rows, scored in parts:
        for task, per_key in scored.items():
            task_rows = [r for r in rows if samples[r].task == task]
            for key, (values, errs) in per_key.items():
                by_row.setdefault(task, {}).setdefault(key, {}).update(zip(task_rows, values))
                errors.setdefault(task, {}).setdefault(key, 0)
                errors[task][key] += errs
    return {task: {key: ([v for _, v in sorted(vals.items())], errors[task][key]) for key, vals in per_key.items()}
            for task, per_key in by_row.items()}
