"""ExGRPO's experience pool (arXiv 2510.02245; docs/methods.md §2): trajectories, buckets, sampler, selection.
The loop's side (plan before the rollout, observe after the advantages) is rlvr.buffers.exgrpo.

    buf = ExperienceBuffer(group_size=8)
    questions = buf.sample_questions(batch_size=128, generator=g)      # [] until the switch to mixed mode
    chosen, metrics = buf.select_trajectories(questions, score_fn)     # lowest-entropy stored trajectory each
    ... rollout: each replayed question's group = chosen trajectory + K - 1 fresh samples; rewards ...
    buf.observe_group(q, rewards, step=s, is_replay=..., prompt_ids=..., completion_ids=..., ...)  # per group
    metrics = buf.end_step(all_rewards, step=s)                        # switch rule, age pruning

1. Pool: correct trajectories (prompt/completion token ids, attention and loss masks, behaviour log-probs, reward,
   step) per question id, deduplicated on token ids (docs/methods.md §2.6 #4); collected only in mixed mode
   (docs/methods.md §2.1 step 7).
2. A group whose K rewards are all correct retires its question for good (docs/methods.md §2.1 steps 5, 12).
3. Buckets: questions grouped by their latest accuracy Acc = k/n, counted over the group's fresh samples only
   (docs/methods.md §2.6 #3; `legacy_bucket_update=True` is the reference: all K samples, k = 0 keeps the old bucket).
4. Sampler (docs/methods.md §2.2): bucket probability p(b) ∝ w(Acc_b) over non-empty buckets, counts ~
   Multinomial(n, p), excess of full buckets moved one by one ∝ p to buckets with room, questions drawn without
   replacement.
5. Switch (docs/methods.md §2.1 step 1): replay starts for good once the fraction of correct trajectories in a
   step's batch exceeds `start_threshold` (0.35); n_exp = min(#valid, floor(B rho_exp)) questions (`replay_count`).
6. Selection (docs/methods.md §2.3): o* = argmin over a question's stored trajectories of the mean token entropy
   under the current policy over the trajectory's own valid tokens (`trajectory_entropy`), computed by a trainer
   callable.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from rlvr import ops
from rlvr.registry import Registry

BUCKET_WEIGHTS = Registry("bucket weighting")


@BUCKET_WEIGHTS.register("normal")
def normal(acc: float, *, group_size: int) -> float:
    """log of exp(-(Acc - 1/2)^2 / (2 sigma^2)), sigma = 1/K: the reference's N(k; K/2, 1) in count units."""
    return -((acc - 0.5) * group_size) ** 2 / 2


# The reference's alternatives (docs/methods.md §2.2), as log-weights; Acc = 0 gets weight 0 (-inf).
@BUCKET_WEIGHTS.register("linear")
def linear(acc: float, *, group_size: int) -> float:
    return math.log(acc) if acc > 0 else -math.inf


@BUCKET_WEIGHTS.register("sqrt")
def sqrt(acc: float, *, group_size: int) -> float:
    return 0.5 * math.log(acc) if acc > 0 else -math.inf


@BUCKET_WEIGHTS.register("linear_clip")
def linear_clip(acc: float, *, group_size: int) -> float:
    return math.log(min(acc, 0.5)) if acc > 0 else -math.inf


def replay_count(batch_size: int, num_available: int, *, ratio: float = 0.5) -> tuple[int, int]:
    """(replayed, fresh) questions in a batch of `batch_size`: n_exp = min(#available, floor(B rho)).

    docs/methods.md §2.1 step 2."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"replay ratio must be in [0, 1] (the paper uses 0.5), got {ratio}")
    n_exp = min(num_available, math.floor(round(batch_size * ratio, 9)))  # round: 0.29 * 100 is 28.999...
    return n_exp, batch_size - n_exp


def bucket_probs(log_weights: Sequence[float]) -> torch.Tensor:
    """(nb,) float64 probabilities p(b) = w_b / sum w over the given (non-empty) buckets; all -inf -> all 0."""
    lw = torch.tensor(list(log_weights), dtype=torch.float64)
    if lw.numel() == 0 or not bool(torch.isfinite(lw).any()):
        return torch.zeros_like(lw)
    return torch.softmax(lw, dim=0)


def sample_from_buckets(
    buckets: Sequence[Sequence[Hashable]], probs: torch.Tensor, n: int, *, generator: torch.Generator | None = None
) -> list[Hashable]:
    """n distinct questions: bucket counts ~ Multinomial(n, probs), excess re-drawn ∝ probs among buckets with room,
    then uniform without replacement inside each bucket (docs/methods.md §2.2). Fewer than n (with a warning) if
    all are full."""
    sizes = torch.tensor([len(b) for b in buckets], dtype=torch.long)
    counts = torch.zeros_like(sizes)
    if n > 0 and bool((probs > 0).any()):
        draws = torch.multinomial(probs, n, replacement=True, generator=generator)
        counts = torch.bincount(draws, minlength=len(buckets))
    excess = int((counts - sizes).clamp_min(0).sum()) + (n - int(counts.sum()))
    counts = torch.minimum(counts, sizes)
    for left in range(excess, 0, -1):
        room = torch.where(counts < sizes, probs, 0)
        if not bool((room > 0).any()):
            warnings.warn(f"exgrpo sampler: no bucket has room, dropping {left} of {n} replay slots", stacklevel=2)
            break
        counts[torch.multinomial(room, 1, generator=generator)] += 1
    picked: list[Hashable] = []
    for bucket, c in zip(buckets, counts.tolist()):
        order = torch.randperm(len(bucket), generator=generator)[:c].tolist() if c else []
        picked.extend(bucket[i] for i in order)
    return picked


def trajectory_entropy(token_entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) per-token entropy, (B, T) mask -> (B,) mean over each row's own valid tokens (docs/methods.md §2.3).

    Row b's token t must be the entropy of the distribution that produced completion token t. Padding never enters
    (torch.where; the reference's bug, docs/methods.md §2.6 #1); a row without valid tokens gives 0.
    """
    if token_entropy.ndim != 2 or mask.shape != token_entropy.shape:
        raise ValueError(f"token_entropy and mask must both be (B, T), got {tuple(token_entropy.shape)} / "
                         f"{tuple(mask.shape)}")
    return ops.masked_mean(token_entropy, mask, dim=-1)  # (B,)


@dataclass
class Trajectory:
    """One stored correct completion of a question; tensors on CPU, completion cut after its last valid token."""

    question: Hashable
    prompt_ids: torch.Tensor  # (P,) long, no padding
    completion_ids: torch.Tensor  # (T,) long
    completion_mask: torch.Tensor  # (T,) bool: tokens of the sequence (sampled or observed)
    logp: torch.Tensor  # (T,) float behaviour log-probs pi_past (0 where loss_mask is 0)
    reward: float
    step: int  # training step it was collected at
    loss_mask: torch.Tensor | None = None  # (T,) bool: sampled tokens (None: completion_mask, no observations)

    def to_dict(self) -> dict:
        return dict(vars(self))


def _pad(rows: Sequence[torch.Tensor], value, *, left: bool) -> torch.Tensor:
    """(n, W) stack of 1-D tensors, padded with `value` on the left or the right to the longest."""
    width = max(r.numel() for r in rows)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, slice(width - r.numel(), width) if left else slice(0, r.numel())] = r
    return out


def pad_trajectories(trajs: Sequence[Trajectory], *, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Stack trajectories as a Rollout does: prompts left-padded (n, P), completions right-padded (n, T)."""
    if not trajs:
        raise ValueError("pad_trajectories needs at least one trajectory")
    prompts = [t.prompt_ids for t in trajs]
    return {
        "prompt_ids": _pad(prompts, pad_token_id, left=True),  # (n, P)
        "prompt_mask": _pad([torch.ones_like(p) for p in prompts], 0, left=True),  # (n, P)
        "completion_ids": _pad([t.completion_ids for t in trajs], pad_token_id, left=False),  # (n, T)
        "completion_mask": _pad([t.completion_mask for t in trajs], False, left=False),  # (n, T) bool
        "loss_mask": _pad([t.completion_mask if t.loss_mask is None else t.loss_mask for t in trajs], False,
                          left=False),  # (n, T) bool
        "logp": _pad([t.logp for t in trajs], 0.0, left=False),  # (n, T) behaviour log-probs
    }


def _trimmed(ids: torch.Tensor, mask: torch.Tensor, loss_mask: torch.Tensor,
             logp: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """Cut a right-padded (T,) completion after its last token; None if it has no trained token."""
    if not bool(loss_mask.bool().any()):
        return None
    end = int(mask.bool().nonzero()[-1]) + 1
    m, lm = mask[:end].bool().cpu(), loss_mask[:end].bool().cpu()
    return ids[:end].detach().long().cpu(), m, lm, torch.where(lm, logp[:end].detach().float().cpu(), 0.0)


class ExperienceBuffer:
    """ExGRPO's experience pool with bucketed question sampling and lowest-entropy trajectory selection.

    Plain Python state (dicts in insertion order, CPU tensors), so `state_dict()` saves with torch.save and
    loads with weights_only=True. Question ids are any hashable the trainer uses (task index, "task:index").
    """

    def __init__(
        self,
        *,
        group_size: int = 8,
        replay_ratio: float = 0.5,
        start_threshold: float = 0.35,
        weighting: str = "normal",
        correct_threshold: float = 1.0,
        legacy_bucket_update: bool = False,
        max_per_question: int | None = None,
        max_age_steps: int | None = None,
        max_scored_per_question: int | None = None,
    ):
        if group_size < 2:
            raise ValueError(f"exgrpo needs group_size >= 2 (the paper uses 8), got {group_size}")
        if not 0 <= start_threshold <= 1:
            raise ValueError(f"start_threshold is a fraction of correct trajectories in [0, 1], got {start_threshold}")
        for name, v in [("max_per_question", max_per_question), ("max_scored_per_question", max_scored_per_question)]:
            if v is not None and v < 1:
                raise ValueError(f"{name} must be None (unlimited) or >= 1, got {v}")
        replay_count(0, 0, ratio=replay_ratio)  # validates the ratio
        self.config = dict(
            group_size=group_size, replay_ratio=replay_ratio, start_threshold=start_threshold, weighting=weighting,
            correct_threshold=correct_threshold, legacy_bucket_update=legacy_bucket_update,
            max_per_question=max_per_question, max_age_steps=max_age_steps,
            max_scored_per_question=max_scored_per_question,
        )
        self._log_weight = BUCKET_WEIGHTS.bind(weighting, group_size=group_size)  # unknown name fails here
        self.started = False  # mixed mode: permanent once switched on (docs/methods.md §2.1 step 1)
        self.pool: dict[Hashable, list[Trajectory]] = {}  # question -> stored correct trajectories, oldest first
        self.acc: dict[Hashable, tuple[int, int]] = {}  # pooled question -> latest (k, n): its bucket Acc = k / n
        self.history: dict[Hashable, list[tuple[int, int, int]]] = {}  # question -> (step, k, n) of every group
        self.retired: dict[Hashable, int] = {}  # question -> step it was retired at

    # ---- bookkeeping -------------------------------------------------------------------------------------------

    def observe_group(
        self, question: Hashable, rewards: torch.Tensor, *, step: int, completion_ids: torch.Tensor,
        completion_mask: torch.Tensor, logp: torch.Tensor, prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor | None = None, is_replay: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
    ) -> str:
        """Record one question's group of K rows (docs/methods.md §2.1 steps 5, 7): "retired", "skipped" or "stored".

        rewards, is_replay: (K,); completion_ids/mask, logp: (K, T) right-padded, logp = behaviour log-probs to
        keep (the recomputed pi_old of docs/methods.md §2.1 step 6); prompt_ids/mask: (P,) or (K, P), left-padded;
        loss_mask: (K, T), the tokens that were sampled (default completion_mask).
        """
        rewards = torch.as_tensor(rewards).detach().cpu()
        if rewards.ndim != 1 or rewards.numel() == 0 or completion_ids.shape[0] != rewards.numel():
            raise ValueError(f"observe_group needs rewards (K,) and (K, T) completions, got {tuple(rewards.shape)} "
                             f"and {tuple(completion_ids.shape)}")
        correct = rewards >= self.config["correct_threshold"]  # NaN (unscorable) counts as wrong
        replay = torch.zeros_like(correct) if is_replay is None else torch.as_tensor(is_replay).bool().cpu()
        k, n = self._success_count(correct, replay)
        self.history.setdefault(question, []).append((step, k, n))
        if question in self.retired:
            return "retired"
        if bool(correct.all()):
            self.retired[question] = step
            self.pool.pop(question, None)
            self.acc.pop(question, None)
            return "retired"
        if not self.started:
            return "skipped"
        for i in correct.nonzero().flatten().tolist():
            p_ids = prompt_ids[i] if prompt_ids.ndim == 2 else prompt_ids
            p_mask = None if prompt_mask is None else (prompt_mask[i] if prompt_mask.ndim == 2 else prompt_mask)
            trained = completion_mask[i] if loss_mask is None else loss_mask[i]
            self._store(question, p_ids, p_mask, completion_ids[i], completion_mask[i], trained, logp[i],
                        float(rewards[i]), step)
        keep_old = self.config["legacy_bucket_update"] and k == 0  # the reference never moves a question to k = 0
        if question in self.pool and n > 0 and not keep_old:
            self.acc[question] = (k, n)
        return "stored"

    def _success_count(self, correct: torch.Tensor, replay: torch.Tensor) -> tuple[int, int]:
        """(k, n) of the group: over fresh rows only (docs/methods.md §2.6 #3), or all K rows in the legacy mode."""
        rows = torch.ones_like(correct) if self.config["legacy_bucket_update"] else ~replay
        return int((correct & rows).sum()), int(rows.sum())

    def _store(self, question, prompt_ids, prompt_mask, ids, mask, loss_mask, logp, reward: float, step: int) -> None:
        cut = _trimmed(ids, mask, loss_mask, logp)
        if cut is None:
            return
        ids, mask, loss_mask, logp = cut
        stored = self.pool.setdefault(question, [])
        if any(torch.equal(t.completion_ids, ids) and torch.equal(t.completion_mask, mask) for t in stored):
            return  # dedupe on token ids (docs/methods.md §2.6 #4): a replayed trajectory keeps its original pi_past
        prompt = prompt_ids if prompt_mask is None else prompt_ids[prompt_mask.bool()]
        stored.append(Trajectory(question, prompt.detach().long().cpu(), ids, mask, logp, reward, step,
                                 None if torch.equal(loss_mask, mask) else loss_mask))
        cap = self.config["max_per_question"]
        if cap is not None and len(stored) > cap:
            del stored[: len(stored) - cap]  # oldest first

    def end_step(self, rewards: torch.Tensor, *, step: int) -> dict[str, float]:
        """Switch to mixed mode for good once the fraction of correct trajectories in this step's batch exceeds
        start_threshold (docs/methods.md §2.1 step 1); drop trajectories older than max_age_steps; return pool
        metrics."""
        correct = torch.as_tensor(rewards).detach().flatten() >= self.config["correct_threshold"]
        solved = correct.float().mean().item() if correct.numel() else 0.0
        if not self.started and solved > self.config["start_threshold"]:
            self.started = True
        self._prune(step)
        return {"exgrpo/batch_solved": solved, **self.stats(step)}

    def _prune(self, step: int) -> None:
        max_age = self.config["max_age_steps"]
        if max_age is None:
            return
        for q in list(self.pool):
            self.pool[q] = [t for t in self.pool[q] if step - t.step <= max_age]
            if not self.pool[q]:
                del self.pool[q]
                self.acc.pop(q, None)

    def stats(self, step: int) -> dict[str, float]:
        """Pool size, retired count, mean age of stored trajectories (steps) and the bucket histogram."""
        ages = [step - t.step for ts in self.pool.values() for t in ts]
        out = {
            "exgrpo/started": float(self.started),
            "exgrpo/pool_questions": float(self.num_valid),
            "exgrpo/pool_trajectories": float(len(ages)),
            "exgrpo/retired": float(len(self.retired)),
            "exgrpo/age_mean": sum(ages) / len(ages) if ages else 0.0,
        }
        for acc, qs in self.buckets().items():
            out[f"exgrpo/bucket_{float(acc):.3f}"] = float(len(qs))
        return out

    # ---- sampling ----------------------------------------------------------------------------------------------

    @property
    def num_valid(self) -> int:
        """Pooled, non-retired questions with at least one stored trajectory."""
        return sum(1 for q, ts in self.pool.items() if ts and q in self.acc)

    def buckets(self) -> dict[Fraction, list[Hashable]]:
        """Accuracy Acc = k/n -> valid questions with that latest accuracy (ascending Acc, insertion order)."""
        out: dict[Fraction, list[Hashable]] = {}
        for q, ts in self.pool.items():
            if ts and q in self.acc:
                out.setdefault(Fraction(*self.acc[q]), []).append(q)
        return dict(sorted(out.items()))

    def bucket_probs(self) -> dict[Fraction, float]:
        """p(b) of every non-empty bucket under the configured weighting (docs/methods.md §2.2)."""
        b = self.buckets()
        probs = bucket_probs([self._log_weight(float(acc)) for acc in b])
        return dict(zip(b, probs.tolist()))

    def sample_questions(self, batch_size: int, *, generator: torch.Generator | None = None) -> list[Hashable]:
        """The replayed questions of a batch of `batch_size` questions: [] before the switch, else
        min(#valid, floor(B rho)) distinct questions drawn by the bucket sampler; the rest of the batch is fresh."""
        if not self.started:
            return []
        b = self.buckets()
        n_exp, _ = replay_count(batch_size, sum(len(qs) for qs in b.values()), ratio=self.config["replay_ratio"])
        probs = bucket_probs([self._log_weight(float(acc)) for acc in b])
        return sample_from_buckets(list(b.values()), probs, n_exp, generator=generator)

    def select_trajectories(
        self, questions: Sequence[Hashable], score_fn: Callable[[list[Trajectory]], torch.Tensor]
    ) -> tuple[list[Trajectory], dict[str, float]]:
        """Per question the stored trajectory of lowest mean token entropy under pi_theta (docs/methods.md §2.3).

        score_fn gets all candidates at once (one no-grad pass; see pad_trajectories, trajectory_entropy) and
        returns their (n,) entropies. Ties go to the oldest; NaN never wins. Only the newest
        max_scored_per_question trajectories of a question are scored when that cap is set.
        """
        cap = self.config["max_scored_per_question"]
        missing = [q for q in questions if not self.pool.get(q)]
        if missing:
            raise ValueError(f"questions {missing[:5]} have no stored trajectory; sample them with sample_questions")
        cands = [self.pool[q][-cap:] if cap else self.pool[q] for q in questions]
        flat = [t for c in cands for t in c]
        if not flat:
            return [], {}
        scores = torch.as_tensor(score_fn(flat)).detach().double().cpu().flatten()
        if scores.numel() != len(flat):
            raise ValueError(f"score_fn returned {scores.numel()} entropies for {len(flat)} trajectories")
        chosen, picked, means, start = [], [], [], 0
        for c in cands:
            s = scores[start : start + len(c)]
            j = int(torch.argmin(torch.nan_to_num(s, nan=math.inf)))  # first minimum on ties
            chosen.append(c[j])
            picked.append(float(s[j]))
            means.append(float(s.mean()))
            start += len(c)
        return chosen, {
            "exgrpo/selected_entropy": sum(picked) / len(picked),
            "exgrpo/candidate_entropy": sum(means) / len(means),
            "exgrpo/scored": float(len(flat)),
        }

    def excluded(self, num_questions: int, *, batch_size: int, margin: int = 20) -> frozenset:
        """The retired questions, which the dataset drops unless no more than batch_size + margin of its
        `num_questions` would remain (then none is dropped; docs/methods.md §2.1 step 13)."""
        retired = frozenset(self.retired)
        return retired if num_questions - len(retired) > batch_size + margin else frozenset()

    # ---- checkpointing -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Plain dicts/lists/tuples of Python scalars and CPU tensors (torch.load(weights_only=True) safe)."""
        return {
            "config": dict(self.config),
            "started": self.started,
            "pool": {q: [t.to_dict() for t in ts] for q, ts in self.pool.items()},
            "acc": dict(self.acc),
            "history": {q: list(h) for q, h in self.history.items()},
            "retired": dict(self.retired),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["config"]["group_size"] != self.config["group_size"]:
            raise ValueError(f"checkpointed exgrpo buffer has group_size={state['config']['group_size']}, this run "
                             f"{self.config['group_size']}; bucket accuracies would change meaning")
        self.started = bool(state["started"])
        self.pool = {q: [Trajectory(**t) for t in ts] for q, ts in state["pool"].items()}
        self.acc = {q: tuple(kn) for q, kn in state["acc"].items()}
        self.history = {q: [tuple(h) for h in hs] for q, hs in state["history"].items()}
        self.retired = dict(state["retired"])
