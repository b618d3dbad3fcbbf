"""Policies: the only place that knows model internals (layers, rotary tables, norms, caches, tokenizers).

    policy = load_policy_of(config="qwen2-micro")       # HFCausalLM, or HFVisionLM for a vision-language model
    policy = HFCausalLM.load(config="qwen2-micro")     # a Policy (rlvr.policies.base): generate / logp / save
    model, tok = load_policy(path="/models/x")          # the bare transformers model and tokenizer
"""

from rlvr.policies.base import Policy, SamplingParams, prompt_owners
from rlvr.policies.causal_lm import HFCausalLM
from rlvr.policies.hf import TINY_CONFIGS, encode_prompts, load_policy
from rlvr.policies.tokenizer import char_tokenizer
from rlvr.policies.vlm import HFVisionLM
from rlvr.policies.vlm_models import VLM_CONFIGS, is_vlm

__all__ = ["HFCausalLM", "HFVisionLM", "Policy", "SamplingParams", "TINY_CONFIGS", "VLM_CONFIGS", "char_tokenizer",
           "encode_prompts", "is_vlm", "load_policy", "load_policy_of", "prompt_owners"]


def load_policy_of(*, path=None, config=None, gguf_file=None, processor=None, **options):
    """The Policy for a checkpoint folder, GGUF file or tiny config: HFVisionLM when it names a vision-language model
    (a VLM_CONFIGS name, or a folder whose config.json has a Qwen2-VL-family model_type), else HFCausalLM. `processor`
    (image processor options) applies to vision-language models only."""
    if gguf_file is None and is_vlm(config=config, path=path):
        options.pop("lean", None)
        return HFVisionLM.load(path=path, config=config, processor=processor, **options)
    return HFCausalLM.load(path=path, config=config, gguf_file=gguf_file, **options)
