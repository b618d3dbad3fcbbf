"""Starting Ray for a run: a local Ray sized to what the run's actors need, or the cluster RAY_ADDRESS names.

    owns = ensure_ray(needed_cpus(cfg.distributed))   # False when Ray was already up (a caller's, or inside an actor)
    ...
    if owns: ray_module().shutdown()

1. A local Ray gets exactly the CPUs the run's actors ask for (trainer ranks, rollout workers, reward workers), so
   every actor is placed at once and none waits for a CPU another holds; a cluster's resources are its own.
2. Functions the user's files define (a `python` reward's module, rlvr.rewards.library.load_function) exist only in
   the trainer's process; they are pickled by value so that an actor on any node can run them.
"""

from __future__ import annotations

import math
import os
import sys


def ray_module():
    try:
        import ray
    except ImportError as err:
        raise ImportError("distributed.backend 'ray' needs Ray: pip install 'rlvr[ray]'") from err
    return ray


class ActorPool:
    """What rlvr's pools of Ray workers share (rollout workers: ray_rollout.RaySampler, reward workers:
    ray_reward.RewardPool): they hold `workers`, `restarts`, `owns_ray`, `what` and make a fresh actor in
    `_new_worker()`."""

    def _result(self, i: int, ref, issue):
        """ray.get of worker i's shard; a dead worker is replaced and the shard issued again (`issue()`), once per
        death; a replacement that dies before answering ends the run with Ray's reason in one line."""
        ray, retried = ray_module(), False
        while True:
            try:
                return ray.get(ref)
            except ray.exceptions.RayActorError as err:
                if retried:
                    reason = " ".join(str(err).split())[:400]
                    raise RuntimeError(f"{self.what}: a replaced Ray worker died too: {reason}") from err
                ray.kill(self.workers[i])
                self.workers[i] = self._new_worker()
                self.restarts += 1
                ref, retried = issue(), True

    def close(self) -> None:
        ray = ray_module()
        for w in self.workers:
            ray.kill(w)
        self.workers = []
        if self.owns_ray:
            ray.shutdown()


def needed_cpus(d) -> float:
    """Ray CPUs the run's actors take (DistributedConfig d): trainer ranks and, per rank, its workers."""
    trainers = d.trainers * d.trainer_threads if d.trainers > 1 else 0
    return trainers + d.trainers * (d.rollout_workers * d.worker_threads + d.reward_workers * d.reward_cpus)


def ensure_ray(cpus: float, *, log: bool = False) -> bool:
    """Start (or connect to) Ray unless it is running; True when this call started it (the caller shuts it down).
    log: the actors' output is printed here (the trainer ranks' progress and messages)."""
    ray = ray_module()
    by_value()
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):  # a cluster: connect, its resources are its own
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=log)
    else:
        ray.init(num_cpus=max(math.ceil(cpus), 1), include_dashboard=False, log_to_driver=log)
    return True


def by_value() -> None:
    """Pickle the user's reward modules by value (module docstring 2)."""
    from ray import cloudpickle  # Ray's own copy pickles the actors' arguments

    for name, module in list(sys.modules.items()):
        if name.startswith("rlvr_user_") and module is not None:
            cloudpickle.register_pickle_by_value(module)
