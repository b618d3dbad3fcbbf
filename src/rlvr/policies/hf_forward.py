"""Log-probs of completions under a Hugging Face causal LM: the lean forward, the HF forward with a shared prompt
cache, or the plain HF forward; all give the same values and gradients (tests/test_lean_forward.py, test_update.py).

    logp, entropy = completion_logp(model, input_ids, attention_mask, T, temperature=0.7, with_entropy=True)

1. Rows that repeat the previous row's prompt (a GRPO group) share one forward pass over that prompt (`owner`,
   `first` from rlvr.policies.base.prompt_owners): its KV cache is computed once per distinct prompt and indexed out
   to every row (differentiably), so the prompt costs 1/G of its FLOPs in forward and backward.
2. `lean` (default) runs rlvr's lean forward (policies/lean.py: prompts shared the same way, padding never computed,
   fused projections) when `lean_reason(model)` allows it; values at completion positions that are padding are
   then those of zero logits (any value is fine there: every consumer masks them).
3. `autocast` (e.g. torch.bfloat16) runs the forward in mixed precision; log-probs are taken in fp32.
4. `chunk` > 0 (config model.logp_chunk_tokens) stops the lean or plain HF forward at the final hidden states and
   runs lm_head + log-softmax + entropy over `chunk` completion tokens at a time, recomputed in backward
   (rlvr.ops.head_logprobs): (N, T, V) logits never exist. The shared-prefix forward is then not used.
5. `masked_logits`: the plain forward with element-wise output masks on the input embeddings and on each decoder
   layer's attention and MLP outputs (a train-mode dropout whose masks the caller draws: VA-π's, rlvr.algos.va_pi).
"""

from __future__ import annotations

import functools
import inspect
import math

import torch

from rlvr.distributed.fsdp import sharded, through
from rlvr.ops import TiedGrad, entropy_from_logits, head_logprobs, token_logprobs
from rlvr.policies.base import prompt_owners
from rlvr.policies.lean import lean_completion_hidden, lean_completion_logits, lean_reason


def completion_logp(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, T: int, *,
    temperature: float = 1.0, with_entropy: bool = False, share_prefix: bool = True,
    autocast: torch.dtype | None = None, lean: bool = True, owners: tuple[torch.Tensor, torch.Tensor] | None = None,
    chunk: int = 0, late_head_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, T) of the last T tokens of `input_ids` under `model` at `temperature`, and entropy (N, T).

    owners: (owner (N,), first (U,)) of rows that may share a prompt forward; default: equal prompt tokens.
    late_head_grad: with chunk > 0, a tied embedding and the lean forward, the lm_head's weight gradient is made by
    the embedding lookup's backward (rlvr.ops.TiedGrad).
    """
    owner, first = owners or prompt_owners(input_ids[:, :-T], attention_mask[:, :-T])
    if sharded(model) and (chunk > 0 or lean and lean_reason(model) is None):  # FSDP: forwards that read the root's
        # weights (embeddings, norm, lm_head) directly run inside its hooks; model(...) runs them itself
        return through(model, functools.partial(_completion_logp, model, input_ids, attention_mask, T, owner, first,
                                                temperature, with_entropy, share_prefix, autocast, lean, chunk,
                                                late_head_grad))
    return _completion_logp(model, input_ids, attention_mask, T, owner, first, temperature, with_entropy,
                            share_prefix, autocast, lean, chunk, late_head_grad)


def _completion_logp(model, input_ids, attention_mask, T: int, owner, first, temperature: float, with_entropy: bool,
                     share_prefix: bool, autocast: torch.dtype | None, lean: bool, chunk: int, late_head_grad: bool):
    use_lean = lean and lean_reason(model) is None
    if chunk > 0 and (use_lean or _plain_head(model)):
        return _chunked_logp(model, input_ids, attention_mask, T, owner, first, temperature=temperature, chunk=chunk,
                             with_entropy=with_entropy, autocast=autocast, use_lean=use_lean,
                             late_head_grad=late_head_grad)
    with torch.autocast(input_ids.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        if use_lean:
            logits = lean_completion_logits(model, input_ids, attention_mask, T, owner, first)
        elif share_prefix and len(first) < len(owner) and not _checkpointing(model):  # HF's checkpointing: no cache
            logits = shared_prefix_logits(model, input_ids, attention_mask, T, owner, first)
        else:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: first token at 0
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        logits_to_keep=T + 1)
            logits = out.logits[:, -T - 1 : -1]  # (N, T, V): position t predicts token t + 1
    logits = logits.float() / temperature
    logp = token_logprobs(logits, input_ids[:, -T:])  # (N, T)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logp, entropy


def _checkpointing(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def _plain_head(model) -> bool:
    """The model splits into a decoder (get_decoder) and a plain nn.Linear lm_head, as HF causal LMs do."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return type(head) is torch.nn.Linear and hasattr(model, "get_decoder")


def _chunked_logp(model, input_ids, attention_mask, T: int, owner, first, *, temperature: float, chunk: int,
                  with_entropy: bool, autocast: torch.dtype | None, use_lean: bool, late_head_grad: bool):
    """completion_logp through rlvr.ops.head_logprobs; positions that predict padding get the values of zero
    logits, as the lean forward gives them (-log V and log V: finite, masked by every consumer)."""
    N, head = input_ids.shape[0], model.get_output_embeddings()
    with torch.autocast(input_ids.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        tied = None
        if use_lean:
            if chunk > 0 and torch.is_grad_enabled() and head.weight is model.get_input_embeddings().weight:
                tied = TiedGrad(late=late_head_grad)  # one vocabulary-sized gradient for embedding and head, not two
            h, pred_at = lean_completion_hidden(model, input_ids, attention_mask, T, owner, first, tied)  # (K, hidden)
        else:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: first token at 0
            out = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
            h = out.last_hidden_state[:, -T - 1 : -1].reshape(N * T, -1)  # (N T, hidden)
            pred_at = None
        targets = input_ids[:, -T:].reshape(-1)
        targets = targets if pred_at is None else targets[pred_at]
        logp, entropy = head_logprobs(h, head.weight, head.bias, targets, temperature=temperature, chunk=chunk,
                                      with_entropy=with_entropy, tied=tied)  # (K,) each
    if pred_at is None:
        return logp.view(N, T), entropy.view(N, T) if with_entropy else None
    log_v = math.log(head.weight.shape[0])
    logp = logp.new_full((N * T,), -log_v).index_copy(0, pred_at, logp).view(N, T)
    if with_entropy:
        entropy = entropy.new_full((N * T,), log_v).index_copy(0, pred_at, entropy).view(N, T)
    return logp, entropy


@functools.cache
def _cache_keyword_of(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def cache_keyword(model) -> str:
    """transformers >= 5.24 names the forward's cache argument `cache`; older releases `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_keyword_of(type(base))


def shared_prefix_logits(model, input_ids, attention_mask, T: int, owner, first) -> torch.Tensor:
    """The HF forward with each distinct prompt run once and its KV cache indexed out to its rows; (N, T, V)."""
    P = input_ids.shape[1] - T
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, P + T)
    head = model(input_ids=input_ids[first, :P], attention_mask=attention_mask[first, :P],
                 position_ids=position_ids[first, :P], use_cache=True, logits_to_keep=1)  # U distinct prompts
    cache = getattr(head, "cache", None) or head.past_key_values  # renamed `cache` in transformers 5.24
    cache.reorder_cache(owner)  # (U, ...) -> (N, ...), an index_select that gradients flow back through
    tail = model(input_ids=input_ids[:, P:-1], attention_mask=attention_mask, position_ids=position_ids[:, P:-1],
                 use_cache=False, **{cache_keyword(model): cache})
    # completion token 0 is predicted by the prompt's last position, token t by completion position t - 1
    return torch.cat([head.logits[owner, -1:], tail.logits], dim=1)  # (N, T, V)


def mask_sites(model) -> int:
    """How many masks `masked_logits` takes: the input embeddings, then each decoder layer's attention and MLP."""
    return 1 + 2 * len(model.model.layers)


def masked_logits(model, input_ids: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """(B, L, V) logits with masks[0] (B, L, hidden) scaling the input embeddings and masks[1 + 2i], masks[2 + 2i]
    layer i's attention and MLP outputs (module docstring 5); the hooks are gone when it returns."""
    if len(masks) != mask_sites(model):
        raise ValueError(f"masked_logits: needs {mask_sites(model)} masks, got {len(masks)}")
    masks = [m.to(model.dtype) for m in masks]
    embeds = model.get_input_embeddings()(input_ids) * masks[0]
    hooks = []
    for i, layer in enumerate(model.model.layers):
        attn, mlp = masks[1 + 2 * i], masks[2 + 2 * i]
        hooks.append(layer.self_attn.register_forward_hook(lambda m, a, out, k=attn: (out[0] * k, *out[1:])))
        hooks.append(layer.mlp.register_forward_hook(lambda m, a, out, k=mlp: out * k))
    try:
        return model(inputs_embeds=embeds).logits
    finally:
        for h in hooks:
            h.remove()
