"""The reward_model source: a local sequence-classification checkpoint scores completions (plain or POLAR-style
reference template); a checkpoint without a classification head fails before training, naming the path."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from rlvr.batch import Sample
from rlvr.config import ConfigError
from rlvr.policies import char_tokenizer, load_policy
from rlvr.rewards import REWARDS


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory):
    tok = char_tokenizer()
    cfg = AutoConfig.for_model("qwen2", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=1, intermediate_size=64, vocab_size=len(tok), num_labels=1,
                               pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(cfg)
    path = tmp_path_factory.mktemp("rm") / "rm"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_scores_are_deterministic_and_padding_free(rm_path):
    fn = REWARDS.build("reward_model", path=str(rm_path), batch_size=4)
    samples = [Sample("1+1=", answer="2"), Sample("12+30=", answer="42"), Sample("7+8=", answer="15")]
    comps = ["2", "a much longer completion 42", "15"]
    batch = fn(samples, comps)
    assert all(isinstance(v, float) for v in batch) and batch == fn(samples, comps)
    alone = [fn([s], [c])[0] for s, c in zip(samples, comps)]
    torch.testing.assert_close(torch.tensor(batch), torch.tensor(alone), rtol=1e-4, atol=1e-5)
    assert len(set(batch)) == 3  # the model actually reads the text


def test_polar_template_uses_the_reference(rm_path):
    fn = REWARDS.build("reward_model", path=str(rm_path), template="polar")
    with_ref = fn([Sample("q", answer="right"), Sample("q", answer="other")], ["right", "right"])
    assert with_ref[0] != with_ref[1]
    assert fn([Sample("q", answer=None)], ["x"]) == [None]  # no reference: unscorable, not a made-up score


def test_checkpoint_without_classification_head_fails_before_training(tmp_path, tiny_cfg):
    model, tok = load_policy(config="qwen2-micro")
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="no sequence-classification head"):
        REWARDS.build("reward_model", path=str(tmp_path / "lm"))
    with pytest.raises(ValueError, match="does not exist"):
        REWARDS.build("reward_model", path=str(tmp_path / "missing"))
    from rlvr import trainer

    cfg = tiny_cfg(f"rewards=[{{name: reward_model, kwargs: {{path: '{tmp_path / 'lm'}'}}}}]")
    with pytest.raises(ConfigError, match=r"rewards\[0\] \(reward_model\).*sequence-classification"):
        trainer.train(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.jsonl"))


def test_reward_model_as_one_source_of_a_mixture(rm_path, tiny_cfg):
    """Intern-S1's mixture: one task scored by its rule verifier, another by the reward model (per-source z-scores)."""
    from rlvr import trainer
    from rlvr.metrics import read_metrics

    rm = f"{{name: reward_model, kwargs: {{path: '{rm_path}', template: polar}}}}"
    cfg = tiny_cfg(f"tasks=[{{name: arithmetic, key: add, kwargs: {{digits: 1, ops: '+'}}, eval_size: 4}},"
                   f" {{name: word_sort, key: open, eval_size: 4, rewards: [{rm}]}}]",
                   "mixture.normalize=per_source", "train.steps=1")
    trainer.train(cfg)
    row = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r][0]
    assert "tasks/open/rewards/reward_model/mean" in row and "tasks/add/rewards/task/mean" in row
