"""The command line: usage errors exit 2 with one line before any model is loaded; sft -> train -> eval ->
plot works end to end on a tiny model; `recipes` lists registered names."""

import json
import subprocess
import sys

import pytest

from rlvr.cli import main


def rlvr(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rlvr.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_unknown_key_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {config: qwen2-micro}\nrollout: {group_sise: 4}\n")
    out = rlvr("train", str(cfg))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "rollout.group_sise" in lines[0] and "rollout.group_size" in lines[0]


def test_unknown_algorithm_and_missing_file_exit_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {config: qwen2-micro}\nalgo: {advantage: grpoo}\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "algo.advantage" in err and "'grpo'" in err


@pytest.mark.parametrize("override,key", [
    ("rollout.group_size=1", "rollout.group_size must be >= 2"),
    ("train.steps=-1", "train.steps must be >= 0"),
    ("optim.lr=-1", "optim.lr must be > 0"),
    ("rollout.top_p=1.5", "rollout.top_p must be in (0, 1]"),
    ("model.config=qwen9", "model.config: unknown tiny config 'qwen9'"),
    ("tasks=[{name: arithmetic}, {name: sorting, weight: -1}]", "tasks[1].weight must be > 0"),
    ("model.path=/nowhere/model", "model.path: checkpoint folder '/nowhere/model' does not exist"),
])
def test_bad_values_exit_2_with_one_line_before_any_model(tmp_path, capsys, monkeypatch, override, key):
    import rlvr.policies.hf

    monkeypatch.setattr(rlvr.policies.hf, "load_policy", lambda **kw: pytest.fail("a model was loaded"))
    base = [] if override.startswith("model.") else ["model.config=qwen2-micro"]
    code = main(["train", str(_empty_yaml(tmp_path)), *base, override, f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and key in err[0]


def _empty_yaml(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    return path


def test_recipes_lists_names(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "ppo_clip" in out and "arithmetic" in out and "k3" in out


def test_sft_train_eval_plot_end_to_end(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
name: e2e
output_dir: {tmp_path}/runs
model: {{path: {tmp_path}/sft/model}}
sft: {{init: qwen2-micro, output: {tmp_path}/sft/model, steps: 4, batch_size: 8, eval_every: 2}}
task: {{name: arithmetic, kwargs: {{digits: 1, ops: "+"}}, eval_size: 8}}
rollout: {{prompts_per_step: 2, group_size: 4, max_new_tokens: 3}}
train: {{steps: 2, progress: false}}
""")
    assert main(["sft", str(cfg)]) == 0
    assert (tmp_path / "sft" / "model" / "config.json").is_file()
    assert main(["train", str(cfg), "optim.lr=1e-4"]) == 0
    assert "held-out greedy accuracy" in capsys.readouterr().out
    final = tmp_path / "runs" / "e2e" / "final"
    assert main(["eval", str(final), "--task", "arithmetic", "--task-kwargs", "digits=1", "ops=+", "--size", "8",
                 "--k", "2", "--max-new-tokens", "3"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"accuracy", "pass@2", "mean_length"} <= set(res) and 0 <= res["accuracy"] <= res["pass@2"] + 1e-9
    (tmp_path / "runs" / "e2e" / "plot.png").unlink()
    assert main(["plot", str(tmp_path / "runs" / "e2e")]) == 0
    assert (tmp_path / "runs" / "e2e" / "plot.png").is_file()


def test_ctrl_c_checkpoints_and_resume_continues(tmp_path):
    """SIGINT to a running `rlvr train`: the step in flight finishes, a checkpoint is written, exit code 130;
    `--resume` then finishes the run from there."""
    import os
    import signal
    import time

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
name: sig
output_dir: {tmp_path}/runs
model: {{config: qwen2-micro}}
task: {{name: arithmetic, kwargs: {{digits: 1, ops: "+"}}, eval_size: 4}}
rollout: {{prompts_per_step: 2, group_size: 2, max_new_tokens: 3}}
train: {{steps: 100000, progress: false}}
""")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli", "train", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    metrics = tmp_path / "runs" / "sig" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "resume with --resume" in out
    latest = (tmp_path / "runs" / "sig" / "checkpoints" / "latest").read_text().strip()
    stopped_at = int(latest.split("-")[1])
    assert stopped_at >= 2
    done = rlvr("train", str(cfg), f"train.steps={stopped_at + 2}", "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"reward"' in line]
    assert steps == list(range(1, stopped_at + 3))


def test_no_evaluation_when_eval_every_or_eval_size_is_zero(tmp_path):
    """sft.eval_every 0: the warm start evaluates only at its end; task.eval_size 0: neither it nor training
    evaluates (a dataset without held-out rows)."""
    from rlvr.config import load_config
    from rlvr.trainer import train
    from rlvr.warm_start import sft

    common = [f"output_dir={tmp_path}", "sft.init=qwen2-micro", f"sft.output={tmp_path}/w", "sft.steps=2",
              "sft.batch_size=4", "task.name=arithmetic", "task.kwargs={digits: 1, ops: '+'}", "train.progress=false"]
    assert [s for s, _ in sft(load_config(None, common + ["sft.eval_every=0", "task.eval_size=4"]))["history"]] == [2]
    assert sft(load_config(None, common + ["sft.eval_every=1", "task.eval_size=0"]))["history"] == []
    cfg = load_config(None, common + ["task.eval_size=0", f"model.path={tmp_path}/w", "train.steps=1", "name=r",
                                      "train.eval_every=1", "rollout.prompts_per_step=2", "rollout.group_size=2",
                                      "rollout.max_new_tokens=3"])
    train(cfg)
    assert not any('"eval/' in line for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines())
