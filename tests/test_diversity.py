"""DIVER diversity (rlvr.rewards.diversity, docs/methods.md §3): sentence BLEU on hand-worked cases (identical,
disjoint, a 2-gram case, add-1 smoothing); textual and equational diversity against plain loop references,
including the unit checks of docs/methods.md §3.9 (identical pair, ED = (0.5, 0, 0)); the linear-time equation
extractor against the reference code's regexes; conditional gates (incorrect completions never get a bonus),
clipping bounds, lambda schedules at given steps, the shaped GRPO advantage (lambda cancels in all-correct groups),
potential-based shaping telescoping; distinct-n / self-BLEU on a hand example; the registered `diversity` reward
through combine_rewards; and that hostile outputs (1 MB completions, 100k-digit numbers, unclosed delimiters) return
with bounded work."""

import math
import random
import re

import pytest
import torch

from rlvr.batch import Sample
from rlvr.rewards import REWARDS, combine_rewards
from rlvr.rewards import diversity as D

W2 = (0.5, 0.5)  # BLEU-2 with uniform weights, for hand-worked values


# ------------------------------------------------------------------ BLEU


def test_bleu_hand_values():
    s = "the quick brown fox jumps over".split()
    assert D.sentence_bleu(s, s) == pytest.approx(1.0)  # every precision 1, BP 1
    assert D.sentence_bleu(s, "a b c d e f".split()) == 0.0  # no unigram match
    # ref "the cat sat on the mat" (6), hyp "the cat on the mat" (5):
    # p1 = 5/5 (the x2 clipped by ref's 2); p2 = 3/4 (the cat, on the, the mat); BP = exp(1 - 6/5)
    # BLEU-2 = exp(-0.2) * sqrt(1 * 0.75) = 0.818731 * 0.866025 = 0.709042
    ref, hyp = "the cat sat on the mat".split(), "the cat on the mat".split()
    assert D.sentence_bleu(ref, hyp, weights=W2) == pytest.approx(0.7090416, abs=1e-6)
    # reversed: hyp longer than ref -> BP 1; p1 = 5/6, p2 = 3/5 -> sqrt(0.5) = 0.707107
    assert D.sentence_bleu(hyp, ref, weights=W2) == pytest.approx(math.sqrt(0.5))


def test_bleu_unsmoothed_needs_every_order_and_add1_smoothing():
    # default weights go up to 5-grams: a 4-token pair has no 5-gram, so unsmoothed BLEU is 0 (docs/methods.md §3.8 #7)
    assert D.sentence_bleu("a b c d".split(), "a b c d".split()) == 0.0
    # ref "a b c", hyp "a b d": p1 = 2/3, p2 = 1/2 -> sqrt(1/3); add1: p2 = (1+1)/(2+1) -> sqrt(4/9) = 2/3
    ref, hyp = ["a", "b", "c"], ["a", "b", "d"]
    assert D.sentence_bleu(ref, hyp, weights=W2) == pytest.approx(math.sqrt(1 / 3))
    assert D.sentence_bleu(ref, hyp, weights=W2, smoothing="add1") == pytest.approx(2 / 3)
    # ref "a b", hyp "b a": p2 = 0 -> 0 unsmoothed; add1 p2 = 1/2 -> sqrt(1 * 0.5)
    assert D.sentence_bleu(["a", "b"], ["b", "a"], weights=W2) == 0.0
    assert D.sentence_bleu(["a", "b"], ["b", "a"], weights=W2, smoothing="add1") == pytest.approx(math.sqrt(0.5))
    # a zero weight ignores its order; no unigram match is 0 even smoothed; empty hypothesis is 0
    assert D.sentence_bleu(["a", "b"], ["b", "a"], weights=(1.0, 0.0)) == pytest.approx(1.0)
    assert D.sentence_bleu(["a"], ["b", "c"], weights=W2, smoothing="add1") == 0.0
    assert D.sentence_bleu(["a"], [], weights=W2) == 0.0
    with pytest.raises(ValueError, match="smoothing"):
        D.sentence_bleu(ref, hyp, smoothing="method7")
    with pytest.raises(ValueError, match="weights"):
        D.sentence_bleu(ref, hyp, weights=())


def test_tokenize_units_and_horizon():
    assert D.tokenize("a  b\nc") == ["a", "b", "c"]
    assert D.tokenize("ab c", unit="char") == ["a", "b", " ", "c"]
    assert D.tokenize("aa bb cc", horizon_chars=4) == ["aa", "b"]  # cut at 1000 chars by default (code)
    assert len(D.tokenize("x" * 5000, unit="char", horizon_chars=None, max_chars=100)) == 100
    with pytest.raises(ValueError, match="unit"):
        D.tokenize("a", unit="bpe")


# ------------------------------------------------------------------ textual diversity


def _td_loop(texts, group_ids, **kw):
    """Reference: for each i, the mean of ½[BLEU(i->j) + BLEU(j->i)] over every other j with the same id."""
    bleu_kw = {k: kw[k] for k in ("weights", "smoothing") if k in kw}
    tok = [D.tokenize(t, unit=kw.get("unit", "word")) for t in texts]
    out = []
    for i in range(len(texts)):
        sims = [0.5 * (D.sentence_bleu(tok[i], tok[j], **bleu_kw) + D.sentence_bleu(tok[j], tok[i], **bleu_kw))
                for j in range(len(texts)) if j != i and group_ids[j] == group_ids[i]]
        out.append(1 - sum(sims) / len(sims) if sims else 0.0)
    return out


def test_textual_diversity_identical_pair():
    # docs/methods.md §3.9 #1: two identical >= 5-token texts and one that shares a 5-gram with them
    a, b = "the cat sat on the mat today", "the cat sat on the mat yesterday"
    td = D.textual_diversity([a, a, b], [7, 7, 7])
    ta, tb = a.split(), b.split()
    sym = 0.5 * (D.sentence_bleu(ta, tb) + D.sentence_bleu(tb, ta))
    assert 0 < sym < 1
    assert td[0].item() == pytest.approx(1 - (1 + sym) / 2, abs=1e-12)  # avgSim = (1 + sim(a, b)) / 2
    assert td[1].item() == pytest.approx(td[0].item(), abs=1e-12)
    assert td[2].item() == pytest.approx(1 - sym, abs=1e-12)
    assert D.textual_diversity(["only one text here ok"], [0]).tolist() == [0.0]  # singleton group: 0


@pytest.mark.parametrize("kw", [{}, {"smoothing": "add1", "weights": (0.25,) * 4}, {"unit": "char", "weights": W2}])
def test_textual_diversity_matches_loop(kw):
    rng = random.Random(0)
    texts = [" ".join(rng.choice("abcd") for _ in range(rng.randrange(3, 12))) for _ in range(14)]
    group_ids = [rng.randrange(4) for _ in texts]  # interleaved, uneven groups
    got = D.textual_diversity(texts, torch.tensor(group_ids), **kw)
    assert got.tolist() == pytest.approx(_td_loop(texts, group_ids, **kw), abs=1e-12)


def test_textual_diversity_warns_on_short_texts():
    with pytest.warns(UserWarning, match="median completion"):
        D.textual_diversity(["a b", "a c"], [0, 0])


# ------------------------------------------------------------------ equational diversity

_CODE_PATTERNS = [r"\\\[([^\]]*?)\\\]", r"\\\(([^\)]*?)\\\)", r"\$([^\$]*?)\$"]  # docs/methods.md §3.3, as regexes


def test_extract_equations_hand_strings():
    text = r"so $a+b=c$ and \(x^2\) then \[y = 1\] done"
    assert D.extract_equations(text) == {"a+b=c", "x^2", "y = 1"}
    assert D.extract_equations(r"\( f(x) \)") == set()  # code's regex: contents may not contain ')'
    assert D.extract_equations("$$x$$") == {""}  # display math: two empty inline matches, as the code
    assert D.extract_equations("$x = 1$ and $x=1$") == {"x = 1", "x=1"}
    assert D.extract_equations("$x = 1$ and $x=1$", normalize="whitespace") == {"x=1"}
    assert D.extract_equations("." * 1000 + "$late$") == set()  # beyond the 1000-character horizon
    assert D.extract_equations("." * 1000 + "$late$", horizon_chars=None) == {"late"}
    assert D.extract_equations("no math, just $5") == set()


def test_extract_equations_matches_code_regexes():
    rng = random.Random(1)
    for _ in range(2000):
        s = "".join(rng.choice("\\[]()$ab") for _ in range(rng.randrange(30)))
        expected = {m for p in _CODE_PATTERNS for m in re.findall(p, s)}
        assert D.extract_equations(s) == expected, s


def test_equational_diversity_spec_example_and_loop():
    # docs/methods.md §3.9 #2: equation sets {a, b}, {b}, {} -> ED = (0.5, 0, 0)
    assert D.equational_diversity(["$a$ $b$", "$b$", "none"], [0, 0, 0]).tolist() == [0.5, 0.0, 0.0]
    rng = random.Random(2)
    texts = [" ".join(f"${rng.choice('pqrst')}$" for _ in range(rng.randrange(4))) for _ in range(12)]
    ids = [rng.randrange(3) for _ in texts]
    eqs = [D.extract_equations(t) for t in texts]
    expected = []
    for i in range(len(texts)):
        others = [j for j in range(len(texts)) if j != i and ids[j] == ids[i]]
        union = set().union(*(eqs[j] for j in others))
        expected.append(len(eqs[i] - union) / len(eqs[i]) if eqs[i] and others else 0.0)
    assert D.equational_diversity(texts, ids).tolist() == pytest.approx(expected)


# ------------------------------------------------------------------ shaping


def test_condition_gates_never_reward_incorrect():
    correct = torch.tensor([True, False, True, True])
    ids = [0, 0, 1, 1]
    assert D.condition_gate(correct, ids, condition="correct").tolist() == [1, 0, 1, 1]
    assert D.condition_gate(correct, ids, condition="all_correct_group").tolist() == [0, 0, 1, 1]
    assert D.condition_gate(correct, ids, condition="correct_times_group_acc").tolist() == [0.5, 0, 1, 1]
    div = torch.tensor([0.9, 0.9, 0.2, 0.4])
    for cond in D.CONDITIONS:
        assert D.intrinsic_reward(div, correct, ids, condition=cond)[1] == 0  # the incorrect completion
    with pytest.raises(ValueError, match="condition"):
        D.condition_gate(correct, ids, condition="all")


def test_intrinsic_reward_clipping_bounds():
    div = torch.tensor([-0.5, 0.3, 0.9, 2.0])
    ones = torch.ones(4, dtype=torch.bool)
    got = D.intrinsic_reward(div, ones, [0] * 4, condition="correct", clip_max=0.68)
    assert got.tolist() == pytest.approx([0.0, 0.3, 0.68, 0.68])  # clip(d, 0, sigma_clip), docs/methods.md §3.4
    rng = torch.Generator().manual_seed(0)
    rand = torch.randn(64, generator=rng) * 3
    got = D.intrinsic_reward(rand, torch.rand(64, generator=rng) > 0.5, [0] * 64, condition="correct",
                             clip_min=0.1, clip_max=0.42)
    assert bool(((got == 0) | ((got >= 0.1) & (got <= 0.42))).all())
    with pytest.raises(ValueError, match="clip_min"):
        D.intrinsic_reward(div, ones, [0] * 4, clip_min=1.0, clip_max=0.5)


def test_lambda_schedules():
    lam = 0.1
    assert [D.lambda_schedule(t, lam=lam, schedule="cut") for t in (0, 99, 100, 400)] == [lam, lam, 0.0, 0.0]
    assert D.lambda_schedule(10_000, lam=lam, schedule="constant") == lam
    cos = [D.lambda_schedule(t, lam=lam, schedule="cosine") for t in (50, 100, 125, 150, 200)]
    assert cos == pytest.approx([lam, lam, lam * math.sqrt(0.5), 0.0, 0.0], abs=1e-12)  # cos(pi/4) at t0 + delta/2
    # the code's ED factor (docs/methods.md §3.9 #4): -1 at t = 0, 0 at t = 50, -> 1 towards 100, then cut to 0
    code = [D.lambda_schedule(t, lam=lam, schedule="code_equ") for t in (0, 50, 99, 100)]
    assert code == pytest.approx([-lam, 0.0, lam * math.cos(0.01 * math.pi), 0.0], abs=1e-12)
    with pytest.raises(ValueError, match="schedule"):
        D.lambda_schedule(0, lam=lam, schedule="linear")
    with pytest.raises(ValueError, match="delta"):
        D.lambda_schedule(0, lam=lam, schedule="cosine", delta=0)


def test_shaped_advantages_lambda_cancels_in_all_correct_groups():
    # docs/methods.md §3.9 #3: an all-correct group under "all_correct_group" ranks by diversity alone, whatever lambda
    ids = torch.tensor([0, 0, 0, 0])
    rewards, div = torch.ones(4), torch.tensor([0.1, 0.5, 0.9, 0.3])
    a_small, _ = D.shaped_advantages(rewards, div, ids, lam=0.01)
    a_big, m = D.shaped_advantages(rewards, div, ids, lam=1.0)
    assert torch.allclose(a_small, a_big, rtol=1e-3) and a_big.abs().sum() > 1  # lam * std >> eps
    assert m["diver/bonus_frac"] == 1.0
    # a mixed group with the paper's gate: lambda trades diversity against correctness
    mixed = torch.tensor([1.0, 1.0, 0.0, 0.0])
    b_small, _ = D.shaped_advantages(mixed, div, ids, lam=0.01, condition="correct")
    b_big, _ = D.shaped_advantages(mixed, div, ids, lam=1.0, condition="correct")
    assert not torch.allclose(b_small, b_big, atol=1e-3)
    # the code's TD gate gives a mixed group no bonus: plain GRPO
    plain, _ = D.shaped_advantages(mixed, div, ids, lam=1.0)
    assert torch.allclose(plain, D.shaped_advantages(mixed, torch.zeros(4), ids, lam=1.0)[0])


def test_shaped_rewards_gate_and_nan():
    rewards = torch.tensor([1.0, 0.0, float("nan"), 1.0])
    s, m = D.shaped_rewards(rewards, torch.full((4,), 0.5), [0, 0, 0, 0], lam=0.2, condition="correct")
    assert s[[0, 1, 3]].tolist() == pytest.approx([1.1, 0.0, 1.1])  # r + 0.2 * 0.5 only where correct
    assert math.isnan(s[2])  # unscorable stays unscorable
    assert m["diver/bonus_frac"] == 0.5


def test_potential_shaping_telescopes():
    phi = torch.tensor([[0.2, 0.5, 0.4, 9e9], [0.3, float("inf"), float("nan"), 1.0]])  # (B, T) garbage in padding
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    r = D.potential_shaping(phi, mask, gamma=1.0)
    assert r[0].tolist() == pytest.approx([0.2, 0.3, -0.1, 0.0])  # Phi_t - Phi_{t-1}, Phi([q]) = 0
    assert r.sum(-1).tolist() == pytest.approx([0.4, 0.3])  # the terminal potential
    # gamma = 0.5: 0.5 * 0.2 - 0, 0.5 * 0.5 - 0.2, 0.5 * 0.4 - 0.5
    assert D.potential_shaping(phi, mask, gamma=0.5)[0, :3].tolist() == pytest.approx([0.1, 0.05, -0.3])


# ------------------------------------------------------------------ logging metrics


def test_group_diversity_metrics_hand_example():
    texts, ids = ["a b a", "a c", "x x", "x x"], [0, 0, 1, 1]
    m = D.group_diversity_metrics(texts, ids, weights=(1.0,))
    # group 0: unigrams a b a a c -> 3/5; bigrams (a b)(b a)(a c) -> 3/3. group 1: 1/4 and 1/2
    assert m["diversity/distinct_1"] == pytest.approx((0.6 + 0.25) / 2)
    assert m["diversity/distinct_2"] == pytest.approx((1.0 + 0.5) / 2)
    # group 0: BLEU-1(ref "a b a", hyp "a c") = 1/2 * exp(1 - 3/2); BLEU-1(ref "a c", hyp "a b a") = 1/3; group 1: 1
    g0 = (0.5 * math.exp(-0.5) + 1 / 3) / 2
    assert m["diversity/self_bleu"] == pytest.approx((g0 + 1.0) / 2)
    td = D.textual_diversity(texts, ids, weights=(1.0,))
    assert m["diversity/self_bleu"] == pytest.approx(1 - td.mean().item())  # equal group sizes


# ------------------------------------------------------------------ registered reward


def _samples(prompts):
    return [Sample(prompt=p, answer="1", task="t", index=i) for i, p in enumerate(prompts)]


def test_diversity_reward_factory():
    assert "diversity" in REWARDS.names()
    with pytest.raises(ValueError, match="kind"):
        REWARDS.build("diversity", kind="semantic")
    with pytest.raises(ValueError, match="has no option 'lam'"):
        REWARDS.build("diversity", lam=0.1)
    texts = ["$1 = 1$ $a$", "$1 = 1$ $b$", "$1=1$", "$q$"]
    prompts = ["p", "p", "r", "r"]
    samples = [Sample(prompt=p, answer="1", task="t", index=i) for i, p in zip([0, 0, 1, 1], prompts)]
    fn = REWARDS.build("diversity", kind="equational", condition="correct", schedule="constant")
    with pytest.raises(ValueError, match="correctness"):
        fn(samples, texts)
    # groups from consecutive prompts: ED = (0.5, 0.5 | 1, 1), capped at 0.68; sample 2 is incorrect
    assert fn(samples, texts, correct=[1, 1, 0, 1]) == pytest.approx([0.5, 0.5, 0.0, 0.68])
    assert fn(samples, texts, correct=[1, 1, 0, 1], group_ids=[0, 0, 0, 0]) == pytest.approx([0.5, 0.5, 0, 0.68])
    cut = REWARDS.build("diversity", kind="equational", condition="correct")  # default schedule: cut at t = 100
    with pytest.raises(ValueError, match="step"):
        cut(samples, texts, correct=[1] * 4)
    assert cut(samples, texts, correct=[1] * 4, step=100) == [0.0] * 4


def test_diversity_reward_through_combine_rewards():
    texts = ["the answer is 1 because 1 + 0 = 1", "the answer is 1 since 0 + 1 = 1", "2", "1"]
    samples = _samples(["p", "p", "q", "q"])
    samples[1].index = samples[0].index = 0
    samples[3].index = samples[2].index = 1
    fn = REWARDS.build("diversity", correctness="exact", correctness_kwargs={"extract": "none"},
                       schedule="constant", smoothing="add1")
    rewards, _, _ = combine_rewards([("diversity", 0.1, fn)], samples, texts)
    # group 0 is all wrong (exact match of the whole text fails), group 1 has one wrong -> no bonus anywhere
    assert rewards.tolist() == [0.0] * 4
    texts = ["1 ", "1", "1", "1"]
    fn_char = REWARDS.build("diversity", correctness="exact", correctness_kwargs={"extract": "none"},
                            schedule="constant", unit="char", weights=(1.0,))
    rewards, _, _ = combine_rewards([("diversity", 0.1, fn_char)], samples, texts)
    # both groups all correct (exact ignores spacing); group 1 is identical -> TD 0. Group 0, characters:
    # BLEU-1(ref "1 ", hyp "1") = p1 1 * BP exp(1 - 2/1); BLEU-1(ref "1", hyp "1 ") = p1 1/2 * BP 1
    b = 0.5 * (math.exp(1 - 2) + 0.5)
    assert rewards.tolist() == pytest.approx([0.1 * (1 - b)] * 2 + [0.0] * 2, abs=1e-7)


# ------------------------------------------------------------------ hostile inputs


@pytest.mark.filterwarnings("ignore:diversity. median completion")
def test_hostile_inputs_return_with_bounded_work():
    huge = "x" * 1_000_000
    words = " ".join(f"w{i}" for i in range(200_000))  # ~1.5 MB of distinct words
    digits = "$" + "9" * 100_000 + "$ = " + "7" * 100_000
    unclosed = "\\(" * 500_000 + "\\[" * 10_000  # quadratic for the code's regexes
    texts = [huge, words, digits, unclosed]
    for horizon in (1000, None):
        td = D.textual_diversity(texts, [0] * 4, horizon_chars=horizon)
        ed = D.equational_diversity(texts, [0] * 4, horizon_chars=horizon)
        assert bool(((td >= 0) & (td <= 1)).all()) and bool(((ed >= 0) & (ed <= 1)).all())
        m = D.group_diversity_metrics(texts, [0, 0, 1, 1], horizon_chars=horizon)
        assert 0 <= m["diversity/distinct_1"] <= 1
    assert len(D.tokenize(words, horizon_chars=None)) <= 32_768  # work is bounded by max_chars
    assert D.extract_equations(digits, horizon_chars=None, max_chars=200_000) == {"9" * 100_000}
