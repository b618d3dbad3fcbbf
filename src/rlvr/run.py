"""setup(cfg) -> Run: everything a training run builds once at start-up, from a validated config.

1. Tasks (one, or a weighted mixture), each with its reward route (task key -> [(name, weight, fn)]) and
   pass-rate band; the held-out split of the same tasks for evaluation.
2. The algorithm's registry functions with their keywords bound (advantage; loss, aggregation, KL, mismatch
   weight as LossFns), the policy (local checkpoint or tiny config, optional LoRA), a frozen reference when
   KL is on, AdamW with warm-up, and the experience buffer when one is configured.
3. The run folder's logger and config.yaml (main rank only).
`State` is what a checkpoint restores besides weights and optimizer; rlvr.trainer runs the loop over both.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlvr.algos import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, LOSSES, MISMATCH_WEIGHTS
from rlvr.buffers import BUFFERS
from rlvr.config import Config, ConfigError, RewardConfig, TaskConfig, save_config, to_dict, validate
from rlvr.distributed import World, init_world
from rlvr.metrics import RunLogger
from rlvr.policies import load_policy
from rlvr.rewards import REWARDS
from rlvr.tasks import TASKS
from rlvr.tasks.mixture import MixtureTask
from rlvr.update import LossFns


@dataclass
class Run:
    """Everything built once at start-up."""

    cfg: Config
    world: World
    model: Any
    tokenizer: Any
    ref_model: Any
    task: Any
    eval_task: Any
    reward_routes: dict  # task key -> [(name, weight, fn)]: the mixture of rewards (one route for one task)
    advantage_fn: Any
    loss_fns: LossFns
    optimizer: torch.optim.Optimizer
    scheduler: Any
    logger: RunLogger | None
    device: torch.device
    pass_filters: dict = field(default_factory=dict)  # task key -> (lo, hi) pass-rate band of kept groups
    buffer: Any = None  # experience replay (ExGRPO) or None


@dataclass
class State:
    """What a checkpoint must restore besides weights and optimizer."""

    step: int = 0
    data_pos: int = 0
    bad_steps: int = 0
    skipped_total: int = 0
    history: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ set-up


def _one_task(cfg: Config, t: TaskConfig, where: str, *, eval_split: bool):
    kwargs = dict(t.kwargs)
    params = inspect.signature(TASKS.lookup(t.name)).parameters
    if "seed" in params:
        kwargs["seed"] = cfg.seed + (1_000_003 if eval_split else 0) + kwargs.get("seed", 0)
    if "holdout" in params:  # procedural tasks: evaluation problems never occur in training
        kwargs.setdefault("holdout", "eval" if eval_split else "train")
    if eval_split:
        kwargs.update(t.eval_kwargs)
    try:
        return TASKS.build(t.name, **kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where} '{t.name}': {err}") from err


def task_keys(cfg: Config) -> list[str]:
    """The key of each task of a mixture: `key`, else `name`, numbered when a name repeats."""
    names = [t.key or t.name for t in cfg.tasks]
    return [n if names.count(n) == 1 else f"{n}#{names[:i].count(n)}" for i, n in enumerate(names)]


def build_tasks(cfg: Config, *, eval_split: bool) -> dict[str, Any]:
    """key -> task; a single `task` is keyed by its own name (what its samples carry in Sample.task)."""
    if not cfg.tasks:
        task = _one_task(cfg, cfg.task, "task", eval_split=eval_split)
        return {task.name: task}
    return {key: _one_task(cfg, t, f"tasks[{i}]", eval_split=eval_split)
            for i, (key, t) in enumerate(zip(task_keys(cfg), cfg.tasks))}


def build_task(cfg: Config, *, eval_split: bool):
    """The run's task: the single `task`, or a MixtureTask over `tasks` weighted by their `weight`."""
    tasks = build_tasks(cfg, eval_split=eval_split)
    if not cfg.tasks:
        return next(iter(tasks.values()))
    weights = dict(zip(tasks, (t.weight for t in cfg.tasks)))
    return MixtureTask(tasks, weights, seed=cfg.seed + (1_000_003 if eval_split else 0))


def _reward_fns(cfg: Config, rewards: list, where: str, tasks: dict, *, shaping: bool = True):
    """[(name, weight, fn)] of reward configs; `cascade` sources are built the same way, recursively."""
    fns = []
    for i, r in enumerate(rewards):
        kwargs = dict(r.kwargs)
        if r.name == "cascade":
            sources = kwargs.pop("sources", None)
            if not isinstance(sources, list) or not sources:
                raise ConfigError(f"{where}[{i}] (cascade): kwargs.sources must be a non-empty list of rewards")
            try:
                configs = [s if isinstance(s, RewardConfig) else RewardConfig(**s) for s in sources]
            except TypeError as err:
                raise ConfigError(f"{where}[{i}] (cascade): kwargs.sources: {err}") from err
            kwargs["stages"] = _reward_fns(cfg, configs, f"{where}[{i}].kwargs.sources", tasks, shaping=False)
        if r.name == "task":
            kwargs.setdefault("tasks", tasks)
        if r.name == "diversity" and kwargs.get("correctness") == "task":  # DIVER gates on the task's verifier
            kwargs["correctness_kwargs"] = {"tasks": tasks, **(kwargs.get("correctness_kwargs") or {})}
        if r.name == "diversity" and r.weight == 0:  # specs/diver.md §5 #1: the reference launch script did this
            raise ConfigError(f"{where}[{i}] (diversity): weight (lambda) is 0, so DIVER would do nothing")
        try:
            fns.append((r.name, r.weight, REWARDS.build(r.name, **kwargs)))
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{where}[{i}] ({r.name}): {err}") from err
    ov = cfg.algo.overlong
    if ov.enabled and shaping:
        fns.append(("overlong", ov.coef, REWARDS.build("overlong", max_len=cfg.rollout.max_new_tokens,
                                                          cache=ov.cache)))
    return fns


def build_rewards(cfg: Config, task) -> dict[str, list[tuple[str, float, Any]]]:
    """Reward routes: task key -> its (name, weight, fn) sources (its own `rewards`, else the top-level ones)."""
    tasks = task.tasks if isinstance(task, MixtureTask) else {task.name: task}
    configs = cfg.tasks or [cfg.task]
    return {key: _reward_fns(cfg, t.rewards or cfg.rewards, f"tasks[{i}].rewards" if t.rewards else "rewards",
                             {key: tasks[key]})
            for i, (key, t) in enumerate(zip(tasks, configs))}


def pass_filters(cfg: Config, task) -> dict[str, tuple[float, float]]:
    keys = list(task.tasks) if isinstance(task, MixtureTask) else [task.name]
    return {k: tuple(t.keep_pass_rate) for k, t in zip(keys, cfg.tasks or [cfg.task]) if t.keep_pass_rate}


def build_buffer(cfg: Config, world: World):
    if cfg.buffer.name == "none":
        return None
    if world.size > 1:
        raise ConfigError("buffer: experience replay with data parallelism is not supported yet")
    return BUFFERS.build(cfg.buffer.name, **{"group_size": cfg.rollout.group_size, **cfg.buffer.kwargs})


def build_loss_fns(cfg: Config) -> LossFns:
    a = cfg.algo
    return LossFns(
        loss=LOSSES.bind(a.loss, **a.loss_kwargs),
        aggregate=AGGREGATIONS.bind(a.aggregation, **a.aggregation_kwargs),
        kl=KL_ESTIMATORS.bind(a.kl_estimator) if a.kl_coef else None,
        mismatch=None if a.mismatch == "none" else MISMATCH_WEIGHTS.bind(a.mismatch, **a.mismatch_kwargs),
        kl_coef=a.kl_coef,
        entropy_coef=a.entropy_coef,
        temperature=cfg.rollout.temperature,
        autocast=getattr(torch, cfg.model.autocast) if cfg.model.autocast else None,
        lean=cfg.model.lean_forward,
        replay_aware="is_replay" in inspect.signature(LOSSES.lookup(a.loss)).parameters,
    )


def apply_lora(model, lora: dict):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("model.lora needs the extra: pip install 'rlvr[lora]'") from err
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))


def build_optimizer(cfg: Config, model):
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    # the fused kernel (CPU and CUDA) is one pass over each tensor instead of a dozen small ops per parameter
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, fused=True)
    warm = max(o.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return optimizer, scheduler


def setup(cfg: Config, *, resume_from: Path | None = None) -> Run:
    validate(cfg)
    world = init_world()
    if cfg.rollout.prompts_per_step % world.size:
        raise ConfigError(f"rollout.prompts_per_step must be divisible by the world size {world.size}")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    task, eval_task = build_task(cfg, eval_split=False), build_task(cfg, eval_split=True)
    reward_routes = build_rewards(cfg, task)
    advantage_fn = ADVANTAGES.bind(cfg.algo.advantage, **cfg.algo.advantage_kwargs)
    loss_fns = build_loss_fns(cfg)
    torch.manual_seed(cfg.seed)
    model, tokenizer, ref_model = build_policy(cfg, resume_from)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    model.to(device)
    if ref_model is not None:
        ref_model.to(device)
    optimizer, scheduler = build_optimizer(cfg, model)
    logger = None
    if world.is_main:
        logger = RunLogger(cfg.run_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                           project=cfg.logging.wandb_project, config=to_dict(cfg), resume=resume_from is not None)
        save_config(cfg, cfg.run_dir / "config.yaml")
    return Run(cfg, world, model, tokenizer, ref_model, task, eval_task, reward_routes, advantage_fn, loss_fns,
               optimizer, scheduler, logger, device, pass_filters(cfg, task), build_buffer(cfg, world))


def build_policy(cfg: Config, resume_from: Path | None):
    """(model, tokenizer, frozen reference or None). A full-weight resume loads the checkpoint's weights; a LoRA
    resume loads the base model, then the checkpoint's adapter. The reference is always the starting model."""
    m = cfg.model
    full_resume = resume_from is not None and not m.lora
    path = str(resume_from / "model") if full_resume else m.path
    tok = m.tokenizer if m.tokenizer != "char" or not path else path
    model, tokenizer = load_policy(path=path, config=None if path else m.config, config_overrides=m.config_overrides,
                                   tokenizer=tok, dtype=m.dtype, seed=cfg.seed)
    ref_model = None
    if cfg.algo.kl_coef:
        ref_model = _frozen_copy(model)
        if full_resume:  # the reference is the run's starting model, not the checkpoint
            ref_model = _frozen_copy(load_policy(path=m.path, config=None if m.path else m.config,
                                                 config_overrides=m.config_overrides, tokenizer=tok, dtype=m.dtype,
                                                 seed=cfg.seed)[0])
    if m.lora and resume_from is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resume_from / "model", is_trainable=True)
    elif m.lora:
        model = apply_lora(model, m.lora)
    return model, tokenizer, ref_model


def _frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
