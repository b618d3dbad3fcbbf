"""A class-conditional autoregressive image policy over VQ codes, as a Hugging Face causal LM (issue 11).

    tok = code_tokenizer(codes=128, classes=4)          # <pad> <eos> <unk>, <class_0>.., <code_0>..
    policy = image_policy(ar_model(tok), tok)           # an HFCausalLM: the core's sampler, lean forward, checkpoints
    batch = policy.generate([Sample(prompt="<class_2>")], ..., params=SamplingParams(max_new_tokens=16))
    codes = code_ids(policy, batch.completion_ids)      # (N, 16) VQ codes -> VQTokenizer.decode(codes)

1. Vocabulary: the three specials, one token per class, one per code; a prompt is its class token ("<class_2>"), a
   completion the image's codes in raster order ("<code_5><code_17>..."). The tokenizer is a WordLevel
   `PreTrainedTokenizerFast` that splits on the bracketed words, so it saves and reloads like any HF tokenizer.
2. Model: a `LlamaForCausalLM` (default 4 layers, d 128, 4 heads) over that vocabulary, so the core's lean forward,
   KV-cached sampler, LoRA and checkpoints serve it unchanged (LlamaGen's class-conditional GPT is this shape:
   a class embedding as the first token, then raster-order codes, arXiv 2406.14838 §2.2).
3. `image_policy` bans every non-code token from sampling (the softmax stays the full one, so the sampler's
   log-probs equal the trainer's): a completion is exactly `max_new_tokens` codes.
"""

from __future__ import annotations

import torch

from rlvr.policies.causal_lm import HFCausalLM

SPECIALS = ("<pad>", "<eos>", "<unk>")


def code_tokenizer(*, codes: int, classes: int):
    """The vocabulary of module docstring 1 as a PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if codes < 2 or classes < 1:
        raise ValueError(f"code_tokenizer: need codes >= 2 and classes >= 1, got {codes}, {classes}")
    words = [*SPECIALS, *(f"<class_{k}>" for k in range(classes)), *(f"<code_{j}>" for j in range(codes))]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"<[^<>]*>"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   padding_side="left", clean_up_tokenization_spaces=False)


def first_code_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<code_0>")


def ar_model(tokenizer, *, hidden: int = 128, layers: int = 4, heads: int = 4, max_tokens: int = 1025, seed: int = 0):
    """A random-weight LlamaForCausalLM over the tokenizer's vocabulary (module docstring 2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_tokens, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def image_policy(model, tokenizer, **options) -> HFCausalLM:
    """An HFCausalLM that samples codes only (module docstring 3); options go to HFCausalLM (autocast, lean)."""
    first = first_code_id(tokenizer)
    if first == tokenizer.unk_token_id:
        raise ValueError("image_policy: the tokenizer has no <code_0> token (build it with code_tokenizer)")
    return HFCausalLM(model, tokenizer, chat_template="none", banned=tuple(range(first)), **options)


def load_image_policy(path: str, **options):
    """A folder an image policy saved (model and tokenizer), as an image policy again; a LlamaGen folder
    (llamagen.json naming a generator) as a rlvr.images.llamagen_gpt.LlamaGenPolicy (options do not apply)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if is_llamagen_policy(path):
        from rlvr.images.llamagen_gpt import load_llamagen_policy

        return load_llamagen_policy(path)

    return image_policy(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), **options)


def is_llamagen_policy(path: str) -> bool:
    """Whether `path` is a LlamaGen folder holding a generator (rlvr.images.llamagen module docstring 1)."""
    import json
    from pathlib import Path

    config = Path(path) / "llamagen.json"
    return config.is_file() and "gpt_ckpt" in json.loads(config.read_text())


def code_ids(policy, completion_ids: torch.Tensor) -> torch.Tensor:
    """(N, T) completion token ids -> VQ code indices; a non-code token is an error naming its row."""
    codes = completion_ids - first_code_id(policy.tokenizer)
    bad = (codes < 0).any(-1).nonzero().flatten()
    if len(bad):
        raise ValueError(f"code_ids: row {int(bad[0])} holds a token that is not a code")
    return codes
