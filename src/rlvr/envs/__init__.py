"""Multi-turn environments (rlvr.envs.base): the model acts in turns, the environment answers; observation tokens are
attended to but never trained on. Built in: `calculator` (a tool call answered with its result) and `guess_number`
(a guessing game answered higher / lower), each with its task, and `frame_select` (FrameThinker: frames of a video
on request) with `frame_quest`."""

from rlvr.envs import calculator, frames, guess  # noqa: F401  (register the environments and their tasks)
from rlvr.envs.base import ENVS, Env, Observation
from rlvr.envs.loop import EnvSampler

__all__ = ["ENVS", "Env", "EnvSampler", "Observation"]
