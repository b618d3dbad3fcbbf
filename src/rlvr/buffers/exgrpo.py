"""ExGRPO as a buffer (arXiv 2510.02245 §3, Algorithm 1): the plan before the rollout, the bookkeeping after it.

    buffer = BUFFERS.build("exgrpo", task=task, group_size=8, seed=0, temperature=1.0, micro_batch_size=64)

plan(step, n, policy):
1. Once replay has started, n_exp = min(#valid, floor(n rho)) questions are drawn by the bucket sampler from the
   stream ("exgrpo_replay", step); for each, the stored trajectory of lowest mean token entropy under the current
   policy is chosen, scored in micro-batches of `micro_batch_size` rows (one forward over every candidate at once
   would hold N x T x V entropies). They join the batch as stored rows (`is_replay`, rollout_logp = the recorded
   pi_past); the rollout adds G - 1 fresh samples to each (group id REPLAY_GROUP_BASE + question).
2. Retired questions (solved by a whole group) are not drawn as fresh prompts while more than n + 20 other items
   remain (Algorithm 1's dataset filter; the reference applies it at the next epoch, rlvr as the stream reaches them).
observe(batch, step):
3. Every group is reported to the pool with the trainer's recomputed pi_old as the behaviour log-probs to store
   (`reads = ("old_logp",)`): correct trajectories are pooled once replay has started, buckets move, groups solved in
   full retire their question; the switch to mixed mode happens at the end of the step.
4. Importance-sampling correction: pi_old of replayed rows becomes their recorded pi_past; every row is marked with
   the loss mode of this batch (`mixed_mode`: replay had started before the step), which exgrpo_mixed reads.
Data parallelism (torchrun, FSDP): every rank keeps the same pool. plan() runs identically on every rank (the same
stream, pool and weights) and each rank takes a contiguous share of the replayed groups; observe() all-gathers every
group's record and feeds them to the pool in group-id order, which is the one process's order (fresh groups by data
position, then replayed groups by question), so the pool, the replay and the loss are those of one process
(tests/test_fsdp.py, case exgrpo). Metrics of the pool are taken from the gathered groups (op max over ranks).
"""

from __future__ import annotations

import torch

from rlvr.algos.exgrpo import mixed_group_advantages, replay_old_logp
from rlvr.batch import Batch
from rlvr.buffers.base import Plan
from rlvr.buffers.experience import ExperienceBuffer, Trajectory, pad_trajectories, trajectory_entropy
from rlvr.distributed import World, all_gather_object
from rlvr.metrics import Metrics
from rlvr.policies.base import Policy
from rlvr.registry import check_kwargs
from rlvr.seeding import generator

REPLAY_GROUP_BASE = 1 << 40  # replayed groups' ids, above every data position of fresh groups


class ExGRPOBuffer:
    """The experience pool (rlvr.buffers.experience) wired into the loop."""

    needs = ("task", "group_size", "seed", "temperature", "micro_batch_size")  # what rlvr.run builds it with
    reads = ("old_logp",)
    data_parallel = True  # one identical pool per rank, fed by the gathered groups
    world = World()  # the data-parallel ranks; rlvr.run.setup sets it

    def __init__(self, *, task, group_size: int, seed: int, temperature: float, micro_batch_size: int, **options):
        check_kwargs(ExperienceBuffer, options, "replay buffer 'exgrpo'")  # a misspelt option fails with a hint
        if options.get("replay_ratio", 0.5) >= 1:
            raise ValueError("replay_ratio must be < 1: every step needs fresh questions")
        self.pool = ExperienceBuffer(group_size=group_size, **options)
        self.task, self.seed, self.temperature, self.micro_batch_size = task, seed, temperature, micro_batch_size

    def question_of(self, group_id: int) -> int:
        return group_id - REPLAY_GROUP_BASE if group_id >= REPLAY_GROUP_BASE else group_id % len(self.task)

    # ---- before the rollout ----------------------------------------------------------------------------------------

    def plan(self, step: int, n: int, policy: Policy, log: Metrics) -> Plan:
        questions = self.pool.sample_questions(n, generator=generator(self.seed, "exgrpo_replay", step))
        log.max("exgrpo/replayed_questions", len(questions))  # the same on every rank
        skip = self.pool.excluded(len(self.task), batch_size=n)
        if not questions:
            return Plan(n, None, skip)
        chosen, metrics = self.pool.select_trajectories(questions, lambda trajs: self.entropies(policy, trajs))
        log.update(metrics)
        w = self.world
        mine = chosen[w.rank * len(chosen) // w.size : (w.rank + 1) * len(chosen) // w.size]  # this rank's groups
        return Plan(n - len(questions), self.stored_rows(policy, mine) if mine else None, skip)

    @torch.no_grad()
    def entropies(self, policy: Policy, trajs: list[Trajectory]) -> torch.Tensor:
        """(n,) mean token entropy of each trajectory under the current policy, over its own sampled tokens."""
        policy.eval()
        out = []
        for start in range(0, len(trajs), self.micro_batch_size):
            rows = self.stored_rows(policy, trajs[start : start + self.micro_batch_size])
            _, entropy = policy.logp(rows, temperature=self.temperature, with_entropy=True)
            out.append(trajectory_entropy(entropy, rows.loss_mask).cpu())
        return torch.cat(out)

    def stored_rows(self, policy: Policy, trajs: list[Trajectory]) -> Batch:
        """Trajectories as Batch rows of their questions' replay groups (is_replay, rollout_logp = pi_past)."""
        t = pad_trajectories(trajs, pad_token_id=policy.pad_id)
        texts = [policy.tokenizer.decode(ids[m], skip_special_tokens=True)
                 for ids, m in zip(t["completion_ids"], t["loss_mask"])]
        n = len(trajs)
        batch = Batch(prompt_ids=t["prompt_ids"], prompt_mask=t["prompt_mask"], completion_ids=t["completion_ids"],
                      completion_mask=t["completion_mask"].long(), loss_mask=t["loss_mask"].float(),
                      rollout_logp=t["logp"], truncated=torch.zeros(n, dtype=torch.bool), texts=texts,
                      group_ids=torch.tensor([REPLAY_GROUP_BASE + tr.question for tr in trajs], dtype=torch.long),
                      samples=[self.task[tr.question] for tr in trajs],
                      extras={"is_replay": torch.ones(n, dtype=torch.bool)})
        return batch.to(policy.device)

    # ---- after the advantages ----------------------------------------------------------------------------------

    def observe(self, batch: Batch, step: int, log: Metrics) -> Batch:
        mixed = self.pool.started  # the loss mode of this batch: replay had started before this step
        is_replay = batch.extras.get("is_replay", torch.zeros(len(batch), dtype=torch.bool, device=batch.device))
        records = self._records(batch, is_replay)
        counts: dict[str, int] = {}
        for g, rec in records:
            verdict = self.pool.observe_group(self.question_of(g), step=step, **rec)
            counts[verdict] = counts.get(verdict, 0) + 1
        rewards = torch.cat([rec["rewards"] for _, rec in records]) if records else batch.rewards.cpu()
        log.update(self.pool.end_step(rewards, step=step), op="max")
        log.update({f"exgrpo/groups_{k}": v for k, v in counts.items()}, op="max")  # every rank counts every group
        log.update(self._advantage_metrics(batch, is_replay), op="max")
        old = replay_old_logp(batch.old_logp, batch.rollout_logp, is_replay)  # pi_past for replayed rows
        flags = {"is_replay": is_replay, "mixed_mode": torch.full_like(is_replay, mixed)}
        return batch.replace(old_logp=old, extras={**batch.extras, **flags})

    def _records(self, batch: Batch, is_replay: torch.Tensor):
        """[(group id, the group's rows as observe_group takes them)] of every rank's groups, in group-id order under
        data parallelism (one process: batch order, which is group-id order too)."""
        out = []
        for g in batch.groups().tolist():
            rows = batch.rows_of([g])
            rec = {"rewards": batch.rewards[rows], "completion_ids": batch.completion_ids[rows],
                   "completion_mask": batch.completion_mask[rows], "loss_mask": batch.loss_mask[rows],
                   "logp": batch.old_logp[rows], "prompt_ids": batch.prompt_ids[rows],
                   "prompt_mask": batch.prompt_mask[rows], "is_replay": is_replay[rows]}
            out.append((g, {k: v.cpu() for k, v in rec.items()}))
        if self.world.size == 1:
            return out
        return sorted((r for part in all_gather_object(out, self.world) for r in part), key=lambda r: r[0])

    def _advantage_metrics(self, batch: Batch, is_replay: torch.Tensor) -> dict:
        """Zero-variance fractions of fresh and replayed groups, over every rank's groups."""
        if self.world.size == 1:
            return mixed_group_advantages(batch.rewards, batch.group_ids, is_replay)[1]
        parts = all_gather_object((batch.rewards.cpu(), batch.group_ids.cpu(), is_replay.cpu()), self.world)
        return mixed_group_advantages(*(torch.cat([p[i] for p in parts]) for i in range(3)))[1]

    # ---- checkpointing ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return self.pool.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.pool.load_state_dict(state)
