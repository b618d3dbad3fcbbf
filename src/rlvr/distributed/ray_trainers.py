"""The trainer ranks as Ray actors (`distributed: {backend: ray, trainers: N}`; `pip install 'rlvr[ray]'`).

    summary = train_on_ray(cfg, resume=False, overwrite=False)   # rlvr.trainer.train calls this for trainers > 1

1. A placement group reserves one bundle per rank ({CPU: trainer_threads, GPU: trainer_gpus}; strategy pack, or
   spread for one rank per node) and one actor per bundle runs rlvr.trainer.train as a data-parallel rank: rank 0's
   node address and a free port of it are the rendezvous, and each actor sets the variables torchrun would set
   (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) before it joins the torch.distributed group (gloo on
   CPU, nccl on GPU). Everything data parallelism does under torchrun holds unchanged (rlvr.distributed), so N Ray
   ranks train as N torchrun ranks and as one process (tests/test_ray.py).
2. Each rank starts its own rollout and reward workers (rollout_workers, reward_workers per rank) as ordinary
   actors outside the placement group; a local Ray is sized for all of them (rlvr.distributed.ray_cluster).
3. The actors run in the driver's working directory, so relative paths (output_dir, reward files) mean what they
   mean to `rlvr train`; on a cluster they must exist on every node (a shared file system).
4. The config is checked in the driver before any actor starts. When a rank fails, the others are stopped at once
   (they would wait in a collective) and its error is raised in the driver as in one process; a trainer rank is not
   restarted (its process group cannot take a new member): resume from the last checkpoint.
"""

from __future__ import annotations

import os

from rlvr.distributed.ray_cluster import ensure_ray, needed_cpus, ray_module


class _TrainerRank:
    def node(self) -> tuple[str, str]:
        ray = ray_module()
        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def free_port(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]

    def train(self, cfg, env: dict[str, str], cwd: str, threads: int, resume: bool, overwrite: bool, given):
        import torch

        os.environ.update(env)
        os.chdir(cwd)
        torch.set_num_threads(threads)
        from rlvr.trainer import train

        return train(cfg, resume=resume, overwrite=overwrite, given=given)


def train_on_ray(cfg, *, resume: bool = False, overwrite: bool = False, given=None) -> dict:
    """Run `cfg` with distributed.trainers ranks as Ray actors; returns rank 0's summary (module docstring) and on
    how many nodes the ranks ran (trainer_nodes)."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray, d = ray_module(), cfg.distributed
    owns = ensure_ray(needed_cpus(d), log=True)
    bundle = {"CPU": float(d.trainer_threads), **({"GPU": float(d.trainer_gpus)} if d.trainer_gpus else {})}
    group = placement_group([bundle] * d.trainers, strategy="SPREAD" if d.placement == "spread" else "PACK")
    ranks = []
    try:
        ray.get(group.ready(), timeout=600)
        ranks = [ray.remote(_TrainerRank).options(
            num_cpus=d.trainer_threads, num_gpus=d.trainer_gpus, max_restarts=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)).remote()
            for i in range(d.trainers)]
        nodes = ray.get([r.node.remote() for r in ranks])
        port = ray.get(ranks[0].free_port.remote())
        refs = [r.train.remote(cfg, _rank_env(i, nodes, port), os.getcwd(), d.trainer_threads, resume, overwrite,
                               given) for i, r in enumerate(ranks)]
        where = len({n for n, _ in nodes})
        print(f"rlvr: {d.trainers} trainer ranks on {where} Ray node(s) (placement {d.placement})")
        return {**_first_error_or(refs)[0], "trainer_nodes": where}
    finally:
        for r in ranks:
            ray.kill(r)
        remove_placement_group(group)
        if owns:
            ray.shutdown()


def _rank_env(rank: int, nodes: list[tuple[str, str]], port: int) -> dict[str, str]:
    """What torchrun sets for `rank` (module docstring 1)."""
    node = nodes[rank][0]
    return {"RANK": str(rank), "WORLD_SIZE": str(len(nodes)), "MASTER_ADDR": nodes[0][1], "MASTER_PORT": str(port),
            "LOCAL_RANK": str(sum(n == node for n, _ in nodes[:rank])),
            "LOCAL_WORLD_SIZE": str(sum(n == node for n, _ in nodes)), "RLVR_RAY_TRAINER": "1"}


def _first_error_or(refs: list) -> list:
    """Every rank's result; the first rank to fail ends the wait with its own error (module docstring 4)."""
    ray = ray_module()
    results, pending = {}, list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            results[done[0]] = ray.get(done[0])
        except ray.exceptions.RayTaskError as err:
            raise err.cause from None
        except ray.exceptions.RayActorError as err:
            raise RuntimeError(f"a Ray trainer rank died: {' '.join(str(err).split())[:400]}; resume from the last "
                               f"checkpoint with --resume") from err
    return [results[r] for r in refs]
