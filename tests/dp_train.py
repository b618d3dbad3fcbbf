"""Worker for tests/test_distributed.py: whole training runs of several configs, alone or as torchrun ranks.

    python tests/dp_train.py OUT [CASE ...]                          # one process, the whole batch
    torchrun --nproc_per_node 2 tests/dp_train.py OUT [CASE ...]     # two gloo ranks, half of the prompts each

Each case trains 3 steps from the same tiny model into OUT/<case> (metrics.jsonl and final/ from rank 0; every rank
writes the data position it ended at to rank<r>.json). Case `api` is a run through the Python API with objects.
"""

import json
import sys
from pathlib import Path

import torch

from rlvr.config import load_config
from rlvr.distributed import init_world, shutdown
from rlvr.trainer import train

HERE = Path(__file__).parent
REWARDS = HERE / "dp_rewards.py"


def reward(fn: str, weight: float = 1.0) -> str:
    return f"{{name: python, weight: {weight}, kwargs: {{function: '{REWARDS}:{fn}'}}}}"


BASE = ["model.config=qwen2-micro", "task.name=arithmetic", "task.kwargs={digits: 1, ops: '+'}", "task.eval_size=4",
        "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=4", "optim.lr=1e-3",
        "train.steps=3", "train.progress=false", "train.threads=1", "train.eval_every=2", "algo.micro_batch_size=3",
        "train.diversity_unit=char"]

CASES = {
    # GRPO with 2 mini-batches (every rank agrees on which groups form each) and uneven micro-batches
    "grpo": [f"rewards=[{reward('digit_fraction')}]", "algo.mini_batches=2", "algo.ppo_epochs=2"],
    # DAPO: dynamic sampling decides globally how many rounds and which groups; when the rounds run out (partial),
    # ranks hold different numbers of groups, yet agree on 2 mini-batches; clip-higher, token mean, overlong
    "dapo": [f"rewards=[{reward('starts_with_digit')}]", "algo.loss_kwargs={clip_low: 0.2, clip_high: 0.28}",
             "algo.dynamic_sampling={enabled: true, max_rounds: 2, on_exhaust: partial}", "algo.mini_batches=2",
             "algo.overlong={enabled: true, cache: 2}"],
    # a 3-task mixture whose routes include a reward that returns None, per-source normalisation over all ranks,
    # and RLOO with batch whitening (a batch statistic)
    "mixture": ["tasks=[{name: arithmetic, key: add, kwargs: {digits: 1, ops: '+'}, eval_size: 4},"
                f" {{name: string_reverse, key: rev, eval_size: 4, rewards: [{reward('odd_length_or_none')},"
                f"  {reward('digit_fraction', 0.5)}]}},"
                f" {{name: sorting, key: sort, eval_size: 4, rewards: [{reward('odd_length_or_none')}]}}]",
                f"rewards=[{reward('digit_fraction')}]", "mixture.normalize=per_source",
                "algo.advantage=rloo", "algo.advantage_kwargs={normalize: true}"],
    # DIVER: textual diversity of correct completions (correct = dense reward >= 0.25) as an intrinsic reward
    "diver": [f"rewards=[{reward('digit_fraction')}, {{name: diversity, weight: 0.5, kwargs: {{kind: textual, "
              f"condition: correct, correctness: python, correctness_kwargs: {{function: '{REWARDS}:digit_fraction'}},"
              " correct_threshold: 0.25, unit: char, smoothing: add1, schedule: constant}}]"],
    # REINFORCE++ whitening (a batch statistic), CISPO off-policy (2 epochs x 2 mini-batches)
    "whiten": [f"rewards=[{reward('digit_fraction')}]", "algo.advantage=reinforce_pp_baseline", "algo.loss=cispo",
               "algo.loss_kwargs={clip_low: 0.2, clip_high: 0.28}", "algo.ppo_epochs=2", "algo.mini_batches=2"],
    # SAPO with the batch-std (Lite-PPO) advantage, high-entropy token weights (a quantile over every rank's tokens)
    # and KL to a reference, with one optimizer step per batch. Not with several: a mini-batch whose advantages are
    # all 0 has a gradient of exactly 0 in one process but of float noise (1e-8, from the KL term at pi = pi_ref)
    # under another batch layout, and Adam turns that into a full step of lr; and an entropy that ties with the
    # quantile (rows of a group share their first tokens) may fall on either side of it.
    "sapo": [f"rewards=[{reward('digit_fraction')}]", "algo.advantage=batch_std", "algo.loss=sapo",
             "algo.loss_kwargs={}", "algo.token_weights=high_entropy", "algo.token_weights_kwargs={quantile: 0.5}",
             "algo.kl_coef=0.05"],
    # multi-turn: the guessing game (every turn is answered, so rows hold observations), its env reward
    # VPPO on a vision-language model: a mixture of image rows and text-only rows, the corrupted-image pass (2 patch
    # masks per row averaged, each from a stream of the row's own), top-40% token weights and TAS over every rank's rows
    "vppo": ["model.config=qwen2.5-vl-micro", "tasks=[{name: count_shapes, key: shapes, eval_size: 4},"
             " {name: arithmetic, key: add, kwargs: {digits: 1, ops: '+'}, eval_size: 4}]",
             f"rewards=[{reward('digit_fraction')}]", "algo.token_weights=perception",
             "algo.token_weights_kwargs={k: 0.4}", "algo.advantage_shaping=vppo_tas", "algo.perception.num_masks=2"],
    # FrameThinker's environment on a vision-language model: the first look's frames are an image observation in
    # every row (a random model's turns are rarely valid actions, so most episodes end after one turn)
    "frames": ["model.config=qwen2.5-vl-micro", "task.name=frame_quest",
               "task.kwargs={frames: 40, n: 4, image_size: 28}",
               "env.name=frame_select", "env.kwargs={n: 4}", "env.max_turns=2", "env.max_tokens=300",
               f"rewards=[{reward('digit_fraction')}]", "rollout.max_new_tokens=6"],
    # asynchronous rollouts: each rank samples batch k with the weights after update k - 1 in its own thread, whose
    # collectives (dynamic sampling's decisions) run over a process group of their own while the update all-reduces
    "async": [f"rewards=[{reward('starts_with_digit')}]", "rollout.max_staleness=1",
              "algo.dynamic_sampling={enabled: true, max_rounds: 2, on_exhaust: partial}"],
    # ExGRPO: every rank keeps the same experience pool, fed by the gathered groups; replay from step 2 on
    "exgrpo": ["buffer={name: exgrpo, kwargs: {replay_ratio: 0.5, start_threshold: 0.0, correct_threshold: 0.2}}",
               "algo.loss=exgrpo_mixed", "algo.loss_kwargs={beta: 0.1}", "algo.advantage=dr_grpo",
               f"rewards=[{reward('digit_fraction')}]"],
    "multiturn": ["task.name=guess_number", "task.kwargs={hi: 8}", "env.name=guess_number", "env.max_turns=3",
                  "env.max_tokens=24", f"rewards=[{{name: env}}, {reward('digit_fraction', 0.5)}]"],
}


def api(out: str) -> dict:
    """The Python API (rlvr.api) with objects: rows in memory, a reward callable beside a registered name, a model
    and tokenizer loaded by the caller."""
    import rlvr
    from rlvr.policies import load_policy

    sys.path.insert(0, str(HERE))
    from dp_rewards import digit_fraction

    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]
    model, tokenizer = load_policy(config="qwen2-micro", seed=0)
    return rlvr.train({}, BASE + ["algo.mini_batches=2", f"output_dir={out}", "name=api"], dataset=rows,
                      rewards=[(digit_fraction, 1.0), ("task", 0.5)], model=model, tokenizer=tokenizer)


def main(out: str, cases: list[str]) -> None:
    torch.set_num_threads(1)
    world = init_world()  # one process group for every run (train() leaves a group it did not make)
    for name in cases or [*CASES, "api"]:
        if name == "api":
            summary, run_dir = api(out), Path(out) / "api"
        else:
            cfg = load_config(None, BASE + CASES[name] + [f"output_dir={out}", f"name={name}"])
            summary, run_dir = train(cfg), cfg.run_dir
        (run_dir / f"rank{world.rank}.json").write_text(json.dumps({"data_pos": summary["data_pos"]}))
    shutdown(world)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
