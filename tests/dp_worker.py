"""Worker for tests/test_distributed.py: one optimizer step on a fixed batch, alone or as a torchrun rank.

    python tests/dp_worker.py OUT.pt                              # one process, the whole batch
    torchrun --nproc_per_node 2 tests/dp_worker.py OUT.pt         # two gloo ranks, half the batch each
"""

import sys

import torch

from rlvr.algos import AGGREGATIONS, LOSSES
from rlvr.distributed import init_world, shutdown
from rlvr.policies import load_policy
from rlvr.update import LossFns, UpdateBatch, optimizer_step


def fixed_batch(vocab: int) -> UpdateBatch:
    g = torch.Generator().manual_seed(0)
    n, P, T = 8, 4, 6
    ids = torch.randint(3, vocab, (n, P + T), generator=g)
    lengths = torch.tensor([1, 6, 2, 5, 6, 1, 3, 4])
    loss_mask = (torch.arange(T)[None] < lengths[:, None]).float()
    attn = torch.cat([torch.ones(n, P, dtype=torch.long), loss_mask.long()], 1)
    return UpdateBatch(ids, attn, loss_mask, torch.randn(n, generator=g), torch.arange(n) // 2)


def main(out: str) -> None:
    torch.set_num_threads(1)
    world = init_world()
    model, _ = load_policy(config="qwen2-micro", seed=0)
    batch = fixed_batch(model.config.vocab_size)
    share = batch.input_ids.shape[0] // world.size
    mine = batch.rows(torch.arange(world.rank * share, (world.rank + 1) * share))
    # plain SGD: the update is the averaged gradient itself (Adam divides near-zero gradients by their own
    # root-mean-square, which turns float noise at 1e-9 into full-size steps and hides nothing useful)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    fns = LossFns(loss=LOSSES.bind("ppo_clip", clip_low=0.2, clip_high=0.28),
                  aggregate=AGGREGATIONS.lookup("token_mean"))
    metrics = optimizer_step(model, opt, sched, mine, fns, micro_batch_size=3, grad_clip=1.0, world=world)
    if world.is_main:
        torch.save({"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "grad_norm": metrics["grad_norm"]}, out)
    shutdown(world)


if __name__ == "__main__":
    main(sys.argv[1])
