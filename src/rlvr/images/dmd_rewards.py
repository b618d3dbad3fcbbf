"""Rewards of `loop: dmd`: differentiable functions of the generator's x0, returning (N,) (rlvr.images.dmd_train).

1. The 2-D check's: `mode` (the log-posterior of mode `rl.mode`, or its probability with `rl.form: prob`) and
   `distance` (minus the distance to that mode's mean).
2. A user's: 'file.py:function' (as the language rewards take it) or 'module:function'; on images a classifier or
   CLIP folder (rlvr.images.scorers). Several weighted: `rl.rewards: {spec: weight}`.
3. Every reward's output is checked: an (N,) tensor of finite values, otherwise one error naming the reward and the
   first bad sample.
"""

from __future__ import annotations

import importlib

import torch

from rlvr.config import ConfigError
from rlvr.images.diffusion import GaussianMixture
from rlvr.images.dmd_config import REWARD_NAMES, RLConfig


def mode_reward(gmm: GaussianMixture, *, mode: int, form: str):
    """x0 -> log p(mode | x0) or p(mode | x0) under the clean mixture."""
    def reward(x0: torch.Tensor) -> torch.Tensor:
        logp = gmm.log_posterior(x0)[:, mode].to(x0.dtype)
        return logp if form == "log" else logp.exp()
    return reward


def distance_reward(gmm: GaussianMixture, *, mode: int, form: str):
    """x0 -> -|x0 - mu_mode|."""
    center = gmm.means[mode].float()
    return lambda x0: -(x0 - center).norm(dim=-1)


REWARDS = {"mode": mode_reward, "distance": distance_reward}  # the names dmd_config.REWARD_NAMES lists


def _one_reward(spec: str, rl: RLConfig, gmm: GaussianMixture, key: str):
    if spec in REWARDS:
        return REWARDS[spec](gmm, mode=rl.mode, form=rl.form)
    from rlvr.images.scorers import is_scorer, scorer

    if is_scorer(spec):  # a classifier or CLIP folder (images)
        try:
            return scorer(spec)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from err
    module, _, name = spec.rpartition(":")
    if module.endswith(".py"):  # a file, as the language-model rewards take it
        from rlvr.rewards.library import load_function

        try:
            return load_function(spec)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from err
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{key}: cannot import {spec!r}: {err}") from err


def _checked(spec: str, fn):
    """fn, whose output must be an (N,) tensor of finite values: otherwise an error naming the reward and the
    first bad sample (its index in the batch and its point)."""

    def reward(x0: torch.Tensor) -> torch.Tensor:
        r = fn(x0)
        if not isinstance(r, torch.Tensor) or r.shape != (len(x0),):
            shape = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
            raise ValueError(f"reward {spec!r}: must return a tensor of shape ({len(x0)},), one per sample; got "
                             f"{shape}")
        bad = (~torch.isfinite(r.detach())).nonzero()
        if len(bad):
            i = int(bad[0])
            point = f"x0 = {x0[i].tolist()}" if x0[i].numel() <= 8 else f"an image of shape {tuple(x0[i].shape)}"
            raise ValueError(f"reward {spec!r}: sample {i} of {len(x0)} ({point}) scored {float(r[i])}, not a finite "
                             "number")
        return r

    return reward


def build_reward(rl: RLConfig, gmm: GaussianMixture, *, images: bool = False):
    """x0 (N, 2) -> (N,) rewards: `rl.reward`, or the weighted sum of `rl.rewards`; each reward's output checked.
    images: the rewards take images, and the 2-D ones (REWARD_NAMES) are left out (None when nothing is left)."""
    if images:
        specs = dict(rl.rewards) if rl.rewards else {rl.reward: 1.0}
        parts = [(w, _checked(spec, _one_reward(spec, rl, gmm, f"rl.rewards[{spec!r}]" if rl.rewards else
                                                "rl.reward"))) for spec, w in specs.items() if spec not in REWARD_NAMES]
        return (lambda x0: sum(w * fn(x0) for w, fn in parts)) if parts else None
    if not rl.rewards:
        return _checked(rl.reward, _one_reward(rl.reward, rl, gmm, "rl.reward"))
    parts = [(w, _checked(spec, _one_reward(spec, rl, gmm, f"rl.rewards[{spec!r}]"))) for spec, w in rl.rewards.items()]
    return lambda x0: sum(w * fn(x0) for w, fn in parts)
