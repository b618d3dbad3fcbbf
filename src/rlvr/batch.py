"""The data that flows between the boxes of the loop: Sample (a task item), Rollout (sampled completions).

Shapes: N = number of completions (prompts x group size G), P = prompt length, T = completion length.
Prompts are left-padded, completions right-padded, so position P is the first generated token of every row.
"""

from __future__ import annotations

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
    meta: dict[str, Any] = field(default_factory=dict)  # anything else a reward may need; images later


@dataclass
class Rollout:
    """G sampled completions for each of several prompts, with everything the update needs."""

    prompt_ids: torch.Tensor  # (N, P) long, left-padded with pad_token_id
    prompt_mask: torch.Tensor  # (N, P) 1 = real prompt token
    completion_ids: torch.Tensor  # (N, T) long, right-padded
    completion_mask: torch.Tensor  # (N, T) 1 = generated token (incl. the EOS that ended it), 0 = padding
    logp: torch.Tensor  # (N, T) sampler log-probs of the chosen tokens (0 where mask is 0)
    truncated: torch.Tensor  # (N,) bool: hit max_new_tokens without EOS / stop string
    texts: list[str]  # N decoded completions (cut at the stop string, without EOS)
    group_ids: torch.Tensor  # (N,) long, the prompt each completion answers
    samples: list[Sample]  # N task items (each prompt's Sample repeated G times)

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, idx: torch.Tensor | list[int]) -> Rollout:
        """Rows `idx` of every field, in that order."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        rows = idx.tolist()
        return Rollout(
            prompt_ids=self.prompt_ids[idx],
            prompt_mask=self.prompt_mask[idx],
            completion_ids=self.completion_ids[idx],
            completion_mask=self.completion_mask[idx],
            logp=self.logp[idx],
            truncated=self.truncated[idx],
            texts=[self.texts[i] for i in rows],
            group_ids=self.group_ids[idx],
            samples=[self.samples[i] for i in rows],
        )


def _pad_to(x: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    extra = width - x.shape[1]
    if extra == 0:
        return x
    pad = torch.full((x.shape[0], extra), value, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def concat_rollouts(parts: list[Rollout], pad_token_id: int) -> Rollout:
    """Stack rollouts of different prompt/completion widths (prompts re-padded left, completions right)."""
    if len(parts) == 1:
        return parts[0]
    P = max(r.prompt_ids.shape[1] for r in parts)
    T = max(r.completion_ids.shape[1] for r in parts)
    cat = lambda f, w, v, left: torch.cat([_pad_to(getattr(r, f), w, v, left) for r in parts])  # noqa: E731
    return Rollout(
        prompt_ids=cat("prompt_ids", P, pad_token_id, True),
        prompt_mask=cat("prompt_mask", P, 0, True),
        completion_ids=cat("completion_ids", T, pad_token_id, False),
        completion_mask=cat("completion_mask", T, 0, False),
        logp=cat("logp", T, 0.0, False),
        truncated=torch.cat([r.truncated for r in parts]),
        texts=[t for r in parts for t in r.texts],
        group_ids=torch.cat([r.group_ids for r in parts]),
        samples=[s for r in parts for s in r.samples],
    )
