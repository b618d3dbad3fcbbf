"""rlvr.ops: masked reductions (hand values, garbage in padding changes neither value nor gradient), group
statistics against a plain-Python loop (NaN excluded, constant groups have std exactly 0), token log-probs and
entropy against the textbook formulas, with temperature."""

import math

import pytest
import torch

from rlvr import ops

GARBAGE = (float("nan"), float("inf"), -float("inf"), 1e30)


def test_masked_sum_mean_hand_values():
    x = torch.tensor([[1.0, 2.0, 5.0], [3.0, 7.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # kept: 1, 2, 3 -> sum 6, mean 2; row sums 3 and 3, row means 1.5 and 3
    assert ops.masked_sum(x, mask).item() == 6.0
    assert ops.masked_mean(x, mask).item() == 2.0
    assert ops.masked_mean(x, mask, dim=-1).tolist() == [1.5, 3.0]
    # a global denominator replaces the local count: 6 / 12 = 0.5
    assert ops.masked_mean(x, mask, denom=12).item() == 0.5
    # an empty selection gives 0, not NaN
    assert ops.masked_mean(x, torch.zeros_like(mask)).item() == 0.0


@pytest.mark.parametrize("junk", GARBAGE)
def test_masked_reductions_ignore_garbage(junk):
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    clean = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], requires_grad=True)
    dirty = clean.detach().masked_fill(~mask, junk).requires_grad_()
    for fn in (ops.masked_sum, ops.masked_mean, lambda x, m: ops.masked_var(x, m)):
        a, b = fn(clean, mask), fn(dirty, mask)
        assert torch.equal(a, b)
        (ga,) = torch.autograd.grad(a, clean)
        (gb,) = torch.autograd.grad(b, dirty)
        assert torch.equal(ga, gb) and torch.isfinite(gb).all()


def test_masked_var_matches_torch_var():
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64)
    mask = torch.rand(4, 6) > 0.4
    for unbiased in (True, False):
        ref = x[mask].var(unbiased=unbiased)
        assert torch.allclose(ops.masked_var(x, mask, unbiased=unbiased), ref)


def _loop_group_stats(values, group_ids, ddof):
    """Reference: plain Python over groups, NaN excluded."""
    vals, gids = values.tolist(), group_ids.tolist()
    out = []
    for g in gids:
        xs = [v for v, h in zip(vals, gids) if h == g and not math.isnan(v)]
        n = len(xs)
        mean = sum(xs) / n if n else 0.0
        ssd = sum((v - mean) ** 2 for v in xs)
        std = math.sqrt(ssd / (n - ddof)) if n > ddof else 0.0
        out.append((mean, std, n))
    return out


@pytest.mark.parametrize("ddof", [0, 1])
def test_group_mean_std_matches_loop(ddof):
    torch.manual_seed(1)
    group_ids = torch.tensor([3, 3, 3, 7, 7, 1, 0, 0, 0, 0, 5, 5])  # unsorted ids, a singleton (1)
    values = torch.randn(12, dtype=torch.float64)
    values[4] = float("nan")  # group 7 keeps one scorable value
    values[10] = values[11] = float("nan")  # group 5 has none
    mean, std, count = ops.group_mean_std(values, group_ids, ddof=ddof)
    for i, (m, s, n) in enumerate(_loop_group_stats(values, group_ids, ddof)):
        assert mean[i].item() == pytest.approx(m, abs=1e-12)
        assert std[i].item() == pytest.approx(s, abs=1e-12)
        assert count[i].item() == n


def test_group_std_is_exactly_zero_for_constant_groups():
    # 0.1 * 3 / 3 != 0.1 in floating point; the std must still be exactly 0, not 1e-17
    values = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7])
    group_ids = torch.tensor([0, 0, 0, 1, 1])
    _, std, _ = ops.group_mean_std(values, group_ids)
    assert std.tolist() == [0.0] * 5


def test_group_mean_std_hand_values():
    # group 0: [1, 0, 0, 1] -> mean 0.5, Bessel std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    values = torch.tensor([1.0, 0.0, 0.0, 1.0])
    mean, std, count = ops.group_mean_std(values, torch.zeros(4, dtype=torch.long))
    assert mean.tolist() == [0.5] * 4
    assert std[0].item() == pytest.approx(math.sqrt(1 / 3), rel=1e-6)
    assert count.tolist() == [4] * 4


def test_group_mean_std_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        ops.group_mean_std(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_matches_log_softmax(temperature):
    torch.manual_seed(2)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    got = ops.token_logprobs(logits, ids, temperature=temperature)
    ref = torch.log_softmax(logits / temperature, -1).gather(-1, ids[..., None])[..., 0]
    assert got.shape == (2, 5)
    assert torch.allclose(got, ref, atol=1e-6)


def test_token_logprobs_hand_value_and_float32_output():
    # logits [0, ln 3] -> softmax [1/4, 3/4]; token 1 -> ln 0.75
    logits = torch.tensor([[[0.0, math.log(3.0)]]], dtype=torch.bfloat16)
    got = ops.token_logprobs(logits, torch.tensor([[1]]))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(math.log(0.75), abs=1e-2)  # bf16 input precision


def test_entropy_hand_values_and_loop_reference():
    v = 6
    uniform = torch.zeros(1, 1, v)
    assert ops.entropy_from_logits(uniform).item() == pytest.approx(math.log(v), rel=1e-6)
    torch.manual_seed(3)
    logits = torch.randn(2, 3, v)
    got = ops.entropy_from_logits(logits, temperature=0.5)
    for b in range(2):
        for t in range(3):
            p = torch.softmax(logits[b, t] / 0.5, -1).tolist()
            assert got[b, t].item() == pytest.approx(-sum(q * math.log(q) for q in p), rel=1e-5)


def test_entropy_with_minus_inf_logits_is_finite_in_value_and_gradient():
    # two live tokens at equal logits -> ln 2; the -inf (banned) tokens contribute nothing
    logits = torch.tensor([[[0.0, 0.0, -float("inf"), -float("inf")]]], requires_grad=True)
    h = ops.entropy_from_logits(logits)
    assert h.item() == pytest.approx(math.log(2), rel=1e-6)
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        ops.token_logprobs(torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        ops.entropy_from_logits(torch.zeros(1, 1, 2), temperature=-1.0)
