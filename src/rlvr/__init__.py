"""rlvr: reinforcement-learning post-training of generative models with verifiable and intrinsic rewards.

From Python, `rlvr.train(config, overrides, dataset=..., rewards=..., model=..., tokenizer=...)` and
`rlvr.sft(config, overrides)` run what `rlvr train` / `rlvr sft` run (rlvr.api). `import rlvr` stays light: torch
and transformers load on the first call.
"""

__all__ = ["sft", "train"]


def __getattr__(name: str):
    if name in __all__:
        from rlvr import api

        return getattr(api, name)
    raise AttributeError(f"module 'rlvr' has no attribute {name!r}")
