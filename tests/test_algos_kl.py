"""rlvr.algos.kl: hand-worked values and verl's k3 clamps; exact expectations on small categorical distributions
(sum over every outcome weighted by its probability, no sampling): E[k1] = E[k3] = KL(pi || ref), k3 >= 0,
E[grad k1] = 0, E[grad k2] = grad KL(pi || ref), E[grad k3] = grad KL(ref || pi); k3_plus has k3's value and
k2's gradient."""

import math

import pytest
import torch

from rlvr.algos import KL_ESTIMATORS

F64 = torch.float64


def test_registered_names():
    assert KL_ESTIMATORS.names() == ["abs", "k1", "k2", "k3", "k3_plus"]


def test_hand_worked_values():
    # delta = logp - ref = 0.5: k1 0.5, abs 0.5, k2 0.125, k3 = e^-0.5 + 0.5 - 1 = 0.106531
    # delta = -0.5:             k1 -0.5, abs 0.5, k2 0.125, k3 = e^0.5 - 0.5 - 1 = 0.148721
    logp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    ref = torch.tensor([[-1.5, -1.5]], dtype=F64)
    want = {
        "k1": [0.5, -0.5],
        "abs": [0.5, 0.5],
        "k2": [0.125, 0.125],
        "k3": [0.106531, 0.148721],
        "k3_plus": [0.106531, 0.148721],
    }
    for name, values in want.items():
        assert KL_ESTIMATORS.lookup(name)(logp, ref)[0].tolist() == pytest.approx(values, abs=1e-6), name


def test_k3_verl_clamps():
    # ref - logp = 30 -> clamped to 20 -> e^20 - 21 -> clamped to 10; ref - logp = -30 -> e^-20 + 20 - 1 -> 10
    logp = torch.tensor([[0.0, -30.0]], dtype=F64)
    ref = torch.tensor([[-30.0, 0.0]], dtype=F64)
    assert KL_ESTIMATORS.lookup("k3")(logp, ref)[0].tolist() == [10.0, 10.0]
    unclamped = KL_ESTIMATORS.lookup("k3")(logp, ref, clamp=False)[0]  # TRL: no clamp
    assert unclamped[0].item() == pytest.approx(math.exp(-30) + 30 - 1)
    assert unclamped[1].item() == pytest.approx(math.exp(30) - 30 - 1)


def _categorical(seed, v=7):
    torch.manual_seed(seed)
    theta = torch.randn(v, dtype=F64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(v, dtype=F64), -1)
    return theta, ref


def _expect(name, theta, ref):
    """E_{o ~ pi_theta}[k(o)] with the sampling weights held fixed (samples do not move with theta)."""
    logp = torch.log_softmax(theta, -1)
    k = KL_ESTIMATORS.lookup(name)(logp[None], ref[None])[0]  # one "sequence" with one token per outcome
    return (logp.exp().detach() * k).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k1_and_k3_are_unbiased_for_kl(seed):
    theta, ref = _categorical(seed)
    p, logp = torch.softmax(theta, -1), torch.log_softmax(theta, -1)
    kl = (p * (logp - ref)).sum()
    assert _expect("k1", theta, ref).item() == pytest.approx(kl.item(), rel=1e-10)
    assert _expect("k3", theta, ref).item() == pytest.approx(kl.item(), rel=1e-10)
    assert (KL_ESTIMATORS.lookup("k3")(logp, ref) >= 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_expectations(seed):
    theta, ref = _categorical(seed)
    logp = torch.log_softmax(theta, -1)
    reverse = (logp.exp() * (logp - ref)).sum()  # KL(pi || ref)
    forward = (ref.exp() * (ref - logp)).sum()  # KL(ref || pi)
    grad = {name: torch.autograd.grad(_expect(name, theta, ref), theta)[0] for name in ["k1", "k2", "k3", "k3_plus"]}
    g_reverse, g_forward = (torch.autograd.grad(kl, theta, retain_graph=True)[0] for kl in (reverse, forward))
    assert torch.allclose(grad["k1"], torch.zeros_like(theta), atol=1e-12)
    assert torch.allclose(grad["k2"], g_reverse, atol=1e-12)
    assert torch.allclose(grad["k3"], g_forward, atol=1e-12)
    assert torch.allclose(grad["k3_plus"], g_reverse, atol=1e-12)
    assert not torch.allclose(g_forward, g_reverse, atol=1e-6)  # the two KLs really differ here


def test_k3_plus_value_is_k3():
    theta, ref = _categorical(3)
    logp = torch.log_softmax(theta, -1)
    assert torch.equal(KL_ESTIMATORS.lookup("k3_plus")(logp, ref), KL_ESTIMATORS.lookup("k3")(logp, ref))
