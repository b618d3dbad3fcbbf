"""collect(): one step's training batch from the policy: prompts -> G completions each -> rewards.

1. Prompts are read from the task in order from the run's data position; with data parallelism rank r takes its
   slice of the step's prompts. Each prompt is repeated G times (its group id is its task position).
2. The sampler's generator is seeded from (seed, data position, rank): an interrupted and resumed run samples
   exactly what an uninterrupted one does, without saving generator state.
3. Rewards are the weighted sum of the configured reward functions (rlvr.rewards.combine_rewards).
4. Dynamic sampling (DAPO, arXiv 2503.14476 §3.2): groups whose rewards are all equal carry no signal under a
   group-relative advantage; they are dropped and more prompts are sampled, up to `max_rounds` rounds.
   Reward metrics are computed over everything sampled, before filtering (specs/grpo_family.md §3.9).

`run` is the trainer's Run (model, tokenizer, task, reward_routes, pass_filters, cfg, world, device);
`state.data_pos` advances.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from rlvr.batch import Rollout, concat_rollouts
from rlvr.errors import TrainingError
from rlvr.metrics import reward_metrics
from rlvr.policies import encode_prompts
from rlvr.rewards import combine_rewards
from rlvr.rewards.router import route_rewards
from rlvr.rollout.sampler import generate

if TYPE_CHECKING:
    from rlvr.run import Run, State


def sample_round(run: Run, data_pos: int, n_prompts: int | None = None) -> Rollout:
    """Generate G completions for this rank's prompts at task positions data_pos + ..."""
    cfg, world = run.cfg, run.world
    per_rank = (cfg.rollout.prompts_per_step if n_prompts is None else n_prompts) // world.size
    first = data_pos + world.rank * per_rank
    samples = [run.task[(first + j) % len(run.task)] for j in range(per_rank)]
    seed = cfg.seed * 1_000_003 + data_pos * 7919 + world.rank
    return generate_for(run, samples, [first + j for j in range(per_rank)], cfg.rollout.group_size, seed)


def rollout_dtype(cfg) -> torch.dtype | None:
    """The sampler's compute dtype: rollout.dtype, else model.autocast (sample in the precision that trains)."""
    name = cfg.rollout.dtype or cfg.model.autocast
    return getattr(torch, name) if name else None


def generate_for(run: Run, samples: list, group_ids: list[int], n: int, seed: int) -> Rollout:
    """n completions of each sample (its rows share `group_ids[i]`), from a generator seeded with `seed`."""
    cfg = run.cfg
    repeated = [s for s in samples for _ in range(n)]
    ids, mask = encode_prompts(run.tokenizer, [s.prompt for s in repeated])
    run.model.eval()
    out = generate(run.model, run.tokenizer, ids.to(run.device), mask.to(run.device),
                   max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                   top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, stop=tuple(cfg.rollout.stop),
                   generator=torch.Generator(device=run.device).manual_seed(seed),
                   dtype=rollout_dtype(cfg))
    return Rollout(
        prompt_ids=ids.to(run.device),
        prompt_mask=mask.to(run.device),
        completion_ids=out["completion_ids"],
        completion_mask=out["completion_mask"],
        logp=out["logp"],
        truncated=out["truncated"],
        texts=out["texts"],
        group_ids=torch.tensor(group_ids, device=run.device).repeat_interleave(n),
        samples=repeated,
    )


def score(run: Run, rollout: Rollout, step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Rewards (N,) of a rollout: one task's sources, or each sample routed to its own task's (mixture)."""
    lengths = rollout.completion_mask.sum(-1).tolist()
    on_error = run.cfg.train.on_reward_error
    if len(run.reward_routes) == 1:
        (fns,) = run.reward_routes.values()
        rewards, _, metrics = combine_rewards(fns, rollout.samples, rollout.texts, lengths=lengths,
                                              on_error=on_error, step=step, group_ids=rollout.group_ids)
    else:
        rewards, metrics = route_rewards(run.reward_routes, rollout.samples, rollout.texts, lengths=lengths,
                                         on_error=on_error, step=step, normalize=run.cfg.mixture.normalize,
                                         group_ids=rollout.group_ids)
    return rewards.to(run.device), metrics


def keep_groups(run: Run, rollout: Rollout, rewards: torch.Tensor, *, need_variance: bool) -> list[int]:
    """Group ids to train on: rewards not all equal (DAPO dynamic sampling) when `need_variance`, and the
    group's pass rate (task score >= 1) inside its task's `keep_pass_rate` band (Intern-S1 filtering)."""
    keep = []
    for g in torch.unique(rollout.group_ids).tolist():
        rows = torch.nonzero(rollout.group_ids == g).flatten().tolist()
        r = rewards[rows]
        r = r[~torch.isnan(r)]
        if need_variance and not (len(r) > 1 and bool((r != r[0]).any())):
            continue
        band = run.pass_filters.get(rollout.samples[rows[0]].task) or run.pass_filters.get(run.task.name)
        if band:
            passed = [run.task.score(rollout.samples[i], rollout.texts[i]) >= 1.0 for i in rows]
            if not band[0] < sum(passed) / len(passed) < band[1]:
                continue
        keep.append(g)
    return keep


def collect(run: Run, state: State, step: int, n_prompts: int | None = None
            ) -> tuple[Rollout, torch.Tensor, dict[str, float]]:
    """Rollout + rewards for one step (`n_prompts` fresh prompts, default rollout.prompts_per_step); with dynamic
    sampling or pass-rate filters, keep sampling until enough groups are kept."""
    cfg = run.cfg
    ds = cfg.algo.dynamic_sampling
    n_prompts = cfg.rollout.prompts_per_step if n_prompts is None else n_prompts
    need = n_prompts // run.world.size
    kept: list[tuple[Rollout, torch.Tensor]] = []
    all_rewards, all_groups, timing = [], [], {"time/rollout": 0.0, "time/reward": 0.0}
    n_kept, rounds, reward_metric_acc = 0, 0, {}
    filtering = ds.enabled or bool(run.pass_filters)
    max_rounds = ds.max_rounds if filtering else 1
    while rounds < max_rounds:
        rounds += 1
        t0 = time.perf_counter()
        rollout = sample_round(run, state.data_pos, n_prompts)
        state.data_pos += n_prompts
        t1 = time.perf_counter()
        rewards, rmetrics = score(run, rollout, step)
        timing["time/rollout"] += t1 - t0
        timing["time/reward"] += time.perf_counter() - t1
        all_rewards.append(rewards)
        all_groups.append(rollout.group_ids)
        for k, v in rmetrics.items():
            reward_metric_acc[k] = reward_metric_acc.get(k, 0.0) + v
        if not filtering:
            kept.append((rollout, rewards))
            n_kept = need
            break
        groups = keep_groups(run, rollout, rewards, need_variance=ds.enabled)[: need - n_kept]
        if groups:
            rows = torch.nonzero(torch.isin(rollout.group_ids, torch.tensor(groups, device=run.device))).flatten()
            kept.append((rollout.select(rows.cpu()), rewards[rows]))
            n_kept += len(groups)
        if n_kept >= need:
            break
    if n_kept < need and (ds.on_exhaust == "raise" or n_kept == 0):
        raise TrainingError(
            f"step {step}: dynamic sampling found {n_kept} of {need} informative groups in "
            f"{rounds} rounds; raise algo.dynamic_sampling.max_rounds or set on_exhaust=partial"
        )
    rollout = concat_rollouts([r for r, _ in kept], run.tokenizer.pad_token_id)
    rewards = torch.cat([r for _, r in kept])
    metrics = reward_metrics(torch.cat(all_rewards), torch.cat(all_groups))
    metrics.update({k: v / rounds for k, v in reward_metric_acc.items()})
    metrics.update(timing)
    metrics["rollouts/generated"] = float(rounds * need * cfg.rollout.group_size * run.world.size)
    if filtering:
        metrics.update({"dynamic_sampling/rounds": rounds, "dynamic_sampling/kept_fraction": n_kept / (need * rounds)})
    return rollout, rewards, metrics
