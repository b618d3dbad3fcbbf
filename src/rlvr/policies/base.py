"""The Policy protocol: what the loop may ask of a model. Policies are the only code that knows model internals.

    batch = policy.generate(samples, group_ids=ids, seeds=seeds, params=SamplingParams(max_new_tokens=16))
    logp, entropy = policy.logp(batch, temperature=1.0, with_entropy=True)   # (N, T) each, differentiable
    policy.save(folder)                                                      # a folder from_pretrained loads

1. `encode(samples)` -> left-padded prompt ids and mask (chat template, processor: the policy's business);
   `encode_inputs(samples)` -> the same and the per-row extras the prompt forward reads (images: `prompt_inputs`);
   `sample(prompt_ids, prompt_mask, ...)` continues token contexts (the multi-turn loop feeds it whole histories);
   `generate` = encode + sample, as a Batch.
2. `logp(batch)` is the training forward: log-probs of the completion tokens at the sampling temperature.
3. Rows may share one forward over their prompt only when `prompt_owners` says so: equal prompt tokens *and* equal
   values of every per-row input the policy feeds its prompt forward (`prompt_inputs`, e.g. pixel values), so two
   different images under the same question never share a cache.
4. A run may hold several policies (the trained one, a frozen reference: `frozen_copy()`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from rlvr.batch import Batch, Sample


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: length, temperature and truncation, stop strings, compute dtype of the sampler's forward."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    greedy: bool = False
    dtype: torch.dtype | None = None


class Policy(Protocol):
    tokenizer: Any
    prompt_inputs: tuple[str, ...]  # Batch.extras entries that enter the prompt forward

    @property
    def device(self) -> torch.device: ...

    @property
    def pad_id(self) -> int: ...

    def encode(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def encode_inputs(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]: ...

    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, seeds: torch.Tensor,
               params: SamplingParams, offsets: torch.Tensor | None = None) -> dict: ...

    def generate(self, samples: list[Sample], *, group_ids: torch.Tensor, seeds: torch.Tensor,
                 params: SamplingParams) -> Batch: ...

    def logp(self, batch: Batch, *, temperature: float = 1.0,
             with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def parameters(self): ...

    def train(self, mode: bool = True): ...

    def save(self, folder) -> None: ...

    def frozen_copy(self) -> Policy: ...


class ModelPolicy:
    """What a policy around one transformers model shares, whatever its modality: the device, the pad id, the
    module's parameters and modes, saving (LoRA adapters merged for the final model) and a frozen copy of it."""

    model: Any
    tokenizer: Any

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def parameters(self):
        return self.model.parameters()

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device):
        self.model.to(device)
        return self

    def save(self, folder, *, merge_adapters: bool = True, state_dict: dict | None = None) -> None:
        """A Hugging Face folder (model and tokenizer) that from_pretrained loads. LoRA adapters are merged into the
        weights for good (the final model) unless merge_adapters=False (the adapter only, as checkpoints keep it).
        state_dict: the weights to write instead of the model's own (gathered from FSDP shards)."""
        from transformers.utils import logging as hf_logging

        if merge_adapters and hasattr(self.model, "merge_and_unload"):
            self.model = self.model.merge_and_unload()
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the middle of training output
        try:
            self.model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
            if type(self.model).__name__.startswith("FSDP"):
                from rlvr.distributed.fsdp_checkpoint import unwrapped_architectures

                unwrapped_architectures(Path(folder))
        finally:
            if shown:
                hf_logging.enable_progress_bar()
        self.tokenizer.save_pretrained(folder)

    def frozen_model(self):
        """A copy of the model with frozen weights in eval mode (a KL reference's)."""
        model = copy.deepcopy(self.model).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


def prompt_owners(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, inputs: list[Any] | None = None):
    """owner (N,): index of each row's distinct prompt; first (U,): the row that holds each distinct prompt.

    A row shares the previous row's prompt forward when its real prompt tokens are equal and, for each entry of
    `inputs` (per-row values the prompt forward also reads, e.g. an image tensor per row), its values are equal.
    """
    prompt = torch.where(prompt_mask.bool(), prompt_ids, -1)  # (N, P), padding made uniform
    starts = torch.ones(len(prompt), dtype=torch.bool, device=prompt.device)
    starts[1:] = (prompt[1:] != prompt[:-1]).any(-1)
    for values in inputs or []:
        for i in range(1, len(prompt)):
            if not starts[i] and not _same(values[i], values[i - 1]):
                starts[i] = True
    return starts.long().cumsum(0) - 1, torch.nonzero(starts).flatten()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    return a == b


def batch_owners(policy: Policy, batch: Batch):
    """prompt_owners of a Batch under `policy`: its prompt tokens and the extras its prompt forward reads."""
    inputs = [batch.extras[k] for k in policy.prompt_inputs if k in batch.extras]
    return prompt_owners(batch.prompt_ids, batch.prompt_mask, inputs)
