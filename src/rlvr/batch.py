"""The data that flows through one RL step: Sample (a task item) and Batch (rows of completions that grow fields).

    batch = policy.generate(samples, group_ids=..., seeds=..., params=...)   # ids, masks, rollout_logp, texts
    batch = score(...)            # + rewards, reward_sources
    batch = advantages(...)       # + advantages
    batch = logprobs(...)         # + old_logp / ref_logp / old_entropy where a later stage needs them
    batch = token_weights(...)    # + token_weights
    update(policy, batch, ...)    # reads them; a tensor keeps one name from rollout to loss

Shapes: N rows (completions), P prompt and T completion positions. Prompts are left-padded and completions
right-padded, so position P is the first completion token of every row. A completion may hold tokens the policy did
not sample (a multi-turn environment's observations): they are attended to (`completion_mask` 1) but never trained
on (`loss_mask` 0), and their `rollout_logp` is 0.

`select`, `concat` and padding are generic over every field: a tensor field is indexed on its first dim; a list
field (texts, samples) per item; `reward_sources` and `extras` per entry. On concat, prompt fields are re-padded on
the left, every other tensor with more than one dim on the right (with `pad_id` for token ids, 0 elsewhere); an
extra that only some parts carry is filled with zeros (tensors) or None (lists) in the others.
`extras` holds what a modality or recipe adds per row: pixel values, replay flags, per-turn rewards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Sample:
    """One task item. `prompt` is plain text or a list of chat messages ({"role", "content"})."""

    prompt: str | list[dict[str, Any]]
    answer: Any = None  # reference answer, given to rewards
    task: str = ""  # name of the task that made it (routes scoring, per-task metrics)
    index: int = -1  # position in its task, for reproducibility
    meta: dict[str, Any] = field(default_factory=dict)  # anything else a reward may need
    images: list[Any] = field(default_factory=list)  # PIL images the prompt shows, in order (vision-language tasks)
    image_names: list[str] = field(default_factory=list)  # one name per image (a file path, or task/split/index#k)
    videos: list[Any] = field(default_factory=list)  # videos the prompt shows: each with .frames (PIL) and .fps
    video_names: list[str] = field(default_factory=list)  # one name per video


@dataclass
class Batch:
    """Rows of sampled completions and everything the later stages add to them (see the module docstring)."""

    prompt_ids: torch.Tensor  # (N, P) long, left-padded with the pad id
    prompt_mask: torch.Tensor  # (N, P) long, 1 = real prompt token
    completion_ids: torch.Tensor  # (N, T) long, right-padded
    completion_mask: torch.Tensor  # (N, T) long, 1 = a token of the sequence (sampled or observed), attended to
    loss_mask: torch.Tensor  # (N, T) float, 1 = a sampled token that is trained on
    rollout_logp: torch.Tensor  # (N, T) float, the sampler's log-probs of its tokens (0 elsewhere)
    truncated: torch.Tensor  # (N,) bool: ended by the length / turn budget, not by EOS or a stop
    texts: list[str]  # N decoded completions (observations included, EOS and stop string not)
    group_ids: torch.Tensor  # (N,) long: rows with one id answer one prompt (a GRPO group)
    samples: list[Sample]  # N task items (a group's Sample repeated)
    rewards: torch.Tensor | None = None  # (N,) total reward; NaN = no source applied
    reward_sources: dict[str, torch.Tensor] = field(default_factory=dict)  # source key -> (N,) values, NaN = n/a
    advantages: torch.Tensor | None = None  # (N,) or (N, T)
    old_logp: torch.Tensor | None = None  # (N, T) pi_old recomputed by the trainer; None = the update's own
    old_entropy: torch.Tensor | None = None  # (N, T) token entropy under pi_old, when a stage needs it
    ref_logp: torch.Tensor | None = None  # (N, T) frozen reference policy, when KL is on
    token_weights: torch.Tensor | None = None  # (N, T) per-token loss weights (high_entropy, perception ...)
    extras: dict[str, Any] = field(default_factory=dict)  # per-row additions: (N, ...) tensors or N-lists

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # (N, P + T)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)  # (N, P + T)

    @property
    def device(self) -> torch.device:
        return self.completion_ids.device

    def replace(self, **fields: Any) -> Batch:
        return dataclasses.replace(self, **fields)

    def select(self, idx: torch.Tensor | list[int]) -> Batch:
        """Rows `idx` of every field, in that order."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        rows = idx.tolist()
        return Batch(**{f.name: _pick(getattr(self, f.name), idx, rows) for f in dataclasses.fields(self)})

    def mask_truncated(self) -> Batch:
        """Rows ended by the length / turn budget keep no trained token (TRL mask_truncated_completions)."""
        return self.replace(loss_mask=self.loss_mask * (~self.truncated).to(self.loss_mask.dtype)[:, None])

    def groups(self) -> torch.Tensor:
        """The distinct group ids in order of first appearance, (G,)."""
        ids = self.group_ids.tolist()
        return torch.tensor(list(dict.fromkeys(ids)), dtype=torch.long)

    def rows_of(self, groups: torch.Tensor | list[int]) -> torch.Tensor:
        """Indices of the rows whose group is in `groups`, in row order."""
        keep = torch.as_tensor(groups, dtype=torch.long, device=self.group_ids.device)
        return torch.nonzero(torch.isin(self.group_ids, keep)).flatten().cpu()

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: _to(getattr(self, f.name), device) for f in dataclasses.fields(self)})

    @staticmethod
    def concat(parts: list[Batch], pad_id: int) -> Batch:
        """Rows of `parts` stacked (re-padded to the widest prompt and completion)."""
        parts = [p for p in parts if len(p)] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        out = {}
        for f in dataclasses.fields(Batch):
            values = [getattr(p, f.name) for p in parts]
            out[f.name] = _cat(f.name, values, pad_id, [len(p) for p in parts])
        return Batch(**out)


def _pick(value: Any, idx: torch.Tensor, rows: list[int]) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[idx.to(value.device)]
    if isinstance(value, dict):
        return {k: _pick(v, idx, rows) for k, v in value.items()}
    return [value[i] for i in rows]


def _to(value: Any, device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def pad_to(x: torch.Tensor, shape: list[int], value: float, *, left: bool = False) -> torch.Tensor:
    """`x` padded with `value` to `shape` (its first dim kept): on the left of dim 1 when `left`, else at the end
    of every dim."""
    if list(x.shape[1:]) == list(shape[1:]):
        return x
    out = torch.full([x.shape[0], *shape[1:]], value, dtype=x.dtype, device=x.device)
    if left:
        out[:, shape[1] - x.shape[1] :] = x
    else:
        out[tuple(slice(0, n) for n in x.shape)] = x
    return out


def _cat(name: str, values: list[Any], pad_id: int, sizes: list[int]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if isinstance(present[0], dict):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: _cat(k, [None if v is None else v.get(k) for v in values], pad_id, sizes) for k in keys}
    if isinstance(present[0], torch.Tensor):
        like = present[0]
        values = [v if v is not None else like.new_zeros([n, *like.shape[1:]]) for v, n in zip(values, sizes)]
        if like.dim() == 1:
            return torch.cat(values)
        shape = [0] + [max(v.shape[d] for v in values) for d in range(1, like.dim())]
        fill = pad_id if name.endswith("_ids") else 0
        return torch.cat([pad_to(v, shape, fill, left=name.startswith("prompt_")) for v in values])
    return [x for v, n in zip(values, sizes) for x in (v if v is not None else [None] * n)]
