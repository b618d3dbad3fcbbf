"""Policies: the only place that knows model internals (layers, rotary tables, norms, caches, tokenizers).

    policy = HFCausalLM.load(config="qwen2-micro")     # a Policy (rlvr.policies.base): generate / logp / save
    model, tok = load_policy(path="/models/x")          # the bare transformers model and tokenizer
"""

from rlvr.policies.base import Policy, SamplingParams, prompt_owners
from rlvr.policies.causal_lm import HFCausalLM
from rlvr.policies.hf import TINY_CONFIGS, encode_prompts, load_policy
from rlvr.policies.tokenizer import char_tokenizer

__all__ = ["HFCausalLM", "Policy", "SamplingParams", "TINY_CONFIGS", "char_tokenizer", "encode_prompts",
           "load_policy", "prompt_owners"]
