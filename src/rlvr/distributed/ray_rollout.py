"""Rollout workers as Ray actors (`distributed: {backend: ray, rollout_workers: N}`; `pip install 'rlvr[ray]'`).

    sampler = RaySampler.start(run.sampler, workers=2)   # a Sampler: generate(samples, group_ids, seeds) -> Batch
    ...; sampler.sync(run.policy)                        # after each update: the workers get the new weights
    sampler.close()

1. Each worker holds a frozen copy of the policy inside the run's own sampler (text or environment episodes) and
   samples the rows it is given with their own counter-based seeds (rlvr.seeding), so splitting a step's rows over
   workers samples the same tokens as one process does; the trainer concatenates the shards in row order.
2. After every update the trainer's weights go to every worker through Ray's object store (one `put`, N loads).
3. A worker that dies (its process killed, an out-of-memory kill) is replaced by a new actor with the current
   weights and its shard is issued again: no batch is lost, and `ray/restarts` counts it.
4. Ray starts on this machine unless a cluster is already connected (`RAY_ADDRESS` / `ray.init(address=...)` before
   the run; rlvr.distributed.ray_cluster): the same config runs on a cluster.
5. With asynchronous rollouts the pipeline (rlvr.rollout.pipeline) loads the version each batch needs into the
   workers (`load_weights`) instead of the trainer's `sync`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from rlvr.batch import Batch
from rlvr.distributed.ray_cluster import ActorPool, ensure_ray
from rlvr.distributed.ray_cluster import ray_module as _ray


class _Worker:
    """A rollout worker: the run's sampler around its own frozen copy of the policy."""

    def __init__(self, sampler, threads: int):
        torch.set_num_threads(threads)
        self.sampler = sampler

    def set_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.sampler.policy.model.load_state_dict(weights)

    def generate(self, params, samples, group_ids: torch.Tensor, seeds: torch.Tensor) -> Batch:
        return self.sampler.with_params(params).generate(samples, group_ids, seeds).to("cpu")


@dataclasses.dataclass
class RaySampler(ActorPool):
    """A Sampler whose rows are sampled by Ray actors (module docstring)."""

    what = "rollout workers"

    inner: Any  # the run's sampler (its policy is the trainer's: pad id, device)
    workers: list
    threads: int = 1
    restarts: int = 0
    owns_ray: bool = False
    weights: dict | None = None  # the workers' weights when set by load_weights (else the trainer policy's)

    def __getattr__(self, name: str):  # the inner sampler's policy, group_size, params, max_turns, ...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @classmethod
    def start(cls, sampler, *, workers: int, threads: int = 1) -> RaySampler:
        owns = ensure_ray(workers * threads)
        out = cls(sampler, [], threads, 0, owns)
        out.workers = [out._new_worker() for _ in range(workers)]
        return out

    def _new_worker(self):
        ray = _ray()
        copy = dataclasses.replace(self.inner, policy=self.inner.policy.frozen_copy())
        copy.policy.to("cpu")
        actor = ray.remote(num_cpus=self.threads, max_restarts=0)(_Worker).remote(copy, self.threads)
        ray.get(actor.set_weights.remote(self.weights if self.weights is not None else _weights(self.inner.policy)))
        return actor

    def with_params(self, params) -> RaySampler:
        return dataclasses.replace(self, inner=self.inner.with_params(params))

    def sync(self, policy) -> None:
        """The trainer's current weights to every worker (module docstring 2)."""
        self.load_weights(_weights(policy))

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        ray = _ray()
        self.weights = weights  # a replaced worker starts from these
        ref = ray.put(weights)
        ray.get([w.set_weights.remote(ref) for w in self.workers])

    def generate(self, samples, group_ids: torch.Tensor, seeds: torch.Tensor) -> Batch:
        n = len(samples)
        bounds = [round(i * n / len(self.workers)) for i in range(len(self.workers) + 1)]
        shards = [(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        refs = [self._issue(i, a, b, samples, group_ids, seeds) for i, (a, b) in enumerate(shards)]
        parts = []
        for i, ((a, b), ref) in enumerate(zip(shards, refs)):
            if b > a:
                issue = lambda i=i, a=a, b=b: self._issue(i, a, b, samples, group_ids, seeds)  # noqa: E731
                parts.append(self._result(i, ref, issue))
        return Batch.concat(parts, self.policy.pad_id).to(self.policy.device)

    def _issue(self, i: int, a: int, b: int, samples, group_ids, seeds):
        if b <= a:
            return None
        return self.workers[i].generate.remote(self.inner.params, samples[a:b], group_ids[a:b].cpu(), seeds[a:b].cpu())


def _weights(policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in policy.model.state_dict().items()}
