"""VideoSSR's learning check (arXiv 2511.06281): GRPO on self-supervised pretext data made from raw videos.

    python benchmarks/videossr.py                       # 3 seeds; JSON on stdout, docs/results/videossr.json
    python benchmarks/videossr.py --seeds 0 --steps 20  # fewer seeds / steps
    python benchmarks/videossr.py --quick               # a smoke run of a few steps (checks the script, not claims)
    python benchmarks/videossr.py --frames 48 --rewards smooth exact --probe --qa-videos 200 --name videossr_48
                                                        # issue 21: 48-frame items, smooth vs exact, a linear probe

1. Raw videos: procedural mp4 files (rlvr.video.make_video: moving shapes that may change colour, one shape that
   appears for a while; 64 frames of 56 x 56 px at 8 fps): --train-videos for training, disjoint seeds for the
   held-out pretext set and for the transfer set.
2. Pretext data: `rlvr data videossr` (rlvr.tasks.videossr.build) with --frames per item (24), the released training
   mix (channel_swap, mirror, zoom_out, rotate180 grounding; counting; jigsaw of 6 clips), the same on the held-out
   videos. Rows are a `dataset` task with video_field, scored by the `videossr` reward (interval IoU, counting
   accuracy, normalised footrule), answered directly as the paper's system prompt asks.
3. Policy: qwen2.5-vl-tiny (random init), warm-started once (seed 0) for --sft-steps on the training rows' answers,
   so that it answers in the tasks' formats. Then GRPO (recipes/videossr.yaml) for --steps with each seed, once per
   reward arm of --rewards: `smooth` (the recipe's rewards) and `exact` (the same routed by data source, exact match:
   1 for the right interval / counts / order, else 0; rlvr.rewards.video `exact=True`).
4. Scores: VIUBench-style per-task scores (rlvr.tasks.videossr.viubench; greedy) on the held-out pretext rows, for
   the warm start and each final model, beside a random-guess row. Transfer: a procedural video QA set the pretext
   data does not contain ("which shape appears partway through the video?", "which colour does the changing shape
   turn to?"), scored zero-shot by option likelihood (the option with the highest mean token log-prob after the
   question; chance 1/3 and 1/4), so that no answer format has to be learned for it. With --probe also a linear
   probe: the frozen model's last hidden state, mean-pooled over the prompt's real tokens (video + question), one
   logistic regression per question kind (standardised features, C = 1, no tuning) fitted on the questions of the
   first half of the transfer videos and scored on the second half (disjoint videos); beside it the majority class.
5. Output: one JSON object on stdout, docs/results/<--name>.json with every number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import cpu_model

from recipes import seed_stats
from rlvr.config import load_config
from rlvr.evaluate import greedy_answers, text_sampler
from rlvr.metrics import read_metrics
from rlvr.policies import load_policy_of
from rlvr.tasks import TASKS
from rlvr.tasks.videossr import build, random_guesses, viubench
from rlvr.trainer import train
from rlvr.video import COLOURS, SHAPES, make_video
from rlvr.warm_start import sft, sft_batch

FRAMES, SIZE, CLIP = 64, 56, 24
REWARD_ARMS = {"smooth": {}, "exact": {"exact": True}}  # kwargs of the `videossr` reward per arm


def videos(folder: Path, seeds: range) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    return [make_video(folder / f"v{s:05d}.mp4", seed=s, num_frames=FRAMES, size=SIZE) for s in seeds]


def qa_rows(specs: list[dict], folder: Path) -> list[dict]:
    """The transfer set: questions about the source videos themselves (not about a pretext edit of them)."""
    rows = []
    for index, spec in enumerate(specs):
        video = str(Path(spec["path"]).relative_to(folder))
        shape = spec["appearing"][0]["shape"]
        rows.append({"prompt": "Which shape appears partway through the video?", "answer": shape,
                     "options": list(SHAPES), "video": video, "kind": "appearing_shape", "video_index": index})
        changed = [m for m in spec["movers"] if m["change_at"] is not None]
        if changed:
            rows.append({"prompt": f"A moving {changed[0]['shape']} changes colour. To which colour?",
                         "answer": changed[0]["new_colour"], "options": list(COLOURS), "video": video,
                         "kind": "new_colour", "video_index": index})
    return rows


def constant_guesses(train_rows: list[dict], samples) -> list[str]:
    """The answers of a model that ignores the video: per task, the one answer that scores best on the training rows
    (grounding: the interval on a 0.2 s grid with the highest mean IoU; counting: the most frequent count of each
    shape; jigsaw: the most frequent order)."""
    from collections import Counter

    from rlvr.rewards.video import interval_iou

    rows = {src: [r["answer"] for r in train_rows if r["data_source"] == src] for src in ("grounding", "counting",
                                                                                          "jigsaw")}
    end = max(r["frames"] / r["fps"] for r in train_rows)
    grid = [k / 5 for k in range(int(end * 5) + 1)]
    interval = max((f"{a:.1f}-{b:.1f}" for a in grid for b in grid if b > a),
                   key=lambda x: sum(interval_iou(x, y) for y in rows["grounding"]))
    counts = ",".join(Counter(c.split(",")[k] for c in rows["counting"]).most_common(1)[0][0] for k in range(3))
    order = Counter(rows["jigsaw"]).most_common(1)[0][0]
    pick = {"grounding": interval, "counting": counts, "jigsaw": order, "shuffled": order}
    return [pick.get(s.meta.get("data_source"), "") for s in samples]


@torch.no_grad()
def option_choice(policy, samples, options: list[list[str]]) -> list[str]:
    """Per sample, the option with the highest mean log-prob per token as the completion of its prompt."""
    picks = []
    for s, opts in zip(samples, options):
        batch = sft_batch(policy, [s] * len(opts), [[(o, True)] for o in opts])
        logp, _ = policy.logp(batch)
        m = batch.loss_mask
        score = (logp * m).sum(-1) / m.sum(-1).clamp_min(1)
        picks.append(opts[int(score.argmax())])
    return picks


@torch.no_grad()
def pooled_hidden(policy, samples, *, batch_size: int = 32) -> torch.Tensor:
    """(N, H): the last layer's hidden state of each prompt (video + question), mean-pooled over its real tokens."""
    from rlvr.policies.vlm_forward import Visuals, rope_positions, vision_inputs

    rows = []
    for k in range(0, len(samples), batch_size):
        ids, mask, extras = policy.encode_inputs(samples[k : k + batch_size])  # (B, L)
        vis = Visuals.of(extras, len(ids))
        pos, _ = rope_positions(policy.model, ids, mask, vis)
        out = policy.model(**vision_inputs(policy.model, ids, vis), attention_mask=mask, position_ids=pos,
                           output_hidden_states=True, logits_to_keep=1)
        hidden, m = out.hidden_states[-1].float(), mask[..., None].float()  # (B, L, H), (B, L, 1)
        rows.append((hidden * m).sum(1) / m.sum(1))
    return torch.cat(rows)


def probe(features: torch.Tensor, qa, split: int, *, c: float | None = 1.0, prefix: str = "probe") -> dict:
    """Module docstring 4: per question kind, a logistic regression fitted on the rows of videos < `split` (their
    index among the transfer videos) and scored on the rest; accuracy in % beside the majority class of the fit rows.
    `c`: the inverse L2 strength; None chooses it by 5-fold cross-validation on the fit rows only."""
    from collections import Counter

    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features.numpy()
    out, hits, total = {}, 0, 0
    for kind in sorted({s.meta["kind"] for s in qa}):
        rows = [i for i, s in enumerate(qa) if s.meta["kind"] == kind]
        fit = [i for i in rows if qa[i].meta["video_index"] < split]
        test = [i for i in rows if qa[i].meta["video_index"] >= split]
        head = (LogisticRegression(C=c, max_iter=5000) if c is not None
                else LogisticRegressionCV(Cs=list(10.0 ** torch.arange(-4, 3).numpy()), cv=5, max_iter=5000))
        model = make_pipeline(StandardScaler(), head)
        model.fit(x[fit], [qa[i].answer for i in fit])
        right = sum(p == qa[i].answer for p, i in zip(model.predict(x[test]), test))
        majority = Counter(qa[i].answer for i in fit).most_common(1)[0][0]
        out[f"{prefix}/{kind}"] = 100 * right / len(test)
        out[f"{prefix}_majority/{kind}"] = 100 * sum(qa[i].answer == majority for i in test) / len(test)
        out[f"{prefix}_rows/{kind}"] = {"fit": len(fit), "test": len(test)}
        if c is None:
            out[f"{prefix}_C/{kind}"] = float(model[-1].C_[0])
        hits, total = hits + right, total + len(test)
    out[f"{prefix}/overall"] = 100 * hits / total
    return out


def scores(path: str | None, cfg, heldout, qa, qa_options, split: int | None = None) -> dict:
    torch.manual_seed(0)
    policy = load_policy_of(path=path) if path else load_policy_of(config=cfg.sft.init)  # None: the random init
    policy.eval()
    sampler = text_sampler(policy, max_new_tokens=cfg.rollout.max_new_tokens)
    texts, _ = greedy_answers(sampler, heldout, batch_size=32)
    out = {"viubench": viubench(heldout, texts), "examples": texts[:6]}
    picks = option_choice(policy, qa, qa_options)
    for kind in sorted({s.meta["kind"] for s in qa}):
        hits = [p == s.answer for p, s in zip(picks, qa) if s.meta["kind"] == kind]
        out[f"transfer/{kind}"] = 100 * sum(hits) / len(hits)
    out["transfer/overall"] = 100 * sum(p == s.answer for p, s in zip(picks, qa)) / len(qa)
    if split is not None:
        out.update(probe(pooled_hidden(policy, qa), qa, split))
    return out


def prepare(args, out: Path) -> dict:
    """Module docstring 1-2: the raw videos, the pretext rows, the transfer rows, and the reference rows that need no
    model (random and constant answers, the transfer set's chance)."""
    videos(out / "raw" / "train", range(args.train_videos))
    videos(out / "raw" / "heldout", range(100_000, 100_000 + args.heldout_videos))
    qa_specs = videos(out / "raw" / "qa", range(200_000, 200_000 + (args.qa_videos or args.heldout_videos)))
    data = {split: build(sorted(str(v) for v in (out / "raw" / split).glob("*.mp4")), str(out / f"{split}.jsonl"),
                         frames=args.frames, seed=k, progress=False)
            for k, split in enumerate(("train", "heldout"))}
    (out / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(qa_specs, out)))
    heldout_task = TASKS.build("dataset", path=str(out / "heldout.jsonl"), video_field="video", video_frames=0,
                               scorer="videossr")
    heldout = [heldout_task[i] for i in range(len(heldout_task))]
    qa_task = TASKS.build("dataset", path=str(out / "qa.jsonl"), video_field="video", video_frames=16, scorer="exact")
    qa = [qa_task[i] for i in range(len(qa_task))]
    qa_options = [s.meta["options"] for s in qa]
    train_rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    return {"data": data, "heldout": heldout, "qa": qa, "qa_options": qa_options,
            "random": viubench(heldout, random_guesses(heldout, random.Random(0))),
            "constant": viubench(heldout, constant_guesses(train_rows, heldout)),
            "chance": {"transfer/overall": 100 * statistics.mean(1 / len(o) for o in qa_options)}}


def summarise(ref: dict, init: dict, at_warm: dict, runs: list[dict]) -> dict:
    """The reference rows, the warm start and the GRPO seeds side by side (VIUBench-style, transfer and probe scores);
    the smooth arm under "grpo" as before, any other reward arm under "grpo_<arm>"."""
    transfer = lambda d: {k: v for k, v in d.items()  # noqa: E731
                          if k.startswith(("transfer", "probe")) and not k.startswith("probe_rows")}
    keys = sorted(set(at_warm["viubench"]) | {"overall"})
    out = {"random": ref["random"], "constant": ref["constant"], "init": init["viubench"],
           "warm_start": at_warm["viubench"],
           "transfer": {"chance": ref["chance"], "init": transfer(init), "warm_start": transfer(at_warm)},
           "train_reward_first10_last10": {}}
    window = min([10] + [max(1, len(r["reward"]) // 2) for r in runs])  # 10, or half of a shorter run
    if window < 10:
        out["train_reward_window"] = window  # the "first10_last10" means are over this many steps
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine, name = [r for r in runs if r["arm"] == arm], "grpo" if arm == "smooth" else f"grpo_{arm}"
        out[name] = {k: seed_stats([r["viubench"].get(k, 0.0) for r in mine]) for k in keys}
        out["transfer"][name] = {k: seed_stats([r[k] for r in mine]) for k in transfer(at_warm)}
        out["train_reward_first10_last10"][arm] = [(statistics.mean(r["reward"][:window]),
                                                    statistics.mean(r["reward"][-window:])) for r in mine]
    if set(out["train_reward_first10_last10"]) == {"smooth"}:  # the old layout when only the recipe's arm ran
        out["train_reward_first10_last10"] = out["train_reward_first10_last10"]["smooth"]
    return out


def report(args, ref: dict, init: dict, warm: dict, at_warm: dict, runs: list[dict], t0: float) -> dict:
    """Every number of the runs so far; "complete" once each seed of each reward arm has run."""
    return {"benchmark": "videossr", "name": args.name or ("videossr_quick" if args.quick else "videossr"),
            "quick": args.quick, "complete": len(runs) == len(args.seeds) * len(args.rewards), "args": vars(args),
            "data": ref["data"], "summary": summarise(ref, init, at_warm, runs),
            "warm_start": {"sft_steps": args.sft_steps, "seconds": warm["seconds"], **at_warm},
            "init": init, "runs": runs, "seconds": time.perf_counter() - t0,
            "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads()}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=60, help="GRPO steps per seed")
    p.add_argument("--sft-steps", type=int, default=150)
    p.add_argument("--train-videos", type=int, default=180)
    p.add_argument("--heldout-videos", type=int, default=60)
    p.add_argument("--qa-videos", type=int, default=None, help="transfer-set videos (default: --heldout-videos)")
    p.add_argument("--frames", type=int, default=CLIP, help="frames per pretext item")
    p.add_argument("--rewards", nargs="+", default=["smooth"], choices=sorted(REWARD_ARMS),
                   help="GRPO reward arms: smooth (the recipe's) and/or exact (exact match)")
    p.add_argument("--probe", action="store_true", help="also a linear probe on the transfer set (module docstring 4)")
    p.add_argument("--name", default=None, help="output name under --docs (default videossr / videossr_quick)")
    p.add_argument("--out", default="runs/videossr-bench")
    p.add_argument("--docs", default="docs/results")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 when another job shares the machine)")
    p.add_argument("--quick", action="store_true", help="a few steps: checks that the script works")
    args = p.parse_args()
    if args.quick:
        args.steps, args.sft_steps, args.seeds, args.train_videos, args.heldout_videos = 2, 4, args.seeds[:1], 12, 6
    torch.set_num_threads(args.threads)
    out, docs = Path(args.out), Path(args.docs)
    shutil.rmtree(out, ignore_errors=True)
    docs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        ref = prepare(args, out)
        heldout, qa, qa_options = ref["heldout"], ref["qa"], ref["qa_options"]
        split = (args.qa_videos or args.heldout_videos) // 2 if args.probe else None  # fit on the first half
        kwargs = "video_field: video, video_frames: 0, scorer: videossr, reference: plain"
        overrides = [f"output_dir={out}", f"task.kwargs={{path: {out / 'train.jsonl'}, {kwargs}}}",
                     f"sft.steps={args.sft_steps}", f"sft.output={out / 'warm'}", f"model.path={out / 'warm'}",
                     "train.progress=false", "train.save_every=0", f"train.threads={args.threads}"]
        base = load_config("recipes/videossr.yaml", overrides + ["seed=0", "name=warm"])
        init = scores(None, base, heldout, qa, qa_options, split)
        warm = sft(base)
        at_warm = scores(warm["model"], base, heldout, qa, qa_options, split)
        runs = []
        for seed, arm in [(seed, arm) for seed in args.seeds for arm in args.rewards]:  # paired seeds finish together
            reward = json.dumps({"name": "videossr", "weight": 1.0, "kwargs": REWARD_ARMS[arm]})
            name = f"grpo-s{seed}" if arm == "smooth" else f"grpo-{arm}-s{seed}"
            cfg = load_config("recipes/videossr.yaml", overrides + [f"seed={seed}", f"name={name}",
                                                                   f"train.steps={args.steps}",
                                                                   f"rewards=[{reward}]"])
            t1 = time.perf_counter()
            train(cfg)
            rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "reward" in r]
            runs.append({"seed": seed, "arm": arm, "seconds": time.perf_counter() - t1,
                         "reward": [r["reward"] for r in rows],
                         **scores(str(cfg.run_dir / "final"), cfg, heldout, qa, qa_options, split)})
            result = report(args, ref, init, warm, at_warm, runs, t0)
            (docs / f"{result['name']}.json").write_text(json.dumps(result, indent=1))  # after every run
    print(json.dumps({k: result[k] for k in ("benchmark", "quick", "summary", "seconds", "machine")}, indent=1))


if __name__ == "__main__":
    main()
