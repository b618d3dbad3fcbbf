"""Vision-language models of the Qwen2-VL family: tiny named configs, loading, the tokenizer's vision tokens, the
image processor (rlvr.policies.vlm runs them as a Policy).

    model, tok, image_processor = load_vlm(config="qwen2.5-vl-micro")    # or path="/models/Qwen2.5-VL-3B-Instruct"

1. A local folder loads with AutoModelForImageTextToText (never downloads), its tokenizer and its image processor
   (preprocessor_config.json); `processor` options (min_pixels, max_pixels) override the folder's.
2. A VLM_CONFIGS name builds the real HF class with seeded random weights; the character tokenizer gains the vision
   special tokens, whose ids go into the config; tiny models see small images (TINY_PROCESSOR).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch

from rlvr.policies.hf import as_dtype, load_tokenizer, set_special_ids

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
VLM_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # get_rope_index / visual / image_token_id as these define
# Image features enter these models only as token embeddings, so rlvr scatters them itself (vision tower once per
# distinct image); Qwen3-VL also adds them inside the first layers (DeepStack): its forward takes the pixels itself.
EMBEDDING_ONLY = ("qwen2_vl", "qwen2_5_vl")

_MICRO_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=256, max_position_embeddings=1024,
                   rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
_TINY_TEXT = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=512, max_position_embeddings=1024,
                  rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 10000.0})
_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
               temporal_patch_size=2, fullatt_block_indexes=[1], window_size=56)

VLM_CONFIGS: dict[str, dict[str, Any]] = {
    # a 2-layer Qwen2.5-VL with a 2-block vision tower: tests (about 0.2 M parameters)
    "qwen2.5-vl-micro": dict(model_type="qwen2_5_vl", text_config=_MICRO_TEXT, vision_config=_VISION),
    # the CPU workload of benchmarks/vppo.py and benchmarks/vlm_step.py
    "qwen2.5-vl-tiny": dict(model_type="qwen2_5_vl", text_config=_TINY_TEXT,
                            vision_config={**_VISION, "hidden_size": 64, "intermediate_size": 128}),
    "qwen2-vl-micro": dict(model_type="qwen2_vl", text_config=_MICRO_TEXT,
                           vision_config=dict(depth=2, embed_dim=32, mlp_ratio=2, num_heads=2, patch_size=14,
                                              spatial_merge_size=2, temporal_patch_size=2)),
    "qwen3-vl-micro": dict(model_type="qwen3_vl",
                           text_config={**_MICRO_TEXT, "head_dim": 16, "rope_parameters": {
                               "rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True,
                               "rope_theta": 10000.0}},
                           vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                                              spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                                              deepstack_visual_indexes=[0])),
}
# tiny models see small images: 112 x 112 after the resize is 8 x 8 patches of 14 px, 16 tokens after the 2 x 2 merge
TINY_PROCESSOR = {"min_pixels": 112 * 112, "max_pixels": 224 * 224}
_PATCH16 = {"patch_size": 16, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}  # Qwen3-VL's processor


def is_vlm(*, config: str | None = None, path: str | os.PathLike | None = None) -> bool:
    """Whether a tiny config name or a checkpoint folder names a vision-language model."""
    if config is not None and config in VLM_CONFIGS:
        return True
    if path is None or not (Path(path) / "config.json").is_file():
        return False
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") in VLM_MODEL_TYPES
    except (OSError, ValueError):
        return False


def vlm_tokenizer(tokenizer: Any = None):
    """The tokenizer with the vision special tokens (a char tokenizer gains them; a real VLM's has them)."""
    tok = load_tokenizer(tokenizer, None)
    missing = [t for t in VISION_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing})
    return tok


def _image_processor(folder: str | os.PathLike | None, options: dict[str, Any] | None, patch_size: int = 14):
    from transformers import Qwen2VLImageProcessorPil

    options = dict(options or {})
    if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
        return Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True, **options)
    return Qwen2VLImageProcessorPil(**{**TINY_PROCESSOR, **(_PATCH16 if patch_size == 16 else {}), **options})


def load_vlm(*, path=None, config: str | None = None, config_overrides: dict[str, Any] | None = None,
             tokenizer: Any = None, processor: dict[str, Any] | None = None, dtype="float32", seed: int = 0):
    """(model, tokenizer, image_processor): a local checkpoint folder (`path`) or a tiny random-weight model."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    torch_dtype = as_dtype(dtype)
    if path is not None:
        if not os.path.isdir(path):
            raise ValueError(f"load_vlm: checkpoint folder '{path}' does not exist (nothing is downloaded)")
        tok = vlm_tokenizer(tokenizer if tokenizer is not None else str(path))
        model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
    else:
        if config not in VLM_CONFIGS:
            raise ValueError(f"load_vlm: unknown config '{config}'; choose from {sorted(VLM_CONFIGS)}")
        tok = vlm_tokenizer(tokenizer)
        spec = copy.deepcopy(VLM_CONFIGS[config])
        text = {**spec["text_config"], **(config_overrides or {}), "vocab_size": len(tok)}
        ids = {f"{k}_token_id": tok.convert_tokens_to_ids(f"<|{k}|>") for k in ("vision_start", "vision_end")}
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        text.update(pad_token_id=pad_id, bos_token_id=None, eos_token_id=tok.eos_token_id)
        cfg = AutoConfig.for_model(spec["model_type"], text_config=text,
                                   vision_config={**spec["vision_config"], **_out_size(spec, text)},
                                   image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                                   video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"), **ids,
                                   bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=pad_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_config(cfg, dtype=torch_dtype)
    set_special_ids(model, tok)
    return model.eval(), tok, _image_processor(path, processor, model.config.vision_config.patch_size)


def _out_size(spec: dict, text: dict) -> dict[str, int]:
    """The vision tower's output width = the text model's (Qwen2-VL names it hidden_size)."""
    key = "hidden_size" if spec["model_type"] == "qwen2_vl" else "out_hidden_size"
    return {key: text["hidden_size"]}
