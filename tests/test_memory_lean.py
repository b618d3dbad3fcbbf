"""Memory-lean training forward: chunked lm_head log-probs (rlvr.ops.head_logprobs, model.logp_chunk_tokens) and
activation checkpointing (model.activation_checkpointing) give the same log-probs, entropies and parameter gradients
as the one-pass forward, on the lean and the plain HF path; the chunked path never saves a (tokens, V) tensor for
backward, and checkpointing saves less."""

import pytest
import torch

from rlvr.ops import entropy_from_logits, head_logprobs, token_logprobs
from rlvr.policies import load_policy
from rlvr.policies.hf_forward import completion_logp
from rlvr.scale import enable_checkpointing

P, T = 6, 7


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(V: int, seed: int = 0):
    """Groups of 3 rows sharing a prompt, left-padded prompts, completions of length T, 4, 1 and 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (9, P + T), generator=g)
    ids[:, :P] = ids[::3, :P].repeat_interleave(3, 0)
    mask = torch.ones_like(ids)
    mask[:3, :2] = 0
    for row, length in ((1, 4), (4, 1), (7, 0)):
        mask[row, P + length:] = 0
    return ids, mask


def run(model, ids, mask, *, chunk=0, checkpointing=False, lean=True, temperature=0.7):
    """(logp, entropy at real tokens, every parameter's gradient) of a random linear objective of both."""
    if checkpointing:
        enable_checkpointing(model, "test")
    model.zero_grad(set_to_none=True)
    logp, ent = completion_logp(model, ids, mask, T, temperature=temperature, with_entropy=True, chunk=chunk,
                                lean=lean)
    real = mask[:, -T:].bool()
    w = torch.randn(logp.shape, generator=torch.Generator().manual_seed(1))
    torch.where(real, logp * w + 0.3 * ent, 0.0).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if checkpointing:
        model.activation_checkpointing_disable()
    return logp[real].detach(), ent[real].detach(), grads


@pytest.fixture(scope="module", params=["qwen2-micro", "llama-micro", "qwen3-micro"])
def model(request):
    model, _ = load_policy(config=request.param, seed=0)
    return model.train()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "hf"])
@pytest.mark.parametrize("chunk,checkpointing", [(5, False), (0, True), (4, True), (1000, False)])
def test_same_values_and_gradients(model, lean, chunk, checkpointing):
    ids, mask = batch(model.config.vocab_size)
    want = run(model, ids, mask, lean=lean)
    got = run(model, ids, mask, chunk=chunk, checkpointing=checkpointing, lean=lean)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
    assert got[2].keys() == want[2].keys()
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], atol=1e-5, rtol=1e-5, msg=name)


def test_head_logprobs_matches_full_logits():
    g = torch.Generator().manual_seed(0)
    h, w, b = (torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in ((23, 8), (50, 8), (50,)))
    ids = torch.randint(0, 50, (23,), generator=g)
    outs = []
    for chunk in (0, 6):
        lp, ent = head_logprobs(h, w, b, ids, temperature=0.8, chunk=chunk, with_entropy=True)
        grads = torch.autograd.grad((lp * 1.7 + ent).sum(), (h, w, b))
        outs.append((lp, ent, *grads))
    z = (h @ w.T + b) / 0.8
    torch.testing.assert_close(outs[0][0], token_logprobs(z[None], ids[None])[0])
    torch.testing.assert_close(outs[0][1], entropy_from_logits(z[None])[0])
    for a, b_ in zip(outs[0], outs[1], strict=True):
        torch.testing.assert_close(a, b_)


def saved_for_backward(fn):
    """Sizes (numel, last dim) of every tensor autograd saves while fn() runs its forward."""
    sizes = []

    def pack(t):
        sizes.append((t.numel(), t.shape[-1] if t.dim() else 0))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


def test_chunked_forward_saves_no_full_logits(model):
    ids, mask = batch(model.config.vocab_size)
    V, chunk, K = model.config.vocab_size, 4, int(mask[:, -T:].sum())
    fwd = lambda c: completion_logp(model, ids, mask, T, with_entropy=True, chunk=c)  # noqa: E731
    held = lambda sizes: sum(n for n, last in sizes if last == V)  # noqa: E731
    assert held(saved_for_backward(lambda: fwd(0))) >= K * V  # the one-pass forward keeps (K, V) logits
    assert held(saved_for_backward(lambda: fwd(chunk))) == 0  # chunked: recomputed in backward, nothing kept


def test_checkpointing_saves_less(model):
    ids, mask = batch(model.config.vocab_size)
    fwd = lambda: completion_logp(model, ids, mask, T, with_entropy=True, chunk=4)  # noqa: E731
    plain = sum(n for n, _ in saved_for_backward(fwd))
    enable_checkpointing(model, "test")
    try:
        checkpointed = sum(n for n, _ in saved_for_backward(fwd))
    finally:
        model.activation_checkpointing_disable()
    assert checkpointed < 0.5 * plain
