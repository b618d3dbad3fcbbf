"""GRPO step throughput: completions per second of full GRPO steps (rollout, reward, update), rlvr vs TRL.

Standard CPU workload: qwen2-tiny (hidden 256, 4 layers, 4 heads, intermediate 1024, random weights) with the char
tokenizer; the arithmetic task (2 digits, '+'), scored by the task's own exact-match `score`; 8 prompts x 8
completions = 64 completions per step, up to 16 new tokens, temperature 1.0, no top-k/top-p; one optimizer update
per step (one epoch, one mini-batch, AdamW, lr 1e-6, grad clip 1.0), clipped surrogate (eps 0.2) with token-mean
loss and group-std advantages; no reference model (KL coefficient 0); 2 torch threads.

rlvr: `rlvr.trainer.rl_step` timed around each call (per-stage times from its metrics).
TRL (when the `bench` extra is installed): `GRPOTrainer` on the identical model, tokenizer, prompts (in the same
order) and reward, with one generation and one optimizer step per trainer step. A TrainerCallback times each
step from the end of the previous step to the end of this one (data loading, generation, reward, loss, backward,
optimizer, the trainer's own bookkeeping); `step_core` is on_step_begin -> on_step_end only.
Both run in this process: warm-up steps first, then the timed steps in alternating blocks (rlvr, TRL, rlvr, TRL,
...) so machine noise hits both. Reported: median seconds per step, completions/s = 64 / median, and
ratio = rlvr completions/s / TRL completions/s. Prints one JSON object on stdout.

    .venv/bin/python benchmarks/grpo_step.py [--steps 10] [--warmup 2] [--rounds 2] [--threads 2] [--no-trl]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from machine import cpu_model

from rlvr.config import load_config  # noqa: E402
from rlvr.policies import load_policy  # noqa: E402
from rlvr.run import State, setup  # noqa: E402
from rlvr.tasks import TASKS  # noqa: E402
from rlvr.trainer import rl_step  # noqa: E402

SEED = 0


@dataclass
class Workload:
    """What both frameworks run each step. model: load_policy's source ({"config": ...} or {"gguf_file": ...});
    chat: prompts are a user turn of the tokenizer's chat template on both sides (TRL: conversational prompts)."""

    name: str = "qwen2-tiny"
    model: dict = field(default_factory=lambda: {"config": "qwen2-tiny"})
    task: dict = field(default_factory=lambda: {"name": "arithmetic", "digits": 2, "ops": "+"})
    prompts: int = 8
    group: int = 8
    new_tokens: int = 16
    lr: float = 1e-6
    chat: bool = False
    target_ratio: float | None = 2.0  # the goal of issue 8 at fp32 (None: no goal); with bf16 autocast on both sides:
    target_ratio_bf16: float | None = 2.5

    @property
    def completions(self) -> int:
        return self.prompts * self.group

    def task_kwargs(self) -> dict:
        return {k: v for k, v in self.task.items() if k != "name"}


STANDARD = Workload()
# Known differences between the two runs that remain (none changes the amount of model work per step).
DIFFERENCES = [
    "sampling: rlvr's KV-cached sampler vs TRL's transformers model.generate (same distribution, different RNG "
    "streams, so completion lengths differ slightly; see mean_completion_tokens)",
    "optimizer: both use the fused AdamW kernel (TRL's default adamw_torch_fused, rlvr's AdamW(fused=True)); same math",
    "advantage eps: TRL (r - mean) / (std + 1e-4), rlvr 1e-6; rlvr's clip loss has dual-clip 3.0, inactive "
    "on-policy (ratio 1)",
    "TRL's step includes its own bookkeeping (per-step metric .item() calls, flops and token counting); logging, "
    "saving, evaluation, progress bars and completion logs are off",
]


def block_sizes(steps: int, rounds: int) -> list[int]:
    rounds = max(1, min(rounds, steps))
    return [steps // rounds + (i < steps % rounds) for i in range(rounds)]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def rnd(x: float | None, n: int = 4) -> float | None:
    return None if x is None else round(x, n)


# ------------------------------------------------------------------ rlvr


class RlvrBench:
    """rlvr's GRPO step on the standard workload; `run(n, timed)` performs n steps."""

    def __init__(self, tmpdir: str, threads: int, bf16: bool = False, w: Workload = STANDARD):
        self.w = w
        self.cfg = load_config(None, {
            "model.autocast": "bfloat16" if bf16 else None,
            "name": "bench-grpo-step",
            "seed": SEED,
            "output_dir": f"{tmpdir}/rlvr",
            **{f"model.{k}": v for k, v in w.model.items()},
            "model.chat_template": "auto" if w.chat else "none",
            "task.name": w.task["name"],
            "task.kwargs": w.task_kwargs(),
            "rollout.prompts_per_step": w.prompts,
            "rollout.group_size": w.group,
            "rollout.max_new_tokens": w.new_tokens,
            "rollout.temperature": 1.0,
            "rollout.top_p": 1.0,
            "rollout.top_k": 0,
            "algo.kl_coef": 0.0,
            "algo.ppo_epochs": 1,
            "algo.mini_batches": 1,
            "algo.micro_batch_size": w.completions,
            "optim.lr": w.lr,
            "train.threads": threads,
            "train.progress": False,
        })
        self.run_ = setup(self.cfg)
        self.state = State()
        self.step = 0
        self.times: list[float] = []
        self.stages: dict[str, list[float]] = {"rollout": [], "reward": [], "update": [], "other": []}
        self.tokens: list[float] = []
        self.decode_steps: list[int] = []
        self.rewards: list[float] = []

    def run(self, n: int, *, timed: bool) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            metrics, batch = rl_step(self.run_, self.state, self.step)
            dt = time.perf_counter() - t0
            self.step += 1
            self.state.step = self.step
            if not timed:
                continue
            self.times.append(dt)
            parts = {k: metrics[f"time/{k}"] for k in ("rollout", "reward", "update") if f"time/{k}" in metrics}
            for k, v in parts.items():
                self.stages[k].append(v)
            self.stages["other"].append(dt - sum(parts.values()))  # advantages, batch assembly, metrics
            self.tokens.append(float(batch.completion_mask.sum()) / len(batch))
            self.decode_steps.append(batch.completion_ids.shape[1])
            self.rewards.append(float(batch.rewards.nanmean()))

    def close(self) -> None:
        if self.run_.logger:
            self.run_.logger.close()

    def report(self) -> dict[str, Any]:
        med = median(self.times)
        return {
            "median_step_s": rnd(med),
            "completions_per_s": rnd(self.w.completions / med, 2),
            "stages_median_s": {k: rnd(median(v)) for k, v in self.stages.items()},
            "step_s": [rnd(t) for t in self.times],
            "mean_completion_tokens": rnd(statistics.mean(self.tokens), 2),
            "mean_reward": rnd(statistics.mean(self.rewards)),
        }


# ------------------------------------------------------------------ TRL


def trl_version() -> str | None:
    try:
        import trl
    except ImportError:
        return None
    return trl.__version__


class TrlBench:
    """TRL's GRPOTrainer on the identical workload; `between` maps a step number to work run after it ends."""

    def __init__(self, tmpdir: str, total_steps: int, warmup: int, between: dict[int, Callable[[], None]],
                 threads: int, bf16: bool = False, w: Workload = STANDARD):
        import datasets
        import transformers
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        transformers.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        self.w = w
        task = TASKS.build(w.task["name"], **w.task_kwargs(), seed=SEED)
        samples = [task[i] for i in range(total_steps * w.prompts)]  # rlvr reads items 0, 1, 2 ... in this order
        dataset = datasets.Dataset.from_list([self.row(s, i) for i, s in enumerate(samples)])

        def task_reward(completions, index, **kwargs) -> list[float]:
            texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]  # conversational: messages
            return [task.score(samples[i], c) for i, c in zip(index, texts)]

        model, tok = self.load()
        self.args = GRPOConfig(
            output_dir=f"{tmpdir}/trl",
            seed=SEED,
            use_cpu=True,
            bf16=bf16,  # TRL's own default resolves to True; the fp32 comparison turns it off
            fp16=False,
            gradient_checkpointing=False,  # TRL defaults to True; rlvr does not checkpoint
            max_steps=total_steps,
            per_device_train_batch_size=w.completions,
            gradient_accumulation_steps=1,
            steps_per_generation=1,
            num_iterations=1,
            num_generations=w.group,
            max_completion_length=w.new_tokens,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            beta=0.0,
            epsilon=0.2,
            loss_type="dapo",  # token mean over the whole batch, as rlvr's token_mean
            scale_rewards="group",
            mask_truncated_completions=False,
            learning_rate=w.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            shuffle_dataset=False,
            disable_dropout=True,
            log_completions=False,
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
        )
        bench = self
        self.warmup, self.threads = warmup, threads
        self.full: list[float] = []
        self.core: list[float] = []
        self.stages: dict[str, list[float]] = {"generate": [], "reward": [], "rest": []}
        self.tokens: list[float] = []
        self.threads_seen: set[int] = set()
        self._cur: dict[str, float] = {}

        class Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                bench._prev_end = None

            def on_step_begin(self, args, state, control, **kw):
                if torch.get_num_threads() != bench.threads:  # in case anything changed it
                    torch.set_num_threads(bench.threads)
                bench._cur = {"generate": 0.0, "reward": 0.0, "tokens": 0.0}
                bench._begin = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                now = time.perf_counter()
                bench.threads_seen.add(torch.get_num_threads())
                if state.global_step > bench.warmup:
                    bench.core.append(now - bench._begin)
                    if bench._prev_end is not None:
                        full = now - bench._prev_end
                        bench.full.append(full)
                        gen, rew = bench._cur["generate"], bench._cur["reward"]
                        bench.stages["generate"].append(gen)
                        bench.stages["reward"].append(rew)
                        bench.stages["rest"].append(full - gen - rew)
                    bench.tokens.append(bench._cur["tokens"] / w.completions)
                hook = between.get(state.global_step)
                if hook is not None:
                    hook()
                bench._prev_end = time.perf_counter()

        self.trainer = GRPOTrainer(model=model, reward_funcs=[task_reward], args=self.args, train_dataset=dataset,
                                   processing_class=tok, callbacks=[Clock()])
        self._wrap_stages()

    def row(self, sample, index: int) -> dict[str, Any]:
        """One dataset row: the prompt (a user turn when w.chat), the answer and the task item index."""
        prompt = [{"role": "user", "content": sample.prompt}] if self.w.chat else sample.prompt
        return {"prompt": prompt, "answer": sample.answer, "index": index}

    def load(self) -> tuple[Any, Any]:
        """(model, processing_class): the same weights as rlvr's policy (same seed / same file)."""
        return load_policy(**self.w.model, seed=SEED)

    def _wrap_stages(self) -> None:
        """Time TRL's generation and reward calls on this trainer instance (a perf_counter pair around each)."""
        tr = self.trainer
        gen_fn = getattr(tr, "_generate_single_turn", None)
        rew_fn = getattr(tr, "_calculate_rewards", None)
        if gen_fn is not None:
            def generate_single_turn(*a, **kw):
                t0 = time.perf_counter()
                out = gen_fn(*a, **kw)
                self._cur["generate"] = self._cur.get("generate", 0.0) + time.perf_counter() - t0
                self._cur["tokens"] = self._cur.get("tokens", 0.0) + sum(len(c) for c in out[0])
                return out

            tr._generate_single_turn = generate_single_turn
        if rew_fn is not None:
            def calculate_rewards(*a, **kw):
                t0 = time.perf_counter()
                out = rew_fn(*a, **kw)
                self._cur["reward"] = self._cur.get("reward", 0.0) + time.perf_counter() - t0
                return out

            tr._calculate_rewards = calculate_rewards

    def train(self) -> None:
        torch.set_num_threads(self.threads)
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its summary dict; stdout is the JSON only
            self.trainer.train()

    def report(self) -> dict[str, Any]:
        med = median(self.full)
        a = self.args
        return {
            "median_step_s": rnd(med),
            "completions_per_s": rnd(self.w.completions / med, 2),
            "median_step_core_s": rnd(median(self.core)),
            "stages_median_s": {k: rnd(median(v)) for k, v in self.stages.items()},
            "step_s": [rnd(t) for t in self.full],
            "mean_completion_tokens": rnd(statistics.mean(self.tokens), 2) if self.tokens else None,
            "config": {
                "per_device_train_batch_size": a.per_device_train_batch_size,
                "generation_batch_size": a.generation_batch_size,
                "steps_per_generation": a.steps_per_generation,
                "num_generations": a.num_generations,
                "loss_type": a.loss_type,
                "scale_rewards": a.scale_rewards,
                "optim": str(getattr(a.optim, "value", a.optim)),
                "gradient_checkpointing": a.gradient_checkpointing,
                "bf16": a.bf16,
                "threads_seen": sorted(self.threads_seen),
            },
        }


# ------------------------------------------------------------------ main


def main(w: Workload = STANDARD, doc: str = __doc__, extra: Callable[[Any], dict] | None = None,
         rlvr_bench: type[RlvrBench] = RlvrBench, trl_bench: type[TrlBench] = TrlBench) -> None:
    """Run the comparison on workload `w`; `extra(rlvr_bench)` adds keys to the JSON (measured after both runs);
    `rlvr_bench`, `trl_bench`: the two sides (subclasses for other models, e.g. benchmarks/vlm_step.py)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per framework")
    ap.add_argument("--rounds", type=int, default=2, help="alternating timed blocks per framework")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-trl", action="store_true", help="time rlvr only")
    ap.add_argument("--bf16", action="store_true",
                    help="mixed precision on both sides: rlvr model.autocast=bfloat16, TRL bf16=True")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    have_trl = trl_version() is not None and not args.no_trl
    blocks = block_sizes(args.steps, args.rounds)
    notes: list[str] = []
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlvr-grpo-bench-") as tmpdir:
        rlvr = rlvr_bench(tmpdir, args.threads, bf16=args.bf16, w=w)
        trl_report = None
        try:
            if have_trl:
                # schedule: rlvr warm-up, TRL warm-up, then rlvr block j before TRL block j
                between, at = {}, args.warmup
                for size in blocks:
                    between[at] = lambda n=size: rlvr.run(n, timed=True)
                    at += size
                trl = trl_bench(tmpdir, args.warmup + args.steps, args.warmup, between, args.threads, bf16=args.bf16,
                               w=w)
                torch.set_num_threads(args.threads)
                rlvr.run(args.warmup, timed=False)
                if args.warmup == 0:
                    between.pop(0)()
                trl.train()
                trl_report = trl.report()
            else:
                rlvr.run(args.warmup, timed=False)
                for size in blocks:
                    rlvr.run(size, timed=True)
                notes.append("trl is not installed (pip install 'rlvr[bench]'): rlvr only" if not args.no_trl
                             else "--no-trl: rlvr only")
        finally:
            rlvr.close()
    rlvr_report = rlvr.report()
    load_end = os.getloadavg()[0]
    if max(load_start, load_end) > os.cpu_count() + 0.5:
        notes.append(f"the machine was busy (1-min load average {load_start:.1f} -> {load_end:.1f} on "
                     f"{os.cpu_count()} cores): timings are noisy, rerun on a quiet machine")
    ratio, target = None, w.target_ratio_bf16 if args.bf16 else w.target_ratio
    if trl_report is not None:
        ratio = round(rlvr_report["completions_per_s"] / trl_report["completions_per_s"], 3)
    out = {
        "benchmark": "grpo_step" if w is STANDARD else w.name,
        "workload": {
            "model": w.model,
            "parameters": sum(p.numel() for p in rlvr.run_.policy.parameters()),
            "tokenizer": type(rlvr.run_.policy.tokenizer).__name__,
            "prompt_format": rlvr.run_.policy.prompt_format,
            "task": w.task,
            "reward": "task (the task's own exact-match score)",
            "prompts_per_step": w.prompts,
            "completions_per_prompt": w.group,
            "completions_per_step": w.completions,
            "max_new_tokens": w.new_tokens,
            "temperature": 1.0,
            "updates_per_step": 1,
            "reference_model": False,
            "lr": w.lr,
        },
        "rlvr": rlvr_report,
        "trl": trl_report,
        "ratio": ratio,
        "target_ratio": target,
        "meets_target": None if ratio is None or target is None else ratio >= target,
        "precision": "bf16 autocast (both)" if args.bf16 else "fp32 (both)",
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": len(blocks),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "load_average_1min": [round(load_start, 2), round(load_end, 2)],
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "trl": trl_version(),
            "python": platform.python_version(),
        },
    }
    if extra is not None:
        out.update(extra(rlvr))
    if trl_report is not None:
        out["differences"] = DIFFERENCES
    if notes:
        out["note"] = "; ".join(notes)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
