"""Policies: the only place that knows model internals (HF causal LMs, tiny configs, tokenizers)."""

from rlvr.policies.hf import TINY_CONFIGS, encode_prompts, load_policy
from rlvr.policies.tokenizer import char_tokenizer

__all__ = ["TINY_CONFIGS", "char_tokenizer", "encode_prompts", "load_policy"]
