"""train(cfg): the RL loop. One step = rollout -> reward -> advantage -> update -> log (-> eval, checkpoint).

1. Prompts (rlvr.rollout.collect): the task is read in order (item i is the same on every run); with data
   parallelism rank r takes its slice of each step's prompts. Each prompt is repeated G times.
2. Rollout: rlvr's KV-cached sampler; the sampling generator is seeded from (seed, data position, rank), so
   an interrupted and resumed run samples exactly what an uninterrupted one does.
3. Rewards: the weighted sum of the configured reward functions (plus DAPO overlong shaping). With
   dynamic sampling (DAPO), groups whose rewards are all equal are dropped and more prompts are sampled.
   Reward metrics are logged before filtering.
4. Advantages by name (ADVANTAGES registry), from rewards and group ids.
5. Update (rlvr.update): PPO epochs x mini-batches, exact global normalisers, gradient averaging over ranks.
   With one epoch and one mini-batch pi_old is the detached current log-prob (rho = 1, as TRL and verl do).
6. Log metrics (TRL names + time per stage), samples; evaluate greedily every `eval_every` steps;
   checkpoint every `save_every` steps, at the end, and on Ctrl-C (the step in flight finishes first).
"""

from __future__ import annotations

import inspect
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch

from rlvr.batch import Rollout, concat_rollouts
from rlvr.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    save_model_atomic,
    set_rng_state,
)
from rlvr.config import Config, to_dict
from rlvr.distributed import World, all_reduce, barrier, shutdown
from rlvr.errors import TrainingError
from rlvr.evaluate import evaluate
from rlvr.metrics import length_metrics
from rlvr.rewards.diversity import group_diversity_metrics
from rlvr.rollout.collect import collect, score
from rlvr.rollout.replay import observe, replay_rollout
from rlvr.run import Run, State, setup
from rlvr.tasks.mixture import MixtureTask
from rlvr.update import UpdateBatch, batched_logp, update

# ------------------------------------------------------------------ one step


def collect_with_replay(run: Run, state: State, step: int):
    """collect(), plus ExGRPO's mixed groups when a buffer is on: (rollout, rewards, is_replay | None, metrics)."""
    if run.buffer is None:
        rollout, rewards, metrics = collect(run, state, step)
        return rollout, rewards, None, metrics
    gen = torch.Generator().manual_seed(run.cfg.seed * 104_729 + step)
    questions = run.buffer.sample_questions(run.cfg.rollout.prompts_per_step, generator=gen)
    rollout, rewards, metrics = collect(run, state, step, n_prompts=run.cfg.rollout.prompts_per_step - len(questions))
    is_replay = torch.zeros(len(rollout), dtype=torch.bool, device=run.device)
    if questions:
        t0 = time.perf_counter()
        replayed, replay_flags, sel_metrics = replay_rollout(run, questions, step)
        metrics["time/rollout"] += time.perf_counter() - t0  # selection pass + G - 1 fresh samples each
        replay_rewards, _ = score(run, replayed, step)
        rollout = concat_rollouts([rollout, replayed], run.tokenizer.pad_token_id)
        rewards, is_replay = torch.cat([rewards, replay_rewards]), torch.cat([is_replay, replay_flags])
        metrics.update(sel_metrics)
        metrics["rollouts/generated"] += float(len(questions) * (run.cfg.rollout.group_size - 1))
    metrics.update(observe(run, rollout, rewards, is_replay, step))
    metrics["exgrpo/replayed_questions"] = float(len(questions))
    return rollout, rewards, is_replay, metrics


def make_update_batch(run: Run, rollout: Rollout, advantages: torch.Tensor) -> UpdateBatch:
    cfg = run.cfg
    loss_mask = rollout.completion_mask.float()
    if cfg.algo.mask_truncated:
        loss_mask = loss_mask * (~rollout.truncated).float().unsqueeze(-1)  # TRL mask_truncated_completions
    batch = UpdateBatch(
        input_ids=torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1),
        attention_mask=torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1),
        loss_mask=loss_mask,
        advantages=advantages,
        group_ids=rollout.group_ids,
        rollout_logp=rollout.logp,
    )
    mbs, temp = cfg.algo.micro_batch_size, cfg.rollout.temperature
    if cfg.algo.ppo_epochs > 1 or cfg.algo.mini_batches > 1:  # off-policy steps need pi_old (spec §2 step 6)
        run.model.eval()
        batch.old_logp = batched_logp(run.model, batch, mbs, temp, run.loss_fns.autocast, run.loss_fns.lean)
    if run.ref_model is not None:
        batch.ref_logp = batched_logp(run.ref_model, batch, mbs, temp, run.loss_fns.autocast, run.loss_fns.lean)
    return batch


def rl_step(run: Run, state: State, step: int) -> tuple[dict[str, float], Rollout, torch.Tensor]:
    cfg = run.cfg
    t_start = time.perf_counter()
    mixed = run.buffer is not None and run.buffer.started  # ExGRPO's loss mode for this batch, before it updates
    rollout, rewards, is_replay, metrics = collect_with_replay(run, state, step)
    lengths = rollout.completion_mask.sum(-1).float()
    kwargs = {"lengths": lengths} if "lengths" in inspect.signature(run.advantage_fn).parameters else {}
    advantages = run.advantage_fn(rewards, rollout.group_ids, **kwargs)  # (N,)
    batch = make_update_batch(run, rollout, advantages)
    if run.buffer is not None:  # ExGRPO: replayed rows, and the loss's mixed mode once replay has started
        batch.is_replay, batch.loss_kwargs = is_replay, {"mixed": mixed}
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed * 7_919 + step)
    upd = update(run.model, run.optimizer, run.scheduler, batch, run.loss_fns, ppo_epochs=cfg.algo.ppo_epochs,
                 mini_batches=cfg.algo.mini_batches, micro_batch_size=cfg.algo.micro_batch_size,
                 grad_clip=cfg.optim.grad_clip, world=run.world, generator=gen)
    t_end = time.perf_counter()
    metrics.update(length_metrics(rollout.completion_mask, rollout.truncated))
    if cfg.train.diversity_metrics:
        metrics.update(group_diversity_metrics(rollout.texts, rollout.group_ids, unit=cfg.train.diversity_unit))
    metrics.update({k: v for k, v in upd.items() if k not in ("skipped",)})
    metrics["adv_abs_mean"] = float(advantages.abs().mean())
    metrics["lr"] = run.scheduler.get_last_lr()[0]
    metrics["time/update"] = t_end - t0
    metrics["time/step"] = t_end - t_start
    n_tokens = float(rollout.completion_mask.sum())
    metrics["tokens_per_second"] = n_tokens * run.world.size / max(metrics["time/rollout"], 1e-9)
    metrics["completions_per_second"] = len(rollout) * run.world.size / metrics["time/step"]
    metrics = _reduce_metrics(metrics, run.world)
    metrics["skipped_steps"] = upd["skipped"]
    return metrics, rollout, rewards


_SUMMED = ("policy_loss", "kl", "entropy", "clip_ratio/", "ppo_kl", "mismatch/")


def _reduce_metrics(metrics: dict[str, float], world: World) -> dict[str, float]:
    """Rank-average every metric; update statistics are already shares of the global mean, so they sum;
    extremes (`*_min`, `*_max`, `completions/min_length`, `completions/max_length`) take the min / max over ranks."""
    if world.size == 1:
        return metrics
    out = {}
    for op, keys in _by_reduction(metrics).items():
        values = all_reduce(torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64), world, op)
        out.update({k: float(v) / (world.size if op == "mean" else 1) for k, v in zip(keys, values)})
    return out


def _by_reduction(metrics: dict[str, float]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"sum": [], "mean": [], "min": [], "max": []}
    for k in sorted(metrics):
        if k.endswith(("_min", "_max", "/min_length", "/max_length")):  # TRL's completions/min_length too
            op = "min" if k.endswith(("_min", "/min_length")) else "max"
        else:
            op = "sum" if k.startswith(_SUMMED) else "mean"
        groups[op].append(k)
    return {op: keys for op, keys in groups.items() if keys}


# ------------------------------------------------------------------ loop


class StopRequest:
    """First Ctrl-C: finish the step in flight, checkpoint, exit. Second Ctrl-C: stop at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nrlvr: interrupt received, finishing this step and writing a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)
        return False


def run_eval(run: Run, step: int) -> dict[str, float]:
    """Greedy held-out metrics; for a mixture, per task (eval/<key>/...) and their mean (eval/accuracy)."""
    cfg = run.cfg
    if not run.world.is_main:
        return {}
    tasks = run.eval_task.tasks if isinstance(run.eval_task, MixtureTask) else {"": run.eval_task}
    sizes = [t.eval_size for t in cfg.tasks] if cfg.tasks else [cfg.task.eval_size]
    out: dict[str, float] = {}
    for (key, task), size in zip(tasks.items(), sizes):
        res = evaluate(run.model, run.tokenizer, task, size=size, max_new_tokens=cfg.rollout.max_new_tokens,
                       stop=tuple(cfg.rollout.stop), batch_size=128, k=cfg.train.eval_pass_k,
                       temperature=cfg.rollout.temperature, seed=cfg.seed + step)
        out.update({f"eval/{key + '/' if key else ''}{k}": v for k, v in res.items()})
    if len(tasks) > 1:
        k = cfg.train.eval_pass_k
        for metric in ("accuracy", "mean_score", "mean_length") + ((f"pass@{k}",) if k else ()):
            out[f"eval/{metric}"] = sum(out[f"eval/{k}/{metric}"] for k in tasks) / len(tasks)
    return out


def checkpoint(run: Run, state: State) -> Path | None:
    if not run.world.is_main:
        barrier(run.world)
        return None
    trainer_state = {
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "rng": rng_state(),
        "state": state.__dict__.copy(), "config": to_dict(run.cfg),
        "buffer": None if run.buffer is None else run.buffer.state_dict(),
    }
    path = save_checkpoint(run.cfg.run_dir / "checkpoints", state.step, run.model, run.tokenizer, trainer_state)
    barrier(run.world)
    return path


def restore(run: Run, folder: Path) -> State:
    saved = load_trainer_state(folder)
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    if run.buffer is not None:
        run.buffer.load_state_dict(saved["buffer"])
    return State(**saved["state"])


def _sample_rows(rollout: Rollout, rewards: torch.Tensor, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(min(n, len(rollout))):
        s = rollout.samples[i]
        prompt = s.prompt if isinstance(s.prompt, str) else s.prompt[-1]["content"]
        rows.append({"prompt": prompt, "completion": rollout.texts[i], "answer": str(s.answer),
                     "reward": None if math.isnan(float(rewards[i])) else float(rewards[i])})
    return rows


def train(cfg: Config, *, resume: bool = False) -> dict[str, Any]:
    """Run RL training as configured; returns the summary (accuracy before/after, paths)."""
    resume_from = latest_checkpoint(cfg.run_dir / "checkpoints") if resume else None
    if resume and resume_from is None:
        print(f"rlvr: no checkpoint under {cfg.run_dir / 'checkpoints'}; starting from scratch")
    run = setup(cfg, resume_from=resume_from)
    state = restore(run, resume_from) if resume_from else State()
    try:
        return _loop(run, state)
    finally:
        if run.logger:
            run.logger.close()
        shutdown(run.world)


def _loop(run: Run, state: State) -> dict[str, Any]:
    cfg, log = run.cfg, run.logger
    if state.step == 0:
        before = run_eval(run, 0)
        state.history["eval_before"] = before
        if log:
            log.log(0, before)
    bar = _progress(run, state.step)
    with StopRequest() as stop:
        while state.step < cfg.train.steps:
            metrics, rollout, rewards = rl_step(run, state, state.step)
            state.step += 1
            if cfg.train.eval_every and state.step % cfg.train.eval_every == 0 and state.step < cfg.train.steps:
                metrics.update(run_eval(run, state.step))
            if log:
                log.log(state.step, metrics)
                log.samples(state.step, _sample_rows(rollout, rewards, cfg.train.num_samples_logged))
            _count_bad(run, state, metrics)
            if bar:
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward']:.3f}", cps=f"{metrics['completions_per_second']:.0f}")
            if stop.requested:
                path = checkpoint(run, state)
                print(f"rlvr: stopped at step {state.step}; resume with --resume ({path})")
                return {"interrupted": True, "step": state.step, "checkpoint": str(path)}
            if cfg.train.save_every and state.step % cfg.train.save_every == 0:
                checkpoint(run, state)
    if bar:
        bar.close()
    return _finish(run, state)


def _progress(run: Run, start: int):
    if not (run.cfg.train.progress and run.world.is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=run.cfg.train.steps, initial=start, desc=f"rlvr {run.cfg.name}", unit="step", dynamic_ncols=True)


def _count_bad(run: Run, state: State, metrics: dict[str, float]) -> None:
    if metrics["skipped_steps"]:
        state.bad_steps += 1
        state.skipped_total += 1
    else:
        state.bad_steps = 0
    if state.bad_steps >= run.cfg.train.max_bad_steps:
        last = latest_checkpoint(run.cfg.run_dir / "checkpoints")
        raise TrainingError(f"step {state.step}: non-finite loss or gradient in {state.bad_steps} steps in a row; "
                            f"stopping (last good checkpoint: {last or 'none written yet'})")


def _finish(run: Run, state: State) -> dict[str, Any]:
    after = run_eval(run, state.step)
    summary: dict[str, Any] = {"steps": state.step, "skipped_steps": state.skipped_total}
    if run.world.is_main:
        run.logger.log(state.step, after)
        checkpoint(run, state)
        final = run.cfg.run_dir / "final"
        save_model_atomic(run.model, run.tokenizer, final)
        summary.update({"eval_before": state.history.get("eval_before", {}), "eval_after": after,
                        "final_model": str(final)})
        _plot(run)
    else:
        checkpoint(run, state)
    return summary


def _plot(run: Run) -> None:
    from rlvr.plot import plot_run

    try:
        plot_run(run.cfg.run_dir)
    except Exception as err:  # a plot must never lose a finished run
        print(f"rlvr: could not draw the plot: {err}")
