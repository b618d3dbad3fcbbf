"""Held-out evaluation: greedy accuracy (fully correct answers), mean score (with partial credit), pass@k from
k samples per prompt (fully correct), mean completion length.

pass@k uses the unbiased estimator of Chen et al. (arXiv 2107.03374): with n samples of which c are
correct, pass@k = 1 - C(n - c, k) / C(n, k); here n = k samples per prompt, so it is 1 if any is correct.
"""

from __future__ import annotations

from math import comb

import torch

from rlvr.policies import encode_prompts
from rlvr.rollout import generate


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for n samples with c correct (arXiv 2107.03374, Eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


@torch.no_grad()
def evaluate(
    model, tokenizer, task, *, size: int, max_new_tokens: int, batch_size: int = 64, k: int = 0,
    temperature: float = 1.0, stop: tuple[str, ...] = (), seed: int = 0,
) -> dict[str, float]:
    """Greedy accuracy and mean length on items 0..size-1 of `task`; pass@k when k > 0."""
    was_training = model.training
    model.eval()
    samples = [task[i] for i in range(min(size, len(task)))]
    scores, lengths = [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        out = _generate(model, tokenizer, chunk, max_new_tokens, greedy=True, stop=stop)
        scores += [task.score(s, t) for s, t in zip(chunk, out["texts"])]
        lengths += out["completion_mask"].sum(-1).tolist()
    result = {
        "accuracy": sum(sc >= 1.0 for sc in scores) / len(scores),  # fully correct, the same bar as pass@k
        "mean_score": sum(scores) / len(scores),  # with the task's partial credit
        "mean_length": sum(lengths) / len(lengths),
    }
    if k > 0:
        result[f"pass@{k}"] = _pass_at_k(model, tokenizer, task, samples, k, max_new_tokens, batch_size,
                                          temperature, stop, seed)
    model.train(was_training)
    return result


def _generate(model, tokenizer, samples, max_new_tokens, *, greedy, stop, temperature=1.0, generator=None):
    ids, mask = encode_prompts(tokenizer, [s.prompt for s in samples])
    device = next(model.parameters()).device
    return generate(model, tokenizer, ids.to(device), mask.to(device), max_new_tokens=max_new_tokens,
                    temperature=temperature, stop=stop, greedy=greedy, generator=generator)


def _pass_at_k(model, tokenizer, task, samples, k, max_new_tokens, batch_size, temperature, stop, seed) -> float:
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    per_prompt = max(1, batch_size // k)
    total = 0.0
    for start in range(0, len(samples), per_prompt):
        chunk = samples[start : start + per_prompt]
        repeated = [s for s in chunk for _ in range(k)]
        out = _generate(model, tokenizer, repeated, max_new_tokens, greedy=False, stop=stop,
                        temperature=temperature, generator=generator)
        for j, s in enumerate(chunk):
            correct = sum(task.score(s, t) >= 1.0 for t in out["texts"][j * k : (j + 1) * k])
            total += pass_at_k(k, correct, k)
    return total / len(samples)
