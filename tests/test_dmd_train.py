"""The DMD2 / Flash-DMD loop (rlvr.images.dmd_train): a tiny run leaves finite metrics, a checkpoint and PNGs; a run of
2 steps resumed to 4 equals a run of 4 bit for bit (every network, every optimizer state, every metrics row but
timings); bad values are one-line ConfigErrors naming the field; 2 torchrun ranks train as one process; a
generator update leaves no gradient in the fake score or the discriminator."""

import math
import os

import pytest
import torch
import yaml
from ranks import assert_rows_close, max_difference, rlvr_train
from safetensors.torch import load_file

from rlvr.checkpoint import load_trainer_state
from rlvr.config import ConfigError, from_dict
from rlvr.images.diffusion import GaussianMixture, full
from rlvr.images.dmd_points import pretrain_denoiser
from rlvr.images.dmd_rewards import build_reward
from rlvr.images.dmd_train import Networks, RunConfig, generator_update, train, validate
from rlvr.metrics import read_metrics

TINY = {"teacher": {"kind": "mlp", "pretrain_steps": 20, "pretrain_batch": 64, "sample_steps": 5},
        "student": {"steps": 4, "backward_simulation": True},
        "distill": {"preset": "flash", "gan_weight": 0.5, "ratio": 2},
        "rl": {"reward": "distance", "lambda_R": 0.1},
        "train": {"steps": 4, "batch": 32, "eval_every": 2, "eval_size": 64, "save_every": 2, "keep": 3}}


def tiny(tmp_path, name, **over):
    raw = {"name": name, "output_dir": str(tmp_path), **yaml.safe_load(yaml.safe_dump(TINY))}
    for key, value in over.items():
        section, field = key.split("__")
        raw.setdefault(section, {})[field] = value
    return from_dict(RunConfig, raw, "")


def test_tiny_run_writes_finite_metrics_checkpoint_and_pngs(tmp_path):
    summary = train(tiny(tmp_path, "a"))
    run = tmp_path / "a"
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    # mode_std is NaN (logged as null) while no sample lies within 3 sigma of a mode: 20 pretraining steps
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if k != "eval/mode_std")
    assert {"gen/loss", "rl/reward", "fake/loss", "gan/disc_loss"} <= set(rows[1]) and "gen/loss" not in rows[2]
    assert (run / "checkpoints" / "step-000004" / "model" / "generator.safetensors").is_file()
    assert (run / "samples.png").stat().st_size > 1000 and (run / "teacher.png").is_file()
    assert (run / "teacher.safetensors").is_file()
    final, teacher = summary["final"], summary["teacher"]
    assert 0 <= final["modes_covered"] <= 8 and math.isfinite(final["frechet"]) and 0 <= final["recall"] <= 1
    assert teacher["sample_steps"] == 5 and teacher["time/sample_per_1000"] > 0
    from rlvr.plot import plot_run

    assert plot_run(run).stat().st_size > 10_000  # its curves beside samples.png


def _state(run, step):
    folder = run / "checkpoints" / f"step-{step:06d}"
    nets = {p.name: load_file(str(p)) for p in sorted((folder / "model").glob("*.safetensors"))}
    return nets, load_trainer_state(folder)


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("preset", ["dmd2", "flash"])
def test_resume_equals_uninterrupted(tmp_path, preset):
    train(tiny(tmp_path, "full", distill__preset=preset))
    train(tiny(tmp_path, "split", distill__preset=preset, train__steps=2))
    train(tiny(tmp_path, "split", distill__preset=preset), resume=True)
    full_nets, full_state = _state(tmp_path / "full", 4)
    split_nets, split_state = _state(tmp_path / "split", 4)
    assert set(full_nets) == {"generator.safetensors", "fake.safetensors", "disc.safetensors",
                              "pretrained.safetensors"}
    assert _equal(full_nets, split_nets)
    for key in ("optim/generator", "optim/guidance", "step"):
        assert _equal(full_state[key], split_state[key]), key

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time/") and "/time/" not in k} for r in rows]

    assert strip(read_metrics(tmp_path / "full" / "metrics.jsonl")) == strip(
        read_metrics(tmp_path / "split" / "metrics.jsonl"))


@pytest.mark.parametrize("key,value,field", [
    ("teacher__kind", "oracle", "teacher.kind"),
    ("distill__preset", "dmd3", "distill.preset"),
    ("distill__ratio", 0, "distill.ratio"),
    ("distill__split", 1200, "distill.split"),
    ("rl__mode", 8, "rl.mode"),
    ("rl__reward", "nothing", "rl.reward"),
    ("optim__lr", -1.0, "optim.lr"),
    ("train__eval_size", 3, "train.eval_size"),
    ("student__steps", 0, "student.steps"),
    ("teacher__schedule", "cosine", "teacher.schedule"),
    ("rl__rewards", {"distance": 1.0, "nothing": 0.5}, "rl.rewards['nothing']"),
    ("rl__rewards", {"distance": "heavy"}, "rl.rewards['distance']"),
])
def test_bad_values_are_one_line_errors(tmp_path, key, value, field):
    with pytest.raises(ConfigError) as err:
        validate(tiny(tmp_path, "bad", **{key: value}))
    assert str(err.value).startswith(field) and "\n" not in str(err.value)


def test_rl_alone_needs_a_reward_weight(tmp_path):
    with pytest.raises(ConfigError, match="^rl.lambda_R"):
        validate(tiny(tmp_path, "bad", rl__distill=False, rl__lambda_R=0.0))


@pytest.mark.parametrize("variant", [
    {},  # flash: DM / data-discriminator split, backward simulation (one k per batch), RL on top
    {"distill": {"preset": "dmd2", "gan_weight": 0.5, "ratio": 2}, "student": {"steps": 4, "backward_simulation":
                                                                              False}},  # per-sample t_k, GAN head
    {"teacher": {**TINY["teacher"], "schedule": "flow"}},  # flash on a velocity-predicting teacher
], ids=["flash", "dmd2", "flow"])
def test_two_ranks_train_as_one_process(tmp_path, variant):
    """`torchrun --nproc_per_node 2`: each rank trains half of every batch with the noise one process draws; every
    metrics row (all but timings) and every network's final weights equal a one-process run's within 1e-4."""
    runs = {}
    for ranks in (1, 2):
        recipe = tmp_path / f"tiny{ranks}.yaml"
        recipe.write_text(yaml.safe_dump({"loop": "dmd", "name": f"r{ranks}", "output_dir": str(tmp_path),
                                          **TINY, **variant}))
        rlvr_train(recipe, ranks=ranks, cwd=tmp_path)
        runs[ranks] = tmp_path / f"r{ranks}"
    assert_rows_close(*(read_metrics(runs[n] / "metrics.jsonl") for n in (1, 2)), steps=[0, 1, 2, 3, 4])
    for net in ("generator", "fake", "disc"):
        wa, wb = (load_file(runs[n] / "checkpoints" / "step-000004" / "model" / f"{net}.safetensors") for n in (1, 2))
        assert max_difference(wa, wb) <= 1e-4, net


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"train.batch \(32\) must be divisible by the number of data-parallel "
                                          r"ranks \(3\)"):
        train(tiny(tmp_path, "odd"))
    assert not (tmp_path / "odd").exists()


@pytest.mark.parametrize("preset", ["dmd2", "flash"])
def test_generator_update_leaves_no_gradient_in_guidance_networks(tmp_path, preset):
    cfg = tiny(tmp_path, "g", distill__preset=preset, distill__split=1000)  # flash: the GAN at t_k = 749 too
    gmm = GaussianMixture()
    nets = Networks(cfg, pretrain_denoiser(cfg, gmm))
    kw = {"betas": (0.9, 0.999)}
    opts = {"generator": torch.optim.AdamW(nets.generator.parameters(), **kw),
            "guidance": torch.optim.AdamW(nets.guidance_parameters(), **kw)}
    x_t, t_k = torch.randn(16, 2), full(749, 16)
    x0 = nets.generator(x_t, t_k)
    metrics = generator_update(nets, opts, cfg, x0, t_k, gmm.eps, build_reward(cfg.rl, gmm), step=1)
    assert "gan/gen_loss" in metrics
    assert all(p.grad is not None for p in nets.generator.parameters())
    assert all(p.grad is None for p in nets.guidance_parameters())
    assert all(p.requires_grad for p in nets.guidance_parameters())  # unfrozen again for the guidance update


def test_a_user_reward_file_drives_joint_rl(tmp_path):
    fn = tmp_path / "my_reward.py"
    fn.write_text("def right_half(x0):\n    return x0[:, 0]\n")  # (N,) differentiable: push samples to +x
    cfg = tiny(tmp_path, "u", rl__reward=f"{fn}:right_half", rl__lambda_R=1.0, rl__distill=False)
    train(cfg)
    rows = read_metrics(tmp_path / "u" / "metrics.jsonl")
    assert rows[-1]["eval/reward"] > rows[0]["eval/reward"]  # the mean x of the samples moved right
    with pytest.raises(ConfigError, match="rl.reward: python reward: file 'nofile.py' not found"):
        build_reward(tiny(tmp_path, "v", rl__reward="nofile.py:f").rl, GaussianMixture())


def test_several_rewards_are_summed_with_their_weights_and_a_bad_sample_is_named(tmp_path):
    fn = tmp_path / "my_reward.py"
    fn.write_text("import torch\n\ndef right(x0):\n    return x0[:, 0]\n\n"
                  "def broken(x0):\n    r = x0[:, 0].clone()\n    r[3] = float('nan')\n    return r\n\n"
                  "def scalar(x0):\n    return x0.sum()\n")
    gmm, x0 = GaussianMixture(), torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    rl = tiny(tmp_path, "w", rl__rewards={"distance": 2.0, f"{fn}:right": -0.5}).rl
    want = 2.0 * build_reward(tiny(tmp_path, "d").rl, gmm)(x0) - 0.5 * x0[:, 0]
    torch.testing.assert_close(build_reward(rl, gmm)(x0), want)
    with pytest.raises(ValueError, match=r"^reward '.*:broken': sample 3 of 8 \(x0 = \[.*\]\) scored nan"):
        build_reward(tiny(tmp_path, "b", rl__rewards={"distance": 1.0, f"{fn}:broken": 1.0}).rl, gmm)(x0)
    with pytest.raises(ValueError, match=r"^reward '.*:scalar': must return a tensor of shape \(8,\)"):
        build_reward(tiny(tmp_path, "s", rl__reward=f"{fn}:scalar").rl, gmm)(x0)
    with pytest.raises(ConfigError, match=r"^rl.rewards\['nofile.py:f'\]: python reward: file 'nofile.py'"):
        build_reward(tiny(tmp_path, "v", rl__rewards={"nofile.py:f": 1.0}).rl, gmm)


def test_the_schema_names_every_built_in_reward():
    from rlvr.images.dmd_config import REWARD_NAMES
    from rlvr.images.dmd_rewards import REWARDS

    assert sorted(REWARDS) == sorted(REWARD_NAMES)


@pytest.mark.parametrize("kind", ["exact", "mlp"])
def test_a_biased_teacher_learns_its_own_ring_and_is_scored_against_the_data(tmp_path, kind):
    """teacher.radius 2 while the data sit at radius 4: the teacher's samples lie near radius 2 (exact: its score is
    the shrunk mixture's; mlp: pretrained on it), and they are evaluated against the data (no sample within 3 sigma
    of a data mode, where the same teacher on the data's ring puts many)."""
    over = {"teacher__kind": kind, "teacher__radius": 2.0, "teacher__sample_steps": 50}
    if kind == "mlp":
        over.update(teacher__pretrain_steps=300, teacher__pretrain_batch=256)
    summary = train(tiny(tmp_path, kind, **over))
    teacher = summary["teacher"]
    assert teacher["in_mode"] < 0.1 and teacher["modes_covered"] == 0
    ring = train(tiny(tmp_path, f"{kind}-data", **{**over, "teacher__radius": None}))["teacher"]
    assert ring["in_mode"] > teacher["in_mode"] + 0.2


def test_the_dmd2_recipe_carries_dmd2s_weights_and_flash_differs_only_where_flash_dmd_does():
    """recipes/dmd2.yaml: DMD2's generator GAN weight 5e-3, classifier loss weight 1e-2, one learning rate for both
    networks, 500 warm-up steps; recipes/flash_dmd.yaml: the same except the timestep split and the joint RL."""
    root = os.path.join(os.path.dirname(__file__), "..", "recipes")
    dmd2, flash = (yaml.safe_load(open(os.path.join(root, f))) for f in ("dmd2.yaml", "flash_dmd.yaml"))
    assert dmd2["distill"]["gan_weight"] == 5e-3 and dmd2["distill"]["disc_weight"] == 1e-2
    assert "guidance_lr" not in dmd2["optim"] and dmd2["optim"]["warmup"] == 500
    assert dmd2["distill"]["preset"] == "dmd2" and flash["distill"]["preset"] == "flash"
    for key in ("preset", "split", "gan_t_max"):  # Flash's split; DMD2's diffusion-GAN noise level
        dmd2["distill"].pop(key, None), flash["distill"].pop(key, None)
    for recipe in (dmd2, flash):
        recipe.pop("name"), recipe.pop("rl")
    assert flash == dmd2


@pytest.mark.parametrize("kind", ["exact", "mlp"])
def test_a_flow_matching_teacher_runs_the_same_loop(tmp_path, kind):
    """teacher.schedule flow: the exact teacher (the mixture's velocity) and one pretrained by v-MSE sample the
    modes by DDIM (the flow ODE's Euler steps), and the student, fake score and GAN train on the v path."""
    over = {"teacher__kind": kind, "teacher__schedule": "flow", "teacher__sample_steps": 50}
    if kind == "mlp":
        over.update(teacher__pretrain_steps=300, teacher__pretrain_batch=256)
    summary = train(tiny(tmp_path, kind, **over))
    assert summary["teacher"]["in_mode"] > (0.9 if kind == "exact" else 0.2)
    assert summary["teacher"]["frechet"] < 0.9
    rows = read_metrics(tmp_path / kind / "metrics.jsonl")
    assert all(math.isfinite(r[k]) for r in rows for k in ("dm/loss", "fake/loss") if k in r)
    assert any("dm/loss" in r for r in rows) and sum("fake/loss" in r for r in rows) == 4
    assert math.isfinite(summary["final"]["frechet"])
