"""Replay buffers by name (rlvr.buffers.base: plan before the rollout, observe after the advantages).

    buffer = BUFFERS.build("none")
    buffer = BUFFERS.build("exgrpo", task=task, group_size=8, seed=0, temperature=1.0, micro_batch_size=64)

What a buffer is built with besides its config keywords is declared at registration (`BUFFERS.needs(name)`).
"""

from rlvr.buffers.base import Buffer, NoBuffer, Plan
from rlvr.buffers.exgrpo import REPLAY_GROUP_BASE, ExGRPOBuffer
from rlvr.buffers.experience import (
    BUCKET_WEIGHTS,
    ExperienceBuffer,
    Trajectory,
    pad_trajectories,
    replay_count,
    sample_from_buckets,
    trajectory_entropy,
)
from rlvr.registry import Registry

BUFFERS = Registry("replay buffer")
BUFFERS.register("none")(NoBuffer)
BUFFERS.register("exgrpo")(ExGRPOBuffer)

__all__ = [
    "BUCKET_WEIGHTS", "BUFFERS", "REPLAY_GROUP_BASE", "Buffer", "ExGRPOBuffer", "ExperienceBuffer", "NoBuffer", "Plan",
    "Trajectory", "pad_trajectories", "replay_count", "sample_from_buckets", "trajectory_entropy",
]
