"""DIVER diversity rewards (arXiv 2509.26209): intrinsic textual/equational diversity with potential-based shaping.

Method reference: docs/methods.md §3 (the §3.x below are its sections). For each group of G completions of one
prompt:
1. Textual diversity (§3.2): TD_i = 1 - mean_{j != i} ½[BLEU(ref=x_i, hyp=x_j) + BLEU(ref=x_j, hyp=x_i)], sentence
   BLEU over whitespace tokens of the first 1000 characters, n-gram orders 1..5 weighted (0.02, .10, .15, .25, .38),
   brevity penalty, no smoothing (NLTK-compatible, as the reference code).
2. Equational diversity (§3.3): F(o) = contents of \\[..\\], \\(..\\), $..$ in the first 1000 characters;
   ED_i = |F_i minus the union of the others' F_j| / |F_i|, 0 when F_i is empty.
3. Shaping (§3.4): with gamma = 1 the potential-based term telescopes to the terminal diversity d_i, so the
   outcome-level intrinsic reward is lam(t) * clip(d_i, 0, sigma_clip) * gate_i, where the gate restricts it to
   correct completions (paper) or all-correct groups (code TD) or correct * group accuracy (code ED).
4. The shaped score s_i = r_i + intrinsic_i feeds the ordinary group-relative advantage (§3.5).

Pure helpers (`textual_diversity`, `equational_diversity`, `condition_gate`, `intrinsic_reward`, `lambda_schedule`,
`shaped_rewards`, `shaped_advantages`, `potential_shaping`, `group_diversity_metrics`) and the reward factory
`diversity` (config: `{name: diversity, weight: lambda, kwargs: {kind: textual, correctness: math}}`).
Every text is cut to `horizon_chars` and never beyond `max_chars`, so megabyte outputs cost bounded time.
rlvr choice: a singleton group (nothing to compare with) has diversity 0 (the code divides by G - 1 = 0).
DIVER-MIX (§3.4) is two `diversity` entries, textual with clip_max 0.91 and equational with clip_max 0.42, both
with condition "correct"; their weighted sum is exactly the code's mix formula.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rlvr.batch import Sample
from rlvr.rewards.core import REWARDS, RewardFn

TD_WEIGHTS = (0.02, 0.10, 0.15, 0.25, 0.38)  # reference code's n-gram weights (docs/methods.md §3.2)
SMOOTHINGS = ("none", "add1")
UNITS = ("word", "char")
NORMALIZE = ("none", "whitespace")
CONDITIONS = ("correct", "all_correct_group", "correct_times_group_acc")
SCHEDULES = ("constant", "cut", "cosine", "code_equ")
KINDS = ("textual", "equational")

GroupIds = torch.Tensor | Sequence[int]


def _choose(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"diversity: unknown {what} {value!r}; choose from {list(choices)}")


def _check_weights(weights: Sequence[float]) -> tuple[float, ...]:
    weights = tuple(float(w) for w in weights)
    if not weights or any(w < 0 or not math.isfinite(w) for w in weights):
        raise ValueError(f"diversity: BLEU weights must be a non-empty list of finite floats >= 0, got {weights}")
    return weights


# ------------------------------------------------------------------ tokens and BLEU


def clip_text(text: str, *, horizon_chars: int | None = 1000, max_chars: int = 32_768) -> str:
    """The first `horizon_chars` characters (None = the whole response), never more than `max_chars`.

    docs/methods.md §3.8 #5."""
    limit = max_chars if horizon_chars is None else min(horizon_chars, max_chars)
    return text[:limit]


def tokenize(text: str, *, unit: str = "word", horizon_chars: int | None = 1000, max_chars: int = 32_768) -> list[str]:
    """Whitespace tokens (code, docs/methods.md §3.2) or characters (tiny char-level models) of the clipped text."""
    _choose("unit", unit, UNITS)
    text = clip_text(text, horizon_chars=horizon_chars, max_chars=max_chars)
    return text.split() if unit == "word" else list(text)


def ngram_counts(tokens: Sequence[str], *, max_n: int) -> tuple[int, list[Counter]]:
    """(length, [Counter of 1-grams, ..., Counter of max_n-grams]) of a token list."""
    tokens = list(tokens)
    return len(tokens), [Counter(zip(*(tokens[k:] for k in range(n)))) for n in range(1, max_n + 1)]


def _clipped_matches(hyp: Counter, ref: Counter) -> int:
    small, big = (hyp, ref) if len(hyp) <= len(ref) else (ref, hyp)
    return sum(min(c, big[g]) for g, c in small.items() if g in big)


def _brevity_penalty(ref_len: int, hyp_len: int) -> float:
    if hyp_len > ref_len:
        return 1.0
    return 0.0 if hyp_len == 0 else math.exp(1 - ref_len / hyp_len)


def _bleu_from_counts(ref, hyp, weights: tuple[float, ...], smoothing: str) -> float:
    """Sentence BLEU from `ngram_counts` of one reference and one hypothesis (see `sentence_bleu`)."""
    (ref_len, ref_grams), (hyp_len, hyp_grams) = ref, hyp
    log_p = 0.0
    for n, w in enumerate(weights):  # n is the 0-based order: (n + 1)-grams
        num = _clipped_matches(hyp_grams[n], ref_grams[n])
        den = max(1, hyp_len - n)  # NLTK floors the n-gram count at 1
        if n == 0 and num == 0:
            return 0.0  # no unigram match: 0 whatever the smoothing (as NLTK)
        if smoothing == "add1" and n > 0:
            num, den = num + 1, den + 1  # Lin & Och 2004 (NLTK method2)
        if w > 0:
            if num == 0:
                return 0.0  # NLTK gives exp(w * log(float_min)) <= 1e-30 here
            log_p += w * math.log(num / den)
    return _brevity_penalty(ref_len, hyp_len) * math.exp(log_p)


def sentence_bleu(
    reference: Sequence[str], hypothesis: Sequence[str], *, weights: Sequence[float] = TD_WEIGHTS,
    smoothing: str = "none",
) -> float:
    """Sentence BLEU of `hypothesis` against one `reference` (docs/methods.md §3.2; Papineni et al. 2002).

    Orders 1..len(weights); clipped n-gram precisions (counts floored at 1), geometric mean with `weights`
    (not renormalised), brevity penalty exp(1 - r/c) for c <= r. smoothing="none" returns 0 when any order with a
    positive weight has no match (NLTK method0 up to <= 1e-30); "add1" adds 1 to numerator and denominator of
    orders >= 2 (docs/methods.md §3.8 #7). No unigram match always gives 0.
    """
    weights = _check_weights(weights)
    _choose("smoothing", smoothing, SMOOTHINGS)
    n = len(weights)
    return _bleu_from_counts(ngram_counts(reference, max_n=n), ngram_counts(hypothesis, max_n=n), weights, smoothing)


# ------------------------------------------------------------------ groups


def group_index(group_ids: GroupIds, n: int | None = None) -> list[list[int]]:
    """Positions of each group, groups in order of first appearance; `n` checks the length."""
    ids = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    if n is not None and len(ids) != n:
        raise ValueError(f"diversity: got {len(ids)} group_ids for {n} completions")
    groups: dict[Any, list[int]] = {}
    for i, g in enumerate(ids):
        groups.setdefault(g, []).append(i)
    return list(groups.values())


def groups_from_samples(samples: Sequence[Sample]) -> list[int]:
    """Group ids from consecutive identical (task, index, prompt): the rollout lays each prompt's G samples out
    contiguously. Two different prompts are never merged; the same prompt twice in a row is (pass group_ids)."""
    ids: list[int] = []
    for i, s in enumerate(samples):
        prev = samples[i - 1] if i else None
        same = prev is not None and (prev.task, prev.index, prev.prompt) == (s.task, s.index, s.prompt)
        ids.append(ids[-1] if same else (ids[-1] + 1 if ids else 0))
    return ids


def _pair_similarity(counts: list, weights: tuple[float, ...], smoothing: str) -> list[list[float]]:
    """(G, G) symmetric ½[BLEU(i->j) + BLEU(j->i)], each unordered pair computed once; diagonal 0."""
    G = len(counts)
    sim = [[0.0] * G for _ in range(G)]
    for i in range(G):
        for j in range(i + 1, G):
            s = 0.5 * (_bleu_from_counts(counts[i], counts[j], weights, smoothing)
                       + _bleu_from_counts(counts[j], counts[i], weights, smoothing))
            sim[i][j] = sim[j][i] = s
    return sim


# ------------------------------------------------------------------ diversity measures


def textual_diversity(
    texts: Sequence[str], group_ids: GroupIds, *, weights: Sequence[float] = TD_WEIGHTS, smoothing: str = "none",
    unit: str = "word", horizon_chars: int | None = 1000, max_chars: int = 32_768,
) -> torch.Tensor:
    """(N,) float64 TD_i = 1 - mean_{j != i in group} ½[BLEU(ref=x_i, hyp=x_j) + BLEU(ref=x_j, hyp=x_i)] (§3.2).

    Mean (not max) similarity to the other G - 1 completions, as paper and code; singleton groups get 0.
    Warns when unsmoothed BLEU meets texts mostly shorter than its highest order (all TD = 1, docs/methods.md §3.8 #7).
    """
    weights = _check_weights(weights)
    _choose("smoothing", smoothing, SMOOTHINGS)
    tokens = [tokenize(t, unit=unit, horizon_chars=horizon_chars, max_chars=max_chars) for t in texts]
    if smoothing == "none" and tokens and statistics.median(len(t) for t in tokens) < len(weights):
        warnings.warn(f"diversity: median completion has < {len(weights)} tokens, so unsmoothed BLEU is 0 and "
                      "TD = 1 for nearly all; use smoothing='add1' or fewer weights", stacklevel=2)
    out = torch.zeros(len(texts), dtype=torch.float64)  # (N,)
    for idx in group_index(group_ids, len(texts)):
        if len(idx) < 2:
            continue
        sim = _pair_similarity([ngram_counts(tokens[i], max_n=len(weights)) for i in idx], weights, smoothing)
        for row, i in zip(sim, idx):
            out[i] = 1.0 - sum(row) / (len(idx) - 1)
    return out


# (opener, closer, stop): contents may not contain `stop`, the closer's last character, as in the code's
# non-greedy regexes \\\[([^\]]*?)\\\], \\\(([^\)]*?)\\\), \$([^\$]*?)\$ (docs/methods.md §3.3).
_DELIMITERS = (("\\[", "\\]", "]"), ("\\(", "\\)", ")"), ("$", "$", "$"))


def _find_delimited(text: str, opener: str, closer: str, stop: str) -> list[str]:
    """re.findall of opener([^stop]*?)closer in linear time (the regex is quadratic on many unclosed openers)."""
    out, pos, stop_at = [], 0, -1
    while (p := text.find(opener, pos)) >= 0:
        start = p + len(opener)
        if stop_at < start:  # first `stop` at or after `start`; still valid while it lies ahead
            stop_at = text.find(stop, start)
            if stop_at < 0:
                break
        end = stop_at - (len(closer) - 1)  # where the closer has to begin
        if end >= start and text.startswith(closer, end):
            out.append(text[start:end])
            pos = stop_at + 1
        else:
            pos = p + 1
    return out


def extract_equations(
    text: str, *, horizon_chars: int | None = 1000, max_chars: int = 32_768, normalize: str = "none"
) -> set[str]:
    """F(o): contents of \\[..\\], \\(..\\) and $..$ in the clipped text (docs/methods.md §3.3).

    normalize="none" keeps contents verbatim (code: `x=1` and `x = 1` differ, `$$..$$` yields "");
    "whitespace" deletes all whitespace so spacing variants count as one equation.
    """
    _choose("normalize", normalize, NORMALIZE)
    text = clip_text(text, horizon_chars=horizon_chars, max_chars=max_chars)
    found = {s for delims in _DELIMITERS for s in _find_delimited(text, *delims)}
    return found if normalize == "none" else {"".join(s.split()) for s in found}


def equational_diversity(
    texts: Sequence[str], group_ids: GroupIds, *, horizon_chars: int | None = 1000, max_chars: int = 32_768,
    normalize: str = "none",
) -> torch.Tensor:
    """(N,) float64 ED_i = |F_i minus the union of F_j, j != i in group| / |F_i|, 0 if F_i is empty (§3.3).

    An equation is unique to i iff it occurs in exactly one set of the group. Singleton groups get 0.
    """
    eqs = [extract_equations(t, horizon_chars=horizon_chars, max_chars=max_chars, normalize=normalize) for t in texts]
    out = torch.zeros(len(texts), dtype=torch.float64)  # (N,)
    for idx in group_index(group_ids, len(texts)):
        if len(idx) < 2:
            continue
        seen = Counter(e for i in idx for e in eqs[i])
        for i in idx:
            if eqs[i]:
                out[i] = sum(seen[e] == 1 for e in eqs[i]) / len(eqs[i])
    return out


# ------------------------------------------------------------------ shaping


def _group_stat(values: torch.Tensor, group_ids: GroupIds, reduce: Callable[[torch.Tensor], torch.Tensor]):
    out = torch.empty_like(values)
    for idx in group_index(group_ids, len(values)):
        out[idx] = reduce(values[idx])
    return out


def condition_gate(correct: torch.Tensor, group_ids: GroupIds, *, condition: str = "all_correct_group") -> torch.Tensor:
    """(N,) float64 gate on the intrinsic reward (docs/methods.md §3.4, §3.8 #3); incorrect completions get 0
    (§3.8 #6).

    "correct": 1[r_i = 1] (paper); "all_correct_group": 1 only if all G completions are correct (code TD);
    "correct_times_group_acc": 1[r_i = 1] * mean correctness of the group (code ED).
    """
    _choose("condition", condition, CONDITIONS)
    c = torch.as_tensor(correct).to(torch.float64)  # (N,)
    if condition == "correct":
        return c
    if condition == "all_correct_group":
        return _group_stat(c, group_ids, lambda v: v.min().expand_as(v))
    return c * _group_stat(c, group_ids, lambda v: v.mean().expand_as(v))


def intrinsic_reward(
    diversity: torch.Tensor, correct: torch.Tensor, group_ids: GroupIds, *, condition: str = "all_correct_group",
    clip_max: float = 1.0, clip_min: float = 0.0,
) -> torch.Tensor:
    """(N,) float64 clip(d_i, clip_min, clip_max) * gate_i: balanced + conditional shaping before lambda (§3.4)."""
    if not clip_min <= clip_max:
        raise ValueError(f"diversity: need clip_min <= clip_max, got {clip_min} > {clip_max}")
    d = torch.as_tensor(diversity, dtype=torch.float64).clamp(clip_min, clip_max)  # (N,)
    return d * condition_gate(correct, group_ids, condition=condition)


def lambda_schedule(
    step: int, *, lam: float, schedule: str = "cut", t_cut: int = 100, t0: int = 100, delta: int = 50
) -> float:
    """Intrinsic-reward scale at training step t (docs/methods.md §3.4, §3.8 #4).

    "constant": lam; "cut": lam for t < t_cut, then 0 (code, rlvr default);
    "cosine": lam * cos(pi/2 * clip((t - t0) / delta, 0, 1)), 1 until t0 then 0 at t0 + delta (reconstruction);
    "code_equ": lam * cos(pi/2 * min(1, (t - t0) / delta)) for t < t_cut else 0: the code's ED factor, which is
    -lam at t = 0 and 0 at t = 50 when t0 = 100 (parity only: it penalises diversity early).
    """
    _choose("schedule", schedule, SCHEDULES)
    if schedule in ("cosine", "code_equ") and delta <= 0:
        raise ValueError(f"diversity: schedule {schedule!r} needs delta > 0, got {delta}")
    if schedule == "constant":
        return float(lam)
    if schedule == "cut":
        return float(lam) if step < t_cut else 0.0
    if schedule == "cosine":
        return lam * math.cos(math.pi / 2 * min(1.0, max(0.0, (step - t0) / delta)))
    return lam * math.cos(math.pi / 2 * min(1.0, (step - t0) / delta)) if step < t_cut else 0.0


def shaped_rewards(
    rewards: torch.Tensor, diversity: torch.Tensor, group_ids: GroupIds, *, lam: float,
    condition: str = "all_correct_group", clip_max: float = 1.0, clip_min: float = 0.0, correct_threshold: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """s_i = r_i + lam * intrinsic_i (docs/methods.md §3.5) -> ((N,) in rewards' dtype, metrics).

    lam is lambda_schedule(t). Correct means r_i >= correct_threshold; a NaN (unscorable) reward is not correct
    and stays NaN.
    """
    correct = torch.nan_to_num(rewards, nan=-math.inf) >= correct_threshold  # (N,) bool
    bonus = lam * intrinsic_reward(diversity, correct, group_ids, condition=condition, clip_max=clip_max,
                                   clip_min=clip_min)  # (N,)
    gated = bonus != 0
    metrics = {"diver/diversity_mean": float(torch.as_tensor(diversity, dtype=torch.float64).mean()),
               "diver/bonus_mean": float(bonus.mean()), "diver/bonus_frac": float(gated.double().mean())}
    return rewards + bonus.to(rewards.dtype), metrics


def shaped_advantages(
    rewards: torch.Tensor, diversity: torch.Tensor, group_ids: torch.Tensor, *, lam: float,
    condition: str = "all_correct_group", clip_max: float = 1.0, clip_min: float = 0.0, correct_threshold: float = 1.0,
    estimator: str = "grpo", eps: float = 1e-6,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Group-relative advantage of the shaped score: ADVANTAGES[estimator](s, group_ids, eps=eps).

    docs/methods.md §3.5. With "grpo": (s_i - mean_g s) / (std_g s + eps), Bessel std; an all-correct group under
    "all_correct_group" ranks completions by diversity alone and lam cancels (unless lam * std is comparable to eps).
    """
    from rlvr.algos import ADVANTAGES  # the rewards package does not otherwise depend on algos

    s, metrics = shaped_rewards(rewards, diversity, group_ids, lam=lam, condition=condition, clip_max=clip_max,
                                clip_min=clip_min, correct_threshold=correct_threshold)
    return ADVANTAGES.lookup(estimator)(s, group_ids, eps=eps), metrics


def potential_shaping(potentials: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0) -> torch.Tensor:
    """(B, T) per-token R_t = gamma * Phi(s_{t+1}) - Phi(s_t) (Ng et al. 1999; docs/methods.md §3.4), 0 where mask is 0.

    potentials: (B, T) Phi of the prefix ending at token t; Phi([q]) = 0 before the first token. With gamma = 1
    and a right-padded mask the row sum telescopes to Phi of the whole response: the outcome-level bonus above.
    """
    keep = mask.bool()
    phi = torch.where(keep, potentials, torch.zeros((), dtype=potentials.dtype))  # (B, T)
    prev = torch.nn.functional.pad(phi[:, :-1], (1, 0))  # (B, T) Phi(s_t), 0 at t = 0
    return torch.where(keep, gamma * phi - prev, torch.zeros((), dtype=potentials.dtype))


# ------------------------------------------------------------------ logging


def _distinct(tokens: list[list[str]], n: int) -> float | None:
    grams = [g for t in tokens for g in zip(*(t[k:] for k in range(n)))]
    return len(set(grams)) / len(grams) if grams else None


def _mean(values: list[float | None]) -> float:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else math.nan


def group_diversity_metrics(
    texts: Sequence[str], group_ids: GroupIds, *, weights: Sequence[float] = TD_WEIGHTS, smoothing: str = "none",
    unit: str = "word", horizon_chars: int | None = 1000, max_chars: int = 32_768,
) -> dict[str, float]:
    """Mean over groups of distinct-1, distinct-2 (unique / total n-grams of the group, Li et al. 2016) and
    self-BLEU (mean over ordered pairs i != j of BLEU(ref=x_i, hyp=x_j), = 1 - mean TD). NaN when undefined."""
    weights = _check_weights(weights)
    _choose("smoothing", smoothing, SMOOTHINGS)
    tokens = [tokenize(t, unit=unit, horizon_chars=horizon_chars, max_chars=max_chars) for t in texts]
    d1, d2, sb = [], [], []
    for idx in group_index(group_ids, len(texts)):
        group = [tokens[i] for i in idx]
        d1.append(_distinct(group, 1))
        d2.append(_distinct(group, 2))
        if len(idx) > 1:
            sim = _pair_similarity([ngram_counts(t, max_n=len(weights)) for t in group], weights, smoothing)
            sb.append(sum(map(sum, sim)) / (len(idx) * (len(idx) - 1)))
    return {"diversity/distinct_1": _mean(d1), "diversity/distinct_2": _mean(d2), "diversity/self_bleu": _mean(sb)}


# ------------------------------------------------------------------ registered reward


def _correctness_fn(correctness: str | RewardFn | None, kwargs: dict[str, Any] | None) -> RewardFn | None:
    if correctness is None or callable(correctness):
        return correctness
    return REWARDS.build(correctness, **dict(kwargs or {}))


@REWARDS.register("diversity")
def diversity(
    *, kind: str = "textual", condition: str = "all_correct_group", correctness: str | RewardFn | None = None,
    correctness_kwargs: dict[str, Any] | None = None, correct_threshold: float = 1.0, clip_max: float | None = None,
    clip_min: float = 0.0, schedule: str = "cut", t_cut: int = 100, t0: int = 100, delta: int = 50,
    weights: Sequence[float] = TD_WEIGHTS, smoothing: str = "none", unit: str = "word",
    horizon_chars: int | None = 1000, max_chars: int = 32_768, normalize: str = "none",
) -> RewardFn:
    """DIVER intrinsic diversity reward, arXiv 2509.26209: lam(t)/lam * clip(d_i) * gate_i; the config weight is lam.

    kind: "textual" (TD, §3.2) or "equational" (ED, §3.3); clip_max defaults to 1.0 (TD, rlvr) / 0.68 (ED, code).
    condition (§3.8 #3): "all_correct_group" (code TD, default), "correct" (paper), "correct_times_group_acc" (code ED).
    correctness: a registered reward name (built with correctness_kwargs) or a reward fn; r >= correct_threshold
    counts as correct. Call-time keywords: group_ids= (N,) (else groups are consecutive identical prompts),
    correct= (N,) bools (overrides correctness), step= (needed unless schedule="constant").
    Deviations from the code: singleton groups get 0, and the schedule is a factor in [0, 1] except "code_equ".
    """
    _choose("kind", kind, KINDS)
    for what, value, choices in (("condition", condition, CONDITIONS), ("schedule", schedule, SCHEDULES),
                                 ("smoothing", smoothing, SMOOTHINGS), ("unit", unit, UNITS),
                                 ("normalize", normalize, NORMALIZE)):
        _choose(what, value, choices)
    weights = _check_weights(weights)
    clip_max = (1.0 if kind == "textual" else 0.68) if clip_max is None else clip_max
    lambda_schedule(0, lam=1.0, schedule=schedule, t_cut=t_cut, t0=t0, delta=delta)  # validates delta now
    if not clip_min <= clip_max:
        raise ValueError(f"diversity: need clip_min <= clip_max, got {clip_min} > {clip_max}")
    verifier = _correctness_fn(correctness, correctness_kwargs)
    clip = {"horizon_chars": horizon_chars, "max_chars": max_chars}
    if kind == "textual":
        measure = lambda texts, ids: textual_diversity(texts, ids, weights=weights, smoothing=smoothing,  # noqa: E731
                                                       unit=unit, **clip)
    else:
        measure = lambda texts, ids: equational_diversity(texts, ids, normalize=normalize, **clip)  # noqa: E731

    def fn(samples: list[Sample], completions: list[str], *, group_ids: GroupIds | None = None,
           correct: Sequence[bool] | torch.Tensor | None = None, step: int | None = None, **kw) -> list[float | None]:
        if schedule != "constant" and step is None:
            raise ValueError(f"diversity reward with schedule={schedule!r} needs the training step: call it with "
                             "step=..., or set kwargs.schedule: constant")
        ids = groups_from_samples(samples) if group_ids is None else group_ids
        ok = _correct(verifier, samples, completions, correct, correct_threshold, kw)
        scale = 1.0 if step is None else lambda_schedule(step, lam=1.0, schedule=schedule, t_cut=t_cut, t0=t0,
                                                         delta=delta)
        if scale == 0.0:
            return [0.0] * len(completions)
        bonus = intrinsic_reward(measure(completions, ids), ok, ids, condition=condition, clip_max=clip_max,
                                 clip_min=clip_min)
        return (scale * bonus).tolist()

    return fn


def _correct(verifier, samples, completions, correct, threshold: float, kw: dict[str, Any]) -> torch.Tensor:
    """(N,) bool correctness from call-time `correct=` or the verifier (None = not applicable = not correct)."""
    if correct is None:
        if verifier is None:
            raise ValueError("diversity reward only rewards correct completions: set kwargs.correctness "
                             "(e.g. correctness: math) or call it with correct=[...]")
        values = verifier(samples, completions, **kw)
        correct = [v is not None and v >= threshold for v in values]
    ok = torch.as_tensor(correct).bool()
    if ok.shape != (len(completions),):
        raise ValueError(f"diversity: got correct of shape {tuple(ok.shape)} for {len(completions)} completions")
    return ok
