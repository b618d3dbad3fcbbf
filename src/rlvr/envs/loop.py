"""The multi-turn rollout loop: rows take turns with their own environment, as token ids from start to end.

    sampler = EnvSampler(policy, params, group_size=8, make_env=lambda: ENVS.build("calculator"), max_turns=3,
                         max_tokens=48)
    batch = sampler.generate(samples, group_ids, seeds)

Per row: the prompt's tokens, then (after `reset`) an observation, then turns. Each turn, every unfinished row's
whole context (prompt + completion so far) is sampled from in one batch, up to `params.max_new_tokens` tokens (the
turn's stop strings: rollout.stop and the environment's); the turn's tokens are appended with loss_mask 1 and their
log-probs; the environment's reply is tokenized once and appended with loss_mask 0 and log-prob 0. A row ends when
the environment says done or has no reply, when its turn ended with EOS, after `max_turns` turns, or when its
completion reaches `max_tokens` tokens (observations count); the last two set `truncated` (and with
`mask_truncated`, such a row keeps no trained token). Token t of a row's
completion always draws from `uniform(seed, t)` (rlvr.seeding), so a resumed run replays every episode exactly.
Extras: `env_rewards` (N,) the summed per-turn rewards, `turns` (N,) model turns, `turn_rewards` per-row lists, and
`env/<key>` (N,) for each number an environment's optional `metrics()` reports per episode (logged as their means).
With a vision-language policy, the prompt's images and every image an observation shows (rlvr.envs.base.Observation)
stay with the row (`pixel_values`, `image_grid_thw`, in token order), and each turn samples from the whole context
with all of them; an image observation is never cut: one that does not fit ends the row as truncated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlvr.batch import Batch, Sample
from rlvr.envs.base import Env, Observation
from rlvr.errors import DataError
from rlvr.policies.base import Policy, SamplingParams


@dataclass
class _Episode:
    """One row's growing completion."""

    env: Env
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    trained: list[float] = field(default_factory=list)  # loss mask
    logp: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    done: bool = False
    truncated: bool = False
    pixels: list[torch.Tensor] = field(default_factory=list)  # the prompt's images, then each observation's
    grids: list[torch.Tensor] = field(default_factory=list)

    def add(self, ids: list[int], logp: list[float] | None) -> None:
        self.tokens += ids
        self.trained += [1.0 if logp is not None else 0.0] * len(ids)
        self.logp += logp if logp is not None else [0.0] * len(ids)


@dataclass
class EnvSampler:
    """A Sampler (rlvr.rollout.collect) whose rows are episodes with an environment."""

    policy: Policy
    params: SamplingParams
    group_size: int
    make_env: Callable[[], Env]
    max_turns: int = 4
    max_tokens: int = 64
    mask_truncated: bool = False

    def with_params(self, params: SamplingParams) -> EnvSampler:
        return dataclasses.replace(self, params=params)

    @property
    def sees_images(self) -> bool:
        return hasattr(self.policy, "observation_tokens")

    def generate(self, samples: list[Sample], group_ids: torch.Tensor, seeds: torch.Tensor) -> Batch:
        prompt_ids, prompt_mask, extras = self.policy.encode_inputs(samples)
        pixels, grids = extras.get("pixel_values"), extras.get("image_grid_thw")
        if any(len(g) for g in extras.get("video_grid_thw") or []):
            raise ValueError("a multi-turn environment with a video in the prompt is not supported yet; show frames "
                             "as images (rlvr.envs.base.Observation)")
        episodes = [self._start(s, ids[m.bool()].tolist(), pixels[r] if pixels else None, grids[r] if grids else None)
                    for r, (s, ids, m) in enumerate(zip(samples, prompt_ids, prompt_mask))]
        for turn in range(self.max_turns):
            active = [i for i, e in enumerate(episodes) if not e.done]
            if not active:
                break
            out = self._turn([episodes[i] for i in active], seeds[active])
            for k, i in enumerate(active):
                self._after_turn(episodes[i], out, k, last_turn=turn + 1 == self.max_turns)
        batch = self._batch(samples, group_ids, prompt_ids, prompt_mask, episodes)
        return batch.mask_truncated() if self.mask_truncated else batch

    def _start(self, sample: Sample, prompt: list[int], pixels=None, grid=None) -> _Episode:
        episode = _Episode(self.make_env(), prompt)
        if pixels is not None and len(grid):
            episode.pixels, episode.grids = [pixels], [grid]
        obs = episode.env.reset(sample)
        if isinstance(obs, Observation) and obs.images:
            ids, px, g = self._encode_images(obs)
            if len(ids) > self.max_tokens:  # an image is never cut: the row cannot start
                episode.done = episode.truncated = True
                return episode
            episode.add(ids, None)
            episode.pixels.append(px)
            episode.grids.append(g)
        elif obs:
            episode.add(self._encode(obs)[: self.max_tokens], None)
        return episode

    def _encode(self, obs: str | Observation) -> list[int]:
        text = obs.text if isinstance(obs, Observation) else obs
        return self.policy.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _encode_images(self, obs: Observation):
        if not self.sees_images:
            raise DataError(f"the environment shows {len(obs.images)} image(s) but the policy is a text model; use a "
                            "vision-language model")
        return self.policy.observation_tokens(obs.text, obs.images)

    def _turn(self, episodes: list[_Episode], seeds: torch.Tensor) -> dict:
        """One turn of every given episode, sampled together from their whole contexts (left-padded)."""
        contexts = [e.prompt + e.tokens for e in episodes]
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), self.policy.pad_id, dtype=torch.long)
        mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for r, c in enumerate(contexts):
            ids[r, width - len(c) :] = torch.tensor(c, dtype=torch.long)
            mask[r, width - len(c) :] = 1
        room = max(self.max_tokens - len(e.tokens) for e in episodes)
        params = dataclasses.replace(self.params, max_new_tokens=max(1, min(self.params.max_new_tokens, room)),
                                     stop=tuple(dict.fromkeys(self.params.stop + tuple(episodes[0].env.stop))))
        offsets = torch.tensor([len(e.tokens) for e in episodes], dtype=torch.long)  # each row continues its stream
        dev = self.policy.device
        kwargs = {"extras": self._vision(episodes)} if self.sees_images else {}
        return self.policy.sample(ids.to(dev), mask.to(dev), seeds=seeds, params=params, offsets=offsets, **kwargs)

    @staticmethod
    def _vision(episodes: list[_Episode]) -> dict:
        """Each row's images so far, in token order, as the vision-language policy's per-row extras."""
        empty = lambda: (torch.zeros(0, 1), torch.zeros(0, 3, dtype=torch.long))  # noqa: E731
        rows = [(torch.cat(e.pixels), torch.cat(e.grids)) if e.pixels else empty() for e in episodes]
        return {"pixel_values": [r[0] for r in rows], "image_grid_thw": [r[1] for r in rows]}

    def _after_turn(self, e: _Episode, out: dict, k: int, *, last_turn: bool) -> None:
        keep = out["completion_mask"][k].bool()
        room = self.max_tokens - len(e.tokens)
        ids, logp = out["completion_ids"][k][keep].tolist()[:room], out["logp"][k][keep].tolist()[:room]
        e.add(ids, logp)
        obs, reward, done = e.env.step(self.policy.tokenizer.decode(ids, skip_special_tokens=True))
        e.rewards.append(float(reward))
        if done or obs is None or bool(out["eos_ended"][k]):
            e.done = True
            return
        images = isinstance(obs, Observation) and obs.images
        obs_ids, px, grid = self._encode_images(obs) if images else (self._encode(obs), None, None)
        if last_turn or len(e.tokens) + len(obs_ids) >= self.max_tokens:
            e.done = e.truncated = True  # no turn left to answer the observation in
            return
        e.add(obs_ids, None)
        if images:
            e.pixels.append(px)
            e.grids.append(grid)

    def _batch(self, samples, group_ids, prompt_ids, prompt_mask, episodes: list[_Episode]) -> Batch:
        T = max(1, max(len(e.tokens) for e in episodes))
        n, pad = len(episodes), self.policy.pad_id
        ids = torch.full((n, T), pad, dtype=torch.long)
        mask, trained, logp = torch.zeros(n, T, dtype=torch.long), torch.zeros(n, T), torch.zeros(n, T)
        for r, e in enumerate(episodes):
            L = len(e.tokens)
            ids[r, :L], mask[r, :L] = torch.tensor(e.tokens, dtype=torch.long), 1
            trained[r, :L], logp[r, :L] = torch.tensor(e.trained), torch.tensor(e.logp)
            e.truncated |= not e.done
        dev = self.policy.device
        texts = self.policy.tokenizer.batch_decode([e.tokens for e in episodes], skip_special_tokens=True)
        extras = {"env_rewards": torch.tensor([sum(e.rewards) for e in episodes], device=dev),
                  "turns": torch.tensor([len(e.rewards) for e in episodes], device=dev),
                  "turn_rewards": [list(e.rewards) for e in episodes]}
        stats = [e.env.metrics() if hasattr(e.env, "metrics") else {} for e in episodes]
        for key in sorted({k for s in stats for k in s}):  # an environment's own per-episode numbers
            extras[f"env/{key}"] = torch.tensor([float(s.get(key, float("nan"))) for s in stats], device=dev)
        if self.sees_images:
            extras.update(self._vision(episodes))
        return Batch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=ids.to(dev),
                     completion_mask=mask.to(dev), loss_mask=trained.to(dev), rollout_logp=logp.to(dev),
                     truncated=torch.tensor([e.truncated for e in episodes], device=dev), texts=texts,
                     group_ids=group_ids.to(dev), samples=list(samples), extras=extras)
