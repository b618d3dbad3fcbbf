"""ExGRPO's replay in the loop (arXiv 2510.02245, specs/exgrpo.md §2): mixed groups and buffer bookkeeping.

1. `replay_rollout`: for each question the buffer sampled, pick its stored trajectory of lowest mean token
   entropy under the current policy (one no-grad pass over all candidates), and sample G - 1 fresh completions
   of the question; together they form one group (group id REPLAY_GROUP_BASE + question). The stored row keeps
   its recorded behaviour log-probs, which the loss uses as pi_old (importance-sampling correction, step 8).
2. `observe`: after rewards, every group is reported to the buffer (question = the task item), which retires
   always-solved questions, stores correct trajectories once replay has started, and updates the buckets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rlvr.batch import Rollout, concat_rollouts
from rlvr.buffers import pad_trajectories, trajectory_entropy
from rlvr.rollout.collect import generate_for
from rlvr.update import policy_logp

if TYPE_CHECKING:
    from rlvr.run import Run

REPLAY_GROUP_BASE = 1 << 40  # replayed groups' ids, above every data position of fresh groups


def question_of(group_id: int, task_size: int) -> int:
    return group_id - REPLAY_GROUP_BASE if group_id >= REPLAY_GROUP_BASE else group_id % task_size


@torch.no_grad()
def trajectory_entropies(run: Run, trajs: list) -> torch.Tensor:
    """(n,) mean token entropy of each stored trajectory under the current policy, over its own valid tokens."""
    t = pad_trajectories(trajs, pad_token_id=run.tokenizer.pad_token_id)
    ids = torch.cat([t["prompt_ids"], t["completion_ids"]], 1).to(run.device)
    attn = torch.cat([t["prompt_mask"], t["completion_mask"].long()], 1).to(run.device)
    T = t["completion_ids"].shape[1]
    run.model.eval()
    _, ent = policy_logp(run.model, ids, attn, T, temperature=run.cfg.rollout.temperature, with_entropy=True,
                         autocast=run.loss_fns.autocast, lean=run.loss_fns.lean)
    return trajectory_entropy(ent, t["completion_mask"].to(run.device))


def _stored_rows(run: Run, trajs: list, samples: list, group_ids: list[int]) -> Rollout:
    t = pad_trajectories(trajs, pad_token_id=run.tokenizer.pad_token_id)
    mask = t["completion_mask"].long()
    texts = [run.tokenizer.decode(ids[m.bool()], skip_special_tokens=True)
             for ids, m in zip(t["completion_ids"], mask)]
    dev = run.device
    return Rollout(prompt_ids=t["prompt_ids"].to(dev), prompt_mask=t["prompt_mask"].to(dev),
                   completion_ids=t["completion_ids"].to(dev), completion_mask=mask.to(dev), logp=t["logp"].to(dev),
                   truncated=torch.zeros(len(trajs), dtype=torch.bool, device=dev), texts=texts,
                   group_ids=torch.tensor(group_ids, device=dev), samples=list(samples))


def replay_rollout(run: Run, questions: list[int], step: int) -> tuple[Rollout, torch.Tensor, dict[str, float]]:
    """Mixed groups for the replayed questions: (rollout with each group's rows together, is_replay (N,), metrics)."""
    chosen, metrics = run.buffer.select_trajectories(questions, lambda trajs: trajectory_entropies(run, trajs))
    samples = [run.task[q] for q in questions]
    group_ids = [REPLAY_GROUP_BASE + q for q in questions]
    G = run.cfg.rollout.group_size
    fresh = generate_for(run, samples, group_ids, G - 1, seed=run.cfg.seed * 1_000_003 - 7919 * (step + 1))
    stored = _stored_rows(run, chosen, samples, group_ids)
    both = concat_rollouts([fresh, stored], run.tokenizer.pad_token_id)
    is_replay = torch.cat([torch.zeros(len(fresh), dtype=torch.bool), torch.ones(len(stored), dtype=torch.bool)])
    order = torch.argsort(both.group_ids.cpu(), stable=True)  # each group's rows together (prompt sharing)
    return both.select(order), is_replay[order].to(run.device), metrics


def observe(run: Run, rollout: Rollout, rewards: torch.Tensor, is_replay: torch.Tensor, step: int) -> dict:
    """Report every group of the step to the buffer; returns its metrics (exgrpo/...)."""
    counts: dict[str, int] = {}
    for g in torch.unique(rollout.group_ids).tolist():
        rows = torch.nonzero(rollout.group_ids == g).flatten()
        verdict = run.buffer.observe_group(
            question_of(g, len(run.task)), rewards[rows].cpu(), step=step,
            completion_ids=rollout.completion_ids[rows].cpu(), completion_mask=rollout.completion_mask[rows].cpu(),
            logp=rollout.logp[rows].cpu(), prompt_ids=rollout.prompt_ids[rows].cpu(),
            prompt_mask=rollout.prompt_mask[rows].cpu(), is_replay=is_replay[rows].cpu())
        counts[verdict] = counts.get(verdict, 0) + 1
    metrics = run.buffer.end_step(rewards.cpu(), step=step)
    metrics.update({f"exgrpo/groups_{k}": float(v) for k, v in counts.items()})
    return metrics
