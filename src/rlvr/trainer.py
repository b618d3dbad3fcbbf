"""train(cfg): the RL loop. One step names its stages in order; each is a function of the batch and its settings.

    plan     the buffer's plan: how many fresh prompts, which stored rows to replay (rlvr.buffers)
    collect  prompts -> G completions each, through the multi-turn environment when one is set (rlvr.rollout.collect)
    score    reward sources -> rewards, each row by its own task's sources (rlvr.rollout.score)
    filter   group filters (dynamic sampling, pass-rate bands), decided over every rank; collect, score and filter
             repeat while groups are missing (rlvr.rollout.filters)
    advantages, pi_old / reference log-probs where needed, the visual dependency and advantage shaping (VPPO),
             buffer.observe, token weights (rlvr.stages)
    update   PPO epochs x mini-batches with global normalisers (rlvr.update)
    log      metrics with declared reductions over ranks (rlvr.metrics); evaluation and checkpoints in the loop

Sampling is counter-based per row (rlvr.seeding), so an interrupted and resumed run, and any data-parallel layout,
samples exactly what an uninterrupted single process does. Ctrl-C finishes the step in flight and checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

from rlvr.batch import Batch
from rlvr.buffers import Plan
from rlvr.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    save_model_atomic,
    set_rng_state,
)
from rlvr.config import Config, ConfigError, check_files, to_dict, validate
from rlvr.distributed import barrier, shutdown
from rlvr.distributed.fsdp import gathered, sharded
from rlvr.distributed.fsdp_checkpoint import load_sharded, save_full_model, save_sharded
from rlvr.errors import TrainingError
from rlvr.evaluate import evaluate
from rlvr.loop_run import StopRequest, main_process
from rlvr.metrics import Metrics, length_metrics
from rlvr.rewards.diversity import group_diversity_metrics
from rlvr.rollout.collect import collect
from rlvr.rollout.pipeline import RolloutPipeline
from rlvr.rollout.score import score
from rlvr.run import Given, Run, State, setup
from rlvr.run_folder import claim_run_folder
from rlvr.seeding import generator
from rlvr.stages import advantages, logprobs, perception, shape_advantages, token_weights
from rlvr.tasks.mixture import MixtureTask
from rlvr.update import update

# ------------------------------------------------------------------ one step


def rl_step(run: Run, state: State, step: int) -> tuple[dict[str, float], Batch]:
    """One RL step over this rank's rows; returns the metrics (reduced over ranks) and the trained batch."""
    cfg, log, t_start = run.cfg, Metrics(), time.perf_counter()
    with gathered(run.policy):  # FSDP: full weights for sampling and the no-grad passes, sharded for the update
        batch = _batch(run, state, step, log)
    with log.timer("time/update"):
        a = cfg.algo
        skipped = update(run.policy, run.optimizer, run.scheduler, batch, run.loss, ppo_epochs=a.ppo_epochs,
                         mini_batches=a.mini_batches, micro_batch_size=a.micro_batch_size,
                         micro_batch_tokens=a.micro_batch_tokens,
                         grad_clip=cfg.optim.grad_clip, world=run.world,
                         generator=generator(cfg.seed, "minibatch", step), log=log)
    if run.pipeline is not None:
        run.pipeline.publish(step + 1)
    if hasattr(run.sampler, "sync") and run.pipeline is None:  # Ray workers, a vLLM engine: the new weights
        run.sampler.sync(run.policy)  # (asynchronous: the pipeline loads each batch's version, rlvr.rollout.pipeline)
    if hasattr(run.sampler, "restarts"):  # Ray rollout workers (rlvr.distributed.ray_rollout)
        log.add("ray/restarts", run.sampler.restarts, "max")
    if run.scorer.runner is not None:  # Ray reward workers (rlvr.distributed.ray_reward)
        log.add("ray/reward_restarts", run.scorer.runner.restarts, "max")
    describe(run, batch, log, time.perf_counter() - t_start)
    metrics = log.reduce(run.world)
    metrics["skipped_steps"] = float(skipped)
    return metrics, batch


def _batch(run: Run, state: State, step: int, log: Metrics) -> Batch:
    """This step's batch to train: sampled (or taken from the pipeline), with advantages, log-probs, replay and token
    weights."""
    cfg = run.cfg
    if run.pipeline is None:
        with log.timer("time/rollout"):
            plan = run.buffer.plan(step, cfg.rollout.prompts_per_step, run.policy, log)
        batch = gather(run, state, plan, step, log)
    else:  # asynchronous: this batch was sampled with older weights while the last step updated (rlvr.rollout.pipeline)
        rollout, waited = run.pipeline.take(step, state.data_pos, more=step + 1 < cfg.train.steps)
        batch, state.data_pos = rollout.batch, rollout.end
        log.merge(rollout.log)
        log.mean("async/staleness", step - rollout.version)
        log.add("time/rollout_wait", waited, "time")
    batch = advantages(run.advantage, batch, run.world, log)
    batch = logprobs(run.logprobs, run.policy, run.ref_policy, batch)
    batch = perception(run.perception, run.policy, batch, step, run.world, log)  # VPPO: visual dependency per token
    batch = shape_advantages(run.shaping, batch, run.world, log)  # VPPO: trajectory-level advantage shaping
    batch = run.buffer.observe(batch, step, log)
    if run.pipeline is not None:  # a replay buffer's plan for the next batch reads what observe recorded
        run.pipeline.start_next()
    return token_weights(run.weights, batch, run.world, log)


def gather(run: Run, state: State, plan: Plan, step: int, log: Metrics, *, sampler=None, world=None) -> Batch:
    """collect -> score -> filter, in rounds while the group filters leave groups missing (DAPO dynamic sampling).
    `sampler`, `world`: another sampler than the run's and another process group over the same ranks (the
    asynchronous pipeline's policy copy, and its own group for collectives in its thread)."""
    world = world or run.world
    parts, wanted = [], plan.fresh
    need = wanted
    for round_ in range(run.filters.max_rounds):
        with log.timer("time/rollout"):
            fresh, state.data_pos = collect(sampler or run.sampler, run.stream,
                                            plan if round_ == 0 else plan.later_round(), state.data_pos, step, log)
        with log.timer("time/reward"):
            fresh = score(run.scorer, fresh, step, world, log)
        fresh, need = run.filters.keep(fresh, need, world, log)
        parts.append(fresh)
        if not need:
            break
    return run.filters.finish(parts, need, wanted, round_ + 1, step, run.policy.pad_id, log)


def describe(run: Run, batch: Batch, log: Metrics, seconds: float) -> None:
    """What the trained batch looked like: lengths, group diversity, environment turns, throughput."""
    length_metrics(log, batch.completion_mask, batch.truncated)
    if run.cfg.train.diversity_metrics and len(batch):
        n_groups = len(batch.groups())
        log.update(group_diversity_metrics(batch.texts, batch.group_ids, unit=run.cfg.train.diversity_unit),
                   weight=n_groups)
    env_keys = [k for k in batch.extras if k.startswith("env/")]  # an environment's own per-episode numbers
    for key, name in (("turns", "env/turns"), ("env_rewards", "env/reward"), *((k, k) for k in env_keys)):
        if key in batch.extras and len(batch):
            log.mean(name, float(batch.extras[key].float().nanmean()), weight=len(batch))
    log.mean("lr", run.scheduler.get_last_lr()[0])
    log.add("time/step", seconds, "time")
    rollout_time = max(log.local()["time/rollout"], 1e-9)
    log.sum("tokens_per_second", float(batch.completion_mask.sum()) / rollout_time)
    log.sum("completions_per_second", len(batch) / seconds)


# ------------------------------------------------------------------ loop


def run_eval(run: Run, step: int) -> dict[str, float]:
    """Greedy held-out metrics; for a mixture, per task (eval/<key>/...) and their mean (eval/accuracy)."""
    with gathered(run.policy):  # FSDP: every rank gathers the weights, the main rank evaluates
        return _eval_main(run, step) if run.world.is_main else {}


def _eval_main(run: Run, step: int) -> dict[str, float]:
    cfg = run.cfg
    tasks = run.eval_task.tasks if isinstance(run.eval_task, MixtureTask) else {"": run.eval_task}
    sizes = [t.eval_size for t in cfg.tasks] if cfg.tasks else [cfg.task.eval_size]
    out: dict[str, float] = {}
    for (key, task), size in zip(tasks.items(), sizes):
        if size <= 0:  # eval_size 0: this task is not evaluated
            continue
        res = evaluate(run.sampler, task, size=size, batch_size=128, k=cfg.train.eval_pass_k, seed=cfg.seed + step)
        out.update({f"eval/{key + '/' if key else ''}{k}": v for k, v in res.items()})
    if len(tasks) > 1 and all(s > 0 for s in sizes):
        k = cfg.train.eval_pass_k
        for metric in ("accuracy", "mean_score", "mean_length") + ((f"pass@{k}",) if k else ()):
            out[f"eval/{metric}"] = sum(out[f"eval/{k}/{metric}"] for k in tasks) / len(tasks)
    return out


def checkpoint(run: Run, state: State) -> Path | None:
    root, shards = run.cfg.run_dir / "checkpoints", sharded(getattr(run.policy, "model", None))
    trainer_state = {
        "optimizer": None if shards else run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "rng": rng_state(), "state": state.__dict__.copy(), "config": to_dict(run.cfg),
        "buffer": run.buffer.state_dict(),
        "rollout_versions": run.pipeline.saved_versions(state.step) if run.pipeline is not None else None,
    } if run.world.is_main else None
    if shards:  # every rank writes its own shards (rlvr.distributed.fsdp_checkpoint)
        return save_sharded(root, state.step, run.policy.model, run.optimizer, trainer_state, run.world)
    if not run.world.is_main:
        barrier(run.world)
        return None
    path = save_checkpoint(root, state.step, run.policy, trainer_state)
    barrier(run.world)
    return path


def restore(run: Run, folder: Path) -> State:
    saved = load_trainer_state(folder)
    shards = sharded(getattr(run.policy, "model", None))
    if (folder / "sharded").is_dir() != shards:
        written = "fsdp" if (folder / "sharded").is_dir() else "replicate"
        raise ConfigError(f"{folder}: written with distributed.strategy {written}; resume it with strategy {written}"
                          + ("" if written == "replicate" else " under torchrun"))
    if shards:
        load_sharded(folder, run.policy.model, run.optimizer)
    else:
        run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    run.buffer.load_state_dict(saved["buffer"] or {})
    return State(**saved["state"])


def _sample_rows(batch: Batch, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(min(n, len(batch))):
        s, reward = batch.samples[i], float(batch.rewards[i])
        prompt = s.prompt if isinstance(s.prompt, str) else s.prompt[-1]["content"]
        row = {"prompt": prompt, "completion": batch.texts[i], "answer": str(s.answer),
               "reward": None if math.isnan(reward) else reward}
        if s.images:  # which images the prompt showed (a file path, or task/split/index#k)
            row["images"] = list(s.image_names) or [f"{s.task}/{s.index}#{k}" for k in range(len(s.images))]
        if s.videos:
            row["videos"] = list(s.video_names) or [f"{s.task}/{s.index}#v{k}" for k in range(len(s.videos))]
        rows.append(row)
    return rows


def train(cfg: Config, *, resume: bool = False, overwrite: bool = False, given: Given | None = None) -> dict[str, Any]:
    """Run RL training as configured; returns the summary (accuracy before/after, paths).

    resume: continue from the run folder's newest checkpoint; overwrite: delete an existing run of that name first.
    A new run refuses a folder that already holds one (rlvr.run_folder). given: Python objects in place of what the
    config names (rlvr.api)."""
    model_given = given is not None and given.policy is not None
    validate(cfg, model_given=model_given)
    check_files(cfg, model_given=model_given)
    if cfg.distributed.backend == "ray" and cfg.distributed.trainers > 1 and not os.environ.get("RLVR_RAY_TRAINER"):
        from rlvr.distributed.ray_trainers import train_on_ray

        return train_on_ray(cfg, resume=resume, overwrite=overwrite, given=given)
    resume_from = claim_run_folder(cfg, resume=resume, overwrite=overwrite, main=main_process())
    run = setup(cfg, resume_from=resume_from, given=given)
    state = restore(run, resume_from) if resume_from else State()
    owns_ray = _ray_workers(run) if cfg.distributed.backend == "ray" else False
    if cfg.rollout.max_staleness:
        saved = load_trainer_state(resume_from).get("rollout_versions") if resume_from else None
        run.pipeline = RolloutPipeline(run, gather, staleness=cfg.rollout.max_staleness, versions=saved,
                                       current=state.step, threaded=cfg.train.async_thread)
    try:
        return _loop(run, state)
    finally:
        if run.pipeline is not None:
            run.pipeline.close()
        for part in (run.sampler, run.scorer.runner):
            if hasattr(part, "close"):
                part.close()
        if owns_ray:
            import ray

            ray.shutdown()
        if run.logger:
            run.logger.close()
        shutdown(run.world)


def _ray_workers(run: Run) -> bool:
    """Rollout and reward workers as Ray actors for this rank (rlvr.distributed); True when this call started Ray."""
    from rlvr.distributed.ray_cluster import ensure_ray, needed_cpus

    d = run.cfg.distributed
    owns = ensure_ray(needed_cpus(d))
    if d.rollout_workers:
        from rlvr.distributed.ray_rollout import RaySampler

        run.sampler = RaySampler.start(run.sampler, workers=d.rollout_workers, threads=d.worker_threads)
    if d.reward_workers:
        from rlvr.distributed.ray_reward import RewardPool

        run.scorer = dataclasses.replace(run.scorer, runner=RewardPool.start(run.scorer.routes,
                                                                             workers=d.reward_workers,
                                                                             cpus=d.reward_cpus))
    return owns


def _loop(run: Run, state: State) -> dict[str, Any]:
    cfg, log = run.cfg, run.logger
    if state.history.get("finished") and state.step >= cfg.train.steps:  # a finished run resumed: nothing to add
        print(f"rlvr: {cfg.run_dir} finished at step {state.step}; nothing to do (raise train.steps to continue)")
        return _summary(run, state)
    if state.step == 0:
        before = run_eval(run, 0)
        state.history["eval_before"] = before
        if log:
            log.log(0, before)
    bar = _progress(run, state.step)
    with StopRequest() as stop:
        while state.step < cfg.train.steps:
            metrics, batch = rl_step(run, state, state.step)
            state.step += 1
            if cfg.train.eval_every and state.step % cfg.train.eval_every == 0 and state.step < cfg.train.steps:
                metrics.update(run_eval(run, state.step))
            if log:
                log.log(state.step, metrics)
                log.samples(state.step, _sample_rows(batch, cfg.train.num_samples_logged))
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
    state.history.update(eval_after=after, finished=True)  # a resume of this checkpoint has nothing left to do
    if run.world.is_main:
        run.logger.log(state.step, after)
    checkpoint(run, state)
    if sharded(getattr(run.policy, "model", None)):
        save_full_model(run.policy, run.cfg.run_dir / "final", run.world)
    elif run.world.is_main:
        save_model_atomic(run.policy, run.cfg.run_dir / "final")
    if run.world.is_main:
        _plot(run)
    return _summary(run, state)


def _summary(run: Run, state: State) -> dict[str, Any]:
    summary: dict[str, Any] = {"steps": state.step, "skipped_steps": state.skipped_total, "data_pos": state.data_pos}
    if run.world.is_main:
        summary.update({"eval_before": state.history.get("eval_before", {}),
                        "eval_after": state.history.get("eval_after", {}),
                        "final_model": str(run.cfg.run_dir / "final")})
    return summary


def _plot(run: Run) -> None:
    from rlvr.plot import plot_run

    try:
        plot_run(run.cfg.run_dir)
    except Exception as err:  # a plot must never lose a finished run
        print(f"rlvr: could not draw the plot: {err}")
