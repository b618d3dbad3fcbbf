"""rlvr.policies: the char tokenizer (exact round trip, AutoTokenizer reload), tiny configs, load_policy (seeded
random weights, special ids, save -> load round trip, clear errors) and encode_prompts (left padding, chat messages)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.policies import TINY_CONFIGS, char_tokenizer, encode_prompts, load_policy

TEXT = "  12 + 3 = 15 .\n(x*y)/z <= 7; Hi, ok?!  "


def test_char_tokenizer_round_trips_text_exactly():
    tok = char_tokenizer()
    ids = tok(TEXT)["input_ids"]
    assert len(ids) == len(TEXT)  # one token per character, spaces included, no special tokens added
    assert tok.decode(ids) == TEXT
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok("a\u00e9")["input_ids"][1] == tok.unk_token_id
    assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == TEXT


def test_char_tokenizer_custom_alphabet_and_empty_alphabet_error():
    tok = char_tokenizer("ab")
    assert len(tok) == 5 and tok("ba")["input_ids"] == [4, 3]
    with pytest.raises(ValueError, match="alphabet is empty"):
        char_tokenizer("")


def test_char_tokenizer_reloads_with_auto_tokenizer(tmp_path):
    tok = char_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
    assert loaded.decode(loaded(TEXT)["input_ids"]) == TEXT
    assert (loaded.pad_token_id, loaded.eos_token_id, len(loaded)) == (0, 1, len(tok))


@pytest.mark.parametrize("name,cls", [("qwen2-micro", "Qwen2ForCausalLM"), ("llama-micro", "LlamaForCausalLM")])
def test_load_policy_builds_real_hf_model_with_special_ids(name, cls):
    model, tok = load_policy(config=name)
    assert type(model).__name__ == cls and not model.training
    assert model.config.vocab_size == len(tok)
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tok.pad_token_id
    assert model.config.eos_token_id == model.generation_config.eos_token_id == tok.eos_token_id


def test_tiny_config_sizes():
    cfg = TINY_CONFIGS["qwen2-tiny"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["intermediate_size"]) == (
        256,
        4,
        4,
        1024,
    )
    assert TINY_CONFIGS["llama-tiny"]["model_type"] == "llama"


def test_load_policy_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, _ = load_policy(config="qwen2-micro", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = load_policy(config="qwen2-micro", seed=3)
    c, _ = load_policy(config="qwen2-micro", seed=4)
    w = lambda m: m.model.layers[0].mlp.up_proj.weight  # noqa: E731
    assert torch.equal(w(a), w(b)) and not torch.equal(w(a), w(c))


def test_config_overrides_and_dtype():
    model, _ = load_policy(config="qwen2-micro", config_overrides={"num_hidden_layers": 1}, dtype="bfloat16")
    assert len(model.model.layers) == 1 and model.dtype == torch.bfloat16


def test_saved_policy_round_trips(tmp_path):
    model, tok = load_policy(config="qwen2-micro")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    ids, mask = encode_prompts(tok, ["1+2=", "hello"])
    loaded, tok2 = load_policy(path=tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, ref)
        torch.testing.assert_close(plain(input_ids=ids, attention_mask=mask).logits, ref)
    assert tok2.decode(tok2("1+2=")["input_ids"]) == "1+2=" and loaded.config.pad_token_id == 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(), "exactly one of path"),
        (dict(path="/x", config="qwen2-micro"), "exactly one of path"),
        (dict(path="/no/such/folder"), "does not exist"),
        (dict(config="qwen9-giant"), "unknown config 'qwen9-giant'"),
        (dict(config="qwen2-micro", config_overrides={"hiden_size": 8}), "hiden_size"),
        (dict(config="qwen2-micro", dtype="float8"), "unknown dtype"),
        (dict(config="qwen2-micro", tokenizer="/no/such/tok"), "neither 'char' nor"),
    ],
)
def test_load_policy_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_policy(**kwargs)


def test_encode_prompts_left_pads_and_joins_chat_without_template():
    tok = char_tokenizer()
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2="}]
    ids, mask = encode_prompts(tok, ["1+1=", chat, "a"])
    assert ids.shape == mask.shape == (3, len("be brief\n2+2="))
    assert tok.decode(ids[1]) == "be brief\n2+2="
    assert mask[0].tolist() == [0] * 9 + [1] * 4 and ids[0, :9].eq(tok.pad_token_id).all()
    assert tok.decode(ids[0, mask[0].bool()]) == "1+1=" and tok.decode(ids[2, -1:]) == "a"


def test_encode_prompts_uses_chat_template_when_present():
    tok = char_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['role'][0] }}>{{ m['content'] }}{% endfor %}"
    tok.chat_template += "{% if add_generation_prompt %}<a>{% endif %}"
    ids, _ = encode_prompts(tok, [[{"role": "user", "content": "hi"}], "plain"])
    assert tok.decode(ids[0]) == "<u>hi<a>"
    assert tok.decode(ids[1][ids[1] != tok.pad_token_id]) == "plain"


def test_encode_prompts_rejects_empty_prompt():
    with pytest.raises(ValueError, match="prompt 1 encodes to no tokens"):
        encode_prompts(char_tokenizer(), ["ok", ""])


def test_checkpoint_folder_reloads_the_char_tokenizer_not_the_model_types(tmp_path):
    """A model and its char tokenizer saved in one folder (every SFT output and checkpoint): transformers 5's
    AutoTokenizer would build Qwen2Tokenizer from config.json, whose byte-level pre-tokenizer drops spaces."""
    model, tok = load_policy(config="qwen2-micro")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    _, loaded = load_policy(path=tmp_path)
    text = "3 4 2 -> 10: $3 * 4 - 2 = 10$"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text and loaded.padding_side == "left"


def test_rows_share_a_prompt_forward_only_with_equal_prompt_inputs():
    """prompt_owners: rows share the previous row's prompt forward when the tokens and every per-row input of the
    prompt forward (e.g. an image) are equal; two different images under one question never share a cache."""
    from rlvr.policies import prompt_owners

    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [0, 5, 6], [7, 5, 6], [9, 5, 6]])
    mask = torch.tensor([[0, 1, 1]] * 4 + [[1, 1, 1]])
    owner, first = prompt_owners(ids, mask)  # padding differs in content only: rows 0-3 share, row 4 does not
    assert owner.tolist() == [0, 0, 0, 0, 1] and first.tolist() == [0, 4]
    images = [torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), torch.ones(2, 2), torch.ones(2, 2)]
    owner, first = prompt_owners(ids, mask, [images])
    assert owner.tolist() == [0, 0, 1, 1, 2] and first.tolist() == [0, 2, 4]
    owner, _ = prompt_owners(ids, mask, [["a.png", "a.png", "a.png", "b.png", "b.png"]])
    assert owner.tolist() == [0, 0, 0, 1, 2]


def test_policy_generates_a_batch_and_saves_a_loadable_folder(tmp_path):
    from rlvr.batch import Sample
    from rlvr.policies import HFCausalLM, SamplingParams

    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    batch = policy.generate([Sample("1+1="), Sample("1+1="), Sample("22+3=")], group_ids=torch.tensor([0, 0, 1]),
                            seeds=torch.arange(3), params=SamplingParams(max_new_tokens=4))
    assert batch.completion_ids.shape[0] == 3 and torch.equal(batch.loss_mask, batch.completion_mask.float())
    logp, entropy = policy.logp(batch, with_entropy=True)
    m = batch.loss_mask.bool()
    torch.testing.assert_close(logp[m], batch.rollout_logp[m], atol=1e-4, rtol=0)  # sampler and trainer agree
    assert (entropy[m] > 0).all()
    ref = policy.frozen_copy()
    assert not any(p.requires_grad for p in ref.parameters()) and all(p.requires_grad for p in policy.parameters())
    policy.save(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(policy.model.state_dict().values(), reloaded.state_dict().values()))


def _templated_tokenizer():
    tok = char_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['role'][0] }}>{{ m['content'] }}{% endfor %}"
    tok.chat_template += "{% if add_generation_prompt %}<a>{% endif %}"
    return tok


def test_plain_prompts_go_through_the_chat_template_by_default():
    """model.chat_template: auto (default) makes a plain-string prompt a user turn of the tokenizer's template, as an
    instruct checkpoint expects; none feeds it raw; a Jinja string replaces the tokenizer's template."""
    from rlvr.batch import Sample
    from rlvr.policies import HFCausalLM

    model, _ = load_policy(config="qwen2-micro")
    auto = HFCausalLM(model, _templated_tokenizer())
    ids, mask = auto.encode([Sample("1+1=")])
    assert auto.tokenizer.decode(ids[0][mask[0].bool()]) == "<u>1+1=<a>" and "chat template" in auto.prompt_format
    raw = HFCausalLM(model, _templated_tokenizer(), chat_template="none")
    ids, mask = raw.encode([Sample("1+1="), Sample([{"role": "user", "content": "2+2="}])])
    assert [raw.tokenizer.decode(i[m.bool()]) for i, m in zip(ids, mask)] == ["1+1=", "2+2="]
    template = "{% for m in messages %}Q:{{ m['content'] }}{% endfor %}"
    custom = HFCausalLM(model, char_tokenizer(), chat_template=template)
    ids, mask = custom.encode([Sample("3+3=")])
    assert custom.tokenizer.decode(ids[0][mask[0].bool()]) == "Q:3+3="
    plain = HFCausalLM(model, char_tokenizer())
    assert plain.prompt_format.startswith("plain text") and not plain.templated


def test_sft_from_a_checkpoint_keeps_its_tokenizer(tmp_path):
    """sft.init = a checkpoint folder trains with, and saves, that checkpoint's own tokenizer (its chat template
    included), not the built-in character tokenizer."""
    from rlvr.config import load_config
    from rlvr.warm_start import sft

    model, _ = load_policy(config="qwen2-micro", seed=0)
    start = tmp_path / "start"
    model.save_pretrained(start)
    _templated_tokenizer().save_pretrained(start)
    cfg = load_config(None, [f"sft.init={start}", f"sft.output={tmp_path}/out", "sft.steps=2", "sft.batch_size=4",
                             "sft.eval_every=2", "task.eval_size=2", "rollout.max_new_tokens=2", f"model.path={start}",
                             f"output_dir={tmp_path}", "train.progress=false"])
    out = sft(cfg)
    saved = AutoTokenizer.from_pretrained(out["model"])
    assert saved.chat_template == _templated_tokenizer().chat_template
