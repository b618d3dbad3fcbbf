"""The run scaffolding the loops share (rlvr.loop_run): the cadence of evaluations and checkpoints, the batch split
over ranks refused before anything is written, config.yaml written by every loop and read back to the same config,
and Ctrl-C: the image loops finish the step, checkpoint, exit 130, and a resume from there equals an uninterrupted
run. (The language trainer's Ctrl-C: tests/test_cli.py; 2-rank runs: each loop's own tests.)"""

import signal
import subprocess
import sys
import time

import pytest
import yaml
from ranks import assert_rows_close, rlvr_train

from rlvr.config import ConfigError, from_dict, raw_config
from rlvr.loop_run import check_batch_split, due
from rlvr.metrics import read_metrics

DMD = {"loop": "dmd", "teacher": {"kind": "mlp", "pretrain_steps": 20, "pretrain_batch": 64, "sample_steps": 5},
       "student": {"steps": 2}, "distill": {"preset": "dmd2", "gan_weight": 0.5, "ratio": 2},
       "rl": {"lambda_R": 0.1}, "train": {"batch": 16, "eval_every": 1000, "eval_size": 32, "save_every": 1000}}
VA_PI = {"loop": "va_pi", "data": {"name": "shapes", "size": 8, "train_size": 64, "eval_size": 16},
         "vq": {"steps": 20, "codes": 16, "hidden": 16, "dim": 4},
         "policy": {"hidden": 32, "layers": 1, "heads": 2, "pretrain_steps": 5}, "algo": {"group": 4},
         "train": {"batch": 4, "eval_every": 0, "samples_per_class": 2, "classifier_steps": 10, "save_every": 1000}}


def test_due_every_n_steps_and_at_the_last():
    assert [s for s in range(1, 8) if due(s, 3, 7)] == [3, 6, 7]
    assert [s for s in range(1, 8) if due(s, 0, 7)] == [7]  # 0: only the last step


def test_a_batch_the_ranks_cannot_share_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    check_batch_split(8)
    with pytest.raises(ConfigError, match=r"^train.batch \(6\) must be divisible by the number of data-parallel "
                                          r"ranks \(4\)"):
        check_batch_split(6)


@pytest.mark.parametrize("recipe", [DMD, VA_PI], ids=["dmd", "va_pi"])
def test_config_yaml_reruns_the_same_run(tmp_path, recipe):
    """Each loop writes <run>/config.yaml; read back (it names its loop) it is the run's config."""
    import importlib

    from rlvr.cli import LOOPS

    module = importlib.import_module(LOOPS[recipe["loop"]])
    cfg = from_dict(module.RunConfig, {**recipe, "name": "c", "output_dir": str(tmp_path),
                                       "train": {**recipe["train"], "steps": 1}}, "")
    module.train(cfg)
    saved = raw_config(tmp_path / "c" / "config.yaml")
    assert saved["loop"] == recipe["loop"]
    assert from_dict(module.RunConfig, saved, "") == cfg


def _interrupted(recipe_path, metrics, rows: int) -> subprocess.CompletedProcess:
    """`rlvr train` stopped by SIGINT once `rows` metrics rows are written."""
    proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli", "train", str(recipe_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < rows):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("recipe", [DMD, VA_PI], ids=["dmd", "va_pi"])
def test_ctrl_c_checkpoints_and_the_resume_equals_an_uninterrupted_run(tmp_path, recipe):
    def write(name, steps):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**recipe, "name": name, "output_dir": str(tmp_path),
                                        "train": {**recipe["train"], "steps": steps}}))
        return path

    stopped = _interrupted(write("sig", 100_000), tmp_path / "sig" / "metrics.jsonl", rows=3)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "resume with --resume" in stopped.stdout
    at = int((tmp_path / "sig" / "checkpoints" / "latest").read_text().strip().split("-")[1])
    assert at >= 2 and [r["step"] for r in read_metrics(tmp_path / "sig" / "metrics.jsonl")] == list(range(at + 1))
    rlvr_train(write("sig", at + 2), extra=("--resume",))
    rlvr_train(write("whole", at + 2))
    assert_rows_close(read_metrics(tmp_path / "sig" / "metrics.jsonl"), read_metrics(tmp_path / "whole" /
                                                                                        "metrics.jsonl"),
                      steps=list(range(at + 3)), tol=0.0)
