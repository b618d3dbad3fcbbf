"""diffusers models behind rlvr's denoiser interface (rlvr.images.diffusers_nets): the schedules against diffusers'
own schedulers, the scheduler-config check, the timestep map, the mid-block features, a DMD2 step on a tiny
UNet2DModel, and loading a saved pipeline folder."""

import copy

import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel

from rlvr.algos.dmd import DiffusionGANHead, dm_loss, dm_targets
from rlvr.images.diffusers_nets import Denoiser, export_student, load_denoiser, schedule_of, tiny_unet2d_config
from rlvr.images.diffusion import SCHEDULES, add_noise, coefficients, generator_x0, student_sample


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny(schedule="linear", seed=0):
    torch.manual_seed(seed)
    return Denoiser(UNet2DModel(**tiny_unet2d_config()), schedule=schedule)


@pytest.mark.parametrize("name,kw", [("linear", {}), ("scaled_linear", {"beta_schedule": "scaled_linear",
                                                                          "beta_start": 0.00085, "beta_end": 0.012})])
def test_vp_schedules_are_diffusers_ddpm_schedules(name, kw):
    sched = DDPMScheduler(num_train_timesteps=1000, **kw)
    torch.testing.assert_close(sched.alphas_cumprod.double(), SCHEDULES[name], atol=1e-6, rtol=0)  # diffusers: f32
    x0, eps = torch.randn(5, 3, 4, 4, generator=gen(1)), torch.randn(5, 3, 4, 4, generator=gen(2))
    t = torch.tensor([0, 10, 500, 998, 999])
    torch.testing.assert_close(add_noise(x0, eps, t, name), sched.add_noise(x0, eps, t), atol=1e-5, rtol=0)
    assert schedule_of(dict(sched.config, _class_name="DDPMScheduler")) == name


def test_flow_is_diffusers_unshifted_flow_match_with_timestep_t_plus_one():
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    t = torch.arange(999, -1, -1)  # diffusers' sigmas run 1.0 .. 0.001 as rlvr's t runs 999 .. 0
    torch.testing.assert_close(sched.sigmas.double(), coefficients(t, "flow")[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(sched.timesteps, (t + 1).float())
    x0, eps = torch.randn(3, 3, 4, 4, generator=gen(3)), torch.randn(3, 3, 4, 4, generator=gen(4))
    for t_int in (0, 499, 999):
        want = sched.scale_noise(x0, torch.tensor([float(t_int + 1)]), eps)
        torch.testing.assert_close(add_noise(x0, eps, torch.tensor(t_int), "flow"), want, atol=1e-6, rtol=0)
    assert schedule_of(dict(sched.config, _class_name="FlowMatchEulerDiscreteScheduler")) == "flow"


@pytest.mark.parametrize("config,field", [
    ({"_class_name": "DDPMScheduler", "prediction_type": "v_prediction"}, "scheduler.prediction_type"),
    ({"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_end": 0.012}, "scheduler.beta_schedule"),
    ({"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2"}, "scheduler.beta_schedule"),
    ({"_class_name": "DDPMScheduler", "num_train_timesteps": 500}, "scheduler.num_train_timesteps"),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}, "scheduler.shift"),
    ({"_class_name": "EulerDiscreteScheduler"}, "scheduler._class_name"),
])
def test_a_schedule_rlvr_does_not_have_is_refused_naming_the_field(config, field):
    with pytest.raises(ValueError) as err:
        schedule_of(config)
    assert str(err.value).startswith(field) and "\n" not in str(err.value)
    assert schedule_of({"_class_name": "DDIMScheduler"}) == "linear"  # diffusers' defaults are DDPM's betas


def test_the_flow_denoiser_calls_the_model_at_t_plus_one():
    net = tiny("flow")
    x, t = torch.randn(2, 3, 16, 16, generator=gen(5)), torch.tensor([0, 999])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), net.model(x, t + 1).sample)
        assert not torch.allclose(net(x, t), net.model(x, t).sample)
        vp = Denoiser(net.model, schedule="linear")
        torch.testing.assert_close(vp(x, t), net.model(x, t).sample)


def test_features_pool_this_calls_mid_block_and_a_deep_copy_hooks_its_own():
    net = tiny()
    x, t = torch.randn(4, 3, 16, 16, generator=gen(6)), torch.tensor([3, 300, 600, 999])
    with torch.no_grad():
        feats = net.features(x, t)
        assert feats.shape == (4, net.width) == (4, 32)
        assert not torch.allclose(feats, net.features(x.flip(0), t))  # recomputed per call
        twin = copy.deepcopy(net)
        for p in twin.model.mid_block.parameters():
            p.add_(0.5)
        moved = twin.features(x, t)
        torch.testing.assert_close(net.features(x, t), feats)  # the original's hook still reads the original
        assert not torch.allclose(moved, feats)


def test_a_dmd2_step_on_a_diffusers_unet_moves_the_generator():
    teacher = tiny(seed=0).requires_grad_(False)
    generator, fake = (copy.deepcopy(teacher).requires_grad_(True) for _ in range(2))
    for p in fake.parameters():  # a fake score that differs from the teacher, so the DM gradient is not zero
        p.data.add_(0.01 * torch.randn(p.shape, generator=gen(7)))
    head = DiffusionGANHead(width=teacher.width)
    x0 = generator_x0(generator, torch.randn(2, 3, 16, 16, generator=gen(8)), 999)
    x0_real, x0_fake = dm_targets(x0, teacher, fake, generator=gen(9))
    loss, metrics = dm_loss(x0, x0_real, x0_fake)
    loss = loss + 0.01 * torch.nn.functional.softplus(-head.logits(fake, x0, generator=gen(10))).mean()
    loss.backward()
    norm = sum(float(p.grad.norm()) for p in generator.parameters() if p.grad is not None)
    assert torch.isfinite(loss) and norm > 0 and metrics["dm/nonfinite"] == 0
    assert all(p.grad is None for p in teacher.parameters())
    # DMD2's classifier loss trains the fake score's lower layers through the features
    head.logits(fake, x0.detach(), generator=gen(12)).sum().backward()
    assert float(fake.model.conv_in.weight.grad.norm()) > 0 and float(head.head[0].weight.grad.norm()) > 0


def test_load_denoiser_reads_a_saved_pipeline_and_refuses_a_folder_without_its_schedule(tmp_path):
    net = tiny("scaled_linear")
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    DDPMPipeline(unet=net.model, scheduler=sched).save_pretrained(str(tmp_path / "pipe"))
    back = load_denoiser(tmp_path / "pipe")
    x, t = torch.randn(2, 3, 16, 16, generator=gen(11)), torch.tensor([5, 900])
    assert back.schedule == "scaled_linear"
    with torch.no_grad():
        torch.testing.assert_close(back(x, t), net(x, t))
    net.save(tmp_path / "bare")
    with pytest.raises(ValueError, match="no scheduler/scheduler_config.json"):
        load_denoiser(tmp_path / "bare")
    DDPMScheduler(prediction_type="v_prediction").save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(ValueError, match="scheduler_config.json.prediction_type"):
        load_denoiser(tmp_path / "bare")


@pytest.mark.parametrize("steps", [4, 1])
def test_an_exported_student_samples_in_k_steps_with_diffusers_own_pipeline(tmp_path, steps):
    """DDPMPipeline.from_pretrained on the exported folder, K inference steps, a seeded generator: the same images as
    rlvr's student_sample with the noises that generator gives in the pipeline's order (the start, then one per
    re-noising); the scheduler's timesteps are DMD2's tau."""
    student = tiny("linear", seed=3)
    for p in student.model.conv_out.parameters():  # diffusers zero-inits nothing here, but make the output matter
        p.data.mul_(3.0)
    export_student(student, tmp_path / "student", steps=steps)
    pipe = DDPMPipeline.from_pretrained(str(tmp_path / "student"))
    assert type(pipe.scheduler).__name__ == "LCMScheduler"
    images = pipe(batch_size=2, num_inference_steps=steps, generator=gen(13), output_type="np").images  # (2, H, W, 3)
    assert pipe.scheduler.timesteps.tolist() == ([999, 749, 499, 249] if steps == 4 else [999])
    g = gen(13)
    noises = [torch.randn(2, 3, 16, 16, generator=g) for _ in range(steps)]
    with torch.no_grad():
        want = (student_sample(student, noises, steps=steps) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(torch.from_numpy(images), want, atol=2e-4, rtol=0)
    assert load_denoiser(tmp_path / "student").schedule == "linear"
    with pytest.raises(ValueError, match="^export_student: LCMScheduler's K-step schedule starts at 999"):
        export_student(student, tmp_path / "other", steps=1, start=399)


@pytest.mark.parametrize("schedule", ["scaled_linear", "flow"])
def test_the_networks_may_live_on_another_device_than_the_random_streams(schedule):
    """The random streams and the timesteps stay on the CPU (the same draws whatever the device); the noise, the
    schedule's coefficients and the timesteps reach the networks on their own device. Checked on the meta device
    (shapes only), where a CPU tensor meeting a meta one raises as it would meeting a CUDA one."""
    from diffusers import UNet2DConditionModel

    from rlvr.images.diffusers_nets import Bound, tiny_conditional_config
    from rlvr.images.diffusion import ScoreMLP, backward_simulation

    g = torch.Generator().manual_seed(0)
    net = Bound(Denoiser(UNet2DConditionModel(**tiny_conditional_config()), schedule=schedule).to("meta"),
                torch.zeros(2, 16, 32, device="meta"))
    noises = [torch.randn(2, 4, 8, 8, generator=g).to("meta") for _ in range(4)]
    x0 = student_sample(net, noises, steps=4, schedule=schedule)
    x_t, _ = backward_simulation(net, noises, steps=4, k=2, schedule=schedule)
    real, fake = dm_targets(x0, net, net, generator=g, schedule=schedule)
    logits = DiffusionGANHead(width=net.net.width).to("meta").logits(net, x0, generator=g, schedule=schedule)
    assert {t.device.type for t in (x0, x_t, real, fake, logits)} == {"meta"}
    assert generator_x0(ScoreMLP().to("meta"), torch.zeros(3, 2, device="meta"), 999).device.type == "meta"
