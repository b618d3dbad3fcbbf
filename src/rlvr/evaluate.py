"""Held-out evaluation: greedy accuracy (fully correct answers), mean score (with partial credit), pass@k from
k samples per prompt (fully correct), mean completion length.

pass@k uses the unbiased estimator of Chen et al. (arXiv 2107.03374): with n samples of which c are
correct, pass@k = 1 - C(n - c, k) / C(n, k); in `evaluate` n = k samples per prompt, so it is 1 if any is correct.
`evaluate_sampled` draws n samples per prompt once and reports pass@k for several k <= n, plus how many
*distinct* correct answers each prompt gets (DIVER's diversity check, specs/diver.md §7).
"""

from __future__ import annotations

from math import comb

import torch

from rlvr.policies import encode_prompts
from rlvr.rollout import generate
from rlvr.tasks.base import first_line


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
    total = 0.0
    for s, texts, _ in _sample_groups(model, tokenizer, samples, k, max_new_tokens, batch_size, temperature, stop,
                                      seed):
        total += pass_at_k(k, sum(task.score(s, t) >= 1.0 for t in texts), k)
    return total / len(samples)


def _sample_groups(model, tokenizer, samples, n, max_new_tokens, batch_size, temperature, stop, seed):
    """Yield (sample, its n sampled texts, their lengths), prompts batched by batch_size // n, one seeded generator."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    per_prompt = max(1, batch_size // n)
    for start in range(0, len(samples), per_prompt):
        chunk = samples[start : start + per_prompt]
        repeated = [s for s in chunk for _ in range(n)]
        out = _generate(model, tokenizer, repeated, max_new_tokens, greedy=False, stop=stop,
                        temperature=temperature, generator=generator)
        lengths = out["completion_mask"].sum(-1).tolist()
        for j, s in enumerate(chunk):
            yield s, out["texts"][j * n : (j + 1) * n], lengths[j * n : (j + 1) * n]


def distinct_correct(texts: list[str], correct: list[bool]) -> int:
    """Number of different correct answers: first lines of the correct texts, all whitespace removed."""
    return len({"".join(first_line(t).split()) for t, ok in zip(texts, correct) if ok})


@torch.no_grad()
def evaluate_sampled(
    model, tokenizer, task, *, size: int, n: int, ks: tuple[int, ...] = (1,), max_new_tokens: int,
    batch_size: int = 256, temperature: float = 1.0, stop: tuple[str, ...] = (), seed: int = 0,
) -> dict[str, float]:
    """n samples for each of items 0..size-1 of `task`: pass@k (unbiased) for each k in ks, the mean number of
    distinct correct answers per prompt (over all prompts, and over the prompts with at least one), mean length."""
    if not ks or any(not 1 <= k <= n for k in ks):
        raise ValueError(f"evaluate_sampled: every k must be in [1, n={n}], got {ks}")
    was_training = model.training
    model.eval()
    samples = [task[i] for i in range(min(size, len(task)))]
    passes, distinct, lengths = {k: 0.0 for k in ks}, [], []
    for s, texts, lens in _sample_groups(model, tokenizer, samples, n, max_new_tokens, batch_size, temperature,
                                         stop, seed):
        correct = [task.score(s, t) >= 1.0 for t in texts]
        for k in ks:
            passes[k] += pass_at_k(n, sum(correct), k)
        distinct.append(distinct_correct(texts, correct))
        lengths += lens
    model.train(was_training)
    solved = [d for d in distinct if d > 0]
    return {**{f"pass@{k}": v / len(samples) for k, v in passes.items()},
            "distinct_correct": sum(distinct) / len(distinct),
            "distinct_correct_solved": sum(solved) / len(solved) if solved else 0.0,
            "mean_length": sum(lengths) / len(lengths)}
