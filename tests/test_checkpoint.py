"""Checkpoints: atomic writes (a crash mid-write keeps the last good one), `latest` pointer, pruning."""

import torch
from transformers import AutoModelForCausalLM

from rlvr.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint, save_model_atomic
from rlvr.policies import HFCausalLM, load_policy


def test_save_and_reload(tmp_path):
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    model = policy.model
    root = tmp_path / "ckpt"
    for step in (1, 2, 3):
        save_checkpoint(root, step, policy, {"step": step}, keep=2)
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000002", "step-000003"]
    latest = latest_checkpoint(root)
    assert latest.name == "step-000003" and load_trainer_state(latest)["step"] == 3
    loaded = AutoModelForCausalLM.from_pretrained(latest / "model")
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n


def test_crash_mid_write_keeps_last_good(tmp_path, monkeypatch):
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    root = tmp_path / "ckpt"
    save_checkpoint(root, 1, policy, {"step": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    try:
        save_checkpoint(root, 2, policy, {"step": 2})
    except OSError:
        pass
    monkeypatch.undo()
    latest = latest_checkpoint(root)
    assert latest.name == "step-000001" and load_trainer_state(latest)["step"] == 1
    assert not (root / "step-000002").exists()


def test_save_model_atomic_replaces(tmp_path):
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    out = tmp_path / "final"
    save_model_atomic(policy, out)
    save_model_atomic(policy, out)
    assert (out / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_reloaded_model_has_the_same_padding_idx(tmp_path):
    """A model built from a config and the same model reloaded from its checkpoint must train identically: the
    embedding's padding_idx (whose row gets no gradient) comes from the config in both cases. Found through an
    ExGRPO resume whose gradients differed only in the pad row of the tied embedding."""
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    model, tok = policy.model, policy.tokenizer
    save_model_atomic(policy, tmp_path / "m")
    loaded, _ = load_policy(path=tmp_path / "m")
    assert model.model.embed_tokens.padding_idx == loaded.model.embed_tokens.padding_idx == tok.pad_token_id


def test_a_kill_while_resaving_a_step_keeps_a_complete_checkpoint(tmp_path, monkeypatch):
    """Saving step 3 again (a finished run resumed, or Ctrl-C right after a periodic save) must never leave `latest`
    naming nothing: the finished copy is moved aside, not deleted, until the new one is in place."""
    import os

    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    root = tmp_path / "ckpt"
    save_checkpoint(root, 3, policy, {"step": 3})
    real = os.replace
    calls = []

    def killed(src, dst):  # the process dies at the rename that puts the new copy in place
        calls.append((src, dst))
        if ".tmp-" in str(src):
            raise KeyboardInterrupt("kill -9")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    try:
        save_checkpoint(root, 3, policy, {"step": 3, "again": True})
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    latest = latest_checkpoint(root)
    assert latest is not None and latest.name == "step-000003" and load_trainer_state(latest) == {"step": 3}


def test_trainer_state_is_read_without_running_code(tmp_path):
    """trainer.pt is read with weights_only=True: a pickle that would run code is refused with one clear line."""
    import pytest

    from rlvr.checkpoint import CheckpointError

    class Exploit:
        def __reduce__(self):
            return (print, ("this ran during torch.load",))

    folder = tmp_path / "step-000001"
    (folder / "model").mkdir(parents=True)
    torch.save({"state": Exploit()}, folder / "trainer.pt")
    with pytest.raises(CheckpointError, match="safe loader"):
        load_trainer_state(folder)
