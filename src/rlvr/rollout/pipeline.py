"""Asynchronous rollouts (`rollout.max_staleness: S`, S >= 1): the next step's batch is sampled while this step updates.

    pipeline = RolloutPipeline(run, staleness=1, versions=None, current=0)
    rollout = pipeline.take(step, data_pos, more=True)   # step's batch; starts step + 1's in the background
    ... update ...
    pipeline.publish(step + 1)                            # the weights after this update, for later batches

1. Version v is the policy's weights after v updates. Step k's batch is sampled with version max(0, k - S) by a
   frozen copy of the policy (its own sampler, same settings); the trainer keeps the versions later batches still
   need as tensors. Which version samples which batch is fixed by k and S alone, never by thread timing, and
   sampling is counter-based per row (rlvr.seeding), so an asynchronous run is deterministic: sampling in the
   background or in the foreground (`threaded=False`, the tests' reference) gives the same run.
2. Step k: take batch k (waiting if its sampling is still running), then start batch k + 1 in one background
   thread (its version k + 1 - S is already published), then the trainer runs its stages and the update while it
   samples. The trainer recomputes nothing new for staleness: the update's mismatch weight (algo.mismatch, on by
   default) compares the trainer's log-probs with the sampler's, which is the importance weight for the stale
   tokens (docs/methods.md §1.12).
3. A batch comes back with the data position after it and its own rollout metrics; the trainer's data position
   moves when it trains the batch, so a checkpoint names the first untrained prompt and holds the versions the next
   batches need (`saved_versions`): a resumed run samples the in-flight batch again and continues exactly.
4. With Ray rollout workers (rlvr.distributed.ray_rollout) the workers sample, loaded with each batch's version
   before it; the trainer does not sync them after its updates.
5. With a replay buffer (ExGRPO) the next batch starts after this step's `buffer.observe` (`start_next`), so its
   plan reads the pool the synchronous run's plan reads (and a resumed run's); it overlaps the update only. Its
   trajectory choice scores entropies under the sampling version's weights (the synchronous run: the current ones).
6. Under data parallelism (torchrun) each rank runs its own pipeline; the sampling thread's collectives (filters,
   per-source reward normalisation) go over a process group of their own (rlvr.distributed.side_world), so they
   never interleave with the update's gradient all-reduce on the default group, and 2 ranks train as one process
   (tests/test_distributed.py, case async).
7. Metrics: `async/staleness` (k minus the version that sampled batch k), `time/rollout_wait` (the trainer's wait
   for its batch); `time/rollout` is the sampling thread's own time.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace

import torch

from rlvr.batch import Batch
from rlvr.buffers.base import NoBuffer
from rlvr.distributed import side_world
from rlvr.metrics import Metrics


@dataclasses.dataclass(frozen=True)
class Rollout:
    batch: Batch
    end: int  # data position after this batch
    log: Metrics
    version: int


def snapshot(policy) -> dict[str, torch.Tensor]:
    """A copy of the policy model's weights (CPU tensors are cloned; they outlive later updates)."""
    return {k: v.detach().clone() for k, v in policy.model.state_dict().items()}


class RolloutPipeline:
    """See the module docstring. `gather` is the trainer's collect -> score -> filter, given the sampler to use."""

    def __init__(self, run, gather, *, staleness: int, versions: dict[int, dict] | None, current: int,
                 threaded: bool = True):
        if staleness < 1:
            raise ValueError(f"RolloutPipeline: staleness must be >= 1, got {staleness}")
        self.run, self.gather, self.staleness, self.threaded = run, gather, staleness, threaded
        self.copy = run.policy.frozen_copy()
        self.remote = hasattr(run.sampler, "load_weights")  # Ray rollout workers: they get each batch's version
        self.sampler = run.sampler if self.remote else dataclasses.replace(run.sampler, policy=self.copy)
        self.world = side_world(run.world)  # the thread's collectives never interleave with the update's
        self.versions: dict[int, dict] = dict(versions or {})
        self.publish(current)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlvr-rollout") if threaded else None
        self.pending: tuple[int, Future] | None = None
        self.next: tuple[int, int] | None = None  # (step, data position) of the batch to start next
        # a replay buffer plans each batch from what its observe recorded: the next batch starts after observe
        self.defer = not isinstance(run.buffer, NoBuffer)

    def version_for(self, step: int) -> int:
        return max(0, step - self.staleness)

    def publish(self, version: int) -> None:
        """Keep the weights after `version` updates; drop versions no later batch needs."""
        self.versions[version] = snapshot(self.run.policy)
        oldest = self.version_for(version)  # the next batch to train is step `version`'s (sampled, or to resample)
        for v in [v for v in self.versions if v < oldest]:
            del self.versions[v]

    def saved_versions(self, next_step: int) -> dict[int, dict]:
        """The versions a run resumed at `next_step` needs (checkpoint; module docstring 3)."""
        return {v: w for v, w in self.versions.items() if v >= self.version_for(next_step)}

    def take(self, step: int, data_pos: int, *, more: bool) -> tuple[Rollout, float]:
        """Step's batch and the seconds waited for it; with `more`, step + 1's batch starts in the background (after
        the buffer's observe when a replay buffer plans it: `start_next`)."""
        t0 = time.perf_counter()
        if self.pending is not None and self.pending[0] == step:
            rollout = self.pending[1].result()
        else:  # the first step of a run or of a resume
            rollout = self._produce(step, data_pos, self.versions[self.version_for(step)])
        self.pending = None
        waited = time.perf_counter() - t0
        self.next = (step + 1, rollout.end) if more else None
        if not self.defer:
            self.start_next()
        return rollout, waited

    def start_next(self) -> None:
        """Start sampling the next batch (module docstring 2); a no-op once started or when none is due."""
        if self.next is None:
            return
        step, data_pos = self.next
        self.next = None
        weights = self.versions[self.version_for(step)]  # chosen here, not in the thread: no race
        if self.threaded:
            self.pending = (step, self.pool.submit(self._produce, step, data_pos, weights))
        else:
            done: Future = Future()
            done.set_result(self._produce(step, data_pos, weights))
            self.pending = (step, done)

    def _produce(self, step: int, data_pos: int, weights: dict[str, torch.Tensor]) -> Rollout:
        version = self.version_for(step)
        self.copy.model.load_state_dict(weights)
        if self.remote:
            self.sampler.load_weights(weights)
        log, state = Metrics(), SimpleNamespace(data_pos=data_pos)
        plan = self.run.buffer.plan(step, self.run.cfg.rollout.prompts_per_step, self.copy, log)
        batch = self.gather(self.run, state, plan, step, log, sampler=self.sampler, world=self.world)
        return Rollout(batch, state.data_pos, log, version)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

