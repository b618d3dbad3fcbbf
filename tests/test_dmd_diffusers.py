"""`loop: dmd` on diffusers models (rlvr.images.dmd_diffusers): tiny UNet2DModel / UNet2DConditionModel + CLIP text
encoder + AutoencoderKL pipelines built from configs run DMD2 and Flash-DMD; the exported student reloads with
diffusers' own pipeline class and samples what rlvr's sampler does; a run from a pipeline folder; the guided teacher;
rewards on decoded images; resume; 2 torchrun ranks train as one process; bad values are one-line errors."""

import math

import pytest
import torch
import yaml
from diffusers import (
    DDPMPipeline,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from ranks import assert_rows_close, max_difference, rlvr_train
from safetensors.torch import load_file

from rlvr.config import ConfigError, from_dict
from rlvr.images.diffusers_nets import Bound, Denoiser, Parts
from rlvr.images.diffusion import student_sample
from rlvr.images.dmd_diffusers import Prompts, Teacher
from rlvr.images.dmd_train import RunConfig, train, validate
from rlvr.metrics import read_metrics

TINY = {"loop": "dmd", "data": {"kind": "shapes", "size": 16, "images": 64, "held_images": 32},
        "teacher": {"kind": "diffusers", "pretrain_steps": 3, "pretrain_batch": 8, "sample_steps": 3},
        "distill": {"preset": "dmd2", "gan_weight": 0.5, "ratio": 2},
        "train": {"steps": 4, "batch": 4, "eval_every": 2, "eval_size": 8, "save_every": 2, "keep": 3}}
SD = {"diffusers": {"conditioning": "text", "vae": True, "guidance_scale": 2.0},
      "distill": {"preset": "flash", "gan_weight": 0.5, "ratio": 2, "split": 500},
      "student": {"backward_simulation": False}}  # per-sample t_k: the real rows' labels are the prompts


def raw(tmp_path, name, *variants, **over):
    out = {"name": name, "output_dir": str(tmp_path), **yaml.safe_load(yaml.safe_dump(TINY))}
    for variant in variants:
        for key, value in variant.items():
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    for key, value in over.items():
        section, field = key.split("__")
        out.setdefault(section, {})[field] = value
    return out


def tiny(tmp_path, name, *variants, **over):
    return from_dict(RunConfig, raw(tmp_path, name, *variants, **over), "")


def weights(run, step, net="generator"):
    return load_file(run / "checkpoints" / f"step-{step:06d}" / "model" / f"{net}.safetensors")


def noises(shape, k, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(k)], torch.Generator().manual_seed(seed)


def test_a_pixel_dmd2_run_exports_a_ddpm_pipeline_that_samples_the_trained_student(tmp_path):
    summary = train(tiny(tmp_path, "px"))
    run = tmp_path / "px"
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert {"gen/loss", "dm/grad_norm", "gan/gen_loss", "gan/disc_loss", "fake/loss"} <= set(rows[1])
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert (run / "teacher" / "model_index.json").is_file() and (run / "samples.png").is_file()
    assert summary["teacher"]["real"]["frechet"] < summary["teacher"]["frechet"]  # random-ish teacher vs real images
    pipe = DDPMPipeline.from_pretrained(summary["exported"])
    final, teacher = weights(run, 4), UNet2DModel.from_pretrained(run / "teacher" / "unet").state_dict()
    exported = pipe.unet.state_dict()
    assert all(torch.equal(exported[k], final["model." + k]) for k in exported)  # the trained generator, ...
    assert any(not torch.equal(exported[k], teacher[k]) for k in exported)      # ... not the teacher
    (x, *rest), g = noises((3, 3, 16, 16), 4, seed=7)
    want = student_sample(_denoiser(pipe.unet), [x, *rest], steps=4)
    got = pipe(batch_size=3, num_inference_steps=4, generator=g, output_type="np").images
    torch.testing.assert_close(torch.from_numpy(got).permute(0, 3, 1, 2), ((want / 2 + 0.5).clamp(0, 1)), atol=2e-4,
                               rtol=0)


def _denoiser(unet):
    return Denoiser(unet.eval(), schedule="linear")


def test_a_text_conditioned_latent_flash_run_exports_a_stable_diffusion_pipeline(tmp_path):
    summary = train(tiny(tmp_path, "sd", SD))
    rows = read_metrics(tmp_path / "sd" / "metrics.jsonl")
    assert "dm/grad_norm" in rows[1] | rows[3] and "gan/gen_loss" in rows[1] | rows[3]  # both halves of the split
    pipe = StableDiffusionPipeline.from_pretrained(summary["exported"])
    assert isinstance(pipe.unet, UNet2DConditionModel) and pipe.vae is not None
    prompts = ["circle", "cross", "square"]
    (x, *rest), g = noises((3, 4, 8, 8), 4, seed=3)
    parts = Parts(_denoiser(pipe.unet), vae=pipe.vae, tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder)
    with torch.no_grad():
        want = parts.decode(student_sample(Bound(parts.denoiser, parts.embed(prompts)), [x, *rest], steps=4))
        other = parts.decode(student_sample(Bound(parts.denoiser, parts.embed(prompts[::-1])), [x, *rest], steps=4))
    got = pipe(prompts, num_inference_steps=4, guidance_scale=1.0, generator=g, output_type="pt", height=16,
               width=16).images
    torch.testing.assert_close(got, (want / 2 + 0.5).clamp(0, 1), atol=2e-4, rtol=0)
    assert not torch.allclose(want, other, atol=1e-3)  # the prompt reaches the student


SD3 = {"diffusers": {"conditioning": "text", "vae": True, "arch": "sd3", "guidance_scale": 2.0},
       "teacher": {"schedule": "flow"}}


def test_an_sd3_flow_transformer_run_exports_a_stable_diffusion_3_pipeline(tmp_path):
    """A velocity-predicting SD3Transformer2DModel teacher distils (DMD2, GAN head on its middle joint block); the
    student reloads as a StableDiffusion3Pipeline whose stochastic flow scheduler at the saved sigmas samples what
    rlvr's student sampler does."""
    import json

    summary = train(tiny(tmp_path, "sd3", SD3))
    rows = read_metrics(tmp_path / "sd3" / "metrics.jsonl")
    assert {"dm/grad_norm", "gan/gen_loss", "gan/disc_loss"} <= set(rows[1]) | set(rows[3])
    assert all(math.isfinite(v) for r in rows for v in r.values())
    info = json.loads((tmp_path / "sd3" / "student" / "rlvr_student.json").read_text())
    assert info["sigmas"] == [1.0, 0.75, 0.5, 0.25]
    pipe = StableDiffusion3Pipeline.from_pretrained(summary["exported"], text_encoder_3=None, tokenizer_3=None)
    assert isinstance(pipe.transformer, SD3Transformer2DModel) and pipe.scheduler.config.stochastic_sampling
    final = weights(tmp_path / "sd3", 4)
    assert all(torch.equal(v, final["model." + k]) for k, v in pipe.transformer.state_dict().items())
    prompts = ["square", "triangle"]
    (x, *_), g = noises((2, 4, 8, 8), 4, seed=11)
    torch.manual_seed(5)  # StableDiffusion3Pipeline draws the re-noising from the global RNG, not `generator`
    rest = [torch.randn(2, 4, 8, 8) for _ in range(3)]
    parts = Parts(Denoiser(pipe.transformer.eval(), schedule="flow"), vae=pipe.vae, tokenizer=pipe.tokenizer,
                  text_encoder=pipe.text_encoder, tokenizer_2=pipe.tokenizer_2, text_encoder_2=pipe.text_encoder_2)
    with torch.no_grad():
        want = parts.decode(student_sample(Bound(parts.denoiser, parts.embed(prompts)), [x, *rest], steps=4,
                                           schedule="flow"))
    torch.manual_seed(5)
    got = pipe(prompts, num_inference_steps=4, sigmas=info["sigmas"], guidance_scale=1.0, generator=g,
               output_type="pt", height=16, width=16).images
    torch.testing.assert_close(got, (want / 2 + 0.5).clamp(0, 1), atol=2e-4, rtol=0)


def test_the_teacher_is_classifier_free_guided_with_the_empty_prompt():
    parts = Parts.build(conditional=True, vae=True, seed=1).frozen()
    prompts = Prompts(parts)
    cond = prompts(torch.tensor([0, 2]))
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([100, 700])
    with torch.no_grad():
        c, u = parts.denoiser(x, t, cond), parts.denoiser(x, t, prompts.uncond.expand_as(cond))
        torch.testing.assert_close(Teacher(parts, prompts, 3.0).bind(cond)(x, t), u + 3.0 * (c - u), atol=1e-5,
                                   rtol=0)
        torch.testing.assert_close(Teacher(parts, prompts, 1.0).bind(cond)(x, t), c)
    assert not torch.allclose(c, u, atol=1e-4)  # the guidance has something to scale


def test_a_run_from_a_pipeline_folder_uses_it_as_the_teacher(tmp_path):
    folder = tmp_path / "pipe"
    Parts.build(conditional=True, vae=True, seed=5).save(folder)
    cfg = tiny(tmp_path, "from", SD, diffusers__path=str(folder), teacher__pretrain_steps=0)
    cfg.train.steps, cfg.train.save_every = 1, 1
    train(cfg)
    run = tmp_path / "from"
    assert not (run / "teacher").exists()  # nothing copied: the folder is the teacher
    teacher = UNet2DConditionModel.from_pretrained(folder / "unet").state_dict()
    fake = weights(run, 1, "fake")  # the fake score started from the folder's U-Net and took one small step
    assert max(float((fake["model." + k] - v).abs().max()) for k, v in teacher.items()) < 1e-2
    with pytest.raises(ConfigError, match=r"^teacher.schedule: must be 'linear'"):
        validate(tiny(tmp_path, "bad", SD, diffusers__path=str(folder), teacher__schedule="scaled_linear"))
    with pytest.raises(ConfigError, match=r"^diffusers.path"):
        validate(tiny(tmp_path, "bad", diffusers__path=str(tmp_path / "missing")))


def test_rewards_take_decoded_images(tmp_path):
    path = tmp_path / "bright.py"
    path.write_text("def bright(images):\n"
                    "    assert images.shape[1:] == (3, 16, 16), images.shape  # pixels, not latents\n"
                    "    return images.mean((1, 2, 3))\n")
    summary = train(tiny(tmp_path, "rw", SD, rl__reward=f"{path}:bright", rl__lambda_R=1.0))
    rows = read_metrics(tmp_path / "rw" / "metrics.jsonl")
    assert "rl/reward" in rows[1] and "eval/reward" in rows[2]
    assert abs(summary["final"]["reward"] - summary["final"]["pixel_mean"]) < 1e-5
    with pytest.raises(ConfigError, match=r"^rl.reward"):
        validate(tiny(tmp_path, "bad", rl__reward="distance", rl__lambda_R=1.0))


def test_the_gan_reads_real_images_with_their_own_prompts(tmp_path):
    """guidance_loss: the discriminator scores the generator's x0 under the generator's prompts and each real image
    under its own label's prompt (replayed from the same stream)."""
    from rlvr.algos.dmd import noised
    from rlvr.images.dmd_diffusers import ImageSide
    from rlvr.images.dmd_train import guidance_loss
    from rlvr.seeding import generator

    cfg = tiny(tmp_path, "gan", SD_BACKSIM, teacher__pretrain_steps=0)
    side = ImageSide(cfg, None)
    nets = side.networks()
    seen = []
    logits = nets.disc.logits
    nets.disc.logits = lambda fake, x, **kw: seen.append(fake.cond) or logits(fake, x, **kw)
    gen_labels = torch.tensor([1, 1, 1, 1])
    x0 = torch.randn(4, *side.data.shape, generator=torch.Generator().manual_seed(0))
    guidance_loss(nets.bound(side.prompts(gen_labels)), cfg, side.data, x0, step=3)
    g = generator(cfg.seed, "guidance", 3)
    noised(x0, 0, 999, generator=g)  # the fake score's draw comes first
    _, real_labels = side.data.sample(4, generator=g)
    assert len(seen) == 2 and not torch.equal(real_labels, gen_labels)
    torch.testing.assert_close(seen[0], side.prompts(gen_labels))
    torch.testing.assert_close(seen[1], side.prompts(real_labels))


def test_an_image_run_resumed_equals_an_uninterrupted_one(tmp_path):
    train(tiny(tmp_path, "full", SD))
    half = tiny(tmp_path, "half", SD)
    half.train.steps = 2
    train(half)
    train(tiny(tmp_path, "half", SD), resume=True)
    for net in ("generator", "fake", "disc"):
        a, b = weights(tmp_path / "full", 4, net), weights(tmp_path / "half", 4, net)
        assert all(torch.equal(a[k], b[k]) for k in a), net
    strip = [[{k: v for k, v in r.items() if "time/" not in k} for r in read_metrics(tmp_path / n / "metrics.jsonl")]
             for n in ("full", "half")]
    assert strip[0] == strip[1]


@pytest.mark.parametrize("key,value,field", [
    ("data__kind", "mixture", "data.kind"),
    ("data__size", 10, "data.size"),
    ("diffusers__conditioning", "image", "diffusers.conditioning"),
    ("diffusers__guidance_scale", 0.5, "diffusers.guidance_scale"),
    ("student__init", "fresh", "student.init"),
    ("diffusers__arch", "sd3", "diffusers.arch"),
])
def test_bad_image_values_are_one_line_errors(tmp_path, key, value, field):
    with pytest.raises(ConfigError) as err:
        validate(tiny(tmp_path, "bad", **{key: value}))
    assert str(err.value).startswith(field) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^diffusers.vae"):
        validate(tiny(tmp_path, "bad", diffusers__conditioning="text"))


SD_BACKSIM = {**SD, "distill": {"preset": "dmd2", "gan_weight": 0.5, "ratio": 2}, "student": {"backward_simulation":
                                                                                               True}}


SD_LORA = {**SD, "student": {"backward_simulation": False, "lora": {"r": 4, "fake": True}}}  # tests/test_diffusers_lora


@pytest.mark.parametrize("variant", [{}, SD, SD_BACKSIM, SD3, SD_LORA],
                         ids=["pixels-dmd2", "sd-flash", "sd-dmd2-backsim", "sd3-dmd2-backsim", "sd-flash-lora"])
def test_two_ranks_train_an_image_run_as_one_process(tmp_path, variant):
    runs = {}
    for ranks in (1, 2):
        recipe = tmp_path / f"tiny{ranks}.yaml"
        recipe.write_text(yaml.safe_dump(raw(tmp_path, f"r{ranks}", variant)))
        rlvr_train(recipe, ranks=ranks, cwd=tmp_path)
        runs[ranks] = tmp_path / f"r{ranks}"
    assert_rows_close(*(read_metrics(runs[n] / "metrics.jsonl") for n in (1, 2)), steps=[0, 1, 2, 3, 4])
    for net in ("generator", "fake", "disc"):
        assert max_difference(weights(runs[1], 4, net), weights(runs[2], 4, net)) <= 1e-4, net
