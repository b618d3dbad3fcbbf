"""Run folders (rlvr.run_folder): a new run never rewrites an existing one unless asked (--overwrite); --resume
continues from the newest complete checkpoint, names every changed setting and refuses the ones a checkpoint fixes
(model, tokenizer, tasks); a finished run resumed adds nothing; metrics without a checkpoint are never wiped."""

import pytest

from rlvr import trainer
from rlvr.config import ConfigError
from rlvr.metrics import read_metrics


def rows(cfg):
    return read_metrics(cfg.run_dir / "metrics.jsonl")


def test_a_new_run_refuses_an_existing_one_unless_overwrite(tiny_cfg):
    trainer.train(tiny_cfg("train.steps=3"))
    before = rows(tiny_cfg())
    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoint step-000003\).*--resume.*--overwrite"):
        trainer.train(tiny_cfg("train.steps=2"))
    assert rows(tiny_cfg()) == before  # untouched
    trainer.train(tiny_cfg("train.steps=2"), overwrite=True)
    after = rows(tiny_cfg())
    assert [r["step"] for r in after] == [0, 1, 2, 2]  # eval before, 2 steps, eval after: only the new run
    assert sorted(p.name for p in (tiny_cfg().run_dir / "checkpoints").glob("step-*")) == ["step-000002"]
    with pytest.raises(ConfigError, match="exclude each other"):
        trainer.train(tiny_cfg(), resume=True, overwrite=True)


def test_resuming_a_finished_run_adds_nothing(tiny_cfg, capsys):
    cfg = tiny_cfg("train.steps=2")
    first = trainer.train(cfg)
    n = len(rows(cfg))
    again = trainer.train(cfg, resume=True)
    assert len(rows(cfg)) == n and "nothing to do" in capsys.readouterr().out
    assert again["eval_after"] == first["eval_after"] and again["steps"] == 2
    more = trainer.train(tiny_cfg("train.steps=3"), resume=True)  # a raised budget continues
    assert more["steps"] == 3 and [r["step"] for r in rows(cfg)][-2:] == [3, 3]


def test_resume_names_changes_and_refuses_what_a_checkpoint_fixes(tiny_cfg, capsys):
    trainer.train(tiny_cfg("train.steps=2"))
    with pytest.raises(ConfigError, match=r"different model.config \('qwen2-micro' -> 'llama-micro'\)"):
        trainer.train(tiny_cfg("train.steps=3", "model.config=llama-micro"), resume=True)
    with pytest.raises(ConfigError, match="different task.kwargs"):
        trainer.train(tiny_cfg("train.steps=3", "task.kwargs={digits: 2}"), resume=True)
    capsys.readouterr()
    trainer.train(tiny_cfg("train.steps=3", "rollout.group_size=2", "optim.lr=5e-4"), resume=True)
    out = capsys.readouterr().out
    assert "changed settings" in out and "rollout.group_size 4 -> 2" in out and "optim.lr 0.001 -> 0.0005" in out
    assert "train.steps 2 -> 3" in out


def test_metrics_without_a_checkpoint_are_never_wiped(tiny_cfg):
    cfg = tiny_cfg()
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n')
    with pytest.raises(ConfigError, match="metrics but no complete checkpoint"):
        trainer.train(cfg, resume=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        trainer.train(cfg)
    assert rows(cfg) == [{"step": 1, "reward": 0.5}]
