"""Command line: `rlvr train|sft|eval|plot|recipes`.

    rlvr sft   recipes/quickstart.yaml                 # supervised warm start
    rlvr train recipes/quickstart.yaml algo.loss=gspo  # RL, with key.sub=value overrides
    rlvr train recipes/quickstart.yaml --resume        # continue from the latest checkpoint
    rlvr train recipes/quickstart.yaml --overwrite train.steps=50  # flags and overrides mix in any order
    rlvr eval  runs/quickstart/final --task arithmetic --task-kwargs digits=2 --k 8
    rlvr plot  runs/quickstart
    rlvr recipes                                        # recipes and every registered name

Usage errors (bad config key, unknown name, missing file, a data row whose prompt does not fit the model) print one
line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from rlvr.checkpoint import CheckpointError
from rlvr.config import Config, ConfigError, load_config
from rlvr.errors import DataError, TrainingError
from rlvr.prompt_limit import PromptTooLong


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlvr", description="RL post-training with verifiable rewards")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in [("train", "RL training"), ("sft", "supervised warm start")]:
        c = sub.add_parser(name, help=help_)
        c.add_argument("config", help="YAML config or recipe")
        c.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        if name == "train":
            c.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
            c.add_argument("--overwrite", action="store_true",
                           help="delete an existing run of this name and start over")
    e = sub.add_parser("eval", help="greedy accuracy, pass@k and length of a checkpoint on a task")
    e.add_argument("checkpoint")
    e.add_argument("--task", required=True)
    e.add_argument("--task-kwargs", nargs="*", default=[], help="key=value options of the task")
    e.add_argument("--size", type=int, default=200)
    e.add_argument("--k", type=int, default=0, help="also report pass@k from k samples per prompt")
    e.add_argument("--max-new-tokens", type=int, default=16)
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--seed", type=int, default=1_000_003, help="task seed (default: the held-out split)")
    e.add_argument("--env", default="none", help="multi-turn environment to evaluate in (e.g. calculator)")
    e.add_argument("--env-kwargs", nargs="*", default=[], help="key=value options of the environment")
    e.add_argument("--max-turns", type=int, default=4, help="model turns per episode (with --env)")
    e.add_argument("--max-tokens", type=int, default=64, help="completion tokens per episode (with --env)")
    e.add_argument("--viubench", action="store_true",
                   help="VIUBench-style per-task scores of VideoSSR rows (rlvr data videossr), with a random-guess row")
    d = sub.add_parser("data", help="build training data (videossr: VideoSSR pretext items from a folder of videos)")
    d.add_argument("kind", choices=["videossr"])
    d.add_argument("videos", help="a folder of video files (mp4, mkv, webm, avi, mov)")
    d.add_argument("out", help="the JSONL file to write; the items' videos go to a folder of the same name")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--frames", type=int, default=48, help="frames sampled from each source video")
    d.add_argument("--mix", default="channel_swap,mirror,zoom_out,rotate180",
                   help="grounding perturbations, comma-separated (besides counting and jigsaw)")
    d.add_argument("--strict", action="store_true", help="stop at the first unreadable video instead of skipping it")
    pl = sub.add_parser("plot", help="redraw a run's curves")
    pl.add_argument("run")
    sub.add_parser("recipes", help="list recipes and registered names")
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line; key=value overrides after a flag (`train CFG --overwrite a=b`) join the overrides,
    since argparse hands a positional list only the words before the first flag."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [word for word in extra if not word.startswith("-")]
        extra = [word for word in extra if word.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _kv(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"'{item}' must look like key=value")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


# `loop:` in a recipe picks a loop with its own schema beside the language-model trainer (module: RunConfig, train)
LOOPS = {"va_pi": "rlvr.images.va_pi_train", "dmd": "rlvr.images.dmd_train"}


def cmd_train(args) -> int:
    import importlib

    from rlvr.config import from_dict, raw_config
    from rlvr.trainer import train

    raw = raw_config(args.config, args.overrides)
    loop = raw.get("loop")
    if loop is not None:
        if loop not in LOOPS:
            raise ConfigError(f"loop: unknown loop {loop!r}; choose from {sorted(LOOPS)} (or leave it out for RL on a "
                              "language model)")
        module = importlib.import_module(LOOPS[loop])
        summary = module.train(from_dict(module.RunConfig, raw, ""), resume=args.resume, overwrite=args.overwrite)
        if _main_rank():
            print(json.dumps(summary, indent=1, default=str))
        return 130 if summary.get("interrupted") else 0
    cfg = from_dict(Config, raw, "")
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if _main_rank():
        _print_summary(summary)
    return 130 if summary.get("interrupted") else 0


def _main_rank() -> bool:
    """Under torchrun only rank 0 prints the run's summary (every rank returns one)."""
    from rlvr.loop_run import main_process

    return main_process()


def _print_summary(summary: dict) -> None:
    before, after = summary.get("eval_before", {}), summary.get("eval_after", {})
    if "eval/accuracy" in before and "eval/accuracy" in after:
        b, a = before["eval/accuracy"], after["eval/accuracy"]
        print(f"held-out greedy accuracy: {b:.3f} before RL -> {a:.3f} after")
    print(json.dumps(summary, indent=1, default=str))


def cmd_sft(args) -> int:
    from rlvr.warm_start import sft

    cfg = load_config(args.config, args.overrides)
    print(json.dumps(sft(cfg), default=str))
    return 0


def cmd_eval(args) -> int:
    from rlvr.envs import ENVS, EnvSampler
    from rlvr.evaluate import evaluate, text_sampler
    from rlvr.policies import load_policy_of
    from rlvr.tasks import TASKS
    from rlvr.warm_start import init_source

    source = init_source(args.checkpoint, "checkpoint")  # a folder, a GGUF file, or a tiny config
    kwargs, env_kwargs = _kv(args.task_kwargs), _kv(args.env_kwargs)
    needs = TASKS.needs(args.task) if args.task in TASKS else ()
    if "seed" in needs:
        kwargs.setdefault("seed", args.seed)
    if "holdout" in needs:  # the problems `rlvr train` holds out of training
        kwargs.setdefault("holdout", "eval")
    try:
        task = TASKS.build(args.task, **kwargs)
        if args.env != "none":
            ENVS.build(args.env, **env_kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--task {args.task} / --env {args.env}: {err}") from err
    policy = load_policy_of(**source, tokenizer=source["path"])
    print(f"rlvr: prompts reach the model as {policy.prompt_format}", file=sys.stderr)
    sampler = text_sampler(policy, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    if args.env != "none":
        sampler = EnvSampler(policy, sampler.params, 1, make_env=lambda: ENVS.build(args.env, **env_kwargs),
                             max_turns=args.max_turns, max_tokens=args.max_tokens)
    if args.viubench:
        print(json.dumps(_viubench(sampler, task, args.size, args.seed), indent=1))
        return 0
    print(json.dumps(evaluate(sampler, task, size=args.size, k=args.k)))
    return 0


def _viubench(sampler, task, size: int, seed: int) -> dict:
    """Greedy answers scored per VideoSSR task, beside a random guesser's on the same rows."""
    import random

    from rlvr.evaluate import greedy_answers
    from rlvr.tasks.videossr import random_guesses, viubench

    samples = [task[i] for i in range(min(size, len(task)))]
    texts, _ = greedy_answers(sampler, samples, batch_size=32)
    return {"rows": len(samples), "model": viubench(samples, texts),
            "random": viubench(samples, random_guesses(samples, random.Random(seed)))}


def cmd_data(args) -> int:
    from rlvr.tasks.videossr import KINDS, build

    folder = Path(args.videos)
    if not folder.is_dir():
        raise ConfigError(f"videos: '{folder}' is not a folder")
    mix = tuple(k for k in args.mix.split(",") if k)
    if bad := [k for k in mix if k not in KINDS]:
        raise ConfigError(f"--mix: unknown perturbation {bad[0]!r}; choose from {list(KINDS)}")
    videos = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".mkv", ".webm", ".avi", ".mov"))
    if not videos:
        raise ConfigError(f"videos: no video files in '{folder}'")
    report = build(videos, args.out, seed=args.seed, frames=args.frames, mix=mix, skip_bad=not args.strict)
    print(json.dumps(report, indent=1))
    return 0


def cmd_plot(args) -> int:
    from rlvr.plot import plot_run

    print(plot_run(args.run))
    return 0


def cmd_recipes(args) -> int:
    from rlvr.algos import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, LOSSES, TOKEN_WEIGHTS
    from rlvr.buffers import BUFFERS
    from rlvr.envs import ENVS
    from rlvr.rewards import REWARDS
    from rlvr.rollout.filters import FILTERS
    from rlvr.tasks import TASKS

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    if recipes.is_dir():
        print("recipes:", " ".join(sorted(p.stem for p in recipes.glob("*.yaml"))))
    for reg in (TASKS, ENVS, REWARDS, FILTERS, ADVANTAGES, LOSSES, AGGREGATIONS, KL_ESTIMATORS, TOKEN_WEIGHTS, BUFFERS):
        print(f"{reg.kind}s: {' '.join(reg.names())}")
    return 0


COMMANDS = {"train": cmd_train, "sft": cmd_sft, "eval": cmd_eval, "data": cmd_data, "plot": cmd_plot,
            "recipes": cmd_recipes}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, CheckpointError, FileNotFoundError, PromptTooLong) as err:
        print(f"rlvr: error: {err}", file=sys.stderr)
        return 2
    except (TrainingError, DataError) as err:
        print(f"rlvr: stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
