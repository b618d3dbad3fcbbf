"""rlvr.seeding: the tensor splitmix64 equals a plain-integer reference (two's complement and logical shifts right),
draws are uniform and independent across streams, keys and counters, and named streams never collide by accident."""

import torch

from rlvr.seeding import generator, row_seeds, stream_seed, uniform, uniform_reference


def test_tensor_hash_equals_integer_reference():
    seeds = torch.tensor([0, 1, -5, 2**62, -(2**63) + 7, 123456789])
    for counter in (0, 1, 17, 2**40):
        got = uniform(seeds, counter).tolist()
        assert got == [uniform_reference(int(s) & (2**64 - 1), counter) for s in seeds.tolist()]


def test_draws_look_uniform_and_streams_differ():
    u = uniform(row_seeds(0, "rollout", torch.arange(100_000)), 0)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float((u < 0.1).double().mean()) - 0.1) < 0.005
    a = row_seeds(0, "rollout", torch.arange(8), torch.zeros(8, dtype=torch.long))
    b = row_seeds(0, "rollout", torch.arange(8), torch.ones(8, dtype=torch.long))
    c = row_seeds(0, "replay", torch.arange(8), torch.zeros(8, dtype=torch.long))
    d = row_seeds(1, "rollout", torch.arange(8), torch.zeros(8, dtype=torch.long))
    assert len({*a.tolist(), *b.tolist(), *c.tolist(), *d.tolist()}) == 32
    assert torch.equal(a, row_seeds(0, "rollout", torch.arange(8), torch.zeros(8, dtype=torch.long)))
    assert not torch.equal(uniform(a, 0), uniform(a, 1))


def test_named_streams_and_generators_are_stable():
    assert stream_seed(0, "minibatch", 3) == stream_seed(0, "minibatch", 3) != stream_seed(0, "minibatch", 4)
    assert stream_seed(0, "minibatch", 3) != stream_seed(0, "exgrpo_replay", 3)
    assert 0 <= stream_seed(7, "x") < 2**63
    g1, g2 = generator(0, "minibatch", 5), generator(0, "minibatch", 5)
    assert torch.equal(torch.randperm(10, generator=g1), torch.randperm(10, generator=g2))
