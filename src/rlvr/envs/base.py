"""The environment protocol for multi-turn rollouts, and its registry.

    env = ENVS.build("calculator")          # one instance per episode (row)
    obs = env.reset(sample)                 # text the model sees before its first turn, or None
    obs, reward, done = env.step(turn)      # the model's turn (decoded text, stop string included) -> the reply

1. Token in, token out: the loop (rlvr.envs.loop) keeps every row's context as token ids; an observation is tokenized
   once and appended, and the history is never re-rendered (no chat template rewrites past turns).
2. A turn ends at EOS, at one of the environment's `stop` strings (and rollout.stop), or at the per-turn length cap;
   an EOS ends the episode whatever the environment says.
3. An observation may show images (`Observation(text, images)`, one IMAGE_MARK per image in its text) when the
   policy is a vision-language model: its image tokens are attended to, never trained on, like the rest.
4. `reward` is per turn (0 when the environment has nothing to say); the loop sums them per row into
   `Batch.extras["env_rewards"]`, which the reward `env` reads. The task's own scorer sees the whole transcript.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rlvr.batch import Sample
from rlvr.registry import Registry

ENVS = Registry("environment")
IMAGE_MARK = "<image>"  # where an observation's images go in its text, one mark per image, in order


@dataclass
class Observation:
    """An observation with images (a vision-language policy's environment): `text` holds one IMAGE_MARK per image;
    the policy puts each image's placeholder tokens there. A plain string is an observation without images."""

    text: str
    images: list[Any] = field(default_factory=list)  # PIL images


class Env(Protocol):
    stop: tuple[str, ...]  # strings that end a model turn besides EOS (kept in the turn's tokens and text)

    def reset(self, sample: Sample) -> str | Observation | None: ...

    def step(self, turn: str) -> tuple[str | Observation | None, float, bool]: ...
