"""rlvr.algos.losses: PPO-clip against hand-worked values and a plain-Python loop (clip-higher, dual-clip, delta,
clip-fraction metrics, zero gradient where the clipped branch is active); GSPO token form has the sequence form's
gradient under seq_mean_token_mean; CISPO keeps every token's gradient; SAPO f(1) = 2/tau and f'(1) = 1; garbage
in masked positions changes neither loss nor gradient for every registered loss; Registry.bind catches typos."""

import math

import pytest
import torch

from rlvr.algos import AGGREGATIONS, LOSSES

F64 = torch.float64


def _ratios_case():
    """One row of 5 valid tokens with rho = [1.5, 0.5, 0.5, 1.5, 5.0], A = [+1, +1, -1, -1, -1], then padding."""
    old = torch.full((1, 6), -1.0, dtype=F64)
    rho = torch.tensor([[1.5, 0.5, 0.5, 1.5, 5.0, 1.0]], dtype=F64)
    logp = (old + rho.log()).requires_grad_()
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, -1.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    return logp, old, adv, mask


def test_ppo_clip_hand_worked_values_and_gradient():
    logp, old, adv, mask = _ratios_case()
    loss, metrics = LOSSES.lookup("ppo_clip")(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    # 1: max(-1.5, -1.28) = -1.28 clipped     2: max(-0.5, -0.8) = -0.5 unclipped
    # 3: max(0.5, 0.8) = 0.8 clipped          4: max(1.5, 1.28) = 1.5 unclipped     5: max(5, 1.28) = 5
    assert loss[0].tolist() == pytest.approx([-1.28, -0.5, 0.8, 1.5, 5.0, 0.0], abs=1e-12)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    # d/dlogp of -A rho = -A rho where unclipped, exactly 0 where the clipped branch is active
    assert grad[0].tolist() == pytest.approx([0.0, -0.5, 0.0, 1.5, 5.0, 0.0], abs=1e-12)
    # low: rho < 0.8 and A < 0 -> token 3; high: rho > 1.28 and A > 0 -> token 1; over 5 valid tokens
    assert metrics["clip_ratio/low_mean"].item() == pytest.approx(0.2)
    assert metrics["clip_ratio/high_mean"].item() == pytest.approx(0.2)
    assert metrics["clip_ratio/region_mean"].item() == pytest.approx(0.4)
    # ppo_kl = mean(old - new) = -mean(log rho) = -log(1.5 * 0.5 * 0.5 * 1.5 * 5) / 5
    assert metrics["ppo_kl"].item() == pytest.approx(-math.log(2.8125) / 5, rel=1e-6)


def test_dual_clip_caps_negative_advantage_loss_and_kills_its_gradient():
    logp, old, adv, mask = _ratios_case()
    loss, metrics = LOSSES.lookup("ppo_clip")(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    # token 5: min(max(5, 1.28), 3 * 1) = 3; the others are below the cap and unchanged
    assert loss[0].tolist() == pytest.approx([-1.28, -0.5, 0.8, 1.5, 3.0, 0.0], abs=1e-12)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert grad[0, 4].item() == 0.0 and grad[0, 3].item() == pytest.approx(1.5)
    assert metrics["clip_ratio/dual_mean"].item() == pytest.approx(0.2)


def test_delta_equals_dual_clip_for_negative_and_does_nothing_for_positive_advantages():
    logp, old, adv, mask = _ratios_case()
    fn = LOSSES.lookup("ppo_clip")
    with_delta, _ = fn(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, delta=3.0)
    with_dual, _ = fn(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    assert torch.equal(with_delta, with_dual)
    pos = adv.abs()
    assert torch.equal(fn(logp, old, pos, mask, delta=3.0)[0], fn(logp, old, pos, mask)[0])


def _ppo_loop(logp, old, adv, mask, lo, hi, dual, delta):
    """Plain-Python PPO-clip (docs/methods.md §1.2), one token at a time."""
    out = [[0.0] * logp.shape[1] for _ in range(logp.shape[0])]
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if not mask[b, t]:
                continue
            a = adv[b].item()
            rho = math.exp(max(-20.0, min(20.0, logp[b, t].item() - old[b, t].item())))
            unclipped = min(rho, delta) if delta else rho
            loss = max(-a * unclipped, -a * min(max(rho, 1 - lo), 1 + hi))
            if dual and a < 0:
                loss = min(loss, -dual * a)
            out[b][t] = loss
    return torch.tensor(out, dtype=F64)


@pytest.mark.parametrize("dual,delta", [(None, None), (3.0, None), (None, 2.0), (2.5, 4.0)])
def test_ppo_clip_matches_loop_reference(dual, delta):
    torch.manual_seed(0)
    logp = -torch.rand(4, 9, dtype=F64) * 3
    old = logp + torch.randn(4, 9, dtype=F64) * 0.8
    adv = torch.randn(4, dtype=F64)
    mask = torch.rand(4, 9) > 0.3
    got, _ = LOSSES.lookup("ppo_clip")(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=dual, delta=delta)
    assert torch.allclose(got, _ppo_loop(logp, old, adv, mask, 0.2, 0.28, dual, delta), atol=1e-12)


def test_ppo_clip_rejects_bad_hyperparameters():
    x, m = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(ValueError, match="dual_clip"):
        LOSSES.lookup("ppo_clip")(x, x, torch.zeros(1), m, dual_clip=0.5)
    with pytest.raises(ValueError, match="advantages"):
        LOSSES.lookup("ppo_clip")(x, x, torch.zeros(3), m)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        LOSSES.lookup("ppo_clip")(x, torch.zeros(1, 3), torch.zeros(1), m)


def test_log_ratio_is_clamped_at_20():
    # log rho = 30 -> clamped to 20: loss -A e^20, gradient 0 (clamped)
    logp = torch.tensor([[30.0]], dtype=F64, requires_grad=True)
    loss, _ = LOSSES.lookup("reinforce")(logp, torch.zeros(1, 1, dtype=F64), torch.ones(1, dtype=F64), torch.ones(1, 1))
    assert loss.item() == pytest.approx(-math.exp(20.0))
    loss.sum().backward()
    assert logp.grad.item() == 0.0


def _random_batch(seed, clip_noise=0.1):
    torch.manual_seed(seed)
    lengths = torch.tensor([9, 2, 6, 1, 4])
    mask = torch.arange(9)[None] < lengths[:, None]  # (5, 9)
    logp = (-torch.rand(5, 9, dtype=F64) * 2).requires_grad_()
    old = logp.detach() + torch.randn(5, 9, dtype=F64) * clip_noise
    adv = torch.randn(5, dtype=F64)
    return logp, old, adv, mask


def test_gspo_token_gradient_equals_sequence_gradient_under_seq_mean_token_mean():
    logp, old, adv, mask = _random_batch(1, clip_noise=0.05)
    agg = AGGREGATIONS.lookup("seq_mean_token_mean")
    kw = {"clip_low": 0.01, "clip_high": 0.015}  # some sequences clip, some do not
    seq_loss, metrics = LOSSES.lookup("gspo")(logp, old, adv, mask, **kw)
    tok_loss, _ = LOSSES.lookup("gspo_token")(logp, old, adv, mask, **kw)
    region = metrics["clip_ratio/region_mean"]  # a fraction of sequences, with their count (a Mean)
    assert 0 < region.value.item() < 1 and region.weight.item() == 5
    (g_seq,) = torch.autograd.grad(agg(seq_loss, mask), logp)
    (g_tok,) = torch.autograd.grad(agg(tok_loss, mask), logp)
    assert torch.allclose(agg(seq_loss, mask), agg(tok_loss, mask), atol=1e-12)
    assert torch.allclose(g_seq, g_tok, atol=1e-12)
    assert g_seq.abs().sum() > 0


def test_gspo_sequence_ratio_hand_worked():
    # log rho = [0.1, 0.3] -> s = exp(0.2) = 1.221403; A = 1, widths 0.3/0.3 -> unclipped, L = -1.221403 per token
    old = torch.zeros(1, 3, dtype=F64)
    logp = torch.tensor([[0.1, 0.3, 7.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0]])
    loss, _ = LOSSES.lookup("gspo")(logp, old, torch.ones(1, dtype=F64), mask, clip_low=0.3, clip_high=0.3)
    assert loss[0].tolist() == pytest.approx([-math.exp(0.2), -math.exp(0.2), 0.0], abs=1e-12)
    with pytest.raises(ValueError, match="gspo_token"):
        LOSSES.lookup("gspo")(logp, old, torch.ones(1, 3, dtype=F64), torch.ones(1, 3))


@pytest.mark.parametrize("variant", ["two_sided", "upper_only"])
def test_cispo_gradient_is_clipped_detached_weight_times_advantage(variant):
    logp, old, adv, mask = _random_batch(2, clip_noise=0.5)
    loss, metrics = LOSSES.lookup("cispo")(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, variant=variant)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    rho = (logp.detach() - old).exp()
    w = rho.clamp(min=0.8 if variant == "two_sided" else None, max=1.28)
    want = torch.where(mask, -w * adv[:, None], 0)
    assert torch.allclose(grad, want, atol=1e-12)
    assert (grad[mask] != 0).all()  # unlike PPO-clip, no valid token loses its gradient
    assert 0 < metrics["clip_ratio/weight_mean"].item() < 1


def test_cispo_rejects_unknown_variant():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="upper_only"):
        LOSSES.lookup("cispo")(x, x, torch.zeros(1), torch.ones(1, 2), variant="lower")


def test_sapo_value_and_gradient_at_ratio_one():
    # on-policy rho = 1: f(1) = (4/tau) sigmoid(0) = 2/tau; f'(1) = 4 * 0.25 = 1
    # A = +2 (tau_pos = 1): L = -2 * 2 = -4;  A = -3 (tau_neg = 1.05): L = (2/1.05) * 3 = 5.714286
    logp = torch.tensor([[-0.7, -1.2]], dtype=F64, requires_grad=True)
    adv = torch.tensor([[2.0, -3.0]], dtype=F64)
    loss, metrics = LOSSES.lookup("sapo")(logp, logp.detach(), adv, torch.ones(1, 2), tau_pos=1.0, tau_neg=1.05)
    assert loss[0].tolist() == pytest.approx([-4.0, 6 / 1.05], abs=1e-12)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert grad[0].tolist() == pytest.approx([-2.0, 3.0], abs=1e-12)  # -A f'(1) rho = -A
    assert metrics["sapo/gate_grad_mean"].item() == pytest.approx(1.0)


def test_sapo_gate_decays_away_from_ratio_one():
    old = torch.zeros(1, 3, dtype=F64)
    logp = torch.tensor([[0.0, 1.0, 2.0]], dtype=F64, requires_grad=True)
    loss, _ = LOSSES.lookup("sapo")(logp, old, torch.ones(1, dtype=F64), torch.ones(1, 3))
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    # d/dlogp = -A f'(rho) rho with f'(rho) = 4 s (1 - s), s = sigmoid(rho - 1): the weight f'(rho) shrinks
    s = torch.sigmoid(logp.detach().exp() - 1)
    assert torch.allclose(grad, -4 * s * (1 - s) * logp.detach().exp(), atol=1e-12)
    assert (4 * s * (1 - s))[0].tolist() == sorted((4 * s * (1 - s))[0].tolist(), reverse=True)


def test_reinforce_on_policy_gradient_is_minus_advantage():
    logp, _, adv, mask = _random_batch(3)
    loss, _ = LOSSES.lookup("reinforce")(logp, logp.detach(), adv, mask)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert torch.allclose(grad, torch.where(mask, -adv[:, None].expand(-1, 9), 0), atol=1e-12)


GARBAGE = (float("nan"), float("inf"), -float("inf"), 1e30)


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("junk", GARBAGE)
def test_garbage_in_masked_positions_changes_neither_loss_nor_gradient(name, junk):
    logp, old, adv, mask = _random_batch(4, clip_noise=0.3)
    clean_logp = logp.detach().requires_grad_()
    dirty_logp = logp.detach().masked_fill(~mask, junk).requires_grad_()
    dirty_old = old.masked_fill(~mask, -junk)
    fn = LOSSES.lookup(name)
    clean, m_clean = fn(clean_logp, old, adv, mask)
    dirty, m_dirty = fn(dirty_logp, dirty_old, adv, mask)
    assert torch.equal(clean, dirty) and (dirty[~mask] == 0).all()
    for key in m_clean:
        assert torch.equal(torch.as_tensor(m_clean[key]), torch.as_tensor(m_dirty[key])), key
    (g_clean,) = torch.autograd.grad(clean.sum(), clean_logp)
    (g_dirty,) = torch.autograd.grad(dirty.sum(), dirty_logp)
    assert torch.equal(g_clean, g_dirty) and (g_dirty[~mask] == 0).all()


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if n != "gspo"])
def test_per_sequence_advantages_broadcast_like_per_token(name):
    logp, old, adv, mask = _random_batch(5, clip_noise=0.3)
    per_token_adv = adv[:, None].expand(-1, 9).clone()
    per_token_adv[~mask] = float("nan")  # garbage in padding of a (B, T) advantage too
    a, _ = LOSSES.lookup(name)(logp, old, adv, mask)
    b, _ = LOSSES.lookup(name)(logp, old, per_token_adv, mask)
    assert torch.equal(a, b)


def test_registry_bind_names_the_typo():
    with pytest.raises(ValueError, match="'clip_hihg'.*did you mean 'clip_high'"):
        LOSSES.bind("ppo_clip", clip_hihg=0.28)
    with pytest.raises(ValueError, match="choose from.*ppo_clip"):
        LOSSES.lookup("ppo")
