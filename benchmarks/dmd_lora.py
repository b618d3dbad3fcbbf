"""Full vs LoRA students of `loop: dmd` side by side at one fixed small size: trained parameters, AdamW state and the
weights held in memory per arm, and each arm's peak RSS (one process per arm).

    python benchmarks/dmd_lora.py                    # JSON on stdout
    python benchmarks/dmd_lora.py --base 32 --width 64 --rank 4

1. One teacher for every arm: a Stable-Diffusion-shaped pipeline (UNet2DConditionModel of --base / --width channels,
   cross-attention at the top resolution, the tiny CLIP text encoder and AutoencoderKL of rlvr.images.diffusers_nets)
   with random weights, saved once as a pipeline folder and read back by each arm through `diffusers.path`.
2. Arms: full (generator and fake score are trained copies, today's default), lora (a LoRA generator, full fake
   score), lora_fake (both LoRA over the one shared teacher). Each arm runs in a fresh process: the run's networks
   and optimizers (rlvr.images.dmd_train._setup) and two iterations (one generator turn, two guidance updates), so
   every AdamW moment exists; then it reports per network the trained and total parameters (the summary's
   "parameters"), the optimizer state it holds (bytes of every tensor in AdamW's state), the bytes of distinct
   parameter tensors over teacher, generator, fake score and discriminator (a shared base counts once), and the
   process's peak RSS (ru_maxrss).
3. No timings: RSS is memory, read from the kernel; the process also holds Python, torch and diffusers (the "none"
   arm: the same process with the pipeline loaded and no networks built, the baseline to subtract).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ARMS = {"none": None, "full": {}, "lora": {"fake": False}, "lora_fake": {"fake": True}}


def build_teacher(folder: Path, *, base: int, width: int, size: int) -> None:
    from diffusers import UNet2DConditionModel

    from rlvr.images.diffusers_nets import Denoiser, Parts, tiny_conditional_config

    tiny = Parts.build(size=size, conditional=True, vae=True, seed=0)
    unet = UNet2DConditionModel(**tiny_conditional_config(size=size // 2, base=base, width=width))
    Parts(Denoiser(unet), vae=tiny.vae, tokenizer=tiny.tokenizer, text_encoder=tiny.text_encoder).save(folder)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def run_arm(arm: str, folder: str, rank: int, size: int, out: str) -> dict:
    import torch

    from rlvr.config import from_dict
    from rlvr.images.diffusers_lora import parameter_counts
    from rlvr.images.dmd_diffusers import ImageSide
    from rlvr.images.dmd_train import RunConfig, _setup, train_step

    torch.set_num_threads(1)
    lora = ARMS[arm]
    raw = {"loop": "dmd", "output_dir": out, "name": arm, "data": {"kind": "shapes", "size": size, "images": 16,
           "held_images": 8}, "teacher": {"kind": "diffusers", "pretrain_steps": 0}, "diffusers": {"path": folder},
           "distill": {"preset": "dmd2", "gan_weight": 0.5, "ratio": 2}, "train": {"batch": 2}}
    if lora:
        raw["student"] = {"lora": {"r": rank, **lora}}
    cfg = from_dict(RunConfig, raw, "")
    side = ImageSide(cfg, None)
    if lora is None:
        return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    nets, opts, _ = _setup(cfg, None, side)
    for step in (1, 2):
        train_step(nets, opts, cfg, side.data, side.teacher, side.reward_fn, step)
    named = {"generator": nets.unbound("generator"), "fake": nets.unbound("fake"), "disc": nets.disc}
    every = {p.data_ptr(): p for net in (side.parts.denoiser, *named.values()) for p in net.parameters()}
    state = {name: _bytes(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
             for name, opt in opts.items()}
    return {"parameters": parameter_counts(named), "optimizer_state_bytes": state,
            "distinct_parameter_bytes": _bytes(every.values()),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--size", type=int, default=32, help="image side in px (latents: half)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)  # one arm, in its own process
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.folder, args.rank, args.size, args.out)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "teacher"
        build_teacher(folder, base=args.base, width=args.width, size=args.size)
        arms = {}
        for arm in ARMS:
            cmd = [sys.executable, __file__, "--arm", arm, "--folder", str(folder), "--out", tmp, "--rank",
                   str(args.rank), "--size", str(args.size)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            arms[arm] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps({"size": args.size, "unet": {"base": args.base, "width": args.width}, "rank": args.rank,
                      "arms": arms}, indent=1))


if __name__ == "__main__":
    main()
