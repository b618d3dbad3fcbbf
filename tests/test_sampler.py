"""rlvr.policies.sampling: the fast Llama/Qwen decoder matches the HF forward (prefill and every decode step,
left-padded prompts, GQA, tied/untied heads, Qwen3 q/k norms); greedy decoding equals `model.generate`; logp equals a
recomputed log_softmax(logits / temperature); masks, EOS, stop strings, truncation and early exit; top-k/top-p;
seeded reproducibility: a row samples the same tokens whatever other rows share its batch (counter-based streams);
the plain HF fallback for other architectures; argument errors."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from rlvr.policies import encode_prompts, load_policy
from rlvr.policies.family import family_reason as unsupported_reason
from rlvr.policies.fast_decode import FastDecoder
from rlvr.policies.sampling import generate
from rlvr.seeding import row_seeds

PROMPTS = ["1+1=", "hello world 12*3=", "a", "(7-2)*x"]
MICROS = ["qwen2-micro", "llama-micro", "qwen3-micro"]


def seeds(seed: int, n: int) -> torch.Tensor:
    return row_seeds(seed, "test", torch.arange(n))


@pytest.fixture(scope="module")
def policies():
    return {name: load_policy(config=name) for name in MICROS}


def hf_next_logits(model, ids, mask):
    """Reference: the HF forward over the whole sequence, positions counted from the first real token."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # (N, L, V)


@pytest.mark.parametrize("name", MICROS)
@pytest.mark.parametrize("repeat", [1, 3], ids=["distinct", "grouped"])  # grouped: each prompt prefilled once
@torch.no_grad()
def test_fast_decoder_logits_match_hf_forward(policies, name, repeat):
    model, tok = policies[name]
    ids, mask = encode_prompts(tok, [p for p in PROMPTS for _ in range(repeat)])
    dec = FastDecoder(model, ids, mask, max_new_tokens=6)
    logits = dec.prefill()
    torch.testing.assert_close(logits, hf_next_logits(model, ids, mask)[:, -1], atol=1e-4, rtol=0)
    for _ in range(6):
        nxt = torch.multinomial(logits.softmax(-1), 1)  # varied tokens, not just argmax
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
        logits = dec.step(nxt[:, 0])
        torch.testing.assert_close(logits, hf_next_logits(model, ids, mask)[:, -1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["qwen2-micro", "llama-micro"])
@pytest.mark.parametrize("backend", ["fast", "hf"])
def test_greedy_equals_model_generate(policies, name, backend):
    model, tok = policies[name]
    ids, mask = encode_prompts(tok, PROMPTS)
    out = generate(model, tok, ids, mask, max_new_tokens=10, greedy=True, backend=backend)
    ref = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=10)[:, ids.shape[1] :]
    assert torch.equal(out["completion_ids"], ref)


@pytest.mark.parametrize("backend", ["fast", "hf"])
@torch.no_grad()
def test_logp_equals_recomputed_log_softmax(policies, backend):
    model, tok = policies["llama-micro"]
    ids, mask = encode_prompts(tok, PROMPTS * 2)
    out = generate(model, tok, ids, mask, max_new_tokens=8, temperature=0.7, seeds=seeds(1, len(ids)),
                   backend=backend)
    full = torch.cat([ids, out["completion_ids"]], 1)
    logits = hf_next_logits(model, full, torch.cat([mask, out["completion_mask"]], 1))[:, ids.shape[1] - 1 : -1]
    ref = (logits / 0.7).log_softmax(-1).gather(-1, out["completion_ids"][..., None])[..., 0]
    m = out["completion_mask"].bool()
    torch.testing.assert_close(out["logp"][m], ref[m], atol=1e-4, rtol=0)
    assert out["logp"][~m].eq(0).all() and out["logp"].dtype == torch.float32


def test_same_seed_same_samples_and_backends_agree(policies):
    model, tok = policies["qwen2-micro"]
    ids, mask = encode_prompts(tok, PROMPTS * 2)

    def run(seed, backend="auto"):
        return generate(model, tok, ids, mask, max_new_tokens=8, seeds=seeds(seed, len(ids)), backend=backend)

    a, b, c, h = run(0), run(0), run(1), run(0, "hf")
    assert torch.equal(a["completion_ids"], b["completion_ids"]) and a["texts"] == b["texts"]
    assert not torch.equal(a["completion_ids"], c["completion_ids"])
    assert torch.equal(a["completion_ids"], h["completion_ids"])  # same logits up to 1e-6 -> same draws
    torch.testing.assert_close(a["logp"], h["logp"], atol=1e-4, rtol=0)


def test_a_row_samples_the_same_whatever_shares_its_batch(policies):
    """Counter-based sampling: rows drawn alone, in another order or next to other prompts (different padding) get
    the same tokens as in the full batch; an offset continues a row's stream where an earlier call left it."""
    model, tok = policies["qwen2-micro"]
    prompts = PROMPTS * 2
    ids, mask = encode_prompts(tok, prompts)
    s = seeds(3, len(prompts))
    full = generate(model, tok, ids, mask, max_new_tokens=8, seeds=s)
    for rows in ([5], [7, 2], [6, 1, 0]):
        sub_ids, sub_mask = encode_prompts(tok, [prompts[r] for r in rows])  # re-padded to the subset
        part = generate(model, tok, sub_ids, sub_mask, max_new_tokens=8, seeds=s[rows])
        assert part["texts"] == [full["texts"][r] for r in rows]
    head = generate(model, tok, ids[:1], mask[:1], max_new_tokens=3, seeds=s[:1])
    assert head["completion_mask"].all()  # no early end: the continuation below starts at draw 3
    ctx = torch.cat([ids[:1], head["completion_ids"]], 1)
    tail = generate(model, tok, ctx, torch.cat([mask[:1], head["completion_mask"]], 1), max_new_tokens=5,
                    seeds=s[:1], offsets=torch.tensor([3]))
    resumed = tok.decode(torch.cat([head["completion_ids"][0], tail["completion_ids"][0]]).tolist())
    assert resumed.startswith(full["texts"][0])


@torch.no_grad()
def test_top_k_and_top_p_restrict_the_samples(policies):
    model, tok = policies["llama-micro"]
    ids, mask = encode_prompts(tok, PROMPTS * 4)
    greedy = generate(model, tok, ids, mask, max_new_tokens=6, greedy=True)["completion_ids"]
    for kw in (dict(top_k=1), dict(top_p=1e-6)):
        out = generate(model, tok, ids, mask, max_new_tokens=6, seeds=seeds(0, len(ids)), **kw)
        assert torch.equal(out["completion_ids"], greedy), kw
    out = generate(model, tok, ids, mask, max_new_tokens=6, top_k=3, seeds=seeds(0, len(ids)))
    full = torch.cat([ids, out["completion_ids"]], 1)
    logits = hf_next_logits(model, full, torch.cat([mask, out["completion_mask"]], 1))[:, ids.shape[1] - 1 : -1]
    top3 = logits.topk(3, dim=-1).indices  # (N, T, 3)
    in_top3 = (top3 == out["completion_ids"][..., None]).any(-1)  # (N, T)
    assert in_top3[out["completion_mask"].bool()].all()


def test_eos_masks_pads_and_early_exit(policies):
    # The tied random micro model repeats the last prompt token under greedy decoding (residual stream dominated by
    # the token embedding), so a prompt ending in <eos> emits <eos> first.
    model, tok = policies["qwen2-micro"]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ids, mask = encode_prompts(tok, ["ab", "x"])
    ids[1, -1] = eos
    out = generate(model, tok, ids, mask, max_new_tokens=4, greedy=True)
    assert out["texts"] == ["bbbb", ""]
    assert out["completion_ids"][1].tolist() == [eos, pad, pad, pad]
    assert out["completion_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert out["truncated"].tolist() == [True, False]
    assert out["logp"][1, 1:].eq(0).all() and out["logp"][1, 0] < 0
    done = generate(model, tok, ids[1:], mask[1:], max_new_tokens=4, greedy=True)
    assert done["completion_ids"].shape == (1, 1)  # every row ended: stop early


def test_stop_string_cuts_text_and_masks_the_rest(policies):
    model, tok = policies["llama-micro"]
    ids, mask = encode_prompts(tok, PROMPTS)
    full = generate(model, tok, ids, mask, max_new_tokens=10, greedy=True)
    text = full["texts"][0]
    start = next(i for i in range(1, 7) if text.find(text[i : i + 2]) == i)  # a 2-char stop first seen at `start`
    stop = text[start : start + 2]
    out = generate(model, tok, ids, mask, max_new_tokens=10, greedy=True, stop=[stop, "never-seen"])
    assert out["texts"][0] == text[:start]
    n = start + 2  # char tokenizer: one token per char; the token completing the stop string stays unmasked
    assert out["completion_mask"][0].tolist() == [1] * n + [0] * (out["completion_mask"].shape[1] - n)
    assert out["completion_ids"][0, n:].eq(tok.pad_token_id).all()
    assert not out["truncated"][0]
    for r in range(1, len(PROMPTS)):  # other rows: cut only where they contain the stop string themselves
        assert out["texts"][r] == full["texts"][r].split(stop)[0]
        hit = stop in full["texts"][r]
        assert bool(out["truncated"][r]) == (False if hit else bool(full["truncated"][r]))
    again = generate(model, tok, ids, mask, max_new_tokens=10, greedy=True, stop=stop)  # a bare string works
    assert again["texts"] == out["texts"]


def test_fallback_for_other_architectures_matches_generate():
    _, tok = load_policy(config="qwen2-micro")
    cfg = AutoConfig.for_model(
        "gpt2",
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        vocab_size=len(tok),
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    assert unsupported_reason(model) is not None
    ids, mask = encode_prompts(tok, PROMPTS)
    out = generate(model, tok, ids, mask, max_new_tokens=8, greedy=True)
    ref = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=8)[:, ids.shape[1] :]
    assert torch.equal(out["completion_ids"], ref)
    with pytest.raises(ValueError, match="backend='fast' cannot run"):
        generate(model, tok, ids, mask, max_new_tokens=2, backend="fast")


def test_lora_wrapped_policy_falls_back_to_hf_loop(policies):
    peft = pytest.importorskip("peft")
    model, tok = load_policy(config="qwen2-micro")
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    assert unsupported_reason(lora) is not None  # the fast path would silently drop the adapter
    ids, mask = encode_prompts(tok, PROMPTS)
    out = generate(lora, tok, ids, mask, max_new_tokens=6, greedy=True)
    ref = lora.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=6)[:, ids.shape[1] :]
    assert torch.equal(out["completion_ids"], ref)


def test_bfloat16_policy_samples():
    model, tok = load_policy(config="qwen2-micro", dtype="bfloat16")
    ids, mask = encode_prompts(tok, PROMPTS)
    out = generate(model, tok, ids, mask, max_new_tokens=5, seeds=seeds(0, len(ids)))
    assert out["logp"].dtype == torch.float32 and torch.isfinite(out["logp"]).all()
    assert out["completion_ids"].shape == (4, 5)


@pytest.mark.parametrize("backend", ["fast", "hf"])
@pytest.mark.parametrize("name", MICROS)
def test_bf16_compute_dtype_tracks_fp32(policies, name, backend):
    """dtype=bfloat16 on fp32 weights: the fast decoder's cast copy / the HF loop's autocast stay close to fp32,
    leave the parameters untouched, and return fp32 log-probs."""
    model, tok = policies[name]
    before = [p.detach().clone() for p in model.parameters()]
    ids, mask = encode_prompts(tok, PROMPTS)
    ref = generate(model, tok, ids, mask, max_new_tokens=6, greedy=True, backend=backend)
    out = generate(model, tok, ids, mask, max_new_tokens=6, greedy=True, backend=backend, dtype=torch.bfloat16)
    assert out["logp"].dtype == torch.float32
    same = out["completion_ids"] == ref["completion_ids"]
    assert same[:, 0].all()  # the first token comes from the same prompt in both
    first = (~same).long().cumsum(-1) == 0  # positions before the first disagreement share their prefix
    diff = (out["logp"] - ref["logp"]).abs()[first]
    assert 0 < diff.max() < 0.1  # really computed in bf16 (not silently fp32), and close to it
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(top_p=0.0), "top_p"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(backend="vllm"), "unknown backend"),
    ],
)
def test_generate_argument_errors(policies, kwargs, match):
    model, tok = policies["qwen2-micro"]
    ids, mask = encode_prompts(tok, PROMPTS)
    with pytest.raises(ValueError, match=match):
        generate(model, tok, ids, mask, **{"max_new_tokens": 2, **kwargs})
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, tok, ids.flip(1), mask.flip(1), max_new_tokens=2)


def test_the_index_search_picks_the_token_whose_cdf_interval_holds_the_draw():
    """Token i is chosen when cdf[i-1] <= u * total < cdf[i] (float64 cdf): the binary search gives what counting the
    cdf entries <= the draw gives, at a 49k vocabulary, with zero-probability tokens (empty intervals), draws that
    land exactly on a boundary, and draws of 0 and just under 1."""
    from rlvr.policies.sampling import _sample

    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(64, 49152, generator=gen).pow(8)
    probs[:, ::3] = 0.0
    probs[:, -5:] = 0.0  # the last tokens can never be chosen
    probs = probs / probs.sum(-1, keepdim=True)
    cdf = probs.double().cumsum(-1)
    u = torch.rand(64, generator=gen, dtype=torch.float64)
    u[0], u[1] = 0.0, 1.0 - 2**-53
    u[2] = cdf[2, 1000] / cdf[2, -1]  # exactly on a boundary: the next non-empty interval
    expected = (cdf <= u[:, None] * cdf[:, -1:]).sum(-1).clamp(max=probs.shape[-1] - 1)
    got = _sample(probs, u)
    assert torch.equal(got, expected)
    assert bool((probs.gather(1, got[:, None]) > 0).all())  # never a zero-probability token


def test_rows_that_end_leave_the_batch_and_nothing_else_changes(policies, monkeypatch):
    """With many end tokens rows end at different steps; once half of the batch has ended the fast decoder drops
    those rows (FastDecoder.keep). The samples and their logps equal the HF loop's, which keeps every row."""
    model, tok = policies["llama-micro"]
    ids, mask = encode_prompts(tok, PROMPTS * 4)
    kept: list[int] = []
    keep = FastDecoder.keep
    monkeypatch.setattr(FastDecoder, "keep", lambda self, rows: (kept.append(len(rows)), keep(self, rows))[1])
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = list(range(4, 40))  # about a third of the vocabulary ends a row
    try:
        fast = generate(model, tok, ids, mask, max_new_tokens=12, seeds=seeds(5, len(ids)), backend="fast")
        hf = generate(model, tok, ids, mask, max_new_tokens=12, seeds=seeds(5, len(ids)), backend="hf")
    finally:
        model.generation_config.eos_token_id = saved
    lengths = fast["completion_mask"].sum(-1)
    assert kept and len(set(lengths.tolist())) > 3  # rows ended at several steps, and the batch shrank
    assert torch.equal(fast["completion_ids"], hf["completion_ids"]) and fast["texts"] == hf["texts"]
    torch.testing.assert_close(fast["logp"], hf["logp"], atol=1e-4, rtol=0)
