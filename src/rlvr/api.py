"""The Python API: `rlvr.train` and `rlvr.sft` for notebooks and scripts, the same runs as the CLI.

    import rlvr

    summary = rlvr.train("recipes/quickstart.yaml", {"train.steps": 20}, overwrite=True)
    summary = rlvr.train({"base": "recipes/grpo.yaml", "name": "mine"},
                         dataset=rows,                    # a list of dicts or a datasets.Dataset
                         rewards=["task", (brevity, 0.1)],  # registered names and Python callables, with weights
                         model=model, tokenizer=tokenizer)  # a transformers causal LM the caller loaded

1. `config` is a YAML file, a dict of the same keys (its `base:` relative to the working directory) or a Config;
   `overrides` are "a.b=value" strings (as on the command line) or a {"a.b": value} dict.
2. Python objects replace what the config can only name, and the run folder's config.yaml records a placeholder
   for each ("<python: ...>"), so it says what ran: `dataset=` becomes the run's single task (a `dataset` task over
   the rows, with the config's prompt_field/answer_field/scorer options when its task is a dataset already);
   `rewards=` replaces the top-level rewards (a callable follows the contract of docs/methods.md §2: it takes
   (samples, completions, **kw) and returns one float or None per completion); `model=` with `tokenizer=` is the
   policy (its prompts go through the tokenizer's chat template as model.chat_template says); a vision-language
   model (Qwen2-VL family) also needs `processor=`: its AutoProcessor (tokenizer and image processor) or its image
   processor.
3. Bad input is a ConfigError naming the argument or key, raised before any training starts; the run folder rules
   (rlvr.run_folder: resume, overwrite) are the CLI's.
4. The return value is the run's summary: steps, held-out accuracy before and after (eval_before, eval_after), the
   final model's folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rlvr.config import Config, ConfigError, RewardConfig, config_from


def train(config: str | Path | dict | Config, overrides: list[str] | dict | None = None, *, dataset: Any = None,
          eval_dataset: Any = None, rewards: Any = None, model: Any = None, tokenizer: Any = None,
          processor: Any = None, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """RL training as `rlvr train` runs it; Python objects where given (see the module docstring)."""
    from rlvr.trainer import train as run_training

    cfg = config_from(config, overrides)
    cfg, given = with_objects(cfg, dataset=dataset, eval_dataset=eval_dataset, rewards=rewards, model=model,
                              tokenizer=tokenizer, processor=processor)
    return run_training(cfg, resume=resume, overwrite=overwrite, given=given)


def sft(config: str | Path | dict | Config, overrides: list[str] | dict | None = None, *,
        out: str | None = None) -> dict[str, Any]:
    """The supervised warm start as `rlvr sft` runs it; returns its history and the saved model's folder."""
    from rlvr.warm_start import sft as run_sft

    return run_sft(config_from(config, overrides), out=out)


def with_objects(cfg: Config, *, dataset: Any = None, eval_dataset: Any = None, rewards: Any = None,
                 model: Any = None, tokenizer: Any = None, processor: Any = None):
    """(config with placeholders, rlvr.run.Given) for the Python objects given."""
    from rlvr.run import Given

    given = Given()
    if eval_dataset is not None and dataset is None:
        raise ConfigError("eval_dataset= needs dataset= (the training rows) as well")
    if dataset is not None:
        cfg = _dataset(cfg, given, dataset, eval_dataset)
    if rewards is not None:
        cfg = _rewards(cfg, given, rewards)
    if processor is not None and model is None:
        raise ConfigError("processor= goes with model= (a vision-language model the caller loaded)")
    if tokenizer is not None and model is None:
        raise ConfigError("tokenizer= goes with model=; for a checkpoint folder set model.path (its tokenizer is used) "
                          "or model.tokenizer")
    if model is not None:
        cfg = _model(cfg, given, model, tokenizer, processor)
    return cfg, given


def _dataset(cfg: Config, given, dataset: Any, eval_dataset: Any) -> Config:
    from rlvr.tasks.dataset import DatasetTask

    if cfg.tasks:
        raise ConfigError("dataset=: the rows become the run's single task, but this config has a mixture under "
                          "`tasks:`; set `task:` instead")
    t = cfg.task
    kwargs = {k: v for k, v in t.kwargs.items() if k not in ("path", "split")} if t.name == "dataset" else {}
    eval_kwargs = {k: v for k, v in t.eval_kwargs.items() if k not in ("path", "split")} if t.name == "dataset" else {}
    try:
        given.task = DatasetTask(rows=dataset, **kwargs)
        given.eval_task = DatasetTask(rows=eval_dataset if eval_dataset is not None else dataset,
                                      **{**kwargs, **eval_kwargs})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"dataset=: {err}") from err
    record = {**kwargs, "path": f"<python: {len(dataset)} rows>"}
    eval_record = {"path": f"<python: {len(eval_dataset)} rows>"} if eval_dataset is not None else {}
    return dataclasses.replace(cfg, task=dataclasses.replace(t, name="dataset", kwargs=record,
                                                             eval_kwargs={**eval_kwargs, **eval_record}))


def _rewards(cfg: Config, given, rewards: Any) -> Config:
    """rewards=: a callable, a registered name, a (callable or name, weight) pair, a dict of RewardConfig's keys, or a
    list of these."""
    items = rewards if isinstance(rewards, list) else [rewards]
    if not items:
        raise ConfigError("rewards=: give at least one reward")
    if any(t.rewards for t in cfg.tasks):
        raise ConfigError("rewards=: replaces the top-level rewards, but tasks of this config have their own "
                          "(tasks[i].rewards); give them in the config instead")
    configs = []
    for i, item in enumerate(items):
        source, weight = item if isinstance(item, tuple) and len(item) == 2 else (item, 1.0)
        if isinstance(source, str):
            configs.append(RewardConfig(name=source, weight=float(weight)))
        elif isinstance(source, dict):
            try:
                configs.append(RewardConfig(**source))
            except TypeError as err:
                raise ConfigError(f"rewards[{i}]: {err}") from err
        elif callable(source):
            name = f"<python: {getattr(source, '__qualname__', type(source).__name__)}#{i}>"
            given.functions[name] = source
            configs.append(RewardConfig(name="python", weight=float(weight), kwargs={"function": name}))
        else:
            raise ConfigError(f"rewards[{i}]: expected a callable, a registered reward name, (reward, weight) or a "
                              f"dict, got {type(source).__name__}")
    return dataclasses.replace(cfg, rewards=configs)


def _model(cfg: Config, given, model: Any, tokenizer: Any, processor: Any = None) -> Config:
    import torch

    from rlvr.policies import HFCausalLM, HFVisionLM
    from rlvr.policies.hf import prepare_tokenizer
    from rlvr.policies.vlm_models import VLM_MODEL_TYPES

    vision = getattr(getattr(model, "config", None), "model_type", None) in VLM_MODEL_TYPES
    if vision and tokenizer is None and processor is not None:
        tokenizer = getattr(processor, "tokenizer", None)
    if isinstance(model, (str, Path)):
        raise ConfigError("model=: pass a loaded model object; for a checkpoint folder set model.path instead")
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        raise ConfigError("model=: give its tokenizer object as tokenizer= as well")
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ConfigError(f"model=: expected a transformers causal LM (a torch module with a config), got "
                          f"{type(model).__name__}")
    m = cfg.model
    prepare_tokenizer(model, tokenizer)
    autocast = getattr(torch, m.autocast) if m.autocast else None
    if vision:
        images = getattr(processor, "image_processor", processor)
        if images is None or not callable(images):
            raise ConfigError(f"processor=: {type(model).__name__} is a vision-language model; give its AutoProcessor "
                              "or image processor as processor=")
        given.policy = HFVisionLM(model, tokenizer, images, autocast=autocast, chat_template=m.chat_template)
    elif processor is not None:
        raise ConfigError(f"processor=: {type(model).__name__} is a text model; processor= is for vision-language "
                          "models")
    else:
        given.policy = HFCausalLM(model, tokenizer, autocast=autocast, lean=m.lean_forward,
                                  chat_template=m.chat_template)
    placeholder = f"<python: {type(model).__name__}>"
    return dataclasses.replace(cfg, model=dataclasses.replace(m, path=placeholder, config=None,
                                                              tokenizer=f"<python: {type(tokenizer).__name__}>"))
