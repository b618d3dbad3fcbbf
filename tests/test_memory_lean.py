"""Memory-lean training forward: chunked lm_head log-probs (rlvr.ops.head_logprobs, model.logp_chunk_tokens) and
activation checkpointing (model.activation_checkpointing) give the same log-probs, entropies and parameter gradients
as the one-pass forward, on the lean and the plain HF path; the chunked path never saves a (tokens, V) tensor for
backward, and checkpointing saves less."""

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rlvr.ops import TiedGrad, entropy_from_logits, head_logprobs, tied_embedding, token_logprobs
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


def run(model, ids, mask, *, chunk=0, checkpointing=False, lean=True, temperature=0.7, late=True):
    """(logp, entropy at real tokens, every parameter's gradient) of a random linear objective of both."""
    if checkpointing:
        enable_checkpointing(model, "test")
    model.zero_grad(set_to_none=True)
    logp, ent = completion_logp(model, ids, mask, T, temperature=temperature, with_entropy=True, chunk=chunk,
                                lean=lean, late_head_grad=late)
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
@pytest.mark.parametrize("chunk,checkpointing,late", [(5, False, True), (5, False, False), (0, True, True),
                                                      (4, True, True), (1000, False, True)])
def test_same_values_and_gradients(model, lean, chunk, checkpointing, late):
    ids, mask = batch(model.config.vocab_size)
    want = run(model, ids, mask, lean=lean)
    got = run(model, ids, mask, chunk=chunk, checkpointing=checkpointing, lean=lean, late=late)
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


@pytest.mark.parametrize("late", [None, True, False], ids=["untied", "late", "early"])
def test_chunked_head_under_bf16_autocast_on_fp32_weights(late):
    """fp32 master weights, bf16 compute (model.autocast): the chunked backward adds a bf16 product into the fp32
    weight gradient; it matches the one-pass head run under the same autocast."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(50, 8, generator=g, requires_grad=True)
    ids, targets = torch.randint(1, 50, (23,), generator=g), torch.randint(0, 50, (23,), generator=g)
    grads = []
    for chunk in (0, 6):
        tied = TiedGrad(late=late) if late is not None and chunk else None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = tied_embedding(ids, w, 0, tied) if tied else torch.nn.functional.embedding(ids, w, 0)
            lp, ent = head_logprobs(h, w, None, targets, temperature=0.8, chunk=chunk, with_entropy=True, tied=tied)
        grads.append(torch.autograd.grad((lp * 1.7 + ent).float().sum(), w)[0])
    assert grads[1].dtype == torch.float32
    torch.testing.assert_close(grads[1], grads[0], atol=0.05, rtol=0.05)


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


@pytest.mark.parametrize("late", [True, False], ids=["late", "early"])
def test_tied_embedding_gradient_equals_autograd_sum(late):
    """The lookup's backward adds its rows into the head's buffer: the same weight gradient as F.embedding's dense
    gradient plus the head's, the padding row included (no gradient from the lookup there)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(30, 8, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 5, 0, 7, 7, 29, 3, 0, 11, 2, 5])  # padding_idx 0 three times
    targets = torch.randint(0, 30, (len(ids),), generator=g)
    grads = []
    for tied in (None, TiedGrad(late=late)):
        x = torch.nn.functional.embedding(ids, w, 0) if tied is None else tied_embedding(ids, w, 0, tied)
        h = torch.tanh(x @ torch.ones(8, 8, dtype=torch.float64) * 0.3)
        lp, ent = head_logprobs(h, w, None, targets, chunk=4, with_entropy=True, tied=tied)
        grads.append(torch.autograd.grad((lp * 1.3 + ent).sum(), w)[0])
        assert tied is None or (tied.weight_grad_into, tied.grad) == (None, None)  # used, nothing left behind
    torch.testing.assert_close(grads[1], grads[0])


class LiveOfShape(TorchDispatchMode):
    """The most buffers (storages) of tensors of one shape alive at once among those ops create while the mode is on;
    a view or an alias of a buffer (AccumulateGrad's detach) is the same buffer."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.live, self.most = tuple(shape), {}, 0  # id -> weakref of each live tensor
        self.ops, self.first = 0, None  # ops run; how many had run when the first such buffer appeared

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and tuple(t.shape) == self.shape and id(t) not in self.live:
                self.first = self.ops if self.first is None else self.first
                key = id(t)
                self.live[key] = weakref.ref(t, lambda _, key=key: self.live.pop(key, None))
        buffers = {ref().untyped_storage().data_ptr() for ref in list(self.live.values()) if ref() is not None}
        self.most, self.ops = max(self.most, len(buffers)), self.ops + 1
        return out


@pytest.mark.parametrize("config,late", [("qwen2-micro", True), ("qwen2-micro", False), ("llama-micro", True)])
def test_chunked_backward_holds_one_vocabulary_gradient_per_weight(config, late):
    """Backward of the chunked lean forward creates one (V, hidden) buffer per vocabulary-sized weight: with tied
    embeddings (qwen2-micro) one, with late_head_grad made by the lookup's backward, after every layer's (no
    vocabulary-sized gradient while activations are held; rlvr.ops.TiedGrad), without it by the head's; autograd
    would hold the head's and the lookup's dense gradient at once. Untied (llama-micro): the two weights' own two,
    the head's early."""
    model, _ = load_policy(config=config, seed=0)
    ids, mask = batch(model.config.vocab_size)
    logp, ent = completion_logp(model.train(), ids, mask, T, with_entropy=True, chunk=4, late_head_grad=late)
    loss = torch.where(mask[:, -T:].bool(), logp + 0.3 * ent, 0.0).sum()
    count, layers_done = LiveOfShape(model.get_input_embeddings().weight.shape), []
    # the first layer's first norm is the last of the layers' backward to get its gradient
    model.model.layers[0].input_layernorm.weight.register_hook(lambda g: layers_done.append(count.ops))
    with count:
        loss.backward()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert count.most == (1 if tied else 2)
    assert (count.first > layers_done[0]) == (tied and late)
