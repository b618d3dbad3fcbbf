"""Worker for tests/test_fsdp.py: whole training runs with the model sharded by FSDP2 over torchrun ranks.

    python tests/fsdp_train.py OUT [CASE ...]                          # one process (nothing to shard)
    torchrun --nproc_per_node 2 tests/fsdp_train.py OUT [CASE ...]     # two gloo ranks, distributed.strategy fsdp
    ... OUT --resume CASE                                              # resume CASE's run from its last checkpoint

Each case trains from the same tiny model into OUT/<case> (metrics.jsonl and final/ written by rank 0), with the
cases of tests/dp_train.py's BASE; `strategy=fsdp` is set for every case (a single process leaves it unsharded).
"""

import sys

import torch
from dp_train import BASE, reward
from dp_train import CASES as DP_CASES

from rlvr.config import load_config
from rlvr.distributed import init_world, shutdown
from rlvr.trainer import train

FSDP = ["distributed.strategy=fsdp"]
CASES = {
    # GRPO, 2 mini-batches x 2 epochs, uneven micro-batches (3 rows): ranks run different numbers of micro-batches
    "grpo": DP_CASES["grpo"],
    # the memory options together: checkpointed lean layers, lm_head chunks of 5 tokens, 20-token micro-batches
    "lean": DP_CASES["grpo"] + ["model.activation_checkpointing=true", "model.logp_chunk_tokens=5",
                                "algo.micro_batch_tokens=20"],
    # a 3-task mixture with per-source normalisation and DAPO dynamic sampling (ranks hold different row counts)
    "mixture": DP_CASES["mixture"] + ["algo.dynamic_sampling={enabled: true, max_rounds: 2, on_exhaust: partial}",
                                      "algo.mini_batches=2"],
    # ExGRPO: replay in step 3 (every rank keeps the same pool, fed by the gathered groups), mixed loss
    "exgrpo": ["buffer={name: exgrpo, kwargs: {replay_ratio: 0.5, start_threshold: 0.0, correct_threshold: 0.2}}",
               "algo.loss=exgrpo_mixed", "algo.loss_kwargs={beta: 0.1}", "algo.advantage=dr_grpo",
               f"rewards=[{reward('digit_fraction')}]"],
    # 4 steps with a checkpoint every 2 (the kill -9 + resume test crashes it in step 4)
    "resume": [f"rewards=[{reward('digit_fraction_then_die')}]", "train.steps=4", "train.save_every=2",
               "train.eval_every=0"],
}


def main(out: str, args: list[str]) -> None:
    torch.set_num_threads(1)
    resume = args[:1] == ["--resume"]
    world = init_world()
    for name in args[resume:] or list(CASES):
        cfg = load_config(None, BASE + CASES[name] + FSDP + [f"output_dir={out}", f"name={name}"])
        train(cfg, resume=resume)
    shutdown(world)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
