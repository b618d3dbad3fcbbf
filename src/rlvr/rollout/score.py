"""score(): rewards of a round's rows, each row by its own task's reward sources (rlvr.rewards.router).

Fills `Batch.rewards` (N,) (NaN: no source applied) and `Batch.reward_sources` (each source's values before
weighting), and logs the TRL reward statistics over every sampled row, before any filter drops a group
(docs/methods.md §1.9). Reward functions get the call-time keywords lengths (completion tokens, observations
included), group_ids, step, and env_rewards (a multi-turn environment's summed rewards per row) when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlvr.batch import Batch
from rlvr.distributed import World
from rlvr.metrics import Metrics, reward_metrics
from rlvr.rewards.router import route_rewards


@dataclass
class Scorer:
    """Reward routes (task key -> [(name, weight, fn)]) and how to combine them."""

    routes: dict
    normalize: str = "none"  # none | per_source (mixture of rewards)
    on_error: str = "raise"  # raise | zero
    runner: Any = None  # Ray reward workers (rlvr.distributed.ray_reward.RewardPool); None: in this process


def score(scorer: Scorer, batch: Batch, step: int, world: World, log: Metrics) -> Batch:
    extra = {"env_rewards": batch.extras["env_rewards"].tolist()} if "env_rewards" in batch.extras else {}
    rewards, sources = route_rewards(scorer.routes, batch.samples, batch.texts, lengths=batch.completion_mask.sum(-1),
                                     on_error=scorer.on_error, step=step, normalize=scorer.normalize,
                                     group_ids=batch.group_ids, extra=extra, world=world, log=log,
                                     runner=scorer.runner)
    reward_metrics(log, rewards, batch.group_ids.cpu())
    device = batch.device
    return batch.replace(rewards=rewards.to(device), reward_sources={k: v.to(device) for k, v in sources.items()})
