"""rlvr.batch.Batch: select and concat are generic over every field (tensors, lists, reward sources, extras), prompts
re-pad on the left and completions on the right with the pad id, an extra that only some parts carry is filled,
groups and their rows, mask_truncated."""

import torch

from rlvr.batch import Batch, Sample

PAD = 0


def rows(n, P, T, *, start=0, extras=None):
    ids = torch.arange(start, start + n)
    return Batch(prompt_ids=(10 + ids)[:, None].repeat(1, P), prompt_mask=torch.ones(n, P, dtype=torch.long),
                 completion_ids=(20 + ids)[:, None].repeat(1, T), completion_mask=torch.ones(n, T, dtype=torch.long),
                 loss_mask=torch.ones(n, T), rollout_logp=-torch.ones(n, T), truncated=ids % 2 == 1,
                 texts=[f"t{i}" for i in ids.tolist()], group_ids=ids // 2,
                 samples=[Sample(f"p{i}") for i in ids.tolist()], rewards=ids.float(),
                 reward_sources={"task": ids.float()}, extras=extras or {})


def test_select_picks_every_field():
    b = rows(4, 2, 3, extras={"is_replay": torch.tensor([0, 1, 0, 1]).bool(), "turn_rewards": [[0], [1], [2], [3]]})
    s = b.select([3, 1])
    assert s.texts == ["t3", "t1"] and [x.prompt for x in s.samples] == ["p3", "p1"]
    assert s.completion_ids[:, 0].tolist() == [23, 21] and s.rewards.tolist() == [3.0, 1.0]
    assert s.reward_sources["task"].tolist() == [3.0, 1.0] and s.extras["is_replay"].tolist() == [True, True]
    assert s.extras["turn_rewards"] == [[3], [1]] and s.advantages is None


def test_concat_repads_and_fills_missing_extras():
    a = rows(2, 2, 3)
    b = rows(1, 4, 1, start=2, extras={"is_replay": torch.tensor([True]), "turn_rewards": [[5.0]]})
    c = Batch.concat([a, b], PAD)
    assert c.prompt_ids.shape == (3, 4) and c.completion_ids.shape == (3, 3)
    assert c.prompt_ids[0].tolist() == [PAD, PAD, 10, 10] and c.prompt_mask[0].tolist() == [0, 0, 1, 1]  # left
    assert c.completion_ids[2].tolist() == [22, PAD, PAD] and c.completion_mask[2].tolist() == [1, 0, 0]  # right
    assert c.loss_mask[2].tolist() == [1.0, 0.0, 0.0] and c.rollout_logp[2].tolist() == [-1.0, 0.0, 0.0]
    assert c.extras["is_replay"].tolist() == [False, False, True]
    assert c.extras["turn_rewards"] == [None, None, [5.0]] and c.texts == ["t0", "t1", "t2"]
    assert c.reward_sources["task"].tolist() == [0.0, 1.0, 2.0]
    assert Batch.concat([a, a.select([])], PAD) is a  # empty parts drop out


def test_groups_rows_and_mask_truncated():
    b = rows(5, 1, 2)
    assert b.groups().tolist() == [0, 1, 2] and b.rows_of([1, 2]).tolist() == [2, 3, 4]
    m = b.mask_truncated()
    assert m.loss_mask.sum(-1).tolist() == [2.0, 0.0, 2.0, 0.0, 2.0]
    assert torch.equal(m.completion_mask, b.completion_mask)
    assert torch.equal(b.input_ids[:, :1], b.prompt_ids) and b.attention_mask.shape == (5, 3)
