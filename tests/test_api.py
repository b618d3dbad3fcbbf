"""The Python API (rlvr.api): the README's example runs; configs from dicts and overrides; Python objects (rows,
reward callables, a loaded model) replace what the config names and are recorded as placeholders; a resume with a
model object continues exactly; bad objects fail in one line before anything trains. Under torchrun: the `api` case
of tests/test_distributed.py."""

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rlvr
from rlvr.config import ConfigError, config_from, load_config
from rlvr.metrics import read_metrics
from rlvr.policies import HFCausalLM, load_policy

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"model.config": "qwen2-micro", "task.eval_size": 4, "rollout.prompts_per_step": 4, "rollout.group_size": 4,
         "rollout.max_new_tokens": 4, "train.steps": 2, "train.eval_every": 0, "train.progress": False,
         "train.threads": 1, "optim.lr": 1e-3}
ROWS = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]


def digits(samples, completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's Python API block, as written, with 2 steps instead of 20, from a tiny stand-in for the
    quickstart's warm start."""
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Python API\n.*?```python\n(.*?)```", text, re.S).group(1)
    assert '"train.steps": 20' in code
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    HFCausalLM.load(config="qwen2-tiny").save(tmp_path / "runs/quickstart-sft/model")
    scope = {}
    exec(compile(code.replace('"train.steps": 20', '"train.steps": 2'), "README.md", "exec"), scope)
    summary = scope["summary"]
    assert summary["steps"] == 2 and Path(summary["final_model"]).is_dir()
    saved = load_config(tmp_path / "runs/my-run/config.yaml")
    assert saved.model.path == "<python: Qwen2ForCausalLM>" and saved.task.kwargs == {"path": "<python: 1600 rows>"}
    assert [r.name for r in saved.rewards] == ["task", "python"] and saved.rewards[1].weight == 0.1
    assert saved.rewards[1].kwargs == {"function": "<python: short#1>"}
    rows = [r for r in read_metrics(tmp_path / "runs/my-run/metrics.jsonl") if "reward" in r]
    assert len(rows) == 2 and all("rewards/python/mean" in r for r in rows)


def test_configs_from_paths_dicts_and_overrides(tmp_path):
    from_path = config_from(ROOT / "recipes/grpo.yaml", ["rollout.group_size=4", "rewards.0.weight=2"])
    from_dict = config_from({"base": str(ROOT / "recipes/grpo.yaml")}, {"rollout.group_size": 4,
                                                                        "rewards.0.weight": 2.0})
    assert from_path == from_dict and from_path.rollout.group_size == 4
    assert from_path.algo.loss_kwargs["clip_high"] == 0.2 and from_path.rewards[0].weight == 2
    assert config_from(from_path, {"seed": 3}).seed == 3 and from_path.seed == 0  # a Config given is not changed
    with pytest.raises(ConfigError, match="rollout.group_size"):
        config_from({}, {"rollout.group_size": "many"})
    with pytest.raises(ConfigError, match="unknown|not a"):
        config_from({"rollout": {"groupsize": 4}})
    with pytest.raises(ConfigError, match="YAML path, a dict or a Config"):
        config_from(42)


def test_objects_are_used_and_resume_continues_exactly(tmp_path):
    """3 steps at once == 2 steps, then a resume to 3 with a fresh model object (weights come from the checkpoint)."""
    def go(name, steps, **kw):
        model, tok = load_policy(config="qwen2-micro", seed=0)
        return rlvr.train({"output_dir": str(tmp_path), "name": name},
                          {**SMALL, "train.steps": steps, "train.save_every": 1}, dataset=ROWS, rewards=digits,
                          model=model, tokenizer=tok, **kw)

    go("once", 3)
    go("twice", 2)
    summary = go("twice", 3, resume=True)
    assert summary["steps"] == 3
    a, b = (load_file(tmp_path / n / "final" / "model.safetensors") for n in ("once", "twice"))
    start = load_policy(config="qwen2-micro", seed=0)[0].state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)  # training moved the weights
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    ra, rb = ([r for r in read_metrics(tmp_path / n / "metrics.jsonl") if "reward" in r] for n in ("once", "twice"))
    assert [r["reward"] for r in ra] == pytest.approx([r["reward"] for r in rb], abs=1e-6)


def test_dataset_options_and_eval_rows(tmp_path):
    rows = [{"question": f"{a}*{b}=", "solution": str(a * b)} for a in range(2, 9) for b in range(2, 9)]
    held_out = [{"question": "9*9=", "solution": "81"}] * 3
    cfg = {"output_dir": str(tmp_path), "name": "fields", "task": {"name": "dataset", "kwargs": {
        "path": "unused.jsonl", "prompt_field": "question", "answer_field": "solution"}, "eval_size": 3}}
    summary = rlvr.train(cfg, {**SMALL, "train.steps": 1, "task.eval_size": 3}, dataset=rows, eval_dataset=held_out)
    assert summary["steps"] == 1
    saved = load_config(tmp_path / "fields/config.yaml")
    assert saved.task.kwargs == {"prompt_field": "question", "answer_field": "solution", "path": "<python: 49 rows>"}
    assert saved.task.eval_kwargs == {"path": "<python: 3 rows>"}


def test_datasets_dataset_rows(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_list(ROWS)
    summary = rlvr.train({"output_dir": str(tmp_path), "name": "hf"}, {**SMALL, "train.steps": 1}, dataset=data)
    assert summary["steps"] == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"rewards": 42}, r"rewards\[0\]: expected a callable"),
    ({"rewards": []}, "at least one reward"),
    ({"rewards": ["no_such_reward"]}, r"rewards\[0\]\.name"),
    ({"dataset": [{"prompt": "1+1="}]}, r"dataset=.*row 1.*answer"),
    ({"dataset": "data.jsonl"}, "list of dicts or a datasets.Dataset"),
    ({"eval_dataset": ROWS}, "needs dataset="),
    ({"tokenizer": object()}, "tokenizer= goes with model="),
    ({"model": "runs/x/final"}, "set model.path instead"),
    ({"model": torch.nn.Linear(2, 2), "tokenizer": object()}, "transformers causal LM"),
])
def test_bad_objects_fail_in_one_line_before_training(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        rlvr.train({"output_dir": str(tmp_path), "name": "bad"}, SMALL, **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad").exists()


def test_a_mixture_config_refuses_dataset_rows(tmp_path):
    cfg = {"output_dir": str(tmp_path), "tasks": [{"name": "arithmetic"}, {"name": "sorting"}]}
    with pytest.raises(ConfigError, match="mixture"):
        rlvr.train(cfg, SMALL, dataset=ROWS)


def test_sft_from_python_and_the_names_stay_functions(tmp_path):
    import rlvr.warm_start  # noqa: F401  (a submodule import must not shadow rlvr.sft)

    assert callable(rlvr.sft) and callable(rlvr.train)
    out = rlvr.sft({"sft": {"init": "qwen2-micro", "steps": 2, "eval_every": 2, "batch_size": 4}},
                   {"task.eval_size": 4, "train.progress": False, "train.threads": 1}, out=str(tmp_path / "m"))
    assert Path(out["model"]).is_dir() and len(out["history"]) == 1
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        rlvr.trian  # noqa: B018


def test_a_vision_language_model_object_with_image_rows(tmp_path):
    """model= a Qwen2.5-VL the caller built, processor= its image processor, dataset= rows whose images are PIL
    objects: VPPO trains on them and the checkpoint is the model's class."""
    import numpy as np
    from PIL import Image

    from rlvr.policies import HFVisionLM

    vlm = HFVisionLM.load(config="qwen2.5-vl-micro")
    rng = np.random.default_rng(0)
    rows = [{"prompt": "how bright?", "answer": str(i % 3),
             "image": Image.fromarray((rng.random((28, 28, 3)) * 255 * (i % 3) / 2).astype("uint8"))}
            for i in range(12)]
    cfg = {"output_dir": str(tmp_path), "name": "vl", "task": {"name": "dataset", "kwargs": {
        "path": "unused.jsonl", "image_field": "image", "scorer": "exact"}}}
    overrides = {**SMALL, "model.config": None, "train.steps": 1, "algo.token_weights": "perception",
                 "algo.advantage_shaping": "vppo_tas", "train.diversity_unit": "char"}
    summary = rlvr.train(cfg, overrides, dataset=rows, rewards=[digits], model=vlm.model, tokenizer=vlm.tokenizer,
                         processor=vlm.image_processor)
    assert summary["steps"] == 1
    step = [r for r in read_metrics(tmp_path / "vl/metrics.jsonl") if "reward" in r][0]
    assert step["vppo/dependency_mean"] > 0 and step["token_weights/mean"] < 1
    with pytest.raises(ConfigError, match="give its AutoProcessor or image processor as processor="):
        rlvr.train(cfg, overrides, dataset=rows, model=vlm.model, tokenizer=vlm.tokenizer)
    with pytest.raises(ConfigError, match="processor= goes with model="):
        rlvr.train(cfg, overrides, dataset=rows, processor=vlm.image_processor)
