"""The VA-π run loop (arXiv 2512.19680): `rlvr train recipes/va_pi.yaml` (a recipe with `loop: va_pi`).

    rlvr train recipes/va_pi.yaml                          # VQ tokenizer + CE-pretrained AR model + VA-π, in minutes
    rlvr train recipes/va_pi.yaml algo.mode=ce name=ce     # the baseline: the same steps of plain CE fine-tuning
    rlvr train recipes/va_pi.yaml --resume                 # continue from the latest checkpoint, exactly

1. Data: a toy image set (`shapes`: procedural shapes, 4 classes; `digits`: scikit-learn's bundled digits) split into
   training and held-out images, or your own (`folder`: ImageNet's layout, `data.path`/<class name>/<image>, the
   classes the subfolders in sorted order, rlvr.images.image_folder; held out by `data.held_path` in the same layout
   or as digits are; the folders' fingerprint is kept in <run>/data.json and a resume on changed folders refused).
2. Tokenizer and starting model: the VQ tokenizer (`vq.path`, or trained at the start and saved to `<run>/vq`) and
   the class-conditional AR policy (`policy.path`, or built and pretrained with next-code cross-entropy for
   `policy.pretrain_steps`, saved to `<run>/init`): VA-π post-trains a generator that is already imperfect.
   `vq.path` may be a diffusers VQModel folder or a LlamaGen-format folder, `policy.path` a LlamaGen-format folder
   naming a generator (rlvr.images.tokenizers, rlvr.images.llamagen_gpt); each is written back in its own format.
3. Each step draws `train.batch` images and runs one `va_pi_step` (teacher-forced parallel sampling, pixel reward
   through the frozen decoder, clamped group advantages, PPO-clip + λ_CE noisy-context CE), or one `ce_step` with
   `algo.mode: ce`. Every random draw comes from a stream named by (seed, purpose, step), so a resumed run draws
   what an uninterrupted one does.
4. Evaluation (before training, every `train.eval_every` steps, at the end) on held-out images: the teacher-forced
   greedy reconstruction error (clean context; VA-π's target), the CE of the ground-truth codes, and free-running
   samples of every class scored by a small classifier trained on the training images (its held-out accuracy is in
   the summary): class accuracy, feature-FID and precision/recall against the held-out images. A PNG grid of the
   samples (one row per class) goes to `<run>/samples/step-NNNNNN.png`; `rlvr plot` draws the curves beside the
   latest grid.
5. Checkpoints (`train.save_every`) hold the policy, the optimizer and the RNG state; the tokenizer and the
   classifier are written once to the run folder. The run folder, config.yaml and Ctrl-C (finish the step,
   checkpoint, exit 130) are rlvr.loop_run's, as for every loop.
6. Under `torchrun --nproc_per_node N` every rank draws the same batch and trains a contiguous share of its images
   (train.batch divisible by N; rlvr.algos.va_pi: a group never spans ranks, the draws are those of one process):
   the main rank prepares the tokenizer, classifier and starting model and writes them, the others read them back;
   the main rank alone evaluates, logs and writes checkpoints. N ranks train as one process does
   (tests/test_va_pi_train.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlvr.config import ConfigError

DATA = ("shapes", "digits", "folder")
MODES = ("va_pi", "ce")


@dataclass
class DataConfig:
    name: str = "shapes"
    """shapes (procedural shapes, 4 classes) | digits (scikit-learn's 8x8 digits, 10 classes, upsampled) | folder
    (your images in class subfolders of `path`)."""
    size: int = 16
    """Image side in pixels (a multiple of 4: the tokenizer downsamples by 4, so (size/4)² codes per image)."""
    train_size: int = 2000
    """Training images (shapes: drawn; digits: the first 80% of a seeded shuffle, capped at this)."""
    eval_size: int = 256
    """Held-out images (shapes: drawn from another seed; digits, folder: the last 20%)."""
    path: str | None = None
    """folder: ImageNet's layout, <path>/<class name>/<image> (.png / .jpg / .jpeg / .webp; short side resized to
    `size`, centre-cropped); class k is the k-th subfolder in sorted name order. Split 80 / 20 by a seeded shuffle as
    digits is, unless `held_path` is given."""
    held_path: str | None = None
    """folder: held-out images in the same layout with the same class names (then all of `path` trains)."""


@dataclass
class VQSection:
    path: str | None = None
    """A tokenizer folder: rlvr's (VQTokenizer.save), a diffusers VQModel folder or a LlamaGen checkpoint folder
    (rlvr.images.tokenizers); default: train rlvr's toy tokenizer at the start. Saved to <run>/vq in its format."""
    steps: int = 400
    codes: int = 128
    hidden: int = 64
    dim: int = 16


@dataclass
class PolicySection:
    path: str | None = None
    """An image-policy folder (model + tokenizer, e.g. <run>/init of another run) or a LlamaGen folder naming a
    generator (rlvr.images.llamagen_gpt); default: build and pretrain rlvr's Llama over codes."""
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    pretrain_steps: int = 300
    """Next-code CE steps before RL (kept short on purpose: VA-π starts from an imperfect generator)."""
    pretrain_lr: float = 1e-3


@dataclass
class AlgoSection:
    mode: str = "va_pi"
    """va_pi | ce (the baseline: plain next-code cross-entropy on the same batches)."""
    group: int = 8
    """G: teacher-forced samples per image."""
    clip: float = 0.2
    lambda_ce: float = 0.1
    """λ_CE: weight of the noisy-context CE regulariser (0: the pixel reward alone)."""
    token_noise: float = 0.0
    """p: share of context codes replaced by uniform codes (C2I script: off; T2I 0.5; Janus 1.0)."""
    w_mse: float = 1.0
    w_lpips: float = 0.0
    """Weight of LPIPS in the reward (the paper's 1.0); needs `lpips`."""
    lpips: str | None = None
    """'path/to/file.py:function' computing LPIPS of (N, 3, H, W) pixel batches in [−1, 1] -> (N,), e.g. the `lpips`
    package with VGG weights you have locally; rlvr ships no LPIPS/VGG weights and downloads nothing. Also reported
    as eval/lpips when given."""
    temperature: float = 1.0
    updates_per_batch: int = 1
    """Optimizer steps on each batch, each ratio against the sampling pass (the scripts: 1)."""
    train_mode_dropout: float = 0.0
    """The reference's train-mode update forward: token, residual / FFN and class-label dropout at this rate (its
    scripts: 0.1), the sampling pass without (rlvr.algos.va_pi.teacher_forced_logits); 0: both passes alike."""


@dataclass
class OptimSection:
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class TrainSection:
    steps: int = 100
    batch: int = 16
    """B: images per step (B·G samples for VA-π)."""
    eval_every: int = 50
    """0: evaluate before and after only."""
    samples_per_class: int = 32
    """Free-running samples per class in each evaluation."""
    classifier_steps: int = 400
    save_every: int = 50
    keep: int = 2


@dataclass
class RunConfig:
    loop: str = "va_pi"
    name: str = "va_pi"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    vq: VQSection = field(default_factory=VQSection)
    policy: PolicySection = field(default_factory=PolicySection)
    algo: AlgoSection = field(default_factory=AlgoSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def validate(cfg: RunConfig) -> None:
    """One ConfigError line for a value out of range, before anything is written or loaded."""
    from rlvr.loop_run import check_batch_split

    check_batch_split(cfg.train.batch)
    rules = [("data.name", cfg.data.name in DATA, f"one of {list(DATA)}"),
             ("algo.mode", cfg.algo.mode in MODES, f"one of {list(MODES)}"),
             ("data.size", cfg.data.size >= 8 and cfg.data.size % 4 == 0,
              "a multiple of 4, at least 8 (the toy tokenizer and the evaluation's classifier, rlvr.images.metrics, "
              "downsample 4x)"),
             ("data.train_size", cfg.data.train_size >= 16, ">= 16"),
             ("data.eval_size", cfg.data.eval_size >= 8, ">= 8"),
             ("algo.group", cfg.algo.group >= 2, ">= 2 (advantages are relative within a group)"),
             ("algo.clip", cfg.algo.clip > 0, "> 0"), ("algo.lambda_ce", cfg.algo.lambda_ce >= 0, ">= 0"),
             ("algo.token_noise", 0 <= cfg.algo.token_noise <= 1, "in [0, 1]"),
             ("algo.updates_per_batch", cfg.algo.updates_per_batch >= 1, ">= 1"),
             ("algo.train_mode_dropout", 0 <= cfg.algo.train_mode_dropout < 1, "in [0, 1)"),
             ("algo.temperature", cfg.algo.temperature > 0, "> 0"), ("optim.lr", cfg.optim.lr > 0, "> 0"),
             ("optim.betas", len(cfg.optim.betas) == 2, "two numbers"), ("train.steps", cfg.train.steps >= 0, ">= 0"),
             ("train.batch", cfg.train.batch >= 1, ">= 1"), ("train.eval_every", cfg.train.eval_every >= 0, ">= 0"),
             ("train.save_every", cfg.train.save_every >= 0, ">= 0"),
             ("train.samples_per_class", cfg.train.samples_per_class >= 2, ">= 2"),
             ("vq.codes", cfg.vq.codes >= 2, ">= 2"), ("policy.pretrain_steps", cfg.policy.pretrain_steps >= 0, ">= 0")]
    for key, ok, want in rules:
        if not ok:
            raise ConfigError(f"{key} must be {want}, got {_get(cfg, key)!r}")
    if cfg.algo.w_lpips and not cfg.algo.lpips:
        raise ConfigError("algo.w_lpips needs algo.lpips: a 'file.py:function' computing LPIPS (rlvr ships no LPIPS "
                          "or VGG weights; leave w_lpips at 0 for the MSE reward alone)")
    if cfg.algo.lpips:
        from rlvr.rewards.library import load_function

        try:
            load_function(cfg.algo.lpips)
        except ValueError as err:
            raise ConfigError(f"algo.lpips: {err}") from err
    for key in ("vq.path", "policy.path"):
        path = _get(cfg, key)
        if path is not None and not Path(path).is_dir():
            raise ConfigError(f"{key}: '{path}' is not a folder")
    if cfg.vq.path:  # the folder's format and image size, from its config alone (no weights loaded yet)
        from rlvr.images.tokenizers import check_size, peek

        check_size(peek(cfg.vq.path), cfg.data.size)
    if cfg.policy.path:
        check_llamagen_policy(cfg)
    if cfg.data.name == "folder":
        class_folders(cfg, check=True)


def class_folders(cfg: RunConfig, *, check: bool = False):
    """{field: (ImageFolder, labels)} of data.path and data.held_path (rlvr.images.image_folder.scan_classes); check:
    also open every image and need 8 held-out images. One ConfigError line naming the field."""
    from rlvr.images.image_folder import check_readable, scan_classes

    d, out, names = cfg.data, {}, {}
    if d.path is None:
        raise ConfigError("data.path must be a folder of class subfolders with data.name folder, got None")
    for key, path in (("data.path", d.path), ("data.held_path", d.held_path)):
        if path is None:
            continue
        try:
            folder, labels, names[key] = scan_classes(path)
            if check:
                check_readable(folder)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from err
        out[key] = (folder, labels)
    if d.held_path and names["data.held_path"] != names["data.path"]:
        raise ConfigError(f"data.held_path: its class subfolders {names['data.held_path']} must be data.path's "
                          f"{names['data.path']}")
    held = len(out["data.held_path"][0]) if d.held_path else len(out["data.path"][0]) - int(0.8 * len(out[
        "data.path"][0]))
    if check and min(held, d.eval_size) < 8:
        raise ConfigError(f"{'data.held_path' if d.held_path else 'data.path'} must give at least 8 held-out images "
                          f"({'all of data.held_path' if d.held_path else 'the last 20%'}), got {held}")
    return out


def folder_record(cfg: RunConfig, *, fresh: bool, main: bool) -> None:
    """data.name folder: a new run writes the folders' fingerprints to <run>/data.json (the main rank), a resumed one
    refuses folders that changed (module docstring 1)."""
    from rlvr.images.image_folder import record_fingerprints

    if cfg.data.name != "folder" or (fresh and not main):
        return
    folders = {key: folder for key, (folder, _) in class_folders(cfg).items()}
    if change := record_fingerprints(cfg.run_dir / "data.json", folders, resume=not fresh):
        raise ConfigError(f"{change[0]}: {change[1]}: resume on the same images, or start a new run")


def check_llamagen_policy(cfg: RunConfig) -> None:
    """A LlamaGen generator (policy.path) must fit the tokenizer: its codebook and its code grid (from configs)."""
    from rlvr.images.ar import is_llamagen_policy

    if not is_llamagen_policy(cfg.policy.path):
        return
    from rlvr.images.llamagen import read_folder_config
    from rlvr.images.llamagen_gpt import gpt_args
    from rlvr.images.tokenizers import peek

    if cfg.algo.train_mode_dropout:
        raise ConfigError("algo.train_mode_dropout is not supported with a LlamaGen policy (policy.path): leave it 0")
    args = gpt_args(read_folder_config(cfg.policy.path))
    codes, down = cfg.vq.codes, 4  # rlvr's toy tokenizer, trained at the start
    if cfg.vq.path:
        shape = peek(cfg.vq.path)
        codes, down = shape.codes, shape.downsample
    tokens = (cfg.data.size // down) ** 2
    if args.vocab_size != codes:
        raise ConfigError(f"policy.path: the LlamaGen generator has {args.vocab_size} codes, the tokenizer {codes}")
    if args.block_size != tokens:
        raise ConfigError(f"policy.path: the LlamaGen generator reads {args.block_size} codes per image (its 2-D "
                          f"RoPE grid), the tokenizer gives {tokens} at data.size {cfg.data.size}")


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def image_data(cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, held-out images, held-out labels) in [0, 1]."""
    from rlvr.images.data import digits, toy_shapes

    d = cfg.data
    if d.name == "shapes":
        return (*toy_shapes(d.train_size, size=d.size, seed=cfg.seed), *toy_shapes(d.eval_size, size=d.size,
                                                                                   seed=cfg.seed + 1_000_003))
    if d.name == "folder":
        return _folder_data(cfg)
    images, labels = digits(size=d.size)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed))
    cut = int(0.8 * len(images))
    train, held = order[:cut][: d.train_size], order[cut:][: d.eval_size]
    return images[train], labels[train], images[held], labels[held]


def _folder_data(cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """data.name folder: digits' seeded 80 / 20 split of data.path (or all of it, and data.held_path shuffled by the
    same seed), capped at train_size / eval_size; only the images kept are read."""
    d, folders = cfg.data, class_folders(cfg)
    folder, labels = folders["data.path"]
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    if "data.held_path" in folders:
        held, held_labels = folders["data.held_path"]
        train_rows = order[: d.train_size]
        held_rows = torch.randperm(len(held), generator=torch.Generator().manual_seed(cfg.seed)).tolist()[: d.eval_size]
    else:
        cut = int(0.8 * len(folder))
        held, held_labels = folder, labels
        train_rows, held_rows = order[:cut][: d.train_size], order[cut:][: d.eval_size]
    return (folder.pick(train_rows).load(d.size), labels[train_rows], held.pick(held_rows).load(d.size),
            held_labels[held_rows])


def _optimizer(params, lr: float, cfg: RunConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)


def _batch(images: torch.Tensor, labels: torch.Tensor, n: int, g: torch.Generator):
    idx = torch.randint(len(images), (n,), generator=g)
    return images[idx], labels[idx]


def prepare(cfg: RunConfig, run_dir: Path, train_images: torch.Tensor, train_labels: torch.Tensor, fresh: bool):
    """The frozen tokenizer, the metric classifier (and its held-out accuracy) and the starting policy (module
    docstring 2); a new run writes them to the run folder, a resumed one reads them back."""
    from rlvr.images.ar import ar_model, code_tokenizer, image_policy, load_image_policy
    from rlvr.images.metrics import FeatureNet, train_classifier
    from rlvr.images.tokenizers import load_tokenizer
    from rlvr.images.vq import VQConfig, train_vq
    from rlvr.seeding import generator

    if not fresh:
        vq = load_tokenizer(run_dir / "vq", size=cfg.data.size)
        saved = torch.load(run_dir / "classifier.pt", weights_only=True)
        net = FeatureNet(size=cfg.data.size, classes=saved["classes"])
        net.load_state_dict(saved["state"])
        return vq.eval(), net.eval(), saved["accuracy"], None
    if cfg.vq.path:
        vq = load_tokenizer(cfg.vq.path, size=cfg.data.size)
    else:
        vq_cfg = VQConfig(size=cfg.data.size, codes=cfg.vq.codes, hidden=cfg.vq.hidden, dim=cfg.vq.dim)
        vq, _ = train_vq(train_images, steps=cfg.vq.steps, seed=cfg.seed, config=vq_cfg)
    if vq.config.size != cfg.data.size:
        raise ConfigError(f"vq.path: the tokenizer is for {vq.config.size} px images, data.size is {cfg.data.size}")
    vq.save(run_dir / "vq")
    classes = int(train_labels.max()) + 1
    net, accuracy = train_classifier(train_images, train_labels, steps=cfg.train.classifier_steps, seed=cfg.seed)
    torch.save({"state": net.state_dict(), "classes": classes, "accuracy": accuracy}, run_dir / "classifier.pt")
    if cfg.policy.path:
        policy = load_image_policy(cfg.policy.path)
        held = getattr(getattr(policy, "gpt", None), "args", None)
        if held is not None and classes > held.num_classes:
            raise ConfigError(f"policy.path: the LlamaGen generator has {held.num_classes} classes, data.name "
                              f"{cfg.data.name!r} has {classes}")
    else:
        tok = code_tokenizer(codes=vq.config.codes, classes=classes)
        policy = image_policy(ar_model(tok, hidden=cfg.policy.hidden, layers=cfg.policy.layers,
                                       heads=cfg.policy.heads, seed=cfg.seed), tok)
        opt = _optimizer(policy.model.parameters(), cfg.policy.pretrain_lr, cfg)
        from rlvr.algos.va_pi import ce_step

        for step in range(cfg.policy.pretrain_steps):
            g = generator(cfg.seed, "va_pi_pretrain", step)
            ce_step(policy, vq, *_batch(train_images, train_labels, 64, g), opt)
    policy.save(run_dir / "init")
    return vq.eval(), net, accuracy, policy


@torch.no_grad()
def evaluate_generator(policy, vq, net, images: torch.Tensor, labels: torch.Tensor, *, per_class: int, seed: int,
                       temperature: float = 1.0, grid: Path | None = None, lpips=None) -> dict[str, float]:
    """Teacher-forced reconstruction and free-running sample quality on held-out images (module docstring 4)."""
    from torch.nn import functional as F

    from rlvr.algos.va_pi import teacher_forced_logits
    from rlvr.batch import Sample
    from rlvr.images.ar import code_ids
    from rlvr.images.metrics import class_accuracy, feature_fid, precision_recall, save_grid
    from rlvr.policies import SamplingParams
    from rlvr.seeding import row_seeds

    codes = vq.encode(images)
    logits = teacher_forced_logits(policy, labels, codes)  # (B, T, V)
    out = {"eval/recon_mse": float((vq.decode(logits.argmax(-1)) - images).square().mean()),
           "eval/ce": float(F.cross_entropy(logits.flatten(0, 1).float(), codes.flatten())),
           "eval/vq_mse": float((vq.decode(codes) - images).square().mean())}
    if lpips is not None:
        out["eval/lpips"] = float(lpips(vq.decode(logits.argmax(-1)) * 2 - 1, images * 2 - 1).mean())
    classes = int(net.head.out_features)
    wanted = torch.arange(classes).repeat_interleave(per_class)
    rows = [Sample(prompt=f"<class_{int(k)}>") for k in wanted]
    n = len(rows)
    batch = policy.generate(rows, group_ids=torch.arange(n), seeds=row_seeds(seed, "va_pi_eval", torch.arange(n)),
                            params=SamplingParams(max_new_tokens=vq.tokens, temperature=temperature))
    samples = vq.decode(code_ids(policy, batch.completion_ids.cpu()))
    precision, recall = precision_recall(net, images, samples)
    out.update({"eval/class_accuracy": class_accuracy(net, samples, wanted),
                "eval/fid": feature_fid(net, images, samples), "eval/precision": precision, "eval/recall": recall})
    if grid is not None:
        shown = min(per_class, 8)
        save_grid(samples.view(classes, per_class, *samples.shape[1:])[:, :shown].flatten(0, 1), grid, nrow=shown,
                  scale=max(1, 64 // samples.shape[-1]))
    return out


def train(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Run VA-π (or the CE baseline) as the module docstring says; returns the run's summary."""
    from rlvr.loop_run import run_in_world

    validate(cfg)
    return run_in_world(cfg, _train, resume=resume, overwrite=overwrite)


def _train(cfg: RunConfig, resume_from: Path | None, world) -> dict:
    from rlvr.algos.va_pi import ce_step, va_pi_step
    from rlvr.distributed import barrier
    from rlvr.images.ar import load_image_policy
    from rlvr.loop_run import StopRequest, due, open_logger, restore_state, save_state
    from rlvr.seeding import generator

    run_dir = cfg.run_dir
    torch.manual_seed(cfg.seed)
    train_images, train_labels, held_images, held_labels = image_data(cfg)
    fresh = resume_from is None
    folder_record(cfg, fresh=fresh, main=world.is_main)
    if world.is_main:
        vq, net, classifier_accuracy, policy = prepare(cfg, run_dir, train_images, train_labels, fresh)
    barrier(world)
    if not world.is_main:  # the main rank's tokenizer, classifier and starting model, read back
        vq, net, classifier_accuracy, policy = prepare(cfg, run_dir, train_images, train_labels, False)
        if fresh:
            policy = load_image_policy(str(run_dir / "init"))
    if resume_from is not None:
        policy = load_image_policy(str(resume_from / "model"))
    opt = _optimizer(policy.model.parameters(), cfg.optim.lr, cfg)
    state = {"step": 0, "eval_before": {}}
    if resume_from is not None:
        saved = restore_state(resume_from)
        opt.load_state_dict(saved["optimizer"])
        state = {"step": saved["step"], "eval_before": saved["eval_before"]}
    logger = open_logger(cfg, world, resumed=resume_from is not None)
    lpips = None
    if cfg.algo.lpips:
        from rlvr.rewards.library import load_function

        lpips = load_function(cfg.algo.lpips)

    def evaluate(step: int) -> dict[str, float]:  # the main rank's (the weights are the same on every rank)
        if not world.is_main:
            return {}
        return evaluate_generator(policy, vq, net, held_images, held_labels, per_class=cfg.train.samples_per_class,
                                  seed=cfg.seed, temperature=cfg.algo.temperature, lpips=lpips,
                                  grid=run_dir / "samples" / f"step-{step:06d}.png")

    if resume_from is None:
        if logger:
            (run_dir / "samples").mkdir(exist_ok=True)
        state["eval_before"] = evaluate(0)
        if logger:
            logger.log(0, state["eval_before"])
    last: dict[str, float] = {}
    a, steps = cfg.algo, cfg.train.steps
    with StopRequest() as stop:
        for step in range(state["step"] + 1, steps + 1):
            t0 = time.perf_counter()
            images, labels = _batch(train_images, train_labels, cfg.train.batch,
                                    generator(cfg.seed, "va_pi_batch", step))
            g = generator(cfg.seed, "va_pi_step", step)
            if a.mode == "va_pi":
                row = va_pi_step(policy, vq, images, labels, opt, group=a.group, p=a.token_noise, clip=a.clip,
                                 lambda_ce=a.lambda_ce, w_mse=a.w_mse, w_lpips=a.w_lpips, lpips=lpips, generator=g,
                                 world=world, updates=a.updates_per_batch, dropout=a.train_mode_dropout)
                row["reward"] = row["va_pi/reward"]
            else:
                row = ce_step(policy, vq, images, labels, opt, p=a.token_noise, generator=g, world=world)
            row["time/step"] = time.perf_counter() - t0
            if due(step, cfg.train.eval_every, steps):
                row.update(evaluate(step))
            if logger:
                logger.log(step, row)
            last = row
            if due(step, cfg.train.save_every, steps) or stop.requested:
                path = save_state(cfg, step, policy, world, optimizer=opt.state_dict(),
                                  eval_before=state["eval_before"])
            if stop.requested and step < steps:
                if logger:
                    logger.close()
                barrier(world)
                print(f"rlvr: stopped at step {step}; resume with --resume ({path})")
                return {"interrupted": True, "step": step, "checkpoint": str(path)}
    if logger:
        logger.close()
    if not last and world.is_main:  # resumed at its last step: nothing ran, report the checkpoint's own numbers
        last = evaluate_generator(policy, vq, net, held_images, held_labels, per_class=cfg.train.samples_per_class,
                                  seed=cfg.seed, temperature=cfg.algo.temperature, lpips=lpips)
    if world.is_main:
        policy.save(run_dir / "final")
    barrier(world)  # the final model is written before any rank returns
    after = {k: v for k, v in last.items() if k.startswith("eval/")}
    return {"run_dir": str(run_dir), "mode": a.mode, "steps": cfg.train.steps,
            "classifier_accuracy": classifier_accuracy, "eval_before": state["eval_before"], "eval_after": after}
