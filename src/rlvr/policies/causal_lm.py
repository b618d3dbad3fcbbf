"""A Hugging Face causal LM as a Policy (rlvr.policies.base): Qwen2 / Qwen3 / Llama with rlvr's lean training forward
and fast decoder where the model allows, the HF forward and decode loop otherwise (LoRA, other architectures).

    policy = HFCausalLM.load(config="qwen2-micro")              # or path="/models/Qwen2.5-0.5B-Instruct"
    batch = policy.generate(samples, group_ids=ids, seeds=seeds, params=SamplingParams(max_new_tokens=8))
    logp, entropy = policy.logp(batch, with_entropy=True)
"""

from __future__ import annotations

import os
from typing import Any

import torch

from rlvr.batch import Batch, Sample
from rlvr.errors import DataError
from rlvr.policies.base import ModelPolicy, SamplingParams, batch_owners
from rlvr.policies.hf import encode_prompts, load_policy
from rlvr.policies.hf_forward import completion_logp
from rlvr.policies.sampling import generate


class HFCausalLM(ModelPolicy):
    """The policy: a transformers causal LM, its tokenizer, and how its training forward runs.

    autocast: mixed-precision compute dtype of the training forward (weights stay in their dtype); lean: use the
    lean forward when `lean_reason(model)` allows it; chat_template: "auto" (a plain-text prompt becomes a user turn
    of the tokenizer's chat template when it has one), "none" (plain text, chat messages joined by newlines) or a
    Jinja template that replaces the tokenizer's. logp_chunk: completion tokens per lm_head chunk of the training
    forward (0: full logits; rlvr.policies.hf_forward).
    """

    prompt_inputs: tuple[str, ...] = ()  # a text model's prompt forward reads its tokens only

    def __init__(self, model, tokenizer, *, autocast: torch.dtype | None = None, lean: bool = True,
                 chat_template: str = "auto", banned: tuple[int, ...] = (), logp_chunk: int = 0,
                 logp_late_head_grad: bool = True):
        self.model, self.tokenizer, self.autocast, self.lean = model, tokenizer, autocast, lean
        self.logp_chunk, self.logp_late_head_grad = logp_chunk, logp_late_head_grad
        self.banned = tuple(banned)  # token ids the sampler never draws (an image policy's non-code tokens)
        if chat_template not in ("auto", "none"):
            tokenizer.chat_template = chat_template
        self.templated = chat_template != "none" and bool(getattr(tokenizer, "chat_template", None))

    @classmethod
    def load(cls, *, path: str | os.PathLike | None = None, config: str | None = None,
             gguf_file: str | os.PathLike | None = None, config_overrides: dict[str, Any] | None = None,
             tokenizer: Any = None, dtype: str = "float32", seed: int = 0, autocast: torch.dtype | None = None,
             lean: bool = True, chat_template: str = "auto") -> HFCausalLM:
        """A local checkpoint (`path`), a GGUF file (`gguf_file`) or a tiny random-weight model (`config`); see
        rlvr.policies.hf.load_policy."""
        model, tok = load_policy(path=path, config=config, gguf_file=gguf_file, config_overrides=config_overrides,
                                 tokenizer=tokenizer, dtype=dtype, seed=seed)
        return cls(model, tok, autocast=autocast, lean=lean, chat_template=chat_template)

    @property
    def prompt_format(self) -> str:
        """How prompts reach the model, for the run's log."""
        if self.templated:
            return "the tokenizer's chat template (a plain-text prompt is a user turn)"
        return "plain text (no chat template: " + ("model.chat_template is none)" if getattr(
            self.tokenizer, "chat_template", None) else "the tokenizer has none)")

    # ---- what the loop asks -------------------------------------------------------------------------------------

    def encode(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask (N, P) on the policy's device, through the chat template when it applies."""
        prompts = [[{"role": "user", "content": s.prompt}] if self.templated and isinstance(s.prompt, str)
                   else s.prompt for s in samples]
        ids, mask = encode_prompts(self.tokenizer, prompts, template=self.templated)
        return ids.to(self.device), mask.to(self.device)

    def encode_inputs(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """encode() and the per-row extras the prompt forward reads: none for a text model. A sample with images is
        refused: this policy cannot see them."""
        for i, s in enumerate(samples):
            if s.images:
                raise DataError(f"row {i} ({s.task or 'task'} item {s.index}) shows {len(s.images)} image(s) but "
                                 f"{type(self.model).__name__} is a text model; use a vision-language model "
                                 "(model.config qwen2.5-vl-micro / qwen2.5-vl-tiny, or a Qwen2-VL checkpoint)")
        return (*self.encode(samples), {})

    def has_images(self, batch: Batch) -> torch.Tensor:
        """(N,) bool: no row of a text model shows an image."""
        return torch.zeros(len(batch), dtype=torch.bool, device=batch.device)

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, seeds: torch.Tensor,
               params: SamplingParams, offsets: torch.Tensor | None = None) -> dict:
        """Completions of token contexts (see rlvr.policies.sampling.generate for the returned dict)."""
        self.model.eval()
        return generate(self.model, self.tokenizer, prompt_ids, prompt_mask, max_new_tokens=params.max_new_tokens,
                        temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, stop=params.stop,
                        greedy=params.greedy, seeds=seeds, offsets=offsets, dtype=params.dtype, banned=self.banned)

    def generate(self, samples: list[Sample], *, group_ids: torch.Tensor, seeds: torch.Tensor,
                 params: SamplingParams) -> Batch:
        """One completion per sample (repeat a sample G times for a group), as a Batch."""
        ids, mask, _ = self.encode_inputs(samples)
        out = self.sample(ids, mask, seeds=seeds, params=params)
        return Batch(prompt_ids=ids, prompt_mask=mask, completion_ids=out["completion_ids"],
                     completion_mask=out["completion_mask"], loss_mask=out["completion_mask"].float(),
                     rollout_logp=out["logp"], truncated=out["truncated"], texts=out["texts"],
                     group_ids=group_ids.to(self.device), samples=list(samples))

    def logp(self, batch: Batch, *, temperature: float = 1.0,
             with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (N, T) of the batch's completion tokens (differentiable), and their entropy when asked."""
        return completion_logp(self.model, batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1],
                               temperature=temperature, with_entropy=with_entropy, autocast=self.autocast,
                               lean=self.lean, owners=batch_owners(self, batch), chunk=self.logp_chunk,
                               late_head_grad=self.logp_late_head_grad)

    # ---- the module underneath (ModelPolicy: parameters, modes, device moves, save) -------------------------

    def frozen_copy(self) -> HFCausalLM:
        """A copy with frozen weights in eval mode (a KL reference)."""
        return HFCausalLM(self.frozen_model(), self.tokenizer, autocast=self.autocast, lean=self.lean,
                          chat_template="auto" if self.templated else "none",  # a Jinja template is on the tokenizer
                          banned=self.banned, logp_chunk=self.logp_chunk, logp_late_head_grad=self.logp_late_head_grad)
