"""Rollout engines: `generate` samples completions from a policy (fast KV-cached path for the Llama/Qwen family)."""

from rlvr.rollout.fast import FastDecoder, unsupported_reason
from rlvr.rollout.sampler import HFDecoder, generate

__all__ = ["FastDecoder", "HFDecoder", "generate", "unsupported_reason"]
