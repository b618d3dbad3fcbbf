"""Held-out evaluation: greedy accuracy (fully correct answers), mean score (with partial credit), pass@k from
k samples per prompt (fully correct), mean completion length.

Generation goes through a Sampler (rlvr.rollout.collect): the trainer's own (a multi-turn environment included), or
`text_sampler(policy, ...)`. Greedy decoding evaluates accuracy; sampled completions (at the sampler's temperature)
pass@k.

pass@k uses the unbiased estimator of Chen et al. (arXiv 2107.03374): with n samples of which c are
correct, pass@k = 1 - C(n - c, k) / C(n, k); in `evaluate` n = k samples per prompt, so it is 1 if any is correct.
`evaluate_sampled` draws n samples per prompt once and reports pass@k for several k <= n, plus how many
*distinct* correct answers each prompt gets (DIVER's diversity check, docs/methods.md §3.9).
"""

from __future__ import annotations

import dataclasses
from math import comb

import torch

from rlvr.policies import SamplingParams
from rlvr.rollout.collect import Sampler, TextSampler
from rlvr.seeding import row_seeds
from rlvr.tasks.base import first_line


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for n samples with c correct (arXiv 2107.03374, Eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def text_sampler(policy, *, max_new_tokens: int, temperature: float = 1.0, stop: tuple[str, ...] = ()) -> TextSampler:
    """A single-turn sampler over `policy` for evaluation (the trainer passes its own, environments included)."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, stop=tuple(stop))
    return TextSampler(policy, params, group_size=1)


@torch.no_grad()
def greedy_answers(sampler: Sampler, samples: list, batch_size: int = 64,
                   env_stats: dict[str, list[float]] | None = None) -> tuple[list[str], list[int]]:
    """Greedy completions of `samples` (texts, and their lengths in tokens), `batch_size` at a time; an
    environment's per-episode numbers (batch extras env/<key>, and turns) are appended to `env_stats` when given."""
    greedy = sampler.with_params(dataclasses.replace(sampler.params, greedy=True))
    texts, lengths = [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = greedy.generate(chunk, torch.arange(len(chunk)), torch.zeros(len(chunk), dtype=torch.long))
        texts += batch.texts
        lengths += batch.completion_mask.sum(-1).tolist()
        if env_stats is not None:
            for key in [k for k in batch.extras if k.startswith("env/")] + ["turns"] * ("turns" in batch.extras):
                env_stats.setdefault(key.removeprefix("env/"), []).extend(batch.extras[key].float().tolist())
    return texts, lengths


@torch.no_grad()
def evaluate(sampler: Sampler, task, *, size: int, batch_size: int = 64, k: int = 0, seed: int = 0) -> dict[str, float]:
    """Greedy accuracy and mean length on items 0..size-1 of `task` (and env/<key> means under an environment);
    pass@k when k > 0 (sampled at the sampler's temperature from the stream ("eval", seed))."""
    samples = [task[i] for i in range(min(size, len(task)))]
    stats: dict[str, list[float]] = {}
    texts, lengths = greedy_answers(sampler, samples, batch_size, env_stats=stats)
    scores = [task.score(s, t) for s, t in zip(samples, texts)]
    result = {
        "accuracy": sum(sc >= 1.0 for sc in scores) / len(scores),  # fully correct, the same bar as pass@k
        "mean_score": sum(scores) / len(scores),  # with the task's partial credit
        "mean_length": sum(lengths) / len(lengths),
    }
    # a multi-turn environment's own numbers per episode, as means (FrameThinker: frames used, gates, turns)
    result.update({f"env/{key}": sum(v) / len(v) for key, v in sorted(stats.items()) if v})
    if k > 0:
        groups = _sample_groups(sampler, samples, k, batch_size, seed)
        result[f"pass@{k}"] = sum(pass_at_k(k, sum(task.score(s, t) >= 1.0 for t in texts), k)
                                  for s, texts, _ in groups) / len(samples)
    return result


def _sample_groups(sampler: Sampler, samples, n, batch_size, seed):
    """Yield (sample, its n sampled texts, their lengths), prompts batched by batch_size // n; sample j of prompt i
    draws from the stream ("eval", seed, i, j)."""
    per_prompt = max(1, batch_size // n)
    for start in range(0, len(samples), per_prompt):
        chunk = samples[start : start + per_prompt]
        index = torch.arange(start, start + len(chunk)).repeat_interleave(n)
        batch = sampler.generate([s for s in chunk for _ in range(n)], index,
                                 row_seeds(seed, "eval", index, torch.arange(n).repeat(len(chunk))))
        lengths = batch.completion_mask.sum(-1).tolist()
        for j, s in enumerate(chunk):
            yield s, batch.texts[j * n : (j + 1) * n], lengths[j * n : (j + 1) * n]


def distinct_correct(texts: list[str], correct: list[bool]) -> int:
    """Number of different correct answers: first lines of the correct texts, all whitespace removed."""
    return len({"".join(first_line(t).split()) for t, ok in zip(texts, correct) if ok})


@torch.no_grad()
def evaluate_sampled(sampler: Sampler, task, *, size: int, n: int, ks: tuple[int, ...] = (1,), batch_size: int = 256,
                     seed: int = 0) -> dict[str, float]:
    """n samples for each of items 0..size-1 of `task`: pass@k (unbiased) for each k in ks, the mean number of
    distinct correct answers per prompt (over all prompts, and over the prompts with at least one), mean length."""
    if not ks or any(not 1 <= k <= n for k in ks):
        raise ValueError(f"evaluate_sampled: every k must be in [1, n={n}], got {ks}")
    samples = [task[i] for i in range(min(size, len(task)))]
    passes, distinct, lengths = {k: 0.0 for k in ks}, [], []
    for s, texts, lens in _sample_groups(sampler, samples, n, batch_size, seed):
        correct = [task.score(s, t) >= 1.0 for t in texts]
        for k in ks:
            passes[k] += pass_at_k(n, sum(correct), k)
        distinct.append(distinct_correct(texts, correct))
        lengths += lens
    solved = [d for d in distinct if d > 0]
    return {**{f"pass@{k}": v / len(samples) for k, v in passes.items()},
            "distinct_correct": sum(distinct) / len(distinct),
            "distinct_correct_solved": sum(solved) / len(solved) if solved else 0.0,
            "mean_length": sum(lengths) / len(lengths)}
