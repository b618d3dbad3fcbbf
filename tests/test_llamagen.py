"""LlamaGen-format folders (rlvr.images.llamagen, rlvr.images.llamagen_gpt): the VQ-16 tokenizer and the GPT-B
class-conditional generator have exactly the state-dict keys and shapes of LlamaGen's models (arXiv 2406.14838:
VQ-16 §2.1 / Table 1, GPT-B §2.2 / Table 2; the list below is written down from its released model definitions);
a tiny folder in that format loads strictly and a missing, misshapen or unexpected key is one line naming it; the
2-D RoPE table matches hand-worked angles; the code-vocabulary adapter gives the GPT's logits, and KV-cached
sampling gives the same log-probs as a teacher-forced pass over its own samples."""

import json

import pytest
import torch

from rlvr.config import ConfigError
from rlvr.images.llamagen import LlamaGenVQModel, VQArgs, read_folder_config
from rlvr.images.llamagen_gpt import (
    GPTArgs,
    LlamaGenGPT,
    gpt_args,
    load_llamagen_policy,
    rope_2d,
    write_tiny_folder,
)
from rlvr.images.tokenizers import load_tokenizer


def resnet(prefix, cin, cout):
    keys = {f"{prefix}.norm1.weight": (cin,), f"{prefix}.norm1.bias": (cin,),
            f"{prefix}.conv1.weight": (cout, cin, 3, 3), f"{prefix}.conv1.bias": (cout,),
            f"{prefix}.norm2.weight": (cout,), f"{prefix}.norm2.bias": (cout,),
            f"{prefix}.conv2.weight": (cout, cout, 3, 3), f"{prefix}.conv2.bias": (cout,)}
    if cin != cout:
        keys.update({f"{prefix}.nin_shortcut.weight": (cout, cin, 1, 1), f"{prefix}.nin_shortcut.bias": (cout,)})
    return keys


def attn(prefix, c):
    keys = {f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,)}
    for name in ("q", "k", "v", "proj_out"):
        keys.update({f"{prefix}.{name}.weight": (c, c, 1, 1), f"{prefix}.{name}.bias": (c,)})
    return keys


def conv(prefix, cout, cin, k):
    return {f"{prefix}.weight": (cout, cin, k, k), f"{prefix}.bias": (cout,)}


def mid(prefix, c):
    return {**resnet(f"{prefix}.0", c, c), **attn(f"{prefix}.1", c), **resnet(f"{prefix}.2", c, c)}


def vq16_keys():
    """LlamaGen's VQ-16: ch 128, multipliers (1, 1, 2, 2, 4), 2 ResNet blocks per encoder level (3 per decoder
    level), attention at the lowest resolution, z 256, codebook 16384 x 8 and its 65536-slot usage buffer."""
    mult, keys = [1, 1, 2, 2, 4], {}
    keys.update(conv("encoder.conv_in", 128, 3, 3))
    cin = 128
    for i, m in enumerate(mult):
        for b in range(2):
            keys.update(resnet(f"encoder.conv_blocks.{i}.res.{b}", cin, 128 * m))
            cin = 128 * m
            if i == 4:
                keys.update(attn(f"encoder.conv_blocks.{i}.attn.{b}", cin))
        if i < 4:
            keys.update(conv(f"encoder.conv_blocks.{i}.downsample.conv", cin, cin, 3))
    keys.update({**mid("encoder.mid", 512), "encoder.norm_out.weight": (512,), "encoder.norm_out.bias": (512,),
                 **conv("encoder.conv_out", 256, 512, 3), **conv("quant_conv", 8, 256, 1),
                 **conv("post_quant_conv", 256, 8, 1), "quantize.embedding.weight": (16384, 8),
                 "quantize.codebook_used": (65536,), **conv("decoder.conv_in", 512, 256, 3), **mid("decoder.mid", 512)})
    cin = 512
    for j, m in enumerate(reversed(mult)):  # decoder.conv_blocks.0 is the lowest resolution
        for b in range(3):
            keys.update(resnet(f"decoder.conv_blocks.{j}.res.{b}", cin, 128 * m))
            cin = 128 * m
            if j == 0:
                keys.update(attn(f"decoder.conv_blocks.{j}.attn.{b}", cin))
        if j < 4:
            keys.update(conv(f"decoder.conv_blocks.{j}.upsample.conv", cin, cin, 3))
    keys.update({"decoder.norm_out.weight": (128,), "decoder.norm_out.bias": (128,),
                 **conv("decoder.conv_out", 3, 128, 3)})
    return keys


def gpt_b_keys():
    """LlamaGen's GPT-B (c2i): 12 layers, 12 heads, dim 768, SwiGLU hidden 2048, 1000 classes + the null class,
    16384 codes; bias-free linear layers, RMSNorm weights."""
    keys = {"cls_embedding.embedding_table.weight": (1001, 768), "tok_embeddings.weight": (16384, 768),
            "norm.weight": (768,), "output.weight": (16384, 768)}
    for i in range(12):
        layer = f"layers.{i}"
        keys.update({f"{layer}.attention.wqkv.weight": (3 * 768, 768), f"{layer}.attention.wo.weight": (768, 768),
                     f"{layer}.feed_forward.w1.weight": (2048, 768), f"{layer}.feed_forward.w3.weight": (2048, 768),
                     f"{layer}.feed_forward.w2.weight": (768, 2048), f"{layer}.attention_norm.weight": (768,),
                     f"{layer}.ffn_norm.weight": (768,)})
    return keys


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_the_published_architectures_have_llamagens_keys_and_shapes():
    with torch.device("meta"):  # shapes only: no 100M-parameter allocation
        vq, gpt = LlamaGenVQModel(VQArgs()), LlamaGenGPT(GPTArgs())
    assert len(vq16_keys()) == 344 and shapes(vq) == vq16_keys()
    assert len(gpt_b_keys()) == 88 and shapes(gpt) == gpt_b_keys()


def test_a_tiny_folder_loads_strictly_from_its_config(tmp_path):
    write_tiny_folder(tmp_path, size=8, classes=4, codes=16)
    fc = read_folder_config(tmp_path)
    args = gpt_args(fc)
    assert (args.vocab_size, args.num_classes, args.block_size, args.n_layer, args.dim) == (16, 4, 16, 2, 32)
    vq = load_tokenizer(tmp_path, size=8)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    codes = vq.encode(x)
    assert codes.shape == (2, 16) and vq.decode(codes).shape == (2, 3, 8, 8)
    policy = load_llamagen_policy(tmp_path)
    saved = torch.load(tmp_path / "c2i_tiny_8.pt", weights_only=True)["model"]
    assert all(torch.equal(policy.gpt.state_dict()[k], saved[k]) for k in saved)


@pytest.mark.parametrize("change, message", [
    ("drop", "c2i_tiny_8.pt: missing key 'layers.1.feed_forward.w2.weight'"),
    ("shape", r"c2i_tiny_8.pt: key 'layers.1.feed_forward.w2.weight' has shape \(32, 47\), the config's model wants "
              r"\(32, 96\)"),
    ("extra", "c2i_tiny_8.pt: unexpected key 'layers.2.ffn_norm.weight'"),
])
def test_a_bad_checkpoint_key_is_one_line_naming_it(tmp_path, change, message):
    write_tiny_folder(tmp_path)
    path = tmp_path / "c2i_tiny_8.pt"
    state = torch.load(path, weights_only=True)["model"]
    key = "layers.1.feed_forward.w2.weight"
    if change == "drop":
        del state[key]
    elif change == "shape":
        state[key] = state[key][:, :47]
    else:
        state["layers.2.ffn_norm.weight"] = torch.ones(32)
    torch.save({"model": state}, path)
    with pytest.raises(ConfigError, match=message):
        load_llamagen_policy(tmp_path)


def test_a_bad_folder_config_is_one_line(tmp_path):
    write_tiny_folder(tmp_path)
    config = json.loads((tmp_path / "llamagen.json").read_text())
    (tmp_path / "llamagen.json").write_text(json.dumps({**config, "gpt_model": "GPT-Q"}))
    with pytest.raises(ConfigError, match=r"gpt_model 'GPT-Q' is not one of \['GPT-B', "):
        load_llamagen_policy(tmp_path)
    (tmp_path / "llamagen.json").write_text(json.dumps({**config, "gpt_args": {"n_layers": 2}}))
    with pytest.raises(ConfigError, match="gpt_args: unknown key 'n_layers'"):
        load_llamagen_policy(tmp_path)


def test_rope_2d_hand_worked():
    # head_dim 8: 4 rotation pairs, frequencies 10000^(-0/4), 10000^(-2/4) = 1, 0.01 for the row, then the column
    table = rope_2d(2, 8, 10000.0, 1)  # (1 + 4, 4, 2)
    assert table.shape == (5, 4, 2) and torch.equal(table[0], torch.zeros(4, 2))  # the class token: all zeros
    # position p holds code p - 1 at (row, col) = divmod(p - 1, 2)
    want = {1: [0, 0, 0, 0], 2: [0, 0, 1, 0.01], 3: [1, 0.01, 0, 0], 4: [1, 0.01, 1, 0.01]}
    for p, angles in want.items():
        a = torch.tensor(angles)
        torch.testing.assert_close(table[p], torch.stack([a.cos(), a.sin()], -1))


def test_the_adapter_gives_the_gpts_logits_and_cached_sampling_matches_teacher_forcing(tmp_path):
    from rlvr.algos.va_pi import teacher_forced_logits
    from rlvr.batch import Sample
    from rlvr.images.ar import code_ids
    from rlvr.policies import SamplingParams

    write_tiny_folder(tmp_path)
    policy = load_llamagen_policy(tmp_path)
    labels = torch.tensor([0, 3])
    codes = torch.randint(16, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = policy.gpt(labels, codes[:, :-1])  # (2, 16, 16): position t predicts code t
        got = teacher_forced_logits(policy, labels, codes)
    torch.testing.assert_close(got, want)
    rows = [Sample(prompt="<class_0>"), Sample(prompt="<class_3>")]
    batch = policy.generate(rows, group_ids=torch.arange(2), seeds=torch.tensor([5, 6]),
                            params=SamplingParams(max_new_tokens=16, temperature=1.0))
    drawn = code_ids(policy, batch.completion_ids)
    with torch.no_grad():
        logp = teacher_forced_logits(policy, labels, drawn).log_softmax(-1).gather(-1, drawn[..., None])[..., 0]
    torch.testing.assert_close(batch.rollout_logp, logp, atol=1e-5, rtol=1e-5)
    alone = policy.generate(rows[1:], group_ids=torch.arange(1), seeds=torch.tensor([6]),
                            params=SamplingParams(max_new_tokens=16, temperature=1.0))
    assert torch.equal(alone.completion_ids[0], batch.completion_ids[1])  # each row's draws come from its own seed


def test_a_generator_only_folder_takes_its_grid_from_the_image_size(tmp_path):
    # LlamaGen's c2i_B_256.pt alone: 256 px through a 16x downsampling tokenizer -> a 16 x 16 grid, 256 codes
    (tmp_path / "llamagen.json").write_text(json.dumps({"gpt_model": "GPT-B", "gpt_ckpt": "c2i_B_256.pt"}))
    assert gpt_args(read_folder_config(tmp_path)).block_size == 256
    (tmp_path / "llamagen.json").write_text(json.dumps({"gpt_model": "GPT-L", "gpt_ckpt": "c2i_L_384.pt",
                                                        "image_size": 384}))
    args = gpt_args(read_folder_config(tmp_path))
    assert (args.block_size, args.n_layer, args.dim) == (576, 24, 1024)
