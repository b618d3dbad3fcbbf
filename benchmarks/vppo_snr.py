"""VPPO where its premise holds (arXiv 2510.09285, issue 21): most completion tokens are image-independent scratch.

    python benchmarks/vppo_snr.py --threads 1                     # warm start, SNR, DAPO vs VPPO; JSON on stdout
    python benchmarks/vppo_snr.py --phases warm,snr               # the fixed-parameter gradient measurement only
    python benchmarks/vppo_snr.py --quick                         # a smoke run (checks the script, not claims)

1. Task: rlvr's six visual tasks with `scratch=n` (src/rlvr/tasks/visual.py): each reference starts with n random
   lowercase letters, then the image reading and the answer ("qhxk...z. 2 red 1 blue. answer: 3"). The scratch is
   high-entropy (uniform over 26 letters, ln 26 = 3.26 nats) and independent of the image and the reward, so in a
   policy gradient its terms are zero-mean noise; the evidence and answer tokens carry the signal.
2. Warm start: qwen2.5-vl-tiny trained on those references (recipes/vl_dapo.yaml's sft section, seed 0) until held-out
   greedy accuracy reaches --sft-target: the model writes scratch, then reads the image and answers.
3. Gradient signal-to-noise at the warm start's fixed parameters. Per seed, --snr-batches rollout batches (16 prompts
   x G = 8, DAPO's dynamic sampling) and --ref-batches further ones on later prompts. Each batch goes through the
   trainer's stages (advantages, pi_old, the corrupted-image pass, TAS, TGF); per arm, the gradient g of the recipe's
   loss (ppo_clip at ratio 1, token-mean over all valid tokens) with the arm's advantages and token weights:
   dapo (A, all tokens), tgf_only (A, TGF's top 40%), tas_only (TAS-shaped A, all tokens), vppo (both),
   tgf_k0.2 (A, TGF's top 20%: fewer than the image-reading tokens' share) and reading (A, only the evidence and
   answer tokens: the image-reading terms). Reported per arm:
   - snr = (|mean g|^2 - tr C / N) / tr C, tr C = sum_i |g_i - mean g|^2 / (N - 1): the squared norm of the expected
     gradient over the expected squared noise of one batch's gradient (the bias of |mean g|^2 removed);
   - cos_reading = mean_i cos(g_i, r), r = the mean `reading` gradient over the separate --ref-batches: how well one
     batch's update points along the image-reading terms' expected gradient (r's own noise scales every arm's
     cosine by the same factor, so arms compare);
   - cos_mean_reading = cos(mean g, r): the direction of the arm's expected gradient (TGF's bias, if any).
   And which tokens TGF keeps: the share of scratch, template (". ", ". answer: ", EOS), evidence and answer tokens
   among the kept ones, each kind's kept fraction, and each kind's mean dependency and entropy.
4. Held-out accuracy: dapo (recipes/vl_dapo.yaml) and vppo (recipes/vppo.yaml) trained --steps steps from the warm
   start, the same seeds (3 paired), evaluated greedily on --eval-size held-out items per task (6 tasks: 2,520 items
   at the default, one standard error sqrt(p (1 - p) / n) <= 1 point): one held-out set for all seeds, the warm
   start evaluated once, each final model once; no evaluation in between (the trainer's is off).
5. Output: one JSON object on stdout and docs/results/<name>.json with every number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from machine import cpu_model

from recipes import seed_stats
from rlvr.algos.token_weights import TOKEN_WEIGHTS
from rlvr.config import load_config
from rlvr.evaluate import evaluate
from rlvr.metrics import Metrics, read_metrics
from rlvr.policies import load_policy_of
from rlvr.run import State, build_sampler, build_task, setup
from rlvr.stages import advantages, logprobs, perception, shape_advantages, token_weights
from rlvr.trainer import gather, train
from rlvr.warm_start import sft

RECIPES = {"dapo": "recipes/vl_dapo.yaml", "vppo": "recipes/vppo.yaml"}
KINDS = ("scratch", "template", "evidence", "answer")  # "other": a completion that never wrote ". answer: "
ARMS = ("dapo", "tgf_only", "tas_only", "vppo", "tgf_k0.2", "reading")
NARROW_K = 0.2  # tgf_k0.2: TGF keeping 20% of each response, below the share of image-reading tokens here
TEMPLATE, SEPARATOR = ". answer: ", ". "


def common(args, out: Path, recipe: str, seed: int, name: str, extra: list[str] = ()):
    """The recipe's config with the scratch task, this benchmark's sizes and one thread."""
    warm = out / "warm"
    cfg = load_config(recipe, [f"output_dir={out}", f"model.path={warm}", f"sft.output={warm}",
                               f"sft.steps={args.sft_steps}", f"sft.target_accuracy={args.sft_target}",
                               f"task.eval_size={args.sft_eval_size}", f"optim.lr={args.lr}",
                               f"rollout.max_new_tokens={args.max_new_tokens}", f"train.threads={args.threads}",
                               "train.save_every=0", "train.progress=false", f"seed={seed}", f"name={name}",
                               *extra])
    for t in cfg.tasks:
        t.kwargs["scratch"] = args.scratch
        t.eval_size = args.eval_size
    return cfg


def token_kinds(texts: list[str], shape: tuple[int, int]) -> torch.Tensor:
    """(N, T) long index into KINDS (4 = other) of each completion token; one character is one token (char tokenizer).

    "<scratch>. <evidence>. answer: <answer>" -> scratch, template, evidence, template, answer; EOS is template."""
    kinds = torch.full(shape, 1, dtype=torch.long)  # positions past the text: EOS (padding is masked anyway)
    for i, text in enumerate(texts):
        a = text.rfind(TEMPLATE)
        if a < 0:
            kinds[i, : len(text)] = 4
            continue
        f = text.find(SEPARATOR)
        start = 0
        if f < a:  # scratch written before the evidence
            kinds[i, :f] = 0
            start = f + len(SEPARATOR)
        kinds[i, start:a] = 2
        kinds[i, a + len(TEMPLATE) : len(text)] = 3
    return kinds[:, : shape[1]]


def arm_inputs(batch, dapo_adv, kinds) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """arm -> (advantages, token weights): the batch after the stages holds TAS's advantages and TGF's weights."""
    reading = ((kinds == 2) | (kinds == 3)).float() * batch.loss_mask
    narrow = TOKEN_WEIGHTS.lookup("perception")(batch.loss_mask, dependency=batch.extras["dependency"],
                                                has_image=batch.extras["has_image"], k=NARROW_K)
    return {"dapo": (dapo_adv, None), "tgf_only": (dapo_adv, batch.token_weights),
            "tas_only": (batch.advantages, None), "vppo": (batch.advantages, batch.token_weights),
            "tgf_k0.2": (dapo_adv, narrow), "reading": (dapo_adv, reading)}


def arm_gradients(run, batch, inputs: dict) -> dict[str, torch.Tensor]:
    """arm -> the flat gradient of the run's loss at the current parameters (pi_old = pi: ratio 1)."""
    fns, params = run.loss, [p for p in run.policy.parameters() if p.requires_grad]
    run.policy.train()
    logp, _ = run.policy.logp(batch, temperature=fns.temperature)  # (N, T)
    n_tok, n_seq = float(batch.loss_mask.sum()), float(len(batch))
    needs = {k: batch.extras.get(k) for k in fns.loss_needs}
    out = {}
    for arm, (adv, weights) in inputs.items():
        per_token, _ = fns.loss(logp, logp.detach(), adv, batch.loss_mask, **needs)
        if weights is not None:
            per_token = per_token * weights
        loss = fns.aggregate(per_token, batch.loss_mask, num_tokens=n_tok, num_seqs=n_seq)
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out[arm] = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().double()
                              for g, p in zip(grads, params)])
    return out


def staged_batch(run, state: State, step: int):
    """One rollout batch through the trainer's stages, as trainer._batch builds it (no replay buffer here)."""
    log = Metrics()
    batch = gather(run, state, run.buffer.plan(step, run.cfg.rollout.prompts_per_step, run.policy, log), step, log)
    batch = advantages(run.advantage, batch, run.world, log)
    dapo_adv = batch.advantages
    batch = logprobs(run.logprobs, run.policy, run.ref_policy, batch)
    batch = perception(run.perception, run.policy, batch, step, run.world, log)
    batch = shape_advantages(run.shaping, batch, run.world, log)
    return token_weights(run.weights, batch, run.world, log), dapo_adv


class TokenTally:
    """Token counts, TGF-kept counts, dependency and entropy sums per kind, over batches."""

    def __init__(self):
        zeros = lambda: torch.zeros(len(KINDS) + 1, dtype=torch.float64)  # noqa: E731
        self.n, self.kept, self.narrow, self.dep, self.ent = (zeros() for _ in range(5))
        self.rows, self.correct = 0, 0.0

    def add(self, batch, kinds: torch.Tensor, narrow: torch.Tensor) -> None:
        valid = batch.loss_mask.bool()
        for k in range(len(KINDS) + 1):
            sel = valid & (kinds == k)
            self.n[k] += float(sel.sum())
            self.kept[k] += float(batch.token_weights[sel].sum())
            self.narrow[k] += float(narrow[sel].sum())
            self.dep[k] += float(batch.extras["dependency"][sel].sum())
            self.ent[k] += float(batch.old_entropy[sel].sum())
        self.rows += len(batch)
        self.correct += float((batch.rewards >= 1).sum())

    def summary(self) -> dict:
        names = (*KINDS, "other")
        per = lambda x: {n: float(x[k] / self.n[k]) if self.n[k] else None for k, n in enumerate(names)}  # noqa: E731
        return {"tokens_share": {n: float(self.n[k] / self.n.sum()) for k, n in enumerate(names)},
                "kept_share": {n: float(self.kept[k] / self.kept.sum()) for k, n in enumerate(names)},
                "kept_fraction": per(self.kept),
                "kept_share_k0.2": {n: float(self.narrow[k] / self.narrow.sum()) for k, n in enumerate(names)},
                "dependency_mean": per(self.dep), "entropy_mean": per(self.ent),
                "tokens_per_row": float(self.n.sum() / self.rows), "sampled_accuracy": self.correct / self.rows}


def snr_seed(args, out: Path, seed: int) -> dict:
    """Module docstring 3, one seed: reference batches first (r), then the measured batches (accumulated)."""
    cfg = common(args, out, RECIPES["vppo"], seed, f"snr-s{seed}")
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    run = setup(cfg)
    state, step = State(), 0
    ref = None
    for _ in range(args.ref_batches):
        batch, dapo_adv = staged_batch(run, state, step)
        kinds = token_kinds(batch.texts, tuple(batch.loss_mask.shape))
        g = arm_gradients(run, batch, {"reading": arm_inputs(batch, dapo_adv, kinds)["reading"]})["reading"]
        ref = g if ref is None else ref + g
        step += 1
        print(f"vppo_snr: seed {seed}, reference batch {step}/{args.ref_batches}", file=sys.stderr)
    ref = ref / args.ref_batches
    total = {a: None for a in ARMS}
    sq, cos = {a: 0.0 for a in ARMS}, {a: [] for a in ARMS}
    tally = TokenTally()
    for _ in range(args.snr_batches):
        batch, dapo_adv = staged_batch(run, state, step)
        kinds = token_kinds(batch.texts, tuple(batch.loss_mask.shape))
        inputs = arm_inputs(batch, dapo_adv, kinds)
        tally.add(batch, kinds, inputs["tgf_k0.2"][1])
        for arm, g in arm_gradients(run, batch, inputs).items():
            total[arm] = g if total[arm] is None else total[arm] + g
            sq[arm] += float(g @ g)
            cos[arm].append(float(g @ ref) / max(float(g.norm() * ref.norm()), 1e-30))
        step += 1
        print(f"vppo_snr: seed {seed}, measured batch {step - args.ref_batches}/{args.snr_batches}", file=sys.stderr)
    n = args.snr_batches
    result = {"tokens": tally.summary(), "ref_grad_norm": float(ref.norm()), "arms": {}}
    for arm in ARMS:
        mean = total[arm] / n
        noise = (sq[arm] - n * float(mean @ mean)) / (n - 1)  # tr C: sum_i |g_i - mean|^2 / (N - 1)
        signal = float(mean @ mean) - noise / n  # |E g|^2, unbiased
        result["arms"][arm] = {"snr": signal / noise, "signal": signal, "noise": noise,
                               "grad_norm_mean": math.sqrt(sq[arm] / n), "cos_reading": sum(cos[arm]) / n,
                               "cos_reading_sd": statistics_sd(cos[arm]),
                               "cos_mean_reading": float(mean @ ref) / float(mean.norm() * ref.norm())}
    return result


def statistics_sd(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / max(len(xs) - 1, 1))


def heldout(args, out: Path, model: str | Path) -> dict[str, float]:
    """Greedy accuracy of the model at `model` on items 0..eval_size-1 of each task's held-out copy, and their mean.

    One held-out set for every seed (seed 0's copy, EVAL_SEED_OFFSET): the warm start is evaluated once, and every
    final model on the same items. The holdout split is by scene (tasks/visual.py 5), so no seed trains on them."""
    cfg = common(args, out, RECIPES["dapo"], 0, "heldout")
    sampler = build_sampler(cfg, load_policy_of(path=str(model)))
    tasks = build_task(cfg, eval_split=True).tasks  # key -> task
    out = {key: evaluate(sampler, task, size=args.eval_size, batch_size=512)["accuracy"] for key, task in tasks.items()}
    out["accuracy"] = sum(out.values()) / len(tasks)
    return out


def train_arm(args, out: Path, arm: str, seed: int) -> dict:
    """Module docstring 4: one arm, one seed, trained without the trainer's evaluations; held-out at the end."""
    name = f"{arm}-s{seed}"
    cfg = common(args, out, RECIPES[arm], seed, name, [f"train.steps={args.steps}", "train.eval_every=0"])
    for t in cfg.tasks:
        t.eval_size = 0  # the trainer evaluates nothing; `heldout` evaluates the final model once
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    train(cfg)
    rows = read_metrics(cfg.run_dir / "metrics.jsonl")
    train_rows = [{k: r.get(k) for k in ("step", "reward", "entropy", "token_weights/mean", "vppo/alpha_max",
                                         "grad_norm", "rollouts/generated", "completions/mean_length")}
                  for r in rows if "reward" in r]
    return {"end": heldout(args, out, cfg.run_dir / "final"), "train": train_rows}


def summarise(snr: dict, start: dict, runs: dict, n_eval: int) -> dict:
    out = {}
    if snr:
        seeds = list(snr)
        out["snr"] = {arm: {key: seed_stats([snr[s]["arms"][arm][key] for s in seeds])
                            for key in ("snr", "cos_reading", "cos_mean_reading", "grad_norm_mean")} for arm in ARMS}
        for key in ("tokens_share", "kept_share", "kept_share_k0.2", "kept_fraction", "dependency_mean",
                    "entropy_mean"):
            out[key] = {k: seed_stats([snr[s]["tokens"][key][k] for s in seeds]) for k in KINDS}
    if start:
        out["warm_start"] = {**start, "se_one_eval": math.sqrt(start["accuracy"] * (1 - start["accuracy"]) / n_eval)}
    for arm in RECIPES if runs else ():
        end = [r[arm]["end"]["accuracy"] for r in runs.values()]
        out[arm] = {"accuracy@end": seed_stats(end),
                    "gain": seed_stats([e - start["accuracy"] for e in end]),
                    "se_one_eval": seed_stats([math.sqrt(p * (1 - p) / n_eval) for p in end])}
        out[arm].update({f"{key}@end": seed_stats([r[arm]["end"][key] for r in runs.values()])
                         for key in next(iter(runs.values()))[arm]["end"] if key != "accuracy"})
    if runs:
        out["vppo_minus_dapo@end"] = seed_stats([r["vppo"]["end"]["accuracy"] - r["dapo"]["end"]["accuracy"]
                                                 for r in runs.values()])
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--phases", default="warm,snr,train", help="comma-separated subset of warm, snr, train")
    p.add_argument("--scratch", type=int, default=40, help="random letters before each reference's evidence")
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--snr-batches", type=int, default=20, help="measured batches per seed (fixed parameters)")
    p.add_argument("--ref-batches", type=int, default=12, help="batches for the image-reading reference gradient")
    p.add_argument("--steps", type=int, default=40, help="RL steps per training run (16 prompts x 8 completions)")
    p.add_argument("--eval-size", type=int, default=420, help="held-out items per task (6 tasks) at start and end")
    p.add_argument("--lr", type=float, default=1e-4, help="RL learning rate")
    p.add_argument("--sft-target", type=float, default=0.35, help="stop the warm start at this greedy accuracy")
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--sft-eval-size", type=int, default=96, help="held-out items of the warm start's evaluations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/vppo-snr")
    p.add_argument("--docs", default="docs/results")
    p.add_argument("--name", default="vppo_snr", help="docs/results/<name>.json")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script works")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.snr_batches, args.ref_batches, args.steps = args.seeds[:1], 3, 2, 2
        args.eval_size, args.sft_steps, args.sft_eval_size = 4, 20, 24
    phases = set(args.phases.split(","))
    if unknown := phases - {"warm", "snr", "train"}:
        p.error(f"--phases: unknown {sorted(unknown)}; choose from warm, snr, train")
    torch.set_num_threads(args.threads)
    out, docs = Path(args.out), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    name = f"{args.name}_quick" if args.quick else args.name
    path = docs / f"{name}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}  # phases run apart add to one file
    saved.setdefault("commands", []).append(" ".join(["python", *sys.argv]))
    t0 = time.perf_counter()

    def save() -> None:  # after every seed of a phase: a run cut short keeps what finished
        saved["args"] = vars(args)
        saved["summary"] = summarise(saved.get("snr", {}), saved.get("start", {}), saved.get("runs", {}),
                                     6 * args.eval_size)
        path.write_text(json.dumps(saved, indent=1))

    with contextlib.redirect_stdout(sys.stderr):
        if "warm" in phases:
            saved["warm_start"] = sft(common(args, out, RECIPES["dapo"], 0, "warm"))
            saved["warm_start"].pop("seconds")  # contended CPU: not a result
            save()
        if "snr" in phases:
            saved["snr"] = {}
            for s in args.seeds:
                saved["snr"][str(s)] = snr_seed(args, out, s)
                save()
        if "train" in phases:
            saved["start"], saved["runs"] = heldout(args, out, out / "warm"), {}
            save()
            for s in args.seeds:
                saved["runs"][str(s)] = {arm: train_arm(args, out, arm, s) for arm in RECIPES}
                save()
    save()
    print(json.dumps({"benchmark": "vppo_snr", "quick": args.quick, "args": vars(args),
                      "warm_start": saved.get("warm_start", {}).get("history"), "summary": saved["summary"],
                      "seconds": time.perf_counter() - t0,
                      "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads()}}, indent=1))


if __name__ == "__main__":
    main()
