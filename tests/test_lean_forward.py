"""rlvr.policies.lean: the lean training forward equals the HF forward at every real completion position (shared-prefix
and plain forward, grouped and all-distinct rows, left-padded prompts, right-padded completions, GQA and MHA, tied and
untied heads, qkv biases, Qwen3 q/k norms); the gradients of every parameter match; padded positions are finite and
garbage there changes nothing; bf16 autocast stays close to fp32; `lean_reason` accepts the plain family and refuses
PEFT, dropout and other architectures."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from rlvr.ops import token_logprobs
from rlvr.policies import load_policy, prompt_owners
from rlvr.policies.hf_forward import shared_prefix_logits
from rlvr.policies.lean import lean_completion_logits, lean_reason


def owners(ids, mask):
    return prompt_owners(ids[:, :-T], mask[:, :-T])

MODELS = {
    "qwen2-micro": {},  # GQA 4 q / 2 kv heads, qkv biases, tied head
    "llama-micro": {},  # untied lm_head, no biases
    "qwen3-micro": {},  # per-head q/k RMSNorm, head_dim 16 != hidden / heads
    "qwen2-micro-mha": {"num_key_value_heads": 4},  # one query head per kv head
}
P, T = 7, 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Micro models gain nothing from a second thread, and on a shared 2-core machine every parallel op can wait a
    whole scheduler slice for it (seconds per test instead of milliseconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    out = {}
    for name, overrides in MODELS.items():
        model, _ = load_policy(config=name.removesuffix("-mha"), config_overrides=overrides or None, seed=0)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # norms start at 1 and biases at 0: move them, so that a mix-up shows in the logits
            for n, p in model.named_parameters():
                if "norm" in n or "bias" in n:
                    p.add_(0.2 * torch.randn(p.shape, generator=g))
        out[name] = model.train()  # training mode, as in the update (no dropout in these configs)
    return out


def make_batch(V: int, prompts: int, group: int, seed: int = 0):
    """Rows of `group` copies of each prompt; prompt i has min(i + (i > 0), P - 1) left-padding tokens; completion
    lengths vary from 0 to T (right padding). Padded positions hold random garbage, not a pad id; the first
    completion token is the pad id, whose embedding row gets no gradient from the input side (padding_idx)."""
    g = torch.Generator().manual_seed(seed)
    N = prompts * group
    ids = torch.randint(3, V, (N, P + T), generator=g)
    ids[:, :P] = torch.randint(3, V, (prompts, P), generator=g).repeat_interleave(group, 0)
    pad = torch.tensor([min(i + (i > 0), P - 1) for i in range(prompts)]).repeat_interleave(group)  # (N,)
    lengths = torch.tensor([T, 1, 0, 4, 5, 2, T, 3, 1, 5, T, 2])[torch.arange(N) % 12]  # (N,)
    mask = torch.cat([torch.arange(P)[None] >= pad[:, None], torch.arange(T)[None] < lengths[:, None]], 1).long()
    ids[:, P] = 0  # the pad id as a real input token (eos = pad, as in Qwen)
    return ids, mask


def reference_logits(model, ids, mask, shared: bool):
    """HF: the shared-prefix path (rlvr.policies.hf_forward), or the plain forward over the whole rows."""
    if shared:
        return shared_prefix_logits(model, ids, mask, T, *owners(ids, mask))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -T - 1 : -1]


def lean_logits(model, ids, mask):
    return lean_completion_logits(model, ids, mask, T, *owners(ids, mask))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("layout", [(3, 4), (8, 1)], ids=["grouped", "distinct"])
def test_logits_equal_hf(models, name, layout):
    model = models[name]
    ids, mask = make_batch(model.config.vocab_size, *layout)
    real = mask[:, -T:].bool()
    with torch.no_grad():
        out = lean_logits(model, ids, mask)
        assert out.shape == (len(ids), T, model.config.vocab_size) and out.isfinite().all()
        for shared in (True, False):
            torch.testing.assert_close(out[real], reference_logits(model, ids, mask, shared)[real], atol=1e-5, rtol=0)


def test_wrong_positions_or_mask_would_differ(models):
    """Sanity check that the equality test can fail. (A position offset that is the same for a whole row would not:
    rope depends only on relative positions.)"""
    model = models["qwen2-micro"]
    ids, mask = make_batch(model.config.vocab_size, 3, 4)
    real = mask[:, -T:].bool()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        lean = lean_logits(model, ids, mask)[real]
        gap = pos + (torch.arange(P + T) >= P)  # completion positions one further than they are
        for wrong_pos, wrong_mask in ((gap, mask), (pos, torch.ones_like(mask))):  # or: attend to left padding
            wrong = model(input_ids=ids, attention_mask=wrong_mask, position_ids=wrong_pos).logits[:, -T - 1 : -1]
            assert (lean - wrong[real]).abs().max() > 1e-3


def masked_logp_objective(logits, ids, mask, seed=1):
    """A random linear function of the masked completion log-probs."""
    logp = token_logprobs(logits.float(), ids[:, -T:])
    w = torch.randn(logp.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(mask[:, -T:].bool(), logp * w, 0.0).sum()


def param_grads(model, logits_fn, ids, mask):
    model.zero_grad(set_to_none=True)
    masked_logp_objective(logits_fn(model, ids, mask), ids, mask).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_equal_hf(models, name):
    model = models[name]
    ids, mask = make_batch(model.config.vocab_size, 3, 4)
    ref = param_grads(model, lambda m, i, a: reference_logits(m, i, a, shared=True), ids, mask)
    got = param_grads(model, lean_logits, ids, mask)
    assert got.keys() == ref.keys()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    assert all(g.abs().sum() > 0 for n, g in got.items() if "norm" not in n)  # every weight is reached


@pytest.mark.parametrize("name", list(MODELS))
def test_long_attention_path_equals_hf(models, name, monkeypatch):
    """Parts past LONG_SCORES (long completions) attend through SDPA with a bool mask: same logits and gradients."""
    from rlvr.policies import lean

    model = models[name]
    ids, mask = make_batch(model.config.vocab_size, 3, 4)
    real = mask[:, -T:].bool()
    ref = param_grads(model, lambda m, i, a: reference_logits(m, i, a, shared=True), ids, mask)
    monkeypatch.setattr(lean, "LONG_SCORES", 0)
    bias = lean._tables(model, ids, mask, T, *owners(ids, mask), torch.float32).tail_bias
    assert bias.dtype == torch.bool and bias.shape == (len(ids), 1, T - 1, P + T - 1)  # the SDPA path is taken
    with torch.no_grad():
        torch.testing.assert_close(lean_logits(model, ids, mask)[real],
                                   reference_logits(model, ids, mask, shared=True)[real], atol=1e-5, rtol=0)
    got = param_grads(model, lean_logits, ids, mask)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


def test_garbage_in_padding_changes_nothing(models):
    model = models["qwen3-micro"]
    ids, mask = make_batch(model.config.vocab_size, 3, 4)
    other = torch.where(mask.bool(), ids, torch.randint_like(ids, 3, model.config.vocab_size))
    real = mask[:, -T:].bool()
    with torch.no_grad():
        a, b = lean_logits(model, ids, mask), lean_logits(model, other, mask)
    torch.testing.assert_close(a[real], b[real], atol=0, rtol=0)
    assert a.isfinite().all() and a[~real].eq(0).all()  # logits that predict padding: finite, unused


def test_one_completion_token(models):
    model = models["llama-micro"]
    ids, mask = make_batch(model.config.vocab_size, 2, 3)
    ids, mask = ids[:, : P + 1], mask[:, : P + 1]
    mask[:, P] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -2:-1]
        out = lean_completion_logits(model, ids, mask, 1, *prompt_owners(ids[:, :-1], mask[:, :-1]))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["qwen2-micro", "qwen3-micro"])
def test_bf16_autocast_close_to_fp32(models, name):
    model = models[name]
    ids, mask = make_batch(model.config.vocab_size, 3, 4)
    real = mask[:, -T:].bool()
    with torch.no_grad():
        ref = token_logprobs(reference_logits(model, ids, mask, shared=True).float(), ids[:, -T:])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = lean_logits(model, ids, mask)
            hf16 = reference_logits(model, ids, mask, shared=True)
    assert out.dtype == torch.bfloat16
    logp = token_logprobs(out.float(), ids[:, -T:])
    torch.testing.assert_close(logp[real], ref[real], atol=0.05, rtol=0.02)
    # no worse than HF's own bf16 autocast forward, with some slack
    hf_err = (token_logprobs(hf16.float(), ids[:, -T:]) - ref)[real].abs().max()
    assert (logp - ref)[real].abs().max() <= 2 * hf_err + 1e-3


def test_lean_reason_accepts_the_plain_family(models):
    for model in models.values():
        assert lean_reason(model) is None
        assert lean_reason(model.eval()) is None
        model.train()


def test_lean_reason_refusals():
    peft = pytest.importorskip("peft")
    base, _ = load_policy(config="qwen2-micro", seed=0)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert "PEFT" in lean_reason(lora)

    dropout, _ = load_policy(config="llama-micro", config_overrides={"attention_dropout": 0.1}, seed=0)
    assert "attention_dropout" in lean_reason(dropout.train())
    assert lean_reason(dropout.eval()) is None  # HF applies attention dropout only in training
    dropout.config.attention_dropout = 0.0
    dropout.model.layers[0].mlp.add_module("drop", torch.nn.Dropout(0.1))
    assert lean_reason(dropout.eval()) is None and "Dropout" in lean_reason(dropout.train())

    ckpt, _ = load_policy(config="qwen3-micro", seed=0)
    ckpt.gradient_checkpointing_enable()
    assert lean_reason(ckpt.train()) is None  # the lean forward checkpoints its own layers

    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2, vocab_size=40))
    assert "model_type" in lean_reason(gpt2)
