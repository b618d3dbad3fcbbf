"""Replay buffers between advantages and the loss, by name (DESIGN.md): "none" or "exgrpo" (arXiv 2510.02245).

    buffer = BUFFERS.build("exgrpo", group_size=8)     # "none" builds None
"""

from rlvr.buffers.exgrpo import (
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
BUFFERS.register("none")(lambda: None)
BUFFERS.register("exgrpo")(ExperienceBuffer)

__all__ = [
    "BUCKET_WEIGHTS", "BUFFERS", "ExperienceBuffer", "Trajectory", "pad_trajectories", "replay_count",
    "sample_from_buckets", "trajectory_entropy",
]
