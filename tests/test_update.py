"""The policy update on a real (tiny) model: micro-batching and simulated data-parallel splits give the
same gradient as one big batch, with every aggregation mode; old_logp recompute gives rho = 1 on-policy."""

import pytest
import torch

from rlvr.algos import AGGREGATIONS, LOSSES
from rlvr.distributed import World
from rlvr.policies import load_policy
from rlvr.update import LossFns, UpdateBatch, batched_logp, micro_batch_loss, policy_logp


def make_batch(model, n=8, P=5, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = model.config.vocab_size
    ids = torch.randint(3, V, (n, P + T), generator=g)
    attn = torch.ones(n, P + T, dtype=torch.long)
    for i in range(n):  # left padding of prompts, very unequal completion lengths
        attn[i, : i % 3] = 0
    lengths = torch.tensor([1, 7, 2, 6, 3, 5, 7, 1])[:n]
    loss_mask = (torch.arange(T)[None] < lengths[:, None]).float()
    attn[:, P:] = loss_mask.long()
    adv = torch.randn(n, generator=g)
    return UpdateBatch(ids, attn, loss_mask, adv, torch.arange(n) // 4)


def grads_for(model, batch, fns, splits, world_size=1):
    """Accumulate gradients over `splits` (list of row-index lists), as micro-batches and/or ranks."""
    model.zero_grad()
    num_tokens = float(batch.loss_mask.sum())
    num_seqs = float((batch.loss_mask.sum(-1) > 0).sum())
    for rank_rows in splits:
        loss, _ = micro_batch_loss(model, batch.rows(torch.tensor(rank_rows)), fns, num_tokens, num_seqs,
                                   World(0, world_size))
        loss.backward()
    return torch.cat([p.grad.flatten() / world_size for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"])
def test_micro_batch_invariance(agg):
    model, _ = load_policy(config="qwen2-micro", seed=0)
    model.train()
    batch = make_batch(model)
    kwargs = {"C": 7} if agg == "seq_mean_token_sum_norm" else {}
    fns = LossFns(loss=LOSSES.bind("ppo_clip", clip_low=0.2, clip_high=0.28),
                  aggregate=AGGREGATIONS.bind(agg, **kwargs))
    one = grads_for(model, batch, fns, [list(range(8))])
    eight = grads_for(model, batch, fns, [[i] for i in range(8)])
    uneven = grads_for(model, batch, fns, [[0, 1, 2], [3], [4, 5, 6, 7]])
    torch.testing.assert_close(eight, one, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(uneven, one, rtol=1e-5, atol=1e-7)
    # two simulated ranks: each scales by the world size, the all-reduce average divides it back
    two_ranks = grads_for(model, batch, fns, [[0, 1, 2, 3], [4, 5, 6, 7]], world_size=2)
    torch.testing.assert_close(two_ranks, one, rtol=1e-5, atol=1e-7)


def test_local_normaliser_would_differ():
    """Sanity check that the invariance test can fail: per-micro-batch token means change the gradient."""
    model, _ = load_policy(config="qwen2-micro", seed=0)
    batch = make_batch(model)
    agg = AGGREGATIONS.lookup("token_mean")
    fns = LossFns(loss=LOSSES.bind("ppo_clip", clip_low=0.2, clip_high=0.2), aggregate=agg)
    one = grads_for(model, batch, fns, [list(range(8))])
    model.zero_grad()
    for i in range(8):  # mean of micro-batch means
        mb = batch.rows(torch.tensor([i]))
        loss, _ = micro_batch_loss(model, mb, fns, float(mb.loss_mask.sum()), 1.0, World())
        (loss / 8).backward()
    local = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert not torch.allclose(local, one, rtol=1e-3)


def test_on_policy_ratio_is_one():
    model, _ = load_policy(config="qwen2-micro", seed=0)
    model.eval()
    batch = make_batch(model)
    old = batched_logp(model, batch, micro_batch_size=3, temperature=0.7)
    new, _ = policy_logp(model, batch.input_ids, batch.attention_mask, 7, temperature=0.7)
    m = batch.loss_mask.bool()
    torch.testing.assert_close(old[m], new.detach()[m], rtol=0, atol=1e-5)


def test_shared_prefix_equals_plain_forward():
    """Groups of rows with the same prompt share one prompt forward; log-probs and gradients are unchanged."""
    model, _ = load_policy(config="qwen2-micro", seed=0)
    model.train()
    g = torch.Generator().manual_seed(1)
    P, T, G = 6, 5, 4
    prompts = torch.randint(3, model.config.vocab_size, (3, P), generator=g)
    pmask = torch.ones(3, P, dtype=torch.long)
    pmask[1, :2] = 0  # one left-padded prompt
    ids = torch.cat([prompts.repeat_interleave(G, 0), torch.randint(3, 50, (3 * G, T), generator=g)], 1)
    attn = torch.cat([pmask.repeat_interleave(G, 0), torch.ones(3 * G, T, dtype=torch.long)], 1)
    attn[3, P + 2 :] = 0  # a short completion (right padding)
    results = []
    # the plain HF forward (reference), the HF forward with a shared prompt cache, and the lean forward
    for share, lean in ((False, False), (True, False), (True, True)):
        model.zero_grad()
        logp, ent = policy_logp(model, ids, attn, T, temperature=0.8, with_entropy=True, share_prefix=share,
                                lean=lean)
        (logp * attn[:, P:]).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results.append((logp, ent, grads))
    m = attn[:, P:].bool()
    for other in results[1:]:
        torch.testing.assert_close(other[0][m], results[0][0][m], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(other[1][m], results[0][1][m], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(other[2], results[0][2], rtol=1e-4, atol=1e-6)


def test_bf16_autocast_forward_close_to_fp32():
    """Mixed precision: the bf16-autocast forward gives log-probs close to fp32 (bf16 has ~3 significant digits)
    and finite fp32 gradients on fp32 weights."""
    model, _ = load_policy(config="qwen2-micro", seed=0)
    batch = make_batch(model)
    ref, _ = policy_logp(model, batch.input_ids, batch.attention_mask, 7)
    model.zero_grad()
    low, _ = policy_logp(model, batch.input_ids, batch.attention_mask, 7, autocast=torch.bfloat16)
    assert low.dtype == torch.float32
    m = batch.loss_mask.bool()
    assert (low[m] - ref.detach()[m]).abs().max() < 0.1
    (low * batch.loss_mask).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
