"""Batched, KV-cached sampling from a Hugging Face causal LM: `generate(model, tokenizer, prompt_ids, ...)`.

1. Pick a decoder: FastDecoder (policies/fast_decode.py) for the Llama/Qwen family, else a plain HF loop with a
   DynamicCache. Both expose prefill() -> logits (N, V) and step(tokens (N,)) -> logits (N, V).
2. Each step: logp = log_softmax(logits / temperature); sample from that distribution after optional top-k / top-p
   truncation (or argmax when greedy); record the token and its logp. Row r's t-th token uses the uniform draw
   `rlvr.seeding.uniform(seeds[r], offsets[r] + t)`: what a row samples does not depend on the other rows of the
   batch, on the data-parallel rank that holds it, or on a resume.
3. A row is done at its first EOS or when its decoded text contains a stop string; stop when every row is done.
   With the fast decoder, rows that are done leave its batch once half of the batch is done (FastDecoder.keep): a
   row's draws are its own, so what it samples does not change.
4. Masks are built at the end from the recorded tokens: 1 up to and including the token that ended the row.

logp is the log-prob of the chosen token under softmax(logits / temperature) BEFORE top-k/top-p truncation: that is
what the trainer recomputes for the PPO ratio. With top_k/top_p set, the sampler's actual distribution differs
(renormalised over the kept tokens), so logp is not the exact behaviour log-prob in that case.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from rlvr.policies.family import family_reason
from rlvr.policies.fast_decode import FastDecoder
from rlvr.seeding import row_seeds, uniform

BACKENDS = ("auto", "fast", "hf")


class HFDecoder:
    """The same contract as FastDecoder, through `model(...)` with a DynamicCache (any HF causal LM)."""

    def __init__(self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
                 dtype: torch.dtype | None = None):
        from transformers import DynamicCache

        dev = model.get_input_embeddings().weight.device
        self.model, self.ids, self.mask = model, prompt_ids.to(dev), prompt_mask.to(dev).long()
        try:
            self.cache = DynamicCache(config=model.config)
        except TypeError:  # older transformers
            self.cache = DynamicCache()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT passes kwargs through
        params = inspect.signature(base.forward).parameters
        self.kwargs = {"cache" if "cache" in params else "past_key_values": self.cache}  # renamed in transformers 5.x
        if "logits_to_keep" in params:
            self.kwargs["logits_to_keep"] = 1  # logits of the last position only
        self.next_pos = self.mask.sum(-1, keepdim=True)  # (N, 1) position of the first generated token
        param_dtype = model.get_input_embeddings().weight.dtype
        self.autocast = dtype if dtype is not None and dtype != param_dtype else None  # mixed precision

    def prefill(self) -> torch.Tensor:
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)  # (N, P) 0 at the first real token
        return self._run(self.ids, pos)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)  # (N, P + t + 1)
        pos, self.next_pos = self.next_pos, self.next_pos + 1
        return self._run(tokens[:, None], pos)

    def _run(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        dev = ids.device.type
        with torch.autocast(dev, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=pos, use_cache=True, **self.kwargs)
        return out.logits[:, -1]  # (N, V)


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) set to -inf. logits (N, V) already temperature-scaled."""
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # mass before this token already exceeds top_p; keeps the first
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def _sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One token per row from probs (N, V) by inverse-CDF sampling with uniforms u (N,): exact, and ~7x cheaper than
    multinomial on CPU.

    Token i is chosen when cdf[i-1] <= u < cdf[i]; a zero-probability token has an empty interval. The cdf is summed
    in float64: in float32 a 1e-7 token added to a running sum near 0.5 would be rounded by up to half its size. The
    index is a binary search (the count of cdf entries <= u, without a (N, V) comparison; benchmarks/sampler_index.py).
    """
    cdf = probs.cumsum(-1, dtype=torch.float64)  # (N, V)
    u = u.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]  # (N, 1)
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_(max=probs.shape[-1] - 1)  # (N,)


class _Picker:
    """Chooses the next token per row and returns it with its logp under softmax(logits / temperature)."""

    def __init__(self, *, temperature: float, top_k: int, top_p: float, greedy: bool, seeds: torch.Tensor,
                 offsets: torch.Tensor, steps: int, banned: torch.Tensor | None = None):
        self.temperature, self.top_k, self.top_p, self.greedy, self.t = temperature, top_k, top_p, greedy, 0
        self.banned = banned if banned is not None and len(banned) else None
        if not greedy:  # every draw of the call at once: (N, steps), column t for token t
            self.u = uniform(seeds[:, None], offsets[:, None] + torch.arange(steps, device=seeds.device))

    def __call__(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (n, V) of the rows `rows` (default: every row) -> their tokens (n,) and logps (n,)."""
        scaled = logits.float()  # (n, V)
        if self.temperature != 1.0:
            scaled = scaled / self.temperature
        logp_all = scaled.log_softmax(-1)
        if self.banned is not None:  # never sampled (a VLM's image placeholders); logp stays the full softmax's
            scaled = scaled.index_fill(-1, self.banned, float("-inf"))
        if self.greedy:
            tokens = scaled.argmax(-1)  # (n,)
        else:
            u = self.u[:, self.t] if rows is None else self.u[rows, self.t]  # (n,) this step's draw of each row
            filtered = self.top_k or self.top_p < 1.0 or self.banned is not None
            probs = _filter_logits(scaled, self.top_k, self.top_p).softmax(-1) if filtered else logp_all.exp()
            tokens = _sample(probs, u)
        self.t += 1
        return tokens, logp_all.gather(-1, tokens[:, None])[:, 0]


class _StopStrings:
    """Finds the step at which each row's decoded text first contains a stop string."""

    def __init__(self, tokenizer, stop: Sequence[str], n: int):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.window = max((len(s) for s in self.stop), default=0) + 8  # tokens decoded per check
        self.rows: list[list[int]] = [[] for _ in range(n)]
        self.stopped_at: dict[int, int] = {}  # row -> step of the token that completed the stop string

    def update(self, tokens: torch.Tensor, done: torch.Tensor, step: int) -> list[int]:
        """Append this step's tokens for rows still running; return rows that just hit a stop string."""
        toks, was_done = tokens.tolist(), done.tolist()
        active = [r for r in range(len(toks)) if not was_done[r] and r not in self.stopped_at]
        for r in active:
            self.rows[r].append(toks[r])
        tails = self.tokenizer.batch_decode([self.rows[r][-self.window :] for r in active], skip_special_tokens=True)
        hits = [r for r, tail in zip(active, tails) if any(s in tail for s in self.stop)]
        for r in hits:
            self.stopped_at[r] = step
        return hits

    def cut(self, text: str) -> str:
        """`text` up to (not including) the earliest stop string."""
        ends = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return text[: min(ends)] if ends else text


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def _check_args(prompt_ids, prompt_mask, max_new_tokens, temperature, top_p, top_k, backend) -> None:
    if prompt_ids.dim() != 2 or prompt_ids.shape != prompt_mask.shape:
        raise ValueError(
            f"generate: prompt_ids {tuple(prompt_ids.shape)} and prompt_mask "
            f"{tuple(prompt_mask.shape)} must both be (N, P)"
        )
    if prompt_ids.shape[0] == 0 or prompt_ids.shape[1] == 0:
        raise ValueError(f"generate: no prompts or empty prompts, prompt_ids shape {tuple(prompt_ids.shape)}")
    if not bool(prompt_mask[:, -1].all()):
        raise ValueError("generate: prompts must be left-padded (prompt_mask[:, -1] must be 1); use encode_prompts")
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}; use greedy=True for argmax")
    if not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"generate: need 0 < top_p <= 1 and top_k >= 0, got top_p={top_p}, top_k={top_k}")
    if backend not in BACKENDS:
        raise ValueError(f"generate: unknown backend '{backend}'; choose from {list(BACKENDS)}")


def _make_decoder(model, prompt_ids, prompt_mask, max_new_tokens: int, backend: str, dtype=None):
    reason = family_reason(model)
    if backend == "fast" and reason:
        raise ValueError(f"generate: backend='fast' cannot run this model ({reason}); use backend='auto' or 'hf'")
    use_fast = backend == "fast" or (backend == "auto" and reason is None)
    cls = FastDecoder if use_fast else HFDecoder
    return cls(model, prompt_ids, prompt_mask, max_new_tokens, dtype)


def _finish(tokens, logps, stops, eos, tokenizer, pad_id) -> dict:
    """Turn per-step records into masked (N, T) tensors and texts."""
    ids = torch.stack(tokens, dim=1)  # (N, T)
    logp = torch.stack(logps, dim=1)  # (N, T)
    ends = torch.isin(ids, eos) if len(eos) else torch.zeros_like(ids, dtype=torch.bool)  # (N, T)
    for r, t in stops.stopped_at.items() if stops else ():
        ends[r, t] = True
    mask = (ends.long().cumsum(-1) - ends.long()) == 0  # through the first ending token
    ids = ids.masked_fill(~mask, pad_id)
    keep = mask & ~torch.isin(ids, eos) if len(eos) else mask
    texts = tokenizer.batch_decode([row[k].tolist() for row, k in zip(ids.cpu(), keep.cpu())], skip_special_tokens=True)
    if stops:
        texts = [stops.cut(t) for t in texts]
    truncated = ~ends.any(-1)  # (N,) no EOS / stop string before max_new_tokens
    eos_ended = (torch.isin(ids, eos) & mask).any(-1) if len(eos) else torch.zeros_like(truncated)  # (N,)
    return dict(
        completion_ids=ids,
        completion_mask=mask.long(),
        logp=logp.masked_fill(~mask, 0.0),
        truncated=truncated,
        eos_ended=eos_ended,
        texts=texts,
    )


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop: str | Sequence[str] | None = (),
    greedy: bool = False,
    seeds: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
    backend: str = "auto",
    dtype: torch.dtype | None = None,
    decoder=None,
    banned: Sequence[int] = (),
) -> dict:
    """Sample completions for left-padded prompts (N, P).

    Returns dict(completion_ids (N, T) long right-padded with pad id, completion_mask (N, T) long (1 = generated,
    incl. the EOS/stop token that ended the row), logp (N, T) float32 (0 where mask is 0), truncated (N,) bool,
    eos_ended (N,) bool (the row ended with EOS, not a stop string), texts list[str] cut before the stop string,
    without EOS). T <= max_new_tokens (early exit when all rows end).
    backend: "auto" (fast path when the model supports it), "fast" (error if not), "hf" (plain HF forward loop).
    seeds: (N,) int64 sampling stream of each row (rlvr.seeding.row_seeds; default: the row index, stream
    "generate"); offsets: (N,) index of each row's first draw in its stream (a multi-turn row continues its stream).
    dtype: compute dtype of the forward passes (e.g. torch.bfloat16: the fast decoder casts its fused weights once
    per call, the HF loop runs under autocast); None = the parameters' dtype. Sampling and logp are in fp32.
    decoder: a decoder built by the caller (prefill / step, e.g. rlvr.policies.vlm_forward.VisionDecoder) instead of one
    chosen by `backend`. banned: token ids never sampled (a VLM's vision placeholders: a sampled one would read as
    an image slot); their probability still counts in logp, as the training forward computes it.
    """
    _check_args(prompt_ids, prompt_mask, max_new_tokens, temperature, top_p, top_k, backend)
    stop = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if decoder is None:
        decoder = _make_decoder(model, prompt_ids, prompt_mask, max_new_tokens, backend, dtype)
    device = model.get_input_embeddings().weight.device
    n = len(prompt_ids)
    seeds = row_seeds(0, "generate", torch.arange(n)) if seeds is None else seeds
    offsets = torch.zeros(n, dtype=torch.long) if offsets is None else offsets
    pick = _Picker(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, seeds=seeds.to(device),
                   offsets=offsets.to(device), steps=max_new_tokens,
                   banned=torch.tensor(list(banned), dtype=torch.long, device=device))
    eos = torch.tensor(_eos_ids(model, tokenizer), dtype=torch.long, device=device)
    stops = _StopStrings(tokenizer, stop, len(prompt_ids)) if any(stop) else None
    done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=device)  # (N,)
    tokens, logps = [], []
    fill = int(eos[0]) if len(eos) else 0  # the token of a row that has ended (masked out by _finish)
    rows = torch.arange(n, device=device)  # the rows the decoder still runs, in its batch order
    logits = decoder.prefill()  # (N, V)
    for t in range(max_new_tokens):
        if len(rows) == n:  # every row still in the decoder's batch
            tok, lp = pick(logits)  # (N,), (N,)
        else:  # rows that have ended get `fill` and logp 0 (both masked out)
            live, lp_live = pick(logits, rows)
            tok = torch.full((n,), fill, dtype=torch.long, device=device).index_copy_(0, rows, live)
            lp = torch.zeros(n, dtype=lp_live.dtype, device=device).index_copy_(0, rows, lp_live)
        tokens.append(tok)
        logps.append(lp)
        if stops:
            done[stops.update(tok, done, t)] = True
        if len(eos):
            done |= torch.isin(tok, eos)
        if t + 1 == max_new_tokens or bool(done.all()):
            break
        running = ~done[rows]  # (n,) over the decoder's batch
        if callable(getattr(decoder, "keep", None)) and 2 * int(running.sum()) <= len(rows):  # half has ended
            keep = running.nonzero()[:, 0]
            decoder.keep(keep)
            rows = rows[keep]
        logits = decoder.step(tok[rows])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(eos[0]) if len(eos) else 0
    return _finish(tokens, logps, stops, eos, tokenizer, pad_id)
