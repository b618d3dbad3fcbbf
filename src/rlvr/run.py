"""setup(cfg) -> Run: everything a training run builds once at start-up, from a validated config.

1. Tasks (one, or a weighted mixture), each with its reward route (task key -> [(name, weight, fn)]) and pass-rate
   band; the held-out split of the same tasks for evaluation; the prompt stream over the training task.
2. The stages' settings: the sampler (single-turn, or a multi-turn environment loop), the scorer, the group filters,
   the advantage, the no-grad passes later stages need, the buffer, the token weights and the loss functions, each
   registered function bound with its config keywords and the batch values it declared it needs.
3. The policy (local checkpoint or tiny config, optional LoRA), a frozen reference when KL is on, AdamW with warm-up.
4. The run folder's logger and config.yaml (main rank only).
`State` is what a checkpoint restores besides weights, optimizer and buffer; rlvr.trainer runs the loop over both.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlvr.algos import (
    ADVANTAGE_SHAPING,
    ADVANTAGES,
    AGGREGATIONS,
    KL_ESTIMATORS,
    LOSSES,
    MISMATCH_WEIGHTS,
    TOKEN_WEIGHTS,
)
from rlvr.buffers import BUFFERS, Buffer
from rlvr.config import (
    Config,
    ConfigError,
    RewardConfig,
    TaskConfig,
    buffer_context,
    needs_perception,
    perception_users,
    save_config,
    to_dict,
    validate,
)
from rlvr.distributed import World, init_world
from rlvr.envs import ENVS, EnvSampler
from rlvr.metrics import RunLogger
from rlvr.policies import SamplingParams, load_policy_of
from rlvr.prompt_limit import fit_prompts
from rlvr.rewards import REWARDS
from rlvr.rollout.collect import PromptStream, Sampler, TextSampler
from rlvr.rollout.filters import FILTERS, GroupFilters
from rlvr.rollout.score import Scorer
from rlvr.scale import in_turns, prepare_policy
from rlvr.stages import AdvantageStage, LogprobNeeds, PerceptionStage, ShapingStage, TokenWeightStage
from rlvr.tasks import TASKS
from rlvr.tasks.mixture import MixtureTask
from rlvr.update import LossFns

EVAL_SEED_OFFSET = 1_000_003  # the held-out copy of a task is seeded seed + this


@dataclass
class Run:
    """Everything built once at start-up."""

    cfg: Config
    world: World
    policy: Any  # rlvr.policies.base.Policy
    ref_policy: Any  # frozen reference Policy, or None
    task: Any
    eval_task: Any
    stream: PromptStream
    sampler: Sampler
    scorer: Scorer
    filters: GroupFilters
    advantage: AdvantageStage
    logprobs: LogprobNeeds
    buffer: Buffer
    perception: PerceptionStage
    shaping: ShapingStage
    weights: TokenWeightStage
    loss: LossFns
    optimizer: torch.optim.Optimizer
    scheduler: Any
    logger: RunLogger | None
    pipeline: Any = None  # rlvr.rollout.pipeline.RolloutPipeline when rollout.max_staleness > 0 (set by the trainer)


@dataclass
class Given:
    """Python objects a caller hands over (rlvr.api) where the config can only name something: the training task and
    its held-out copy, reward functions keyed by the placeholder their `python` reward entry carries as its
    `function` ("<python: name>"), and a policy around a model the caller loaded."""

    task: Any = None
    eval_task: Any = None
    functions: dict[str, Any] = field(default_factory=dict)
    policy: Any = None


@dataclass
class State:
    """What a checkpoint must restore besides weights, optimizer and buffer."""

    step: int = 0
    data_pos: int = 0
    bad_steps: int = 0
    skipped_total: int = 0
    history: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ tasks and rewards


def _one_task(cfg: Config, t: TaskConfig, where: str, *, eval_split: bool):
    kwargs = dict(t.kwargs)
    needs = TASKS.needs(t.name)
    if "seed" in needs:
        kwargs["seed"] = cfg.seed + (EVAL_SEED_OFFSET if eval_split else 0) + kwargs.get("seed", 0)
    if "holdout" in needs:  # procedural tasks: evaluation problems never occur in training
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
    return MixtureTask(tasks, weights, seed=cfg.seed + (EVAL_SEED_OFFSET if eval_split else 0))


def _reward_fns(cfg: Config, rewards: list, where: str, tasks: dict, *, shaping: bool = True,
                functions: dict | None = None):
    """[(name, weight, fn)] of reward configs; `cascade` sources are built the same way, recursively; a `python`
    entry whose function is a key of `functions` gets the callable given from Python."""
    fns, functions = [], functions or {}
    for i, r in enumerate(rewards):
        kwargs = dict(r.kwargs)
        if r.name == "python" and kwargs.get("function") in functions:
            kwargs["function"] = functions[kwargs["function"]]
        if r.name == "cascade":
            sources = kwargs.pop("sources", None)
            if not isinstance(sources, list) or not sources:
                raise ConfigError(f"{where}[{i}] (cascade): kwargs.sources must be a non-empty list of rewards")
            try:
                configs = [s if isinstance(s, RewardConfig) else RewardConfig(**s) for s in sources]
            except TypeError as err:
                raise ConfigError(f"{where}[{i}] (cascade): kwargs.sources: {err}") from err
            kwargs["stages"] = _reward_fns(cfg, configs, f"{where}[{i}].kwargs.sources", tasks, shaping=False,
                                           functions=functions)
        if r.name == "task":
            kwargs.setdefault("tasks", tasks)
        if r.name == "diversity" and kwargs.get("correctness") == "task":  # DIVER gates on the task's verifier
            kwargs["correctness_kwargs"] = {"tasks": tasks, **(kwargs.get("correctness_kwargs") or {})}
        if r.name == "diversity" and r.weight == 0:  # docs/methods.md §3.8 #1: the reference launch script did this
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


def build_rewards(cfg: Config, task, functions: dict | None = None) -> dict[str, list[tuple[str, float, Any]]]:
    """Reward routes: task key -> its (name, weight, fn) sources (its own `rewards`, else the top-level ones)."""
    tasks = task.tasks if isinstance(task, MixtureTask) else {task.name: task}
    configs = cfg.tasks or [cfg.task]
    return {key: _reward_fns(cfg, t.rewards or cfg.rewards, f"tasks[{i}].rewards" if t.rewards else "rewards",
                             {key: tasks[key]}, functions=functions)
            for i, (key, t) in enumerate(zip(tasks, configs))}


def build_filters(cfg: Config, task) -> GroupFilters:
    """DAPO dynamic sampling and the tasks' pass-rate bands, as group filters."""
    keys = list(task.tasks) if isinstance(task, MixtureTask) else [task.name]
    bands = {k: tuple(t.keep_pass_rate) for k, t in zip(keys, cfg.tasks or [cfg.task]) if t.keep_pass_rate}
    ds = cfg.algo.dynamic_sampling
    filters = ([FILTERS.build("informative")] if ds.enabled else []) + (
        [FILTERS.build("pass_rate", bands=bands, task=task)] if bands else [])
    return GroupFilters(filters, max_rounds=ds.max_rounds if filters else 1, on_exhaust=ds.on_exhaust)


# ------------------------------------------------------------------ the stages' settings


def sampling_params(cfg: Config) -> SamplingParams:
    r = cfg.rollout
    name = r.dtype or cfg.model.autocast  # sample in the precision that trains, unless rollout.dtype says otherwise
    return SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                          stop=tuple(r.stop), dtype=getattr(torch, name) if name else None)


def build_sampler(cfg: Config, policy) -> Sampler:
    params, G = sampling_params(cfg), cfg.rollout.group_size
    if cfg.rollout.engine == "vllm":  # CUDA only (rlvr.config._check_engine); vllm is imported inside start
        from rlvr.policies.vllm_engine import VLLMSampler

        return VLLMSampler.start(policy, params, G, settings=cfg.rollout.vllm, mask_truncated=cfg.algo.mask_truncated,
                                 seed=cfg.seed)
    if cfg.env.name == "none":
        return TextSampler(policy, params, G, mask_truncated=cfg.algo.mask_truncated)
    e = cfg.env
    return EnvSampler(policy, params, G, make_env=lambda: ENVS.build(e.name, **e.kwargs), max_turns=e.max_turns,
                      max_tokens=e.max_tokens, mask_truncated=cfg.algo.mask_truncated)


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
        loss_needs=LOSSES.needs(a.loss),
    )


def build_token_weights(cfg: Config) -> TokenWeightStage:
    a = cfg.algo
    if a.token_weights == "none":
        return TokenWeightStage()
    return TokenWeightStage(TOKEN_WEIGHTS.bind(a.token_weights, **a.token_weights_kwargs),
                            TOKEN_WEIGHTS.needs(a.token_weights))


def build_perception(cfg: Config, policy) -> PerceptionStage:
    """VPPO's corrupted-image pass, when a token weight or an advantage shaping needs the visual dependency."""
    if not needs_perception(cfg):
        return PerceptionStage()
    if not hasattr(policy, "corrupt"):
        raise ConfigError(f"algo: {perception_users(cfg)} needs a vision-language model; {type(policy.model).__name__} "
                          "is a text model")
    p = cfg.algo.perception
    return PerceptionStage(True, score=p.score, mask_per=p.mask_per, patch_prob=p.patch_prob, num_masks=p.num_masks,
                           seed=cfg.seed, temperature=cfg.rollout.temperature,
                           micro_batch_size=cfg.algo.micro_batch_size)


def build_shaping(cfg: Config) -> ShapingStage:
    a = cfg.algo
    if a.advantage_shaping == "none":
        return ShapingStage()
    return ShapingStage(ADVANTAGE_SHAPING.bind(a.advantage_shaping, **a.advantage_shaping_kwargs),
                        ADVANTAGE_SHAPING.needs(a.advantage_shaping))


def logprob_needs(cfg: Config, buffer: Buffer, weights: TokenWeightStage) -> LogprobNeeds:
    """pi_old before the update: for several optimizer steps per batch or a buffer that stores it; its entropy: for
    entropy-based token weights (docs/methods.md §1.0). VPPO's sampled-token dependency reads both when they were
    computed anyway (several optimizer steps), instead of a pass of its own."""
    a = cfg.algo
    old = a.ppo_epochs > 1 or a.mini_batches > 1 or "old_logp" in buffer.reads
    reuse = old and needs_perception(cfg) and a.perception.score == "k3_sampled"
    return LogprobNeeds(old_logp=old, entropy="entropy" in weights.needs or reuse,
                        temperature=cfg.rollout.temperature, micro_batch_size=a.micro_batch_size,
                        micro_batch_tokens=a.micro_batch_tokens)


def build_buffer(cfg: Config, task) -> Buffer:
    context = {k: v for k, v in buffer_context(cfg, task).items() if k in BUFFERS.needs(cfg.buffer.name)}
    return BUFFERS.build(cfg.buffer.name, **context, **cfg.buffer.kwargs)


def apply_lora(model, lora: dict):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("model.lora needs the extra: pip install 'rlvr[lora]'") from err
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))


def build_optimizer(cfg: Config, policy):
    o = cfg.optim
    params = [p for p in policy.parameters() if p.requires_grad]
    # the fused kernel (CPU and CUDA, FSDP's DTensor shards too) is one pass over each tensor instead of a dozen small
    # ops per parameter, with no parameter-sized temporaries (foreach makes several: benchmarks/memory.py, part a)
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, fused=True)
    warm = max(o.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return optimizer, scheduler


def setup(cfg: Config, *, resume_from: Path | None = None, given: Given | None = None) -> Run:
    given = given or Given()
    validate(cfg, model_given=given.policy is not None)
    world = init_world()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    task = given.task if given.task is not None else build_task(cfg, eval_split=False)
    eval_task = given.eval_task if given.eval_task is not None else build_task(cfg, eval_split=True)
    notices = fit_prompts(cfg, (task, eval_task), policy=given.policy)  # rows too long for the model, before it loads
    if world.is_main and notices:
        print("\n".join(notices), file=sys.stderr)
    scorer = Scorer(build_rewards(cfg, task, given.functions), cfg.mixture.normalize, cfg.train.on_reward_error)
    buffer, weights = build_buffer(cfg, task), build_token_weights(cfg)
    if hasattr(buffer, "world"):  # a buffer that keeps one pool per rank in step (ExGRPO) gathers over them
        buffer.world = world
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    def build():
        torch.manual_seed(cfg.seed)
        if given.policy is not None:
            built = given_policy(cfg, given.policy, resume_from)
        else:
            built = build_policy(cfg, resume_from)
        prepare_policy(cfg, built[0], world, device)
        return built

    policy, ref_policy = in_turns(cfg, world, build)  # FSDP: one full model in memory at a time
    if ref_policy is not None:
        ref_policy.to(device)
    optimizer, scheduler = build_optimizer(cfg, policy)
    logger = None
    if world.is_main:
        print(f"rlvr: prompts reach the model as {policy.prompt_format}", file=sys.stderr)
        logger = RunLogger(cfg.run_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                           project=cfg.logging.wandb_project, config=to_dict(cfg), resume=resume_from is not None)
        save_config(cfg, cfg.run_dir / "config.yaml")
    return Run(cfg, world, policy, ref_policy, task, eval_task, PromptStream(task, world, cfg.seed),
               build_sampler(cfg, policy), scorer, build_filters(cfg, task),
               AdvantageStage(ADVANTAGES.bind(cfg.algo.advantage, **cfg.algo.advantage_kwargs),
                              ADVANTAGES.needs(cfg.algo.advantage)),
               logprob_needs(cfg, buffer, weights), buffer, build_perception(cfg, policy), build_shaping(cfg), weights,
               build_loss_fns(cfg), optimizer, scheduler, logger)


def given_policy(cfg: Config, policy, resume_from: Path | None):
    """(policy, frozen reference or None) around a model the caller loaded: the reference is the model as given; a
    resume loads the checkpoint's weights (or its LoRA adapter) into it."""
    ref_policy = policy.frozen_copy() if cfg.algo.kl_coef else None
    if resume_from is not None and not cfg.model.lora and (resume_from / "model").is_dir():  # else FSDP shards
        _load_weights(policy.model, resume_from / "model")
    _lora(cfg, policy, resume_from)
    return policy, ref_policy


def _load_weights(model, folder: Path) -> None:
    from safetensors.torch import load_file

    state = {}
    for shard in sorted(folder.glob("*.safetensors")):
        state.update(load_file(shard))
    result = model.load_state_dict(state, strict=False)
    tied = {name for name, p in model.named_parameters(remove_duplicate=False)} - set(dict(model.named_parameters()))
    missing = [k for k in result.missing_keys if k not in tied]
    if not state or result.unexpected_keys or missing:
        raise ConfigError(f"{folder}: its weights do not fit the model given (missing {missing[:3]}, unexpected "
                          f"{result.unexpected_keys[:3]}); resume with the model the run started from")


def build_policy(cfg: Config, resume_from: Path | None):
    """(policy, frozen reference or None). A full-weight resume loads the checkpoint's weights; a LoRA resume loads the
    base model, then the checkpoint's adapter. The reference is always the starting model."""
    m = cfg.model
    # a full-weight resume loads the checkpoint's model folder; FSDP shards load after sharding (trainer.restore)
    full_resume = resume_from is not None and not m.lora and (resume_from / "model").is_dir()
    start = dict(path=m.path, config=m.config, gguf_file=m.gguf_file)  # the run's starting model
    source = dict(path=str(resume_from / "model"), config=None, gguf_file=None) if full_resume else start
    options = dict(dtype=m.dtype, seed=cfg.seed, autocast=getattr(torch, m.autocast) if m.autocast else None,
                   lean=m.lean_forward, chat_template=m.chat_template, processor=m.processor or None)
    # a checkpoint's own tokenizer (a folder's, a GGUF file's) unless one is named; a tiny config's: the char one
    policy = load_policy_of(**source, tokenizer=m.tokenizer or source["path"], **options,
                             config_overrides=m.config_overrides if source["config"] else None)
    ref_policy = None
    if cfg.algo.kl_coef:  # the reference is the run's starting model, not a checkpoint
        ref = load_policy_of(**start, tokenizer=m.tokenizer or m.path, config_overrides=m.config_overrides,
                              **options) if full_resume else policy
        ref_policy = ref.frozen_copy()
    _lora(cfg, policy, resume_from)
    return policy, ref_policy


def _lora(cfg: Config, policy, resume_from: Path | None) -> None:
    """Wrap the policy's model in LoRA adapters when model.lora is set: new ones, or the checkpoint's on resume."""
    if cfg.model.lora and resume_from is not None:
        from peft import PeftModel

        policy.model = PeftModel.from_pretrained(policy.model, resume_from / "model", is_trainable=True)
    elif cfg.model.lora:
        policy.model = apply_lora(policy.model, cfg.model.lora)
