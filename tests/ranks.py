"""Helpers for the tests that train a recipe alone and as 2 torchrun ranks (the image loops): run `rlvr train` in a
fresh process, and compare two runs' metrics rows and weights within a tolerance."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on now: fixed ports collide when two test runs share the machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rlvr_train(recipe: Path, *, ranks: int = 1, cwd: Path | None = None, timeout: int = 300,
               extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`rlvr train recipe` in one process, or under `torchrun --nproc_per_node ranks` (gloo, one thread each, on a
    free port); a failed run fails the test with its stderr's tail."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(free_port())] \
        if ranks > 1 else []
    proc = subprocess.run([sys.executable, *launch, "-m", "rlvr.cli", "train", str(recipe), *extra], env=env,
                          cwd=cwd, timeout=timeout, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "time/" not in k} for r in rows]  # time/step, eval/time/...


def assert_rows_close(one: list[dict], two: list[dict], steps: list[int], tol: float = 1e-4) -> None:
    """Both runs logged `steps`, the same keys at each, and every value within tol (relative above 1); a missing
    value (None, NaN) must be missing in both."""
    assert [r["step"] for r in one] == [r["step"] for r in two] == steps
    for a, b in zip(without_timing(one), without_timing(two)):
        assert a.keys() == b.keys(), a["step"]
        for k in a:
            if a[k] is None or (isinstance(a[k], float) and math.isnan(a[k])):
                assert b[k] is None or math.isnan(b[k]), (a["step"], k)
                continue
            assert abs(a[k] - b[k]) <= tol * max(1.0, abs(a[k])), (a["step"], k, a[k], b[k])


def max_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
