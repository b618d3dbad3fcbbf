"""rlvr.envs.frames: FrameThinker's frame-selection environment and the frame_quest task (arXiv 2509.24304): the
first look, a choose showing its frames as images, a time query's reply, malformed actions ending the episode; the
task's hidden segment, its scripted search scoring 1; a vision-language policy trains a step through it with the
framethinker reward, observation image tokens never trained."""

import json

import pytest

from rlvr.envs import ENVS, Observation
from rlvr.tasks import TASKS


def test_the_environment_shows_frames_on_request():
    task = TASKS.build("frame_quest", seed=0, frames=200, n=8)
    sample = task[0]
    env = ENVS.build("frame_select", n=8)
    first = env.reset(sample)
    assert isinstance(first, Observation) and len(first.images) == 8
    assert first.text.strip().splitlines()[0] == "frame 0: <image>" and "frame 199: <image>" in first.text
    obs, reward, done = env.step("<think>between 10 and 90</think><action>choose frames between 10 and 90</action>")
    assert isinstance(obs, Observation) and len(obs.images) == 8 and not done and reward == 0.0
    assert obs.images[0] is sample.meta["frames"][11]  # linspace(11, 89, 8) starts at 11
    obs, _, done = env.step("<think>when</think><action>get frame number at time 0:05</action>")
    assert obs.strip() == "Frame number at time 0:05 is: 40." and not done  # 5 s at 8 fps
    for bad in ("<action>choose frames between 300 and 400</action>",
                "<action>choose frames between 90 and 10</action>", "no action", "<action>output answer: B</action>"):
        env2 = ENVS.build("frame_select", n=8)
        env2.reset(sample)
        assert env2.step(bad) == (None, 0.0, True)
    assert env.frames_used == 16


def test_the_task_hides_the_change_and_its_search_scores_one():
    task = TASKS.build("frame_quest", seed=1, frames=120, n=8)
    for i in range(6):
        s = task[i]
        m = s.meta
        frames = m["frames"]
        centre = (m["x"] + task.side // 2, task.image_size // 2)
        inside, outside = frames[m["start"]].getpixel(centre), frames[0].getpixel(centre)
        assert inside != outside and len(frames) == 120 and 10 <= m["length"] <= 20
        assert task.score(s, task.reference(s)) == 1.0
        wrong = task.reference(s).replace(f"output answer: {s.answer}", "output answer: Z")
        assert task.score(s, wrong) == 0.0
        assert ("around" in s.prompt) == m["timed"]
    with pytest.raises(ValueError, match="need frames >= 4 n"):
        TASKS.build("frame_quest", frames=10)


def test_a_vision_language_model_trains_through_the_environment(tmp_path):
    from rlvr.config import load_config
    from rlvr.trainer import train

    cfg = load_config(None, [
        "model.config=qwen2.5-vl-micro", "task.name=frame_quest", "task.kwargs={frames: 40, n: 4, image_size: 28}",
        "task.eval_size=2", "env.name=frame_select", "env.kwargs={n: 4}", "env.max_turns=2", "env.max_tokens=400",
        "rewards=[{name: framethinker, kwargs: {span_n: 4}}]", "rollout.prompts_per_step=2", "rollout.group_size=2",
        "rollout.max_new_tokens=8", "train.steps=1", f"output_dir={tmp_path}", "name=ft", "train.progress=false",
        "train.diversity_unit=char"])
    assert train(cfg)["steps"] == 1
    step = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines() if '"reward"' in x][0]
    assert step["skipped_steps"] == 0 and step["env/turns"] >= 1
    assert step["env/frames_used"] >= 4 and 0 <= step["env/invalid_action"] <= 1  # FrameThinker's efficiency metric


def test_multi_turn_rows_with_frames_resume_exactly_and_micro_batching_does_not_change_the_gradient(tmp_path):
    import torch
    from safetensors.torch import load_file

    from rlvr.config import load_config
    from rlvr.trainer import train

    def cfg(name, steps, micro):
        return load_config(None, [
            "model.config=qwen2.5-vl-micro", "task.name=frame_quest", "task.kwargs={frames: 40, n: 4, image_size: 28}",
            "task.eval_size=1", "env.name=frame_select", "env.kwargs={n: 4}", "env.max_turns=2", "env.max_tokens=300",
            "rewards=[{name: python, kwargs: {function: 'tests/dp_rewards.py:digit_fraction'}}]",
            "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=6", f"train.steps={steps}",
            f"algo.micro_batch_size={micro}", "optim.lr=1e-3", f"output_dir={tmp_path}", f"name={name}",
            "train.progress=false", "train.diversity_unit=char"])

    train(cfg("whole", 2, 4))
    train(cfg("parts", 1, 4))
    train(cfg("parts", 2, 4), resume=True)
    train(cfg("micro", 2, 1))  # 1 row per forward instead of 4: the same gradient (global normalisers)
    a, b, c = (load_file(tmp_path / n / "final" / "model.safetensors") for n in ("whole", "parts", "micro"))
    rows = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines() if '"reward"' in x]
    assert all(r["grad_norm"] > 0 for r in rows)  # the updates were not empty
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
        torch.testing.assert_close(c[k], a[k], rtol=0, atol=1e-4)


def test_sft_warm_starts_on_scripted_searches_with_image_observations(tmp_path):
    from rlvr.config import load_config
    from rlvr.policies import HFVisionLM
    from rlvr.warm_start import sft, sft_batch

    task = TASKS.build("frame_quest", seed=0, frames=40, n=4, image_size=28)
    policy = HFVisionLM.load(config="qwen2.5-vl-micro")
    samples = [task[i] for i in range(2)]
    batch = sft_batch(policy, samples, [task.reference_turns(s) for s in samples])
    slots = batch.completion_ids == policy.image_token_id
    assert [len(g) for g in batch.extras["image_grid_thw"]] == [8, 8]  # the first look's 4 frames, the look's 4
    assert slots.any(-1).all() and (batch.loss_mask[slots] == 0).all()  # shown, never trained
    logp, _ = policy.logp(batch)  # the forward reads every observed image in place
    assert logp.shape == batch.loss_mask.shape
    cfg = load_config(None, [
        "model.config=qwen2.5-vl-micro", "task.name=frame_quest", "task.kwargs={frames: 40, n: 4, image_size: 28}",
        "task.eval_size=2", "env.name=frame_select", "env.kwargs={n: 4}", "env.max_turns=2", "env.max_tokens=400",
        "rollout.max_new_tokens=80", "sft.steps=20", "sft.batch_size=4", "sft.lr=3e-3", "sft.eval_every=20",
        f"output_dir={tmp_path}", "name=fq", "train.progress=false"])
    sft(cfg)
    losses = [json.loads(x)["sft/loss"] for x in (tmp_path / "fq-sft" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.6 * losses[0]
