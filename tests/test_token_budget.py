"""Token-budget micro-batches (algo.micro_batch_tokens, rlvr.update.micro_batches): consecutive rows packed up to
a computed-token budget (a shared prompt counted once per micro-batch), the row cap still applying, a long row
alone; a whole optimizer step with token budgets gives the weights and metrics of the row-count split."""

import torch
from test_update import make_batch

from rlvr.algos import AGGREGATIONS, LOSSES
from rlvr.distributed import World
from rlvr.metrics import Metrics
from rlvr.policies import HFCausalLM
from rlvr.update import LossFns, micro_batches, optimizer_step


def spans(slices):
    return [(s.start, s.stop) for s in slices]


def test_packing_follows_the_budget():
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    batch = make_batch(policy)  # groups of 4 rows with one prompt each; prompt lengths 5, 4, 3; completions below
    prompt = batch.prompt_mask.sum(-1).tolist()
    tail = batch.completion_mask.sum(-1).tolist()
    assert tail == [1, 7, 2, 6, 3, 5, 7, 1]
    assert spans(micro_batches(batch, 64)) == [(0, 8)]
    assert spans(micro_batches(batch, 3)) == [(0, 3), (3, 6), (6, 8)]
    # make_batch pads rows differently, so every row has its own prompt mask: each row costs prompt + completion
    cost = [p + t for p, t in zip(prompt, tail, strict=True)]
    got = spans(micro_batches(batch, 64, 14))
    for a, b in got:
        assert sum(cost[a:b]) <= 14 or b - a == 1
        assert b == len(batch) or sum(cost[a : b + 1]) > 14  # greedy: the next row would not have fitted
    assert [a for a, _ in got] == sorted(a for a, _ in got) and got[0][0] == 0 and got[-1][1] == 8
    assert spans(micro_batches(batch, 64, 1)) == [(i, i + 1) for i in range(8)]  # every row over the budget: alone
    assert max(b - a for a, b in spans(micro_batches(batch, 2, 10_000))) == 2  # the row cap still holds


def test_shared_prompt_counts_once():
    policy = HFCausalLM.load(config="qwen2-micro", seed=0)
    batch = make_batch(policy)
    rows = batch.select([0, 0, 0, 0])  # one prompt (5 real tokens), completion of 1 token, four times
    assert spans(micro_batches(rows, 64, 9)) == [(0, 4)]  # 5 + 1 + 1 + 1 + 1 (per row it would be 6 + 6 + ...)
    assert spans(micro_batches(rows, 64, 8)) == [(0, 3), (3, 4)]  # a new micro-batch counts the prompt again


def step(budget: int, rows: int = 64):
    policy = HFCausalLM.load(config="qwen2-micro", seed=0).train()
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)  # AdamW would blow float noise of ~0 gradients up
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    fns = LossFns(loss=LOSSES.bind("ppo_clip", clip_low=0.2, clip_high=0.28), aggregate=AGGREGATIONS.bind("token_mean"))
    log = Metrics()
    optimizer_step(policy, optimizer, scheduler, make_batch(policy), fns, micro_batch_size=rows, grad_clip=1.0,
                   world=World(), log=log, micro_batch_tokens=budget)
    return torch.cat([p.detach().flatten() for p in policy.parameters()]), log


def test_optimizer_step_equals_row_split():
    want, want_log = step(0)
    for budget, rows in ((12, 64), (1, 64), (30, 3)):
        got, log = step(budget, rows)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        got_m, want_m = log.local(), want_log.local()
        assert got_m.keys() == want_m.keys() and {"policy_loss", "entropy", "grad_norm"} <= got_m.keys()
        for key, value in want_m.items():
            assert abs(got_m[key] - value) <= 1e-5 * max(1.0, abs(value)), key
