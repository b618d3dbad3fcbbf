"""A Ray cluster named by RAY_ADDRESS (rlvr.distributed.ray_cluster): two nodes started on this machine
(ray.cluster_utils.Cluster, two raylets with 3 CPUs each), and `distributed: {backend: ray, trainers: 2,
placement: spread}` connects to it instead of starting a local Ray, puts one trainer rank on each node and trains as
one process does (torchrun's tolerances, tests/test_distributed.py)."""

import pytest
from safetensors.torch import load_file

from rlvr.config import load_config
from rlvr.metrics import read_metrics
from rlvr.trainer import train

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

DENSE = "rewards=[{name: python, kwargs: {function: tests/gpu/digit_reward.py:digit_fraction}}]"
BASE = ["model.config=qwen2-tiny", "task.name=arithmetic", "rollout.prompts_per_step=4", "rollout.group_size=4",
        "rollout.max_new_tokens=8", "train.steps=3", "train.eval_every=0", "task.eval_size=8", "train.progress=false",
        "optim.lr=1e-3", DENSE]
SPREAD = ["distributed.backend=ray", "distributed.trainers=2", "distributed.placement=spread",
          "distributed.rollout_workers=1", "distributed.reward_workers=0"]
TIMING = ("time/", "tokens_per_second", "completions_per_second", "ray/")


def test_a_cluster_named_by_ray_address_gets_one_rank_per_node(tmp_path, monkeypatch):
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False})
    cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    try:
        summary = train(load_config(None, [*BASE, f"output_dir={tmp_path}", "name=spread", *SPREAD]))
        assert not ray.is_initialized()  # connected for the run, disconnected after it; the cluster stays up
    finally:
        cluster.shutdown()
    monkeypatch.delenv("RAY_ADDRESS")
    train(load_config(None, [*BASE, f"output_dir={tmp_path}", "name=one"]))
    assert summary["trainer_nodes"] == 2 and summary["steps"] == 3
    rows = [[{k: v for k, v in r.items() if not k.startswith(TIMING)}
             for r in read_metrics(tmp_path / n / "metrics.jsonl")] for n in ("one", "spread")]
    assert len(rows[0]) == len(rows[1]) == 5
    for a, b in zip(*rows):
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] == b[k] if not isinstance(a[k], float) else
                    abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k]))), (k, a[k], b[k])
    wa, wb = (load_file(tmp_path / n / "final" / "model.safetensors") for n in ("one", "spread"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
