"""Run logging: metrics.jsonl (one JSON object per step), samples.jsonl, optional TensorBoard / W&B.

Metric names follow TRL where one exists (reward, reward_std, frac_reward_zero_std,
completions/mean_length, completions/clipped_ratio, clip_ratio/..., entropy, kl).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch


def reward_metrics(rewards: torch.Tensor, group_ids: torch.Tensor) -> dict[str, float]:
    """TRL-named statistics of one step's rewards (NaN = unscorable, left out)."""
    finite = rewards[~torch.isnan(rewards)]
    stds, zero = [], 0
    for g in torch.unique(group_ids):
        r = rewards[group_ids == g]
        r = r[~torch.isnan(r)]
        s = float(r.std()) if len(r) > 1 else 0.0
        stds.append(s)
        zero += s == 0.0
    return {
        "reward": float(finite.mean()) if len(finite) else math.nan,
        "reward_std": sum(stds) / len(stds),
        "frac_reward_zero_std": zero / len(stds),
    }


def length_metrics(completion_mask: torch.Tensor, truncated: torch.Tensor) -> dict[str, float]:
    lengths = completion_mask.sum(-1).float()
    return {
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(truncated.float().mean()),
    }


class RunLogger:
    """Appends metrics and samples as JSON lines; mirrors scalars to TensorBoard / W&B when enabled."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = False, wandb: bool = False, project: str = "rlvr",
                 config: dict[str, Any] | None = None, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        mode = "a" if resume else "w"
        self._metrics = open(self.run_dir / "metrics.jsonl", mode)
        self._samples = open(self.run_dir / "samples.jsonl", mode)
        self._tb = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError("TensorBoard logging needs the extra: pip install 'rlvr[tensorboard]'") from err
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wb
            except ImportError as err:
                raise ImportError("W&B logging needs the extra: pip install 'rlvr[wandb]'") from err
            self._wandb = wb.init(project=project, name=self.run_dir.name, config=config, resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._samples.write(json.dumps({"step": step, **row}) + "\n")
        self._samples.flush()

    def close(self) -> None:
        self._metrics.close()
        self._samples.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _clean(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
