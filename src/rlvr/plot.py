"""Draw a run's curves (reward, held-out accuracy, length, entropy) from metrics.jsonl into plot.png. A run of several
tasks also gets one held-out accuracy curve per task (eval/<key>/accuracy) beside their mean. An image-generator run
(loop va_pi or dmd) gets its own panels (reconstruction error, feature-FID or Fréchet distance, recall, reward, modes
covered) and its latest samples (samples/*.png, or the diffusion loop's samples.png) beside them. Only panels with
data are drawn."""

from __future__ import annotations

from pathlib import Path

from rlvr.metrics import read_metrics

PANELS = [
    ("reward", "train reward (mean)"),
    ("eval/accuracy", "held-out greedy accuracy"),
    ("completions/mean_length", "completion length (tokens)"),
    ("entropy", "token entropy"),
    ("eval/recon_mse", "held-out teacher-forced MSE"),
    ("eval/fid", "feature-FID (held-out)"),
    ("eval/frechet", "Fréchet distance to data"),
    ("eval/recall", "recall (held-out)"),
    ("eval/reward", "reward of samples"),
    ("eval/modes_covered", "modes covered"),
]


def per_task(rows: list[dict]) -> dict[str, str]:
    """task key -> its held-out accuracy metric, for runs of several tasks."""
    keys = sorted({k for r in rows for k in r
                   if k.startswith("eval/") and k.endswith("/accuracy") and k.count("/") == 2})
    return {k.split("/")[1]: k for k in keys}


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write `run_dir/plot.png` (or `out`) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: is it a run folder?")
    rows = read_metrics(path)
    panels = [(k, t) for k, t in PANELS if any(r.get(k) is not None for r in rows)] or PANELS[:1]
    grids = sorted((run_dir / "samples").glob("*.png")) if (run_dir / "samples").is_dir() else []
    grids = grids or [f for f in [run_dir / "samples.png"] if f.is_file()]  # the diffusion loop's scatter
    fig, axes = plt.subplots(1, len(panels) + bool(grids), figsize=(4 * (len(panels) + bool(grids)), 3.2),
                             squeeze=False)
    axes = list(axes[0])
    if grids:  # the latest sample grid, as saved
        ax = axes.pop()
        ax.imshow(plt.imread(grids[-1]))
        ax.set_title(f"samples: {grids[-1].stem}", fontsize=10)
        ax.axis("off")
    for ax, (key, title) in zip(axes, panels):
        series = per_task(rows) if key == "eval/accuracy" else {}
        for label, k in {"mean" if series else None: key, **series}.items():
            pts = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 20 else None, markersize=3, label=label,
                        linewidth=2 if label == "mean" else 1)
        if series:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "plot.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
