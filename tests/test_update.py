"""The policy update on a real (tiny) model: micro-batching and simulated data-parallel splits give the
same gradient as one big batch, with every aggregation mode; old_logp recompute gives rho = 1 on-policy;
token weights and observation tokens (loss_mask 0 inside a completion) reach the loss as they should."""

import pytest
import torch

from rlvr.algos import AGGREGATIONS, LOSSES
from rlvr.batch import Batch
from rlvr.distributed import World
from rlvr.metrics import Metrics
from rlvr.policies import HFCausalLM
from rlvr.policies.hf_forward import completion_logp
from rlvr.stages import chunked_logp
from rlvr.update import LossFns, micro_batch_loss


def make_batch(policy, n=8, P=5, T=7, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    V = policy.model.config.vocab_size
    ids = torch.randint(3, V, (n, P + T), generator=g)
    attn = torch.ones(n, P + T, dtype=torch.long)
    for i in range(n):  # left padding of prompts, very unequal completion lengths
        attn[i, : i % 3] = 0
    lengths = torch.tensor([1, 7, 2, 6, 3, 5, 7, 1])[:n]
    loss_mask = (torch.arange(T)[None] < lengths[:, None]).float()
    attn[:, P:] = loss_mask.long()
    adv = torch.randn(n, generator=g)
    return Batch(prompt_ids=ids[:, :P], prompt_mask=attn[:, :P], completion_ids=ids[:, P:],
                 completion_mask=attn[:, P:], loss_mask=loss_mask, rollout_logp=torch.zeros(n, T),
                 truncated=torch.zeros(n, dtype=torch.bool), texts=[""] * n, group_ids=torch.arange(n) // 4,
                 samples=[None] * n, advantages=adv)


def grads_for(policy, batch, fns, splits, world_size=1):
    """Accumulate gradients over `splits` (list of row-index lists), as micro-batches and/or ranks."""
    policy.model.zero_grad()
    num_tokens = float(batch.loss_mask.sum())
    num_seqs = float((batch.loss_mask.sum(-1) > 0).sum())
    for rank_rows in splits:
        loss = micro_batch_loss(policy, batch.select(rank_rows), fns, num_tokens, num_seqs, World(0, world_size),
                                Metrics())
        loss.backward()
    return torch.cat([p.grad.flatten() / world_size for p in policy.parameters() if p.grad is not None])


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"])
def test_micro_batch_invariance(agg):
    policy = HFCausalLM.load(config="qwen2-micro", seed=0).train()
    batch = make_batch(policy)
    kwargs = {"C": 7} if agg == "seq_mean_token_sum_norm" else {}
    fns = LossFns(loss=LOSSES.bind("ppo_clip", clip_low=0.2, clip_high=0.28),
                  aggregate=AGGREGATIONS.bind(agg, **kwargs))
    one = grads_for(policy, batch, fns, [list(range(8))])
    eight = grads_for(policy, batch, fns, [[i] for i in range(8)])
    uneven = grads_for(policy, batch, fns, [[0, 1, 2], [3], [4, 5, 6, 7]])
    torch.testing.assert_close(eight, one, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(uneven, one, rtol=1e-5, atol=1e-7)
    # two simulated ranks: each scales by the world size, the all-reduce average divides it back
    two_ranks = grads_for(policy, batch, fns, [[0, 1, 2, 3], [4, 5, 6, 7]], world_size=2)
    torch.testing.assert_close(two_ranks, one, rtol=1e-5, atol=1e-7)


def test_local_normaliser_would_differ():
    """Sanity check that the invariance test can fail: per-micro-batch token means change the gradient."""
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    batch = make_batch(policy)
    agg = AGGREGATIONS.lookup("token_mean")
    fns = LossFns(loss=LOSSES.bind("ppo_clip", clip_low=0.2, clip_high=0.2), aggregate=agg)
    one = grads_for(policy, batch, fns, [list(range(8))])
    policy.model.zero_grad()
    for i in range(8):  # mean of micro-batch means
        mb = batch.select([i])
        loss = micro_batch_loss(policy, mb, fns, float(mb.loss_mask.sum()), 1.0, World(), Metrics())
        (loss / 8).backward()
    local = torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])
    assert not torch.allclose(local, one, rtol=1e-3)


def test_on_policy_ratio_is_one():
    policy = HFCausalLM.load(config="qwen2-micro", seed=0).eval()
    batch = make_batch(policy)
    old, _ = chunked_logp(policy, batch, micro_batch_size=3, temperature=0.7)
    new, _ = policy.logp(batch, temperature=0.7)
    m = batch.loss_mask.bool()
    torch.testing.assert_close(old[m], new.detach()[m], rtol=0, atol=1e-5)


def test_shared_prefix_equals_plain_forward():
    """Groups of rows with the same prompt share one prompt forward; log-probs and gradients are unchanged."""
    model = HFCausalLM.load(config="qwen2-micro", seed=0).model.train()
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
        logp, ent = completion_logp(model, ids, attn, T, temperature=0.8, with_entropy=True, share_prefix=share,
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
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    model = policy.model
    batch = make_batch(policy)
    ref, _ = completion_logp(model, batch.input_ids, batch.attention_mask, 7)
    model.zero_grad()
    low, _ = completion_logp(model, batch.input_ids, batch.attention_mask, 7, autocast=torch.bfloat16)
    assert low.dtype == torch.float32
    m = batch.loss_mask.bool()
    assert (low[m] - ref.detach()[m]).abs().max() < 0.1
    (low * batch.loss_mask).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_observation_tokens_are_attended_to_but_get_no_gradient(logp_grads):
    """A multi-turn completion: positions 2-3 hold an environment's observation (completion_mask 1, loss_mask 0).
    The loss has no gradient through their log-probs, while later tokens' log-probs depend on them (attended)."""
    policy = HFCausalLM.load(config="qwen2-micro", seed=0).train()
    batch = make_batch(policy)
    batch.completion_mask[:] = 1
    batch.loss_mask[:] = 1.0
    batch.loss_mask[:, 2:4] = 0.0  # observation tokens
    fns = LossFns(loss=LOSSES.bind("ppo_clip", clip_low=0.2), aggregate=AGGREGATIONS.lookup("token_mean"))
    grad = logp_grads(policy, batch, fns)
    assert (grad[:, 2:4] == 0).all() and (grad[:, [0, 1, 4, 5, 6]] != 0).all()
    other = batch.replace(completion_ids=batch.completion_ids.clone())
    other.completion_ids[:, 2] = (other.completion_ids[:, 2] + 1) % policy.model.config.vocab_size
    with torch.no_grad():
        a, _ = policy.logp(batch)
        b, _ = policy.logp(other)
    assert torch.equal(a[:, :2], b[:, :2]) and not torch.allclose(a[:, 3:], b[:, 3:])


def test_token_weights_scale_each_token_of_the_loss(logp_grads):
    policy = HFCausalLM.load(config="qwen2-micro", seed=0).train()
    batch = make_batch(policy)
    fns = LossFns(loss=LOSSES.bind("ppo_clip", clip_low=0.2), aggregate=AGGREGATIONS.lookup("token_mean"))
    plain = logp_grads(policy, batch, fns)
    weights = torch.ones_like(batch.loss_mask)
    weights[:, 0], weights[:, 1] = 0.0, 2.0
    weighted = logp_grads(policy, batch.replace(token_weights=weights), fns)
    m = batch.loss_mask.bool()
    assert (weighted[:, 0] == 0).all() and plain[m[:, 0], 0].abs().min() > 0
    torch.testing.assert_close(weighted[:, 1], 2 * plain[:, 1])
    torch.testing.assert_close(weighted[:, 2:], plain[:, 2:])
