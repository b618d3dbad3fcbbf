"""ExGRPO (arXiv 2510.02245; docs/methods.md §2): rlvr.buffers.exgrpo and rlvr.algos.exgrpo.

Checks: hand-worked Gaussian bucket probabilities; seeded sampling frequencies against them (chi-square);
over-subscribed buckets hand their excess to buckets with room and no question is drawn twice; replay counts;
retirement of all-correct groups (pool, buckets, dataset floor); the start threshold (strict, permanent);
bucket accuracy over fresh rows only vs the legacy rule; dedupe keeps the original behaviour log-probs;
lowest-entropy selection with a fake entropy function over known distributions; clean trajectory entropy vs a
loop over valid tokens and its indifference to padding garbage; f(w) = w/(w+beta) values and autograd gradient
beta/(w+beta)^2; exgrpo_mixed equals ppo_clip (before the switch) / reinforce (after) on fresh rows, -A f(w) on
replayed rows, with masked garbage not leaking; mixed-group advantages; state_dict round trip.
"""

import io
import math

import pytest
import torch

from rlvr import ops
from rlvr.algos import LOSSES
from rlvr.algos.exgrpo import mixed_group_advantages, replay_old_logp, shaped_weight
from rlvr.buffers import (
    BUFFERS,
    ExperienceBuffer,
    NoBuffer,
    pad_trajectories,
    replay_count,
    sample_from_buckets,
    trajectory_entropy,
)

F64 = torch.float64
K = 8


def _group(k: int, *, replay: bool = False, seed: int = 0, T: int = 3):
    """K rows, the first k correct (the replayed row, if any, is row 0 and correct); distinct token ids per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 1000, (K, T), generator=g)
    rewards = torch.tensor([1.0] * k + [0.0] * (K - k))
    is_replay = torch.zeros(K, dtype=torch.bool)
    is_replay[0] = replay
    return dict(rewards=rewards, completion_ids=ids, completion_mask=torch.ones(K, T, dtype=torch.long),
                logp=torch.full((K, T), -0.5), prompt_ids=torch.tensor([0, 0, 5, 6]),
                prompt_mask=torch.tensor([0, 0, 1, 1]), is_replay=is_replay)


def _buffer(counts: dict[int, int], **kw) -> ExperienceBuffer:
    """A started buffer with counts[k] questions whose latest group had k of K correct."""
    buf = ExperienceBuffer(group_size=K, **kw)
    buf.started = True
    q = 0
    for k, n in counts.items():
        for _ in range(n):
            buf.observe_group(q, step=0, **_group(k, seed=q))
            q += 1
    return buf


def test_gaussian_bucket_probs_hand_worked():
    probs = _buffer({k: 1 for k in range(1, 8)}).bucket_probs()
    # w(k) ∝ exp(-(k - 4)^2 / 2): relative to k = 4, k = 3/5 -> e^-0.5, 2/6 -> e^-2, 1/7 -> e^-4.5
    p4 = probs[4 / 8]
    for k, rel in [(3, math.exp(-0.5)), (5, math.exp(-0.5)), (2, math.exp(-2)), (6, math.exp(-2)),
                   (1, math.exp(-4.5)), (7, math.exp(-4.5))]:
        assert probs[k / 8] / p4 == pytest.approx(rel, rel=1e-12)
    assert sum(probs.values()) == pytest.approx(1.0)
    # only non-empty buckets count: {1, 4, 7} -> p4 = 1 / (1 + 2 e^-4.5) = 1 / 1.022218 = 0.978265
    probs = _buffer({1: 1, 4: 1, 7: 1}).bucket_probs()
    assert probs[0.5] == pytest.approx(1 / (1 + 2 * math.exp(-4.5)), rel=1e-12)
    assert probs[0.5] == pytest.approx(0.978265, abs=1e-6)
    # the reference's 'linear' alternative: w = Acc -> {2/8, 4/8} gives 1/3, 2/3
    probs = _buffer({2: 1, 4: 1}, weighting="linear").bucket_probs()
    assert list(probs.values()) == pytest.approx([1 / 3, 2 / 3], rel=1e-12)


def test_sampling_frequencies_match_bucket_probs():
    p = torch.tensor([math.exp(-4.5), 1.0, math.exp(-4.5)], dtype=F64)
    p = p / p.sum()
    buckets = [list(range(100)), list(range(100, 200)), list(range(200, 300))]  # room for all 64: no overflow
    g = torch.Generator().manual_seed(0)
    seen = torch.zeros(3)
    draws = 2000
    for _ in range(draws):
        picked = torch.tensor(sample_from_buckets(buckets, p, 64, generator=g))
        seen += torch.bincount(picked // 100, minlength=3)
    expected = p * draws * 64
    chi2 = float(((seen.double() - expected) ** 2 / expected).sum())
    assert chi2 < 13.8  # chi-square, 2 dof, p = 0.001


def test_overflow_goes_to_buckets_with_room_and_no_question_twice():
    # docs/methods.md §2.9 #1: {4: 3 questions, 1: 100}, n = 10 -> bucket 4 saturates at 3, its excess 7 goes to
    # bucket 1
    buf = _buffer({4: 3, 1: 100})
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        picked = buf.sample_questions(20, generator=g)  # floor(20 * 0.5) = 10
        assert len(picked) == 10 and len(set(picked)) == 10
        assert sorted(q for q in picked if q < 3) == [0, 1, 2]  # questions 0-2 are the k = 4 bucket
    # {1, 4, 7} x 50, n = 64: bucket 4 (p = 0.978) always fills to 50; 14 split evenly between 1 and 7
    buckets = [list(range(50)), list(range(50, 100)), list(range(100, 150))]
    p = torch.tensor([math.exp(-4.5), 1.0, math.exp(-4.5)], dtype=F64)
    ones = 0
    for _ in range(400):
        picked = torch.tensor(sample_from_buckets(buckets, p / p.sum(), 64, generator=g))
        counts = torch.bincount(picked // 50, minlength=3)
        assert counts[1] == 50 and counts.sum() == 64 and picked.unique().numel() == 64
        ones += int(counts[0])
    assert ones / 400 == pytest.approx(7, abs=0.5)  # sd of the mean ~ 0.09


def test_all_buckets_full_drops_the_rest_with_a_warning():
    with pytest.warns(UserWarning, match="dropping 3 of 5"):
        assert sorted(sample_from_buckets([["a", "b"]], torch.tensor([1.0], dtype=F64), 5)) == ["a", "b"]


def test_replay_count():
    assert replay_count(128, 1000) == (64, 64)
    assert replay_count(128, 10) == (10, 118)
    assert replay_count(100, 1000, ratio=0.29) == (29, 71)  # 0.29 * 100 = 28.999... in floating point
    with pytest.raises(ValueError, match="ratio"):
        replay_count(8, 8, ratio=1.5)


def test_retirement_removes_question_for_good_and_respects_dataset_floor():
    buf = _buffer({3: 1})
    assert buf.num_valid == 1
    assert buf.observe_group(0, step=1, **_group(K, seed=5)) == "retired"
    assert buf.num_valid == 0 and 0 not in buf.pool and buf.buckets() == {} and buf.retired == {0: 1}
    assert buf.observe_group(0, step=2, **_group(3, seed=6)) == "retired"  # never pooled again
    assert buf.num_valid == 0
    # mixed group: replayed row + K-1 fresh all correct retires too
    buf = _buffer({3: 1})
    assert buf.observe_group(0, step=1, **_group(K, replay=True)) == "retired"
    # dataset filter: drop retired only if more than B + 20 questions remain
    assert buf.excluded(30, batch_size=8) == {0}
    assert buf.excluded(29, batch_size=8) == set()


def test_start_threshold_is_strict_and_permanent():
    buf = ExperienceBuffer(group_size=K)
    assert buf.observe_group(0, step=0, **_group(3)) == "skipped" and buf.num_valid == 0  # no collection yet
    assert buf.sample_questions(16) == []
    buf.end_step(torch.tensor([1.0] * 7 + [0.0] * 13), step=0)  # 0.35 is not > 0.35
    assert not buf.started
    metrics = buf.end_step(torch.tensor([1.0] * 3 + [0.0] * 5), step=1)  # 0.375
    assert buf.started and metrics["exgrpo/batch_solved"] == 0.375 and metrics["exgrpo/started"] == 1.0
    buf.end_step(torch.zeros(8), step=2)
    assert buf.started
    assert buf.observe_group(0, step=3, **_group(3)) == "stored" and len(buf.pool[0]) == 3


def test_bucket_accuracy_uses_fresh_rows_only_unless_legacy():
    new, old = _buffer({2: 1}), _buffer({2: 1}, legacy_bucket_update=True)
    for buf in (new, old):
        assert buf.acc[0] == (2, 8)
        buf.observe_group(0, step=1, **_group(4, replay=True, seed=3))  # replayed + 3 of 7 fresh correct
    assert new.acc[0] == (3, 7) and old.acc[0] == (4, 8)
    for buf in (new, old):
        buf.observe_group(0, step=2, **_group(0, seed=4))  # a fresh group with no correct answer
    assert new.acc[0] == (0, 8) and old.acc[0] == (4, 8)  # legacy keeps the old bucket


def test_dedupe_keeps_original_behaviour_logp_and_trims_padding():
    buf = _buffer({1: 1})
    stored = buf.pool[0][0]
    assert stored.prompt_ids.tolist() == [5, 6] and stored.step == 0
    again = _group(2, replay=True, seed=0)  # row 0 carries the same tokens with newer log-probs
    again["logp"] = torch.full((K, 3), -9.0)
    again["completion_mask"][1, 2] = 0  # row 1: trailing padding is cut
    buf.observe_group(0, step=4, **again)
    assert len(buf.pool[0]) == 2 and torch.equal(buf.pool[0][0].logp, torch.full((3,), -0.5))
    assert buf.pool[0][1].completion_ids.numel() == 2 and buf.pool[0][1].step == 4


def test_trajectory_entropy_is_the_mean_over_valid_tokens_only():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(4, 6, generator=g, dtype=F64)
    mask = torch.rand(4, 6, generator=g) > 0.4
    mask[0] = torch.tensor([1, 0, 1, 1, 0, 0])  # interior gap (tool output)
    mask[3] = False
    loop = []
    for b in range(4):
        vals = [h[b, t].item() for t in range(6) if mask[b, t]]
        loop.append(sum(vals) / len(vals) if vals else 0.0)
    out = trajectory_entropy(h, mask)
    assert out.tolist() == pytest.approx(loop, abs=1e-12)
    for junk in (float("nan"), float("inf"), 1e30):
        assert torch.equal(trajectory_entropy(h.masked_fill(~mask, junk), mask), out)


def _entropy_score_fn(calls: list):
    """Fake policy: token id v is produced by softmax([v, 0, 0, 0]) (id 0 -> uniform, H = log 4); padding gets
    NaN entropy so a single padded position would poison the mean."""
    def score(trajs):
        calls.append(len(trajs))
        batch = pad_trajectories(trajs, pad_token_id=0)
        ids, mask = batch["completion_ids"], batch["completion_mask"]
        logits = torch.zeros(*ids.shape, 4, dtype=F64)
        logits[..., 0] = ids.double()
        h = ops.entropy_from_logits(logits).masked_fill(~mask, float("nan"))  # (n, T)
        return trajectory_entropy(h, mask)
    return score


def _entropy_of_id(v: float) -> float:
    p = torch.softmax(torch.tensor([v, 0.0, 0.0, 0.0], dtype=F64), 0)
    return float(-(p * p.log()).sum())


def test_select_trajectories_picks_lowest_mean_entropy():
    buf = ExperienceBuffer(group_size=K)
    buf.started = True
    one = torch.ones(K, 4, dtype=torch.long)
    ids = torch.zeros(K, 4, dtype=torch.long)
    ids[0, :2] = 0  # 2 uniform tokens then padding: H = log 4 = 1.386
    ids[1] = torch.tensor([6, 6, 6, 0])  # 3 peaked + 1 uniform: H = (3 H(6) + log 4) / 4 = 0.388 (lowest)
    ids[2] = torch.tensor([2, 2, 2, 2])  # H(2) = 0.893 each
    mask = one.clone()
    mask[0, 2:] = 0
    rewards = torch.tensor([1.0, 1.0, 1.0] + [0.0] * 5)
    buf.observe_group("q", rewards, step=0, completion_ids=ids, completion_mask=mask, logp=torch.zeros(K, 4),
                      prompt_ids=torch.tensor([7]))
    buf.observe_group("r", rewards[:4], step=0, completion_ids=ids[[2, 2, 0, 3]], completion_mask=one[:4],
                      logp=torch.zeros(4, 4), prompt_ids=torch.tensor([7]))  # dedupe: 2 distinct, [2,2,2,2] first
    calls = []
    chosen, metrics = buf.select_trajectories(["q", "r"], _entropy_score_fn(calls))
    assert calls == [5]  # one scoring call for all candidates
    assert chosen[0].completion_ids.tolist() == [6, 6, 6, 0] and chosen[0].question == "q"
    h_q = (3 * _entropy_of_id(6) + math.log(4)) / 4
    h_r = _entropy_of_id(2)  # [2,2,2,2] vs [0,0,0,0] (uniform): the former wins
    assert chosen[1].completion_ids.tolist() == [2, 2, 2, 2]
    assert metrics["exgrpo/selected_entropy"] == pytest.approx((h_q + h_r) / 2, rel=1e-12)
    # ties go to the oldest; the cap scores only the newest trajectories
    tie, _ = buf.select_trajectories(["q"], lambda trajs: torch.ones(len(trajs)))
    assert tie[0] is buf.pool["q"][0]
    buf.config["max_scored_per_question"] = 1
    capped, _ = buf.select_trajectories(["q"], _entropy_score_fn(calls))
    assert calls[-1] == 1 and capped[0] is buf.pool["q"][-1]


def test_shaped_weight_values_and_gradient():
    w = torch.tensor([0.01, 1.0, 10.0], dtype=F64, requires_grad=True)
    f = shaped_weight(w.log(), beta=0.1)
    assert f.tolist() == pytest.approx([0.01 / 0.11, 1 / 1.1, 10 / 10.1], rel=1e-12)  # 0.0909, 0.9091, 0.9901
    (grad,) = torch.autograd.grad(f.sum(), w)
    assert grad.tolist() == pytest.approx([0.1 / 0.11**2, 0.1 / 1.1**2, 0.1 / 10.1**2], rel=1e-12)  # beta/(w+beta)^2
    assert shaped_weight(torch.tensor([800.0, -800.0])).tolist() == [1.0, 0.0]  # no overflow at huge |log w|


def _mixed_batch():
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(4, 5, generator=g, dtype=F64) - 0.5
    logp = (old + 0.4 * torch.randn(4, 5, generator=g, dtype=F64)).requires_grad_()
    adv = torch.tensor([1.0, -0.5, 0.75, -1.0], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]).bool()
    is_replay = torch.tensor([False, True, False, True])
    return logp, old, adv, mask, is_replay


@pytest.mark.parametrize("mixed,on_policy_clip,ref", [(False, False, "ppo_clip"), (True, True, "ppo_clip"),
                                                      (True, False, "reinforce")])
def test_fresh_rows_match_reference_loss_and_replayed_rows_use_shaped_weight(mixed, on_policy_clip, ref):
    logp, old, adv, mask, is_replay = _mixed_batch()
    fn = LOSSES.lookup("exgrpo_mixed")
    loss, metrics = fn(logp, old, adv, mask, is_replay=is_replay, mixed_mode=mixed, on_policy_clip=on_policy_clip)
    kw = {"clip_low": 0.2} if ref == "ppo_clip" else {}
    ref_loss, _ = LOSSES.lookup(ref)(logp, old, adv, mask, **kw)
    fresh = ~is_replay
    assert torch.equal(loss[fresh], ref_loss[fresh])
    (g, g_ref) = (torch.autograd.grad(x[fresh].sum(), logp, retain_graph=True)[0] for x in (loss, ref_loss))
    assert torch.equal(g, g_ref)
    # replayed rows: -A w / (w + 0.1), w = exp(logp - old); gradient -A w beta / (w + beta)^2
    w = (logp - old).detach().exp()
    expect = torch.where(mask, -adv[:, None] * w / (w + 0.1), 0)
    assert torch.allclose(loss[is_replay], expect[is_replay], atol=1e-12)
    (g_rep,) = torch.autograd.grad(loss[is_replay].sum(), logp)
    expect_g = torch.where(mask, -adv[:, None] * w * 0.1 / (w + 0.1) ** 2, 0)
    assert torch.allclose(g_rep[is_replay], expect_g[is_replay], atol=1e-12) and (g_rep[fresh] == 0).all()
    # subset metrics carry their own counts (rows, tokens, replayed tokens), so micro-batching does not bias them
    assert metrics["exgrpo/replay_frac"] == (0.5, 4)
    assert metrics["exgrpo/replay_token_frac"].value.item() == pytest.approx(5 / 14)
    fw = metrics["exgrpo/fw_mean"]
    assert fw.value.item() == pytest.approx((w / (w + 0.1))[mask & is_replay[:, None]].mean().item()) and fw.weight == 5


def test_no_replay_rows_is_exactly_ppo_clip_and_masked_garbage_does_not_leak():
    logp, old, adv, mask, is_replay = _mixed_batch()
    fn = LOSSES.lookup("exgrpo_mixed")
    a, _ = fn(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    b, _ = LOSSES.lookup("ppo_clip")(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert torch.equal(a, b)
    clean, m_clean = fn(logp, old, adv, mask, is_replay=is_replay, mixed_mode=True)
    dirty_logp = logp.detach().masked_fill(~mask, float("nan")).requires_grad_()
    dirty, m_dirty = fn(dirty_logp, old.masked_fill(~mask, float("inf")), adv, mask, is_replay=is_replay,
                        mixed_mode=True)
    values = lambda m: [torch.as_tensor(v.value if hasattr(v, "value") else v) for v in m.values()]  # noqa: E731
    assert torch.equal(clean, dirty) and all(torch.equal(a, b) for a, b in zip(values(m_clean), values(m_dirty)))
    (g,) = torch.autograd.grad(dirty.sum(), dirty_logp)
    assert torch.isfinite(g).all() and (g[~mask] == 0).all()
    with pytest.raises(ValueError, match="is_replay"):
        fn(logp, old, adv, mask, is_replay=torch.zeros(3, dtype=torch.bool))


def test_mixed_group_advantages_and_behaviour_logp():
    # group 0: replayed (r = 1) + fresh [0, 1, 0] -> mean 0.5; group 1: fresh all 0 -> zero variance
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    group_ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    is_replay = torch.tensor([True] + [False] * 7)
    adv, metrics = mixed_group_advantages(rewards, group_ids, is_replay)
    assert adv.tolist() == [0.5, -0.5, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0]
    assert metrics["exgrpo/zero_var_frac_fresh"] == (1.0, 1) and metrics["exgrpo/zero_var_frac_replay"] == (0.0, 1)
    with pytest.raises(ValueError, match="more than one replayed"):
        mixed_group_advantages(rewards, group_ids, torch.tensor([True, True] + [False] * 6))
    old = torch.zeros(2, 3)
    out = replay_old_logp(old, torch.full((2, 3), -2.0), torch.tensor([False, True]))
    assert out.tolist() == [[0.0] * 3, [-2.0] * 3]


def test_state_dict_round_trip():
    buf = _buffer({2: 3, 4: 3, 6: 2}, max_per_question=5)
    buf.observe_group(1, step=1, **_group(K, seed=9))  # retire one
    buf.observe_group(2, step=2, **_group(5, replay=True, seed=2))
    blob = io.BytesIO()
    torch.save(buf.state_dict(), blob)
    blob.seek(0)
    other = ExperienceBuffer(group_size=K, max_per_question=5)
    other.load_state_dict(torch.load(blob, weights_only=True))
    assert other.started and other.retired == buf.retired and other.acc == buf.acc and other.history == buf.history
    assert other.buckets() == buf.buckets()
    for q in buf.pool:
        for a, b in zip(buf.pool[q], other.pool[q], strict=True):
            assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logp, b.logp) and a.step == b.step
    draw = lambda x: x.sample_questions(10, generator=torch.Generator().manual_seed(7))  # noqa: E731
    assert draw(other) == draw(buf)
    with pytest.raises(ValueError, match="group_size"):
        ExperienceBuffer(group_size=4).load_state_dict(buf.state_dict())
    assert isinstance(BUFFERS.build("none"), NoBuffer) and BUFFERS.build("none").state_dict() == {}


# ---- ExGRPO in the loop: rlvr.buffers.exgrpo.ExGRPOBuffer -----------------------------------------------------------


def _loop_buffer(micro_batch_size=3, **kw):
    from rlvr.buffers import ExGRPOBuffer
    from rlvr.tasks import TASKS

    task = TASKS.build("arithmetic", seed=0, digits=1, ops="+")
    return ExGRPOBuffer(task=task, group_size=4, seed=0, temperature=0.7, micro_batch_size=micro_batch_size, **kw)


def _trajectories(n, seed=0):
    from rlvr.buffers import Trajectory

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        T = 2 + i % 4
        out.append(Trajectory(question=i % 3, prompt_ids=torch.randint(3, 40, (3 + i % 2,), generator=g),
                              completion_ids=torch.randint(3, 40, (T,), generator=g),
                              completion_mask=torch.ones(T, dtype=torch.bool), logp=-torch.rand(T, generator=g),
                              reward=1.0, step=i))
    return out


def test_selection_scores_candidates_in_micro_batches():
    """The lowest-entropy selection runs its no-grad forward `micro_batch_size` rows at a time (one forward over every
    candidate would hold N x T x V entropies) and gives the values of one big forward."""
    from rlvr.policies import HFCausalLM

    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    sizes, real = [], policy.logp
    policy.logp = lambda batch, **kw: sizes.append(len(batch)) or real(batch, **kw)
    trajs = _trajectories(7)
    small = _loop_buffer(3).entropies(policy, trajs)
    assert sizes == [3, 3, 1]
    whole = _loop_buffer(64).entropies(policy, trajs)
    torch.testing.assert_close(small, whole, rtol=1e-5, atol=1e-6)
    assert small.shape == (7,) and (small > 0).all()


def _observed_batch(policy, rewards, *, replay_row=None):
    """Two groups of 4 rows with distinct sampler (rollout_logp = -9) and trainer (old_logp = -1) log-probs."""
    from rlvr.policies import SamplingParams

    buf = _loop_buffer()
    samples = [buf.task[q] for q in (0, 1) for _ in range(4)]
    batch = policy.generate(samples, group_ids=torch.tensor([0] * 4 + [1] * 4), seeds=torch.arange(8),
                            params=SamplingParams(max_new_tokens=3))
    m = batch.loss_mask
    batch = batch.replace(rewards=torch.tensor(rewards), rollout_logp=-9.0 * m, old_logp=-1.0 * m)
    if replay_row is not None:
        flags = torch.zeros(8, dtype=torch.bool)
        flags[replay_row] = True
        batch.extras["is_replay"] = flags
    return buf, batch


def test_observe_stores_the_trainers_pi_old_and_corrects_replayed_rows():
    """Stored trajectories keep the trainer's recomputed pi_old (docs/methods.md §2.1 step 6), not the sampler's
    log-probs; replayed rows train against their recorded pi_past (their rollout_logp); rows carry the batch's
    loss mode."""
    from rlvr.metrics import Metrics
    from rlvr.policies import HFCausalLM

    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    buf, batch = _observed_batch(policy, [1.0, 0.0, 0.0, 1.0] + [0.0] * 4, replay_row=4)
    buf.pool.started = True  # mixed mode: correct rows are stored
    out = buf.observe(batch, step=3, log=(log := Metrics()))
    stored = buf.pool.pool[0]
    assert len(stored) == 2 and all(torch.all(t.logp == -1.0) for t in stored)
    assert torch.equal(out.old_logp[4], batch.rollout_logp[4]) and torch.equal(out.old_logp[:4], batch.old_logp[:4])
    assert out.extras["mixed_mode"].all() and out.extras["is_replay"].tolist() == [False] * 4 + [True] + [False] * 3
    assert log.local()["exgrpo/groups_stored"] == 2


def test_replay_metrics_are_not_biased_by_micro_batching():
    """exgrpo/fw_mean is a mean over replayed tokens: split into micro-batches (some without any replayed token) it
    equals the whole batch's value, which is the plain mean of f(w) over the replayed tokens."""
    from rlvr.algos import AGGREGATIONS
    from rlvr.distributed import World
    from rlvr.metrics import Metrics
    from rlvr.policies import HFCausalLM
    from rlvr.update import LossFns, micro_batch_loss

    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    _, batch = _observed_batch(policy, [1.0, 0.0, 0.0, 1.0] * 2, replay_row=0)
    g = torch.Generator().manual_seed(0)
    batch = batch.replace(advantages=torch.randn(8, generator=g), old_logp=batch.old_logp * 0.5,
                          extras={**batch.extras, "mixed_mode": torch.ones(8, dtype=torch.bool)})
    fns = LossFns(loss=LOSSES.bind("exgrpo_mixed", beta=0.1), aggregate=AGGREGATIONS.lookup("token_mean"),
                  loss_needs=LOSSES.needs("exgrpo_mixed"))
    values = {}
    for size in (8, 1):
        log = Metrics()
        n_tok = float(batch.loss_mask.sum())
        for s in range(0, 8, size):
            micro_batch_loss(policy, batch.select(list(range(s, s + size))), fns, n_tok, 8.0, World(), log)
        values[size] = log.local()["exgrpo/fw_mean"]
    with torch.no_grad():
        logp, _ = policy.logp(batch.select([0]))
    m = batch.loss_mask[0].bool()
    w = (logp[0][m] - batch.old_logp[0][m]).exp()
    assert values[1] == pytest.approx(values[8], rel=1e-6) == pytest.approx(float((w / (w + 0.1)).mean()), rel=1e-5)
