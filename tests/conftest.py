"""Shared fixtures: a tiny, fast run config (qwen2-micro, 1-digit addition) in a temporary folder; d loss / d logp of
the trainer's micro-batch loss."""

import pytest
import torch

from rlvr.config import load_config

torch.set_num_threads(2)


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides):
        base = [
            "name=t", f"output_dir={tmp_path}/runs", "model.config=qwen2-micro", "task.name=arithmetic",
            "task.kwargs={digits: 1, ops: '+'}", "task.eval_size=16", "rollout.prompts_per_step=4",
            "rollout.group_size=4", "rollout.max_new_tokens=4", "optim.lr=1e-3", "train.steps=4",
            "train.progress=false", "algo.micro_batch_size=8",
        ]
        return load_config(None, base + list(overrides))

    return make


@pytest.fixture
def logp_grads():
    """d loss / d logp (N, T) of one micro-batch loss through the policy's real forward (the parameters keep their
    gradients): logp_grads(policy, batch, fns)."""
    from rlvr.distributed import World
    from rlvr.metrics import Metrics
    from rlvr.update import micro_batch_loss

    def grads(policy, batch, fns):
        kept, real = {}, policy.logp

        def spy(mb, **kw):
            logp, entropy = real(mb, **kw)
            logp.retain_grad()
            kept["logp"] = logp
            return logp, entropy

        policy.logp = spy
        try:
            micro_batch_loss(policy, batch, fns, float(batch.loss_mask.sum()), 8.0, World(), Metrics()).backward()
        finally:
            policy.logp = real
        return kept["logp"].grad

    return grads
