"""The VA-π run loop (rlvr.images.va_pi_train) through `rlvr train` with `loop: va_pi`: a tiny run writes its files
and evaluations, a run stopped at step 2 and resumed to 4 equals an uninterrupted one (weights, optimizer, metrics),
the CE baseline runs on the same batches, bad values are one-line errors, and 2 torchrun ranks train as one process."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from ranks import assert_rows_close, max_difference, rlvr_train, without_timing
from safetensors.torch import load_file

from rlvr.cli import main
from rlvr.config import ConfigError, from_dict, raw_config
from rlvr.images.va_pi_train import RunConfig, train, validate
from rlvr.metrics import read_metrics

TINY = {"loop": "va_pi", "name": "tiny", "data": {"name": "shapes", "size": 8, "train_size": 64, "eval_size": 16},
        "vq": {"steps": 20, "codes": 16, "hidden": 16, "dim": 4},
        "policy": {"hidden": 32, "layers": 1, "heads": 2, "pretrain_steps": 5},
        "algo": {"group": 4, "token_noise": 0.5}, "optim": {"lr": 1e-3},
        "train": {"steps": 4, "batch": 4, "eval_every": 2, "samples_per_class": 2, "classifier_steps": 10,
                  "save_every": 1}}


def config(tmp_path, **over) -> RunConfig:
    return from_dict(RunConfig, raw_config({**TINY, "output_dir": str(tmp_path)}, over), "")


def weights(folder: Path) -> dict:
    return load_file(next(folder.glob("*.safetensors")))


def test_a_tiny_run_writes_its_files_and_evaluations(tmp_path):
    summary = train(config(tmp_path))
    run = tmp_path / "tiny"
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert all("eval/fid" in rows[i] for i in (0, 2, 4)) and "eval/fid" not in rows[1]
    assert all(r["va_pi/ratio_dev"] == 0.0 for r in rows[1:])  # one same-mode update per batch: on-policy
    for name in ("vq/vq.safetensors", "init/config.json", "final/config.json", "classifier.pt",
                 "samples/step-000004.png", "checkpoints/latest"):
        assert (run / name).exists(), name
    assert set(summary["eval_after"]) >= {"eval/recon_mse", "eval/class_accuracy", "eval/recall"}
    # the reported accuracy is the saved classifier's (10 steps on 51 images of 8 px: near chance, not asserted)
    assert summary["classifier_accuracy"] == torch.load(run / "classifier.pt", weights_only=True)["accuracy"]
    # the starting model was pretrained: its held-out CE is below a uniform guess over the 16 codes
    assert summary["eval_before"]["eval/ce"] < torch.log(torch.tensor(16.0))


def test_resume_equals_an_uninterrupted_run(tmp_path):
    train(config(tmp_path / "a"))
    train(config(tmp_path / "b", **{"train.steps": 2}))
    train(config(tmp_path / "b"), resume=True)
    a, b = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"
    assert without_timing(read_metrics(a / "metrics.jsonl")) == without_timing(read_metrics(b / "metrics.jsonl"))
    wa, wb = weights(a / "final"), weights(b / "final")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa = torch.load(a / "checkpoints" / "step-000004" / "trainer.pt", weights_only=True)["optimizer"]["state"]
    sb = torch.load(b / "checkpoints" / "step-000004" / "trainer.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    again = train(config(tmp_path / "b"), resume=True)  # nothing left to run: the final numbers are reported
    assert again["eval_after"]["eval/recon_mse"] == read_metrics(b / "metrics.jsonl")[-1]["eval/recon_mse"]


def test_the_ce_baseline_shares_the_starting_point_and_batches(tmp_path):
    first = train(config(tmp_path, **{"train.steps": 1}))
    run = Path(first["run_dir"])
    ce = train(config(tmp_path, name="ce", **{"algo.mode": "ce", "train.steps": 1, "vq.path": str(run / "vq"),
                                              "policy.path": str(run / "init")}))
    assert ce["eval_before"] == first["eval_before"]  # the same tokenizer, starting model and evaluation draws
    rows = read_metrics(tmp_path / "ce" / "metrics.jsonl")
    assert "va_pi/ce" in rows[1] and "reward" not in rows[1]


@pytest.mark.parametrize("key, value, message", [
    ("data.name", "cifar", "data.name must be one of"),
    ("algo.group", 1, "algo.group must be >= 2"),
    ("algo.token_noise", 1.5, "algo.token_noise must be in [0, 1]"),
    ("data.size", 10, "data.size must be a multiple of 4"),
    ("vq.path", "/nonexistent/vq", "vq.path: '/nonexistent/vq' is not a folder"),
    ("algo.w_lpips", 1.0, "algo.w_lpips needs algo.lpips"),
    ("algo.lpips", "nofile.py:lpips", "algo.lpips: python reward: file 'nofile.py' not found"),
])
def test_bad_values_are_one_line_errors(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(config(tmp_path, **{key: value}))
    assert not (tmp_path / "tiny").exists()  # refused before anything is written


def test_the_cli_runs_the_loop_and_names_an_unknown_loop(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path), "train": {**TINY["train"], "steps": 1}}))
    assert main(["train", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1
    assert main(["train", str(path), "loop=gan"]) == 2
    assert "loop: unknown loop 'gan'" in capsys.readouterr().err
    assert main(["train", str(path), "algo.grup=4"]) == 2
    assert "did you mean 'algo.group'" in capsys.readouterr().err


def test_two_ranks_train_as_one_process(tmp_path):
    """`torchrun --nproc_per_node 2`: each rank trains half of every batch (groups stay on one rank), the draws are
    one process's; the metrics (all but timings) and the final weights equal a one-process run's within 1e-4, for
    VA-π (also with two updates per batch and train-mode dropout) and for the CE baseline."""
    for mode, extra in (("va_pi", {}), ("ce", {}), ("va_pi", {"updates_per_batch": 2, "train_mode_dropout": 0.1})):
        runs, label = {}, mode + ("_dropout" if extra else "")
        for ranks in (1, 2):
            path = tmp_path / f"{label}{ranks}.yaml"
            path.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / f"{label}{ranks}"),
                                            "algo": {**TINY["algo"], "mode": mode, **extra},
                                            "train": {**TINY["train"], "steps": 3, "eval_every": 0}}))
            out = rlvr_train(path, ranks=ranks)
            assert out.stdout.count('"run_dir"') == 1  # one summary: rank 0's
            runs[ranks] = tmp_path / f"{label}{ranks}" / "tiny"
        one, two = (read_metrics(runs[r] / "metrics.jsonl") for r in (1, 2))
        assert_rows_close(one, two, steps=[0, 1, 2, 3])
        wa, wb = weights(runs[1] / "final"), weights(runs[2] / "final")
        assert max_difference(wa, wb) <= 1e-4
        assert any(not torch.equal(wa[k], weights(runs[1] / "init")[k]) for k in wa)  # the weights moved
        if extra:  # the dropout masks are the whole batch's draws, so the ranks see one process's
            assert all(r["va_pi/ratio_dev"] > 0 for r in one[1:])


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"train.batch \(4\) must be divisible by the number of data-parallel "
                                          r"ranks \(3\)"):
        validate(config(tmp_path))


def test_plot_draws_an_image_run_with_its_latest_grid(tmp_path):
    from rlvr.plot import plot_run

    train(config(tmp_path, **{"train.steps": 2}))
    out = plot_run(tmp_path / "tiny")
    assert out.is_file() and out.stat().st_size > 10_000


def test_a_user_lpips_function_enters_the_reward_and_the_evaluation(tmp_path):
    # a stand-in perceptual distance (mean absolute difference of horizontal gradients); rlvr ships no LPIPS weights
    fn = tmp_path / "perceptual.py"
    fn.write_text("def grad_l1(a, b):\n    d = lambda x: x[..., 1:] - x[..., :-1]\n"
                  "    return (d(a) - d(b)).abs().flatten(1).mean(1)\n")
    base = train(config(tmp_path / "a", **{"train.steps": 1}))
    with_lpips = train(config(tmp_path / "b", **{"train.steps": 1, "algo.w_lpips": 1.0,
                                                 "algo.lpips": f"{fn}:grad_l1"}))
    rows_a, rows_b = (read_metrics(tmp_path / x / "tiny" / "metrics.jsonl") for x in "ab")
    assert rows_b[1]["reward"] < rows_a[1]["reward"]  # the same samples, minus a positive perceptual distance
    assert "eval/lpips" in with_lpips["eval_after"] and "eval/lpips" not in base["eval_after"]


def test_a_run_trains_from_a_diffusers_vqmodel_folder(tmp_path):
    """vq.path at a diffusers VQModel folder (rlvr.images.tokenizers): the run's tokenizer is that model (its held-out
    reconstruction error is the adapter's), saved to <run>/vq as a VQModel folder again; the policy trains and a
    resumed run equals an uninterrupted one."""
    from diffusers import VQModel

    from rlvr.images.tokenizers import load_tokenizer, tiny_vqmodel_config
    from rlvr.images.va_pi_train import image_data

    torch.manual_seed(0)
    VQModel(**tiny_vqmodel_config()).save_pretrained(tmp_path / "vqmodel")
    over = {"vq.path": str(tmp_path / "vqmodel"), "train.steps": 2, "train.eval_every": 1}
    train(config(tmp_path / "a", **over))
    train(config(tmp_path / "b", **{**over, "train.steps": 1}))
    train(config(tmp_path / "b", **over), resume=True)
    a, b = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"
    assert json.loads((a / "vq" / "config.json").read_text())["_class_name"] == "VQModel"
    vq = load_tokenizer(tmp_path / "vqmodel", size=8)
    held = image_data(config(tmp_path))[2]
    rows = read_metrics(a / "metrics.jsonl")
    assert abs(rows[0]["eval/vq_mse"] - float((vq.decode(vq.encode(held)) - held).square().mean())) < 1e-6
    assert without_timing(rows) == without_timing(read_metrics(b / "metrics.jsonl"))
    wa, wb, w0 = weights(a / "final"), weights(b / "final"), weights(a / "init")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], w0[k]) for k in wa)  # the policy trained on the VQModel's codes


def test_a_tokenizer_folder_that_does_not_fit_is_refused_before_loading(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ConfigError, match="vq.path: .* is a diffusers 'UNet2DModel', not a VQModel"):
        validate(config(tmp_path, **{"vq.path": str(tmp_path / "unet")}))
    (tmp_path / "vq16").mkdir()
    (tmp_path / "vq16" / "config.json").write_text(json.dumps({"_class_name": "VQModel",
                                                                "block_out_channels": [8, 8, 8, 8, 8]}))
    with pytest.raises(ConfigError, match=r"data.size \(8\) must be a multiple of the diffusers tokenizer's "
                                          r"downsampling factor 16"):
        validate(config(tmp_path, **{"vq.path": str(tmp_path / "vq16")}))


def test_a_run_trains_from_a_llamagen_format_folder(tmp_path):
    """vq.path and policy.path at one tiny LlamaGen-format folder (rlvr.images.llamagen_gpt.write_tiny_folder): the
    run's tokenizer and starting generator are that folder's (written back in LlamaGen's layout), the generator
    trains, and a resumed run equals an uninterrupted one."""
    from rlvr.images.llamagen_gpt import load_llamagen_policy, write_tiny_folder

    folder = write_tiny_folder(tmp_path / "llamagen", size=8, classes=4, codes=16)
    over = {"vq.path": str(folder), "policy.path": str(folder), "train.steps": 2, "train.eval_every": 1}
    train(config(tmp_path / "a", **over))
    train(config(tmp_path / "b", **{**over, "train.steps": 1}))
    train(config(tmp_path / "b", **over), resume=True)
    a, b = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"
    start = torch.load(folder / "c2i_tiny_8.pt", weights_only=True)["model"]
    init = torch.load(a / "init" / "gpt.pt", weights_only=True)["model"]
    assert all(torch.equal(init[k], start[k]) for k in start)  # no pretraining: the folder's generator
    assert torch.equal(torch.load(a / "vq" / "vq.pt", weights_only=True)["model"]["quantize.embedding.weight"],
                       torch.load(folder / "vq_ds2_c2i.pt", weights_only=True)["model"]["quantize.embedding.weight"])
    assert without_timing(read_metrics(a / "metrics.jsonl")) == without_timing(read_metrics(b / "metrics.jsonl"))
    fa, fb = (load_llamagen_policy(x / "final").gpt.state_dict() for x in (a, b))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert any(not torch.equal(fa[k], start[k]) for k in start)  # the generator trained


@pytest.mark.parametrize("over, message", [
    ({"algo.train_mode_dropout": 0.1}, "algo.train_mode_dropout is not supported with a LlamaGen policy"),
    ({"vq.path": None, "vq.codes": 32}, "policy.path: the LlamaGen generator has 16 codes, the tokenizer 32"),
    ({"vq.path": None, "data.size": 32, "vq.codes": 16},
     r"policy.path: the LlamaGen generator reads 16 codes per image \(its 2-D RoPE grid\), the tokenizer gives 64"),
])
def test_a_llamagen_generator_that_does_not_fit_is_refused_before_loading(tmp_path, over, message):
    from rlvr.images.llamagen_gpt import write_tiny_folder

    folder = write_tiny_folder(tmp_path / "llamagen", size=8, classes=4, codes=16)
    (folder / "c2i_tiny_8.pt").unlink()  # refused from the config alone: the weights are never read
    with pytest.raises(ConfigError, match=message):
        validate(config(tmp_path, **{"vq.path": str(folder), "policy.path": str(folder), **over}))


@pytest.mark.parametrize("fmt", ["diffusers", "llamagen"])
def test_two_ranks_train_as_one_process_from_a_real_format_folder(tmp_path, fmt):
    """As test_two_ranks_train_as_one_process, with the tokenizer a diffusers VQModel folder, or the tokenizer and
    the generator a LlamaGen-format folder: the other rank reads them back from the run folder in their format."""
    from diffusers import VQModel

    from rlvr.images.llamagen_gpt import write_tiny_folder
    from rlvr.images.tokenizers import tiny_vqmodel_config

    torch.manual_seed(0)
    if fmt == "diffusers":
        VQModel(**tiny_vqmodel_config()).save_pretrained(tmp_path / "src")
        paths = {"vq": {**TINY["vq"], "path": str(tmp_path / "src")}}
    else:
        write_tiny_folder(tmp_path / "src")
        paths = {"vq": {**TINY["vq"], "path": str(tmp_path / "src")},
                 "policy": {**TINY["policy"], "path": str(tmp_path / "src")}}
    raw = {**TINY, **paths, "train": {**TINY["train"], "steps": 2, "eval_every": 0}}
    train(from_dict(RunConfig, raw_config({**raw, "output_dir": str(tmp_path / "r1")}, {}), ""))  # one process
    path = tmp_path / "r2.yaml"
    path.write_text(yaml.safe_dump({**raw, "output_dir": str(tmp_path / "r2")}))
    rlvr_train(path, ranks=2)
    runs = {r: tmp_path / f"r{r}" / "tiny" for r in (1, 2)}
    assert_rows_close(*(read_metrics(runs[r] / "metrics.jsonl") for r in (1, 2)), steps=[0, 1, 2])
    if fmt == "diffusers":
        wa, wb, w0 = weights(runs[1] / "final"), weights(runs[2] / "final"), weights(runs[1] / "init")
    else:
        wa, wb, w0 = (torch.load(runs[r] / d / "gpt.pt", weights_only=True)["model"]
                      for r, d in ((1, "final"), (2, "final"), (1, "init")))
    assert max_difference(wa, wb) <= 1e-4
    assert any(not torch.equal(wa[k], w0[k]) for k in wa)  # the weights moved

