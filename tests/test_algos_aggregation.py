"""rlvr.algos.aggregation: hand-worked values and a plain-Python loop for every mode; garbage in padding changes
neither value nor gradient; micro-batch invariance (docs/methods.md §1.6): with global normalisers the accumulated
gradient is the same for 1x8, 8x1, 2x4, 4x2, an uneven 3+5 split and 2 simulated data-parallel ranks, for every
mode; per-micro-batch ("local") normalisers differ, and the worked example of §1.6 gives 0.1 vs 0.5."""

import pytest
import torch

from rlvr import ops
from rlvr.algos import AGGREGATIONS, LOSSES
from rlvr.algos.aggregation import global_counts

F64 = torch.float64
C = 50.0  # constant normaliser for seq_mean_token_sum_norm (the "max response length")
MODES = {name: ({"C": C} if name == "seq_mean_token_sum_norm" else {}) for name in AGGREGATIONS.names()}


def test_hand_worked_values():
    per_token = torch.tensor([[1.0, 2.0, 99.0], [3.0, 99.0, 99.0], [99.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # the third sequence is empty
    agg = {name: AGGREGATIONS.lookup(name) for name in AGGREGATIONS.names()}
    assert agg["token_mean"](per_token, mask).item() == 2.0  # (1 + 2 + 3) / 3 tokens
    assert agg["seq_mean_token_mean"](per_token, mask).item() == 2.25  # (1.5 + 3) / 2 non-empty sequences
    assert agg["seq_mean_token_sum"](per_token, mask).item() == 3.0  # (3 + 3) / 2
    assert agg["seq_mean_token_sum_norm"](per_token, mask, C=4).item() == 0.75  # (3/4 + 3/4) / 2
    assert agg["seq_mean_token_sum_norm"](per_token, mask, verl_sum_norm=True).item() == 2.0  # 6 / T, no 1/N_seq
    # global normalisers replace the local counts: 6 / 12 tokens, (1.5 + 3) / 3 sequences
    assert agg["token_mean"](per_token, mask, num_tokens=12).item() == 0.5
    assert agg["seq_mean_token_mean"](per_token, mask, num_seqs=3).item() == 1.5


def _loop_reference(name, per_token, mask):
    """Plain Python over sequences and tokens."""
    seqs = []
    for row, m in zip(per_token.tolist(), mask.tolist()):
        vals = [v for v, k in zip(row, m) if k]
        if vals:
            seqs.append(vals)
    if name == "token_mean":
        return sum(sum(s) for s in seqs) / sum(len(s) for s in seqs)
    per_seq = {
        "seq_mean_token_mean": [sum(s) / len(s) for s in seqs],
        "seq_mean_token_sum": [sum(s) for s in seqs],
        "seq_mean_token_sum_norm": [sum(s) / C for s in seqs],
    }[name]
    return sum(per_seq) / len(per_seq)


@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_matches_loop_reference(name):
    torch.manual_seed(0)
    per_token = torch.randn(6, 11, dtype=F64)
    mask = torch.rand(6, 11) > 0.5
    mask[2] = False
    got = AGGREGATIONS.lookup(name)(per_token, mask, **MODES[name])
    assert got.item() == pytest.approx(_loop_reference(name, per_token, mask), rel=1e-12)


@pytest.mark.parametrize("name", AGGREGATIONS.names())
@pytest.mark.parametrize("junk", [float("nan"), float("inf"), -float("inf"), 1e30])
def test_garbage_in_padding_changes_neither_value_nor_gradient(name, junk):
    torch.manual_seed(1)
    mask = torch.rand(4, 7) > 0.4
    clean = torch.randn(4, 7, dtype=F64).masked_fill(~mask, 0).requires_grad_()
    dirty = clean.detach().masked_fill(~mask, junk).requires_grad_()
    fn = AGGREGATIONS.lookup(name)
    a, b = fn(clean, mask, **MODES[name]), fn(dirty, mask, **MODES[name])
    assert torch.equal(a, b)
    (ga,) = torch.autograd.grad(a, clean)
    (gb,) = torch.autograd.grad(b, dirty)
    assert torch.equal(ga, gb) and (gb[~mask] == 0).all()


def test_worked_example_global_token_mean_is_0_1_local_is_0_5():
    # micro-batch 1: one 10-token sequence, loss 1 per token; micro-batch 2: one 90-token sequence, loss 0
    # (theta scales the loss, so the gradient w.r.t. theta equals the loss value)
    theta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    masks = [torch.ones(1, 10), torch.ones(1, 90)]
    micro = [(theta * torch.ones(1, 10, dtype=F64), masks[0]), (0 * theta * torch.ones(1, 90, dtype=F64), masks[1])]
    n_tok, n_seq = global_counts(masks)
    token_mean = AGGREGATIONS.lookup("token_mean")
    exact = sum(token_mean(loss, m, num_tokens=n_tok) for loss, m in micro)
    local = sum(token_mean(loss, m) for loss, m in micro) / len(micro)  # mean of micro-batch means
    assert (n_tok, n_seq) == (100, 2)
    assert exact.item() == pytest.approx(0.1) and local.item() == pytest.approx(0.5)
    assert torch.autograd.grad(exact, theta, retain_graph=True)[0].item() == pytest.approx(0.1)
    assert torch.autograd.grad(local, theta)[0].item() == pytest.approx(0.5)


# ---- micro-batch / data-parallel invariance of the accumulated gradient ----------------------------------------

LENGTHS = [1, 40, 3, 25, 0, 7, 2, 33]  # very unequal, one empty sequence
SPLITS = {  # ranks -> micro-batches -> sequence indices
    "1x8": [[list(range(8))]],
    "8x1": [[[i] for i in range(8)]],
    "2x4": [[[0, 1, 2, 3], [4, 5, 6, 7]]],
    "4x2": [[[0, 1], [2, 3], [4, 5], [6, 7]]],
    "3+5": [[[0, 1, 2], [3, 4, 5, 6, 7]]],
    "dp2x2x2": [[[0, 1], [2, 3]], [[4, 5], [6, 7]]],
}


def _problem():
    """A tiny linear policy (4 features -> 5 tokens) scored with PPO-clip on fixed sampled tokens."""
    torch.manual_seed(2)
    feats = torch.randn(8, 40, 4, dtype=F64)
    ids = torch.randint(0, 5, (8, 40))
    mask = torch.arange(40)[None] < torch.tensor(LENGTHS)[:, None]  # (8, 40)
    weight = torch.randn(4, 5, dtype=F64, requires_grad=True)
    with torch.no_grad():
        old = ops.token_logprobs(feats @ weight, ids) + 0.3 * torch.randn(8, 40, dtype=F64)
    adv = torch.randn(8, dtype=F64)
    return feats, ids, mask, weight, old, adv


def _micro_loss(rows, problem, name, num_tokens, num_seqs):
    feats, ids, mask, weight, old, adv = problem
    logp = ops.token_logprobs(feats[rows] @ weight, ids[rows])  # (b, T)
    per_token, _ = LOSSES.lookup("ppo_clip")(logp, old[rows], adv[rows], mask[rows], clip_low=0.2, clip_high=0.28)
    return AGGREGATIONS.lookup(name)(per_token, mask[rows], num_tokens=num_tokens, num_seqs=num_seqs, **MODES[name])


def _accumulated_grad(problem, name, split, normaliser):
    """Backward every micro-batch (no division by accumulation steps), then average the ranks' gradients."""
    mask, weight = problem[2], problem[3]
    n_tok, n_seq = global_counts(mask[rows] for rank in split for rows in rank)  # the all-reduced counts
    world = len(split)
    rank_grads = []
    for rank in split:
        grad = torch.zeros_like(weight)
        for rows in rank:
            if normaliser == "global":
                loss = _micro_loss(rows, problem, name, n_tok, n_seq) * world  # x D: the DP average divides it out
            else:  # "local": each micro-batch's own counts, divided by the accumulation steps (mean of means)
                loss = _micro_loss(rows, problem, name, None, None) / len(rank)
            grad += torch.autograd.grad(loss, weight)[0]
        rank_grads.append(grad)
    return sum(rank_grads) / world


@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_global_normalisers_make_every_split_give_the_same_gradient(name):
    problem = _problem()
    full = _accumulated_grad(problem, name, SPLITS["1x8"], "global")
    assert full.abs().sum() > 0
    for label, split in SPLITS.items():
        got = _accumulated_grad(problem, name, split, "global")
        assert torch.allclose(got, full, rtol=1e-6, atol=1e-12), label


@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_local_normalisers_differ(name):
    problem = _problem()
    full = _accumulated_grad(problem, name, SPLITS["1x8"], "global")
    # token_mean differs for any split of unequal lengths; the sequence modes for unequal sequences per micro-batch
    labels = ["8x1", "2x4", "4x2", "3+5", "dp2x2x2"] if name == "token_mean" else ["3+5"]
    for label in labels:
        got = _accumulated_grad(problem, name, SPLITS[label], "local")
        assert not torch.allclose(got, full, rtol=1e-3), label


def test_seq_sum_norm_requires_constant_c():
    with pytest.raises(ValueError, match="max response length"):
        AGGREGATIONS.lookup("seq_mean_token_sum_norm")(torch.zeros(1, 2), torch.ones(1, 2))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        AGGREGATIONS.lookup("token_mean")(torch.zeros(2, 3), torch.ones(2, 4))
