"""LoRA students of `loop: dmd` on diffusers models (rlvr.images.diffusers_lora, `student.lora`): only the adapters
(and the GAN parts) get gradients and sit in the optimizers while the shared teacher weights stay put; checkpoints
hold the adapters alone and a resumed run equals an uninterrupted one; the merged export samples with diffusers'
own pipeline as rlvr's LoRA student does, and the teacher's pipeline with load_lora_weights of the diffusers-format
adapter file samples the same; bad lora values are one-line errors (2 ranks: tests/test_dmd_diffusers.py)."""

import math

import pytest
import torch
from diffusers import DDPMPipeline, LCMScheduler, StableDiffusion3Pipeline, StableDiffusionPipeline
from test_dmd_diffusers import SD, SD3, noises, tiny, weights

from rlvr.config import ConfigError
from rlvr.images.diffusers_lora import lora_copy, merged
from rlvr.images.diffusers_nets import Bound, Denoiser, Parts
from rlvr.images.diffusion import student_sample
from rlvr.images.dmd_diffusers import ImageSide
from rlvr.images.dmd_train import _setup, train, train_step, validate
from rlvr.metrics import read_metrics

LORA = {"r": 4, "lora_alpha": 8.0, "fake": True}  # alpha != r: the scale 2 must travel with the adapters
SD_LORA = {**SD, "student": {"backward_simulation": False, "lora": LORA},
           "optim": {"lr": 1e-2}}  # adapters start at B = 0: a LoRA lr moves them off the teacher in 2 updates


def test_only_adapters_and_gan_parts_train_and_the_shared_teacher_weights_do_not_move(tmp_path):
    cfg = tiny(tmp_path, "grads", SD_LORA, teacher__pretrain_steps=0)
    side = ImageSide(cfg, None)
    teacher = {k: v.clone() for k, v in side.parts.denoiser.state_dict().items()}
    nets, opts, _ = _setup(cfg, None, side)
    gen, fake = nets.unbound("generator"), nets.unbound("fake")
    q = "model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    assert gen.get_submodule(q).scaling == fake.get_submodule(q).scaling == {"default": 2.0}  # lora_alpha / r
    in_opt = {id(p) for group in opts["generator"].param_groups for p in group["params"]}
    assert in_opt == {id(p) for n, p in gen.named_parameters() if ".lora_" in n} and in_opt
    in_opt = {id(p) for group in opts["guidance"].param_groups for p in group["params"]}
    assert in_opt == {id(p) for n, p in fake.named_parameters() if ".lora_" in n} | {id(p) for p in
                                                                                     nets.disc.parameters()}
    for step in (1, 2, 3):  # generator turns at 1 and 3 (ratio 2); gradients stay until the next update
        train_step(nets, opts, cfg, side.data, side.teacher, side.reward_fn, step)
        for net in (gen, fake):
            graded = {n for n, p in net.named_parameters() if p.grad is not None}
            assert graded == {n for n, _ in net.named_parameters() if ".lora_" in n}
        assert all(p.grad is not None for p in nets.disc.parameters())
    assert all(torch.equal(v, teacher[k]) for k, v in side.parts.denoiser.state_dict().items())
    for net in (gen, fake):  # the base layers are the teacher's (shared), the adapters moved off B = 0
        base = {k.replace(".base_layer", ""): v for k, v in net.state_dict().items() if ".lora_" not in k}
        assert base.keys() == teacher.keys() and all(torch.equal(v, teacher[k]) for k, v in base.items())
        assert any(float(p.detach().abs().max()) > 0 for n, p in net.named_parameters() if ".lora_B" in n)


def test_checkpoints_hold_the_adapters_and_a_resumed_lora_run_equals_an_uninterrupted_one(tmp_path):
    summary = train(tiny(tmp_path, "full", SD_LORA))
    half = tiny(tmp_path, "half", SD_LORA)
    half.train.steps = 2
    train(half)
    train(tiny(tmp_path, "half", SD_LORA), resume=True)
    for net in ("generator", "fake", "disc"):
        a, b = weights(tmp_path / "full", 4, net), weights(tmp_path / "half", 4, net)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), net
    gen = weights(tmp_path / "full", 4)
    assert gen and all(".lora_" in k for k in gen)  # the adapters alone: not the teacher's weights
    n = summary["parameters"]
    assert n["generator"]["trainable"] == sum(v.numel() for v in gen.values()) < n["generator"]["total"] / 10
    assert n["fake"]["trainable"] == n["generator"]["trainable"] and n["disc"]["trainable"] == n["disc"]["total"]
    strip = [[{k: v for k, v in r.items() if "time/" not in k} for r in read_metrics(tmp_path / m / "metrics.jsonl")]
             for m in ("full", "half")]
    assert strip[0] == strip[1]
    with pytest.raises(ConfigError, match=r"^cannot resume .* student.lora"):
        train(tiny(tmp_path, "half", SD_LORA, student__lora={**LORA, "r": 2}), resume=True)


def _rlvr_student(cfg, run):
    """The trained LoRA generator as the run holds it: the teacher with the final checkpoint's adapters."""
    ckpt = run / "checkpoints" / f"step-{cfg.train.steps:06d}"
    side = ImageSide(cfg, ckpt)
    nets = side.networks()
    nets.load(ckpt / "model")
    return side.parts, nets.unbound("generator").eval()


def test_a_lora_sd_student_exports_merged_and_as_diffusers_lora_weights(tmp_path):
    cfg = tiny(tmp_path, "sd", SD_LORA)
    summary = train(cfg)
    run = tmp_path / "sd"
    assert summary["lora_weights"] == str(run / "student_lora" / "pytorch_lora_weights.safetensors")
    pipe = StableDiffusionPipeline.from_pretrained(summary["exported"])
    assert not any("lora" in k for k in pipe.unet.state_dict())  # merged, a plain UNet2DConditionModel
    parts, student = _rlvr_student(cfg, run)
    prompts = ["circle", "cross", "square"]
    (x, *rest), g = noises((3, 4, 8, 8), 4, seed=3)
    with torch.no_grad():
        want = parts.decode(student_sample(Bound(student, parts.embed(prompts)), [x, *rest], steps=4))
    sample = dict(num_inference_steps=4, guidance_scale=1.0, output_type="pt", height=16, width=16)
    got = pipe(prompts, generator=g, **sample).images
    torch.testing.assert_close(got, (want / 2 + 0.5).clamp(0, 1), atol=2e-4, rtol=0)
    teacher = StableDiffusionPipeline.from_pretrained(run / "teacher")
    teacher.scheduler = LCMScheduler.from_pretrained(run / "student" / "scheduler")
    before = teacher(prompts, generator=noises((3, 4, 8, 8), 4, seed=3)[1], **sample).images
    assert not torch.allclose(before, got, atol=1e-3)  # the adapters change the teacher's samples
    teacher.load_lora_weights(run / "student_lora")
    after = teacher(prompts, generator=noises((3, 4, 8, 8), 4, seed=3)[1], **sample).images
    torch.testing.assert_close(after, got, atol=2e-4, rtol=0)


def test_a_lora_sd3_student_exports_merged_and_as_diffusers_lora_weights(tmp_path):
    cfg = tiny(tmp_path, "sd3", SD3, student__lora=LORA, optim__lr=1e-2)
    summary = train(cfg)
    run = tmp_path / "sd3"
    load = dict(text_encoder_3=None, tokenizer_3=None)
    pipe = StableDiffusion3Pipeline.from_pretrained(summary["exported"], **load)
    parts, student = _rlvr_student(cfg, run)
    prompts, sigmas = ["square", "triangle"], [1.0, 0.75, 0.5, 0.25]
    (x, *_), _ = noises((2, 4, 8, 8), 4, seed=11)
    torch.manual_seed(5)  # StableDiffusion3Pipeline re-noises from the global RNG
    rest = [torch.randn(2, 4, 8, 8) for _ in range(3)]
    with torch.no_grad():
        want = parts.decode(student_sample(Bound(student, parts.embed(prompts)), [x, *rest], steps=4,
                                           schedule="flow"))

    def sample(p):
        torch.manual_seed(5)
        return p(prompts, num_inference_steps=4, sigmas=sigmas, guidance_scale=1.0, output_type="pt", height=16,
                 width=16, generator=noises((2, 4, 8, 8), 4, seed=11)[1]).images

    got = sample(pipe)
    torch.testing.assert_close(got, (want / 2 + 0.5).clamp(0, 1), atol=2e-4, rtol=0)
    teacher = StableDiffusion3Pipeline.from_pretrained(run / "teacher", **load)
    teacher.scheduler = pipe.scheduler
    teacher.load_lora_weights(run / "student_lora")
    torch.testing.assert_close(sample(teacher), got, atol=2e-4, rtol=0)


def test_a_lora_pixel_student_on_conv_layers_exports_a_merged_ddpm_pipeline(tmp_path):
    """Adapters on the resnets' convolutions (peft's Conv2d LoRA); DDPMPipeline has no LoRA loader, so the export is
    the merged student alone."""
    cfg = tiny(tmp_path, "px", student__lora={"r": 2, "target_modules": ["conv1", "conv2"]}, optim__lr=1e-2)
    summary = train(cfg)
    assert summary["lora_weights"] is None and "no LoRA loader" in summary["lora_why"]
    assert summary["parameters"]["fake"]["trainable"] == summary["parameters"]["fake"]["total"]  # fake: full copy
    pipe = DDPMPipeline.from_pretrained(summary["exported"])
    _, student = _rlvr_student(cfg, tmp_path / "px")
    (x, *rest), g = noises((3, 3, 16, 16), 4, seed=7)
    with torch.no_grad():
        want = student_sample(student, [x, *rest], steps=4)
    got = pipe(batch_size=3, num_inference_steps=4, generator=g, output_type="np").images
    torch.testing.assert_close(torch.from_numpy(got).permute(0, 3, 1, 2), (want / 2 + 0.5).clamp(0, 1), atol=2e-4,
                               rtol=0)
    assert all(math.isfinite(v) for r in read_metrics(tmp_path / "px" / "metrics.jsonl") for v in r.values())


def test_merging_folds_the_scaled_product_into_the_base_weight():
    parts = Parts.build(conditional=True, vae=True, seed=1).frozen()
    torch.manual_seed(0)
    net = lora_copy(parts.denoiser, r=2, lora_alpha=6.0, target_modules=["to_q"])
    for name, p in net.named_parameters():
        if ".lora_B" in name:
            p.data.normal_()
    out = merged(net)
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    layer, base = net.model.get_submodule(q), parts.denoiser.model.get_submodule(q).weight
    want = base + 3.0 * layer.lora_B["default"].weight @ layer.lora_A["default"].weight  # alpha / r = 3
    torch.testing.assert_close(out.model.get_submodule(q).weight, want)
    assert isinstance(out, Denoiser) and not any("lora" in k for k in out.state_dict())


@pytest.mark.parametrize("lora,field", [
    ({"r": -1}, "student.lora.r"),
    ({"r": 4, "lora_alpha": 0}, "student.lora.lora_alpha"),
    ({"r": 4, "target_modules": []}, "student.lora.target_modules"),
    ({"r": 4, "target_modules": [".to_q"]}, "student.lora.target_modules"),
    ({"fake": True}, "student.lora.fake"),
])
def test_bad_lora_values_are_one_line_errors(tmp_path, lora, field):
    with pytest.raises(ConfigError) as err:
        validate(tiny(tmp_path, "bad", SD, student__lora=lora))
    assert str(err.value).startswith(field) and "\n" not in str(err.value)


def test_lora_is_refused_where_it_has_no_meaning_and_unknown_layers_are_named(tmp_path):
    from rlvr.config import from_dict
    from rlvr.images.dmd_train import RunConfig

    mixture = from_dict(RunConfig, {"loop": "dmd", "student": {"lora": {"r": 4}}}, "")
    with pytest.raises(ConfigError, match=r"^student.lora.r: must be 0 unless teacher.kind is diffusers"):
        validate(mixture)
    with pytest.raises(ConfigError, match=r"^unknown config key 'student.lora.rank'"):
        tiny(tmp_path, "bad", student__lora={"rank": 4})
    with pytest.raises(ConfigError) as err:  # SD's feed-forward layer, absent from a UNet2DModel: before training
        train(tiny(tmp_path, "px", student__lora={"r": 4, "target_modules": ["to_q", "ff.net.2"]}))
    assert str(err.value).startswith("student.lora.target_modules: no nn.Linear / nn.Conv2d of UNet2DModel is named "
                                     "'ff.net.2'; its layers end in: ") and "conv1" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "px" / "metrics.jsonl").exists()
