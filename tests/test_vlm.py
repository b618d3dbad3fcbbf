"""rlvr.policies.vlm: the vision-language policy on tiny random Qwen2.5-VL, Qwen2-VL and Qwen3-VL models (2 layers,
a 2-block vision tower).

Exactness: the update's log-probs equal the plain HF forward fed as the HF processor would (the model's own M-RoPE
ids from mm_token_type_ids) at 1e-5, and the KV-cached sampler's log-probs equal them too; a row's log-probs do not
depend on the other rows of its batch (two rows with one question and different images share nothing). Errors: a
placeholder / feature mismatch, a missing image, a text model given images: one line naming the row. VPPO's
corruption changes the dependency of image rows only; one mask is the row's own stream bit for bit and M masks average
the single-mask scores of their derived streams; tokens the perception mask drops get no gradient; a mixed batch
of image and text-only rows trains; checkpoints load with AutoModelForImageTextToText; SFT warm-starts a VLM.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rlvr.batch import Sample
from rlvr.policies import HFVisionLM, SamplingParams, load_policy_of
from rlvr.policies.base import batch_owners


@pytest.fixture(scope="module")
def policy():
    return HFVisionLM.load(config="qwen2.5-vl-micro", seed=0)


def image(seed: int, size: int = 56) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype("uint8"))


def samples():
    one = Sample(prompt="how many?", images=[image(0)], task="t", index=0, image_names=["a.png"])
    other = Sample(prompt="how many?", images=[image(1)], task="t", index=1, image_names=["b.png"])
    two = Sample(prompt="which is larger?", images=[image(2), image(3, 84)], task="t", index=2)
    text = Sample(prompt="2+2=", task="t", index=3)
    return [one, one, other, two, text]


def generate(policy, rows, **kw):
    params = SamplingParams(max_new_tokens=kw.pop("max_new_tokens", 10), **kw)
    return policy.generate(rows, group_ids=torch.arange(len(rows)), seeds=torch.arange(len(rows)), params=params)


@pytest.mark.parametrize("config", ["qwen2.5-vl-micro", "qwen2-vl-micro", "qwen3-vl-micro"])
def test_logp_equals_the_hf_forward_and_the_sampler(config):
    policy = HFVisionLM.load(config=config, seed=0)
    assert type(policy.model).__name__ == {"qwen2.5-vl-micro": "Qwen2_5_VLForConditionalGeneration",
                                           "qwen2-vl-micro": "Qwen2VLForConditionalGeneration",
                                           "qwen3-vl-micro": "Qwen3VLForConditionalGeneration"}[config]
    batch = generate(policy, samples())
    logp, _ = policy.logp(batch)
    mask = batch.completion_mask.bool()
    ids, attn = batch.input_ids, batch.attention_mask
    grids = torch.cat(batch.extras["image_grid_thw"])
    pixels = torch.cat(batch.extras["pixel_values"])
    with torch.no_grad():  # what the HF processor would hand the model: token types, no position ids
        out = policy.model(input_ids=ids, attention_mask=attn, pixel_values=pixels, image_grid_thw=grids,
                           mm_token_type_ids=(ids == policy.image_token_id).int())
    P = batch.prompt_ids.shape[1]
    ref = out.logits[:, P - 1 : -1].float().log_softmax(-1).gather(-1, batch.completion_ids[..., None])[..., 0]
    assert (logp - ref)[mask].abs().max() < 1e-5
    assert (logp - batch.rollout_logp)[mask].abs().max() < 1e-5  # sampling under the KV cache: same positions
    assert grids.shape == (5, 3)  # one image in each of rows 0-2, two in row 3 (one of them 84 px)


def test_rows_with_one_question_and_different_images_share_nothing(policy):
    rows = samples()
    batch = generate(policy, rows)
    owners, _ = batch_owners(policy, batch)
    assert owners[0] == owners[1] and owners[1] != owners[2]  # same question, different images: separate forwards
    alone = [policy.logp(batch.select([i]))[0] for i in range(len(batch))]
    together, _ = policy.logp(batch)
    for i, lp in enumerate(alone):
        n = int(batch.completion_mask[i].sum())
        torch.testing.assert_close(together[i, :n], lp[0, :n], atol=1e-5, rtol=0)
    swapped = batch.replace(extras={**batch.extras, "pixel_values": [batch.extras["pixel_values"][j]
                                                                      for j in (2, 2, 0, 3, 4)]})
    moved, _ = policy.logp(swapped)
    assert (moved[1] - together[1]).abs().max() > 1e-4  # the image is seen: a different image, other log-probs


def test_mismatch_and_missing_image_name_the_row(policy):
    batch = generate(policy, samples()[:3])
    grids = list(batch.extras["image_grid_thw"])
    grids[2] = torch.tensor([[1, 8, 16]])  # twice the features the prompt has placeholders for
    with pytest.raises(ValueError, match=r"row 2 \(t item 1, images \['b.png'\]\): 16 image placeholder tokens but "
                                         r"its images give 32") as err:
        policy.logp(batch.replace(extras={**batch.extras, "image_grid_thw": grids}))
    assert "\n" not in str(err.value)
    broken = Sample(prompt="how many?", images=[None], task="shapes", index=7, image_names=["gone.png"])
    with pytest.raises(ValueError, match=r"row 1 \(shapes item 7, images \['gone.png'\]\): image 0 is NoneType"):
        generate(policy, [samples()[0], broken])
    spelled = batch.completion_ids.clone()
    spelled[1, 0] = policy.image_token_id  # e.g. a reference text that spells <|image_pad|>
    with pytest.raises(ValueError, match=r"row 1 \(t item 0, images \['a.png'\]\): its completion holds a vision"):
        policy.logp(batch.replace(completion_ids=spelled))
    text = load_policy_of(config="qwen2-micro")
    with pytest.raises(ValueError, match=r"row 0 \(t item 0\) shows 1 image\(s\) but Qwen2ForCausalLM is a text "):
        text.encode_inputs(samples()[:1])


def test_the_sampler_never_draws_a_vision_placeholder(policy):
    # a random model gives each of the 4 vision tokens about 1/103 of the mass: 400 draws would hit one ~15 times
    batch = generate(policy, samples() * 8, max_new_tokens=10)
    assert not torch.isin(batch.completion_ids, torch.tensor(policy.vision_token_ids)).any()
    logp, _ = policy.logp(batch)  # their probability still counts in the sampler's logp, as in training
    assert (logp - batch.rollout_logp)[batch.completion_mask.bool()].abs().max() < 1e-5


def test_corruption_moves_image_rows_only(policy):
    from rlvr.algos.vppo import visual_dependency

    batch = generate(policy, samples())
    aug = policy.corrupt(batch, torch.arange(len(batch)), p=0.5)
    px, aug_px = batch.extras["pixel_values"], aug.extras["pixel_values"]
    assert not torch.equal(px[0], aug_px[0]) and not torch.equal(aug_px[0], aug_px[1])  # a fresh mask per row
    black = (aug_px[0] != px[0]).any(-1)  # (n_patches,): whole 14-px patches, set to the normalised black
    assert 0.2 < float(black.float().mean()) < 0.8
    torch.testing.assert_close(aug_px[0][black][0, 0], torch.tensor((0 - 0.48145466) / 0.26862954))
    with torch.no_grad():
        dep = visual_dependency(policy.logp(batch)[0], policy.logp(aug)[0], batch.loss_mask)
    assert float(dep[:4].sum()) > 0 and float(dep[4].abs().sum()) == 0.0  # the text-only row sees no difference
    assert policy.has_images(batch).tolist() == [True, True, True, True, False]


def test_tokens_the_perception_mask_drops_get_no_gradient(policy):
    from rlvr.algos import AGGREGATIONS, LOSSES, TOKEN_WEIGHTS

    batch = generate(policy, samples())
    dep = torch.rand(batch.loss_mask.shape)
    weights = TOKEN_WEIGHTS.lookup("perception")(batch.loss_mask, dependency=dep, has_image=policy.has_images(batch))
    logp, _ = policy.logp(batch)
    logp.retain_grad()
    per_token, _ = LOSSES.lookup("ppo_clip")(logp, logp.detach(), torch.randn(len(batch)), batch.loss_mask,
                                              clip_low=0.2, clip_high=0.28)
    AGGREGATIONS.lookup("token_mean")(per_token * weights, batch.loss_mask).backward()
    dropped, kept = (weights == 0) & batch.loss_mask.bool(), weights == 1
    assert dropped.any() and float(logp.grad[dropped].abs().max()) == 0.0
    assert float(logp.grad[kept].abs().min()) > 0
    assert weights[4][batch.loss_mask[4].bool()].eq(1).all()  # a text-only row keeps every token


def test_a_mixed_batch_of_image_and_text_rows_trains_and_checkpoints_load(tmp_path):
    from transformers import AutoModelForImageTextToText

    from rlvr.config import load_config
    from rlvr.plot import per_task
    from rlvr.trainer import train

    cfg = load_config(None, [
        "model.config=qwen2.5-vl-micro", f"output_dir={tmp_path}", "name=mixed", "train.steps=2",
        "tasks=[{name: count_shapes, key: shapes, eval_size: 4}, {name: arithmetic, key: add, eval_size: 4}]",
        "rewards=[{name: python, kwargs: {function: 'tests/dp_rewards.py:digit_fraction'}}]",
        "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8", "optim.lr=1e-3",
        "algo.token_weights=perception", "algo.advantage_shaping=vppo_tas", "train.progress=false",
        "train.num_samples_logged=8",
        "train.diversity_unit=char"])
    summary = train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "mixed" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert len(steps) == 2 and all(r["skipped_steps"] == 0 and r["vppo/dependency_mean"] > 0 for r in steps)
    assert all(0 < r["token_weights/mean"] < 1 for r in steps)
    logged = [json.loads(x) for x in (tmp_path / "mixed" / "samples.jsonl").read_text().splitlines()]
    assert any(r.get("images", [""])[0].startswith("count_shapes/train/") for r in logged)
    assert "eval/shapes/accuracy" in summary["eval_after"] and "eval/add/accuracy" in summary["eval_after"]
    assert per_task(rows) == {"add": "eval/add/accuracy", "shapes": "eval/shapes/accuracy"}  # curves in plot.png
    assert (tmp_path / "mixed" / "plot.png").stat().st_size > 1000
    final = tmp_path / "mixed" / "final"
    model = AutoModelForImageTextToText.from_pretrained(final, local_files_only=True)
    reloaded = load_policy_of(path=str(final))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration" and isinstance(reloaded, HFVisionLM)
    batch = generate(reloaded, samples()[:3])
    expected, _ = reloaded.logp(batch)
    reloaded.model = model.eval()  # the folder's weights through AutoModelForImageTextToText: the same log-probs
    torch.testing.assert_close(reloaded.logp(batch)[0], expected, atol=1e-6, rtol=0)


def test_sft_warm_starts_a_vision_language_model(tmp_path, capsys):
    from rlvr.cli import main
    from rlvr.config import load_config
    from rlvr.warm_start import sft

    cfg = load_config(None, ["model.config=qwen2.5-vl-micro", "task.name=count_shapes", "task.eval_size=4",
                             "sft.steps=30", "sft.batch_size=8", "sft.lr=3e-3", "sft.eval_every=30",
                             f"output_dir={tmp_path}", "name=vl", "train.progress=false"])
    out = sft(cfg)
    losses = [json.loads(x)["sft/loss"] for x in (tmp_path / "vl-sft" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0]
    assert isinstance(load_policy_of(path=out["model"]), HFVisionLM)
    capsys.readouterr()
    assert main(["eval", out["model"], "--task", "count_shapes", "--size", "4", "--max-new-tokens", "24"]) == 0
    assert set(json.loads(capsys.readouterr().out)) >= {"accuracy", "mean_length"}  # rlvr eval on a visual task


class LookEnv:
    """A test environment whose observations show an image: one before the first turn, one after each turn."""

    stop = ()

    def __init__(self):
        self.turns = 0

    def reset(self, sample):
        from rlvr.envs import Observation

        return Observation("\nlook: <image>\n", [image(100)])

    def step(self, turn):
        from rlvr.envs import Observation

        self.turns += 1
        return Observation(f"\nframe {self.turns}: <image>\n", [image(100 + self.turns)]), 0.5, self.turns >= 3


def test_observations_that_show_images_are_exact_and_never_trained(policy):
    from rlvr.envs import EnvSampler

    sampler = EnvSampler(policy, SamplingParams(max_new_tokens=5), 2, make_env=LookEnv, max_turns=3, max_tokens=200)
    rows = [Sample("what changed?", images=[image(0)], task="t", index=0)] * 2 + [Sample("2+2=", task="t", index=1)] * 2
    batch = sampler.generate(rows, torch.tensor([0, 0, 1, 1]), torch.arange(4))
    slots = batch.completion_ids == policy.image_token_id  # (N, T) image tokens of observations
    assert slots.any(-1).all() and (batch.loss_mask[slots] == 0).all()  # in every row, and never trained
    assert [len(g) for g in batch.extras["image_grid_thw"]] == [4, 4, 3, 3]  # the prompt's image + 3 observations
    logp, _ = policy.logp(batch)  # the whole transcript with every image, as the sampler saw it turn by turn
    trained = batch.loss_mask.bool()
    assert (logp - batch.rollout_logp)[trained].abs().max() < 1e-5
    assert batch.extras["turns"].tolist() == [3, 3, 3, 3]


def test_what_a_vision_language_run_cannot_do_is_refused_in_one_line(tmp_path):
    from rlvr.config import ConfigError, load_config, validate

    text = load_config(None, ["model.config=qwen2-micro", "algo.token_weights=perception"])
    with pytest.raises(ConfigError, match=r"algo: \['token_weights=perception'\] needs the visual dependency of a "
                                          "vision-language model") as err:
        validate(text)  # before any model is loaded
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="algo.perception.score must be one of"):
        validate(load_config(None, ["model.config=qwen2.5-vl-micro", "algo.perception.score=kl"]))
    with pytest.raises(ConfigError, match=r"^algo.perception.num_masks must be >= 1 .*got 0$"):
        validate(load_config(None, ["model.config=qwen2.5-vl-micro", "algo.perception.num_masks=0"]))
    from types import SimpleNamespace

    video = SimpleNamespace(frames=[image(0)] * 2, fps=1.0)
    with pytest.raises(ValueError, match="Qwen3-VL's prompts interleave frame timestamps"):
        HFVisionLM.load(config="qwen3-vl-micro").encode_inputs([Sample("x", videos=[video])])
    from rlvr.envs import EnvSampler
    from rlvr.errors import DataError

    text_policy = load_policy_of(config="qwen2-micro")
    sampler = EnvSampler(text_policy, SamplingParams(max_new_tokens=4), 1, make_env=LookEnv, max_turns=2)
    with pytest.raises(DataError, match="the environment shows 1 image\\(s\\) but the policy is a text model"):
        sampler.generate([Sample("2+2=")], torch.arange(1), torch.arange(1))


def test_a_resumed_vppo_run_equals_an_uninterrupted_one(tmp_path):
    from safetensors.torch import load_file

    from rlvr.config import load_config
    from rlvr.trainer import train

    def cfg(name, steps):
        return load_config(None, [
            "model.config=qwen2.5-vl-micro", f"output_dir={tmp_path}", f"name={name}", f"train.steps={steps}",
            "task.name=count_shapes", "task.eval_size=2", "rollout.prompts_per_step=2", "rollout.group_size=4",
            "rollout.max_new_tokens=6", "optim.lr=1e-3", "algo.token_weights=perception",
            "algo.advantage_shaping=vppo_tas", "train.progress=false", "train.diversity_unit=char",
            "rewards=[{name: python, kwargs: {function: 'tests/dp_rewards.py:digit_fraction'}}]"])

    train(cfg("whole", 2))
    train(cfg("parts", 1))
    train(cfg("parts", 2), resume=True)
    a, b = (load_file(tmp_path / n / "final" / "model.safetensors") for n in ("whole", "parts"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("score, mask_per", [("k3_sampled", "row"), ("full_kl", "prompt")])
def test_the_perception_stage(policy, score, mask_per):
    from rlvr.distributed import World
    from rlvr.metrics import Metrics
    from rlvr.stages import PerceptionStage, perception

    rows = samples()
    batch = policy.generate(rows, group_ids=torch.tensor([0, 0, 1, 2, 3]), seeds=torch.arange(5),
                            params=SamplingParams(max_new_tokens=8))
    log = Metrics()
    out = perception(PerceptionStage(True, score=score, mask_per=mask_per), policy, batch, 3, World(), log)
    dep = out.extras["dependency"]
    assert dep.shape == batch.loss_mask.shape and (dep >= 0).all() and float(dep[:4].sum()) > 0
    assert float(dep[4].sum()) == 0.0 and out.extras["has_image"].tolist() == [True] * 4 + [False]
    assert {"vppo/dependency_mean", "vppo/dependency_entropy_corr"} <= set(log.local())
    again = perception(PerceptionStage(True, score=score, mask_per=mask_per), policy, batch, 3, World(), Metrics())
    torch.testing.assert_close(again.extras["dependency"], dep)  # the masks come from the rows' own streams
    if score == "k3_sampled":  # pi_old's pass, when the step ran it already, is read instead of run again
        from rlvr.stages import chunked_logp

        old, entropy = chunked_logp(policy, batch, 64, 1.0, with_entropy=True)
        reused = perception(PerceptionStage(True), policy, batch.replace(old_logp=old, old_entropy=entropy), 3,
                            World(), Metrics())
        torch.testing.assert_close(reused.extras["dependency"], dep, atol=1e-6, rtol=0)
    seen = []
    original = policy.corrupt
    policy.corrupt = lambda b, seeds, p: seen.append(original(b, seeds, p=p)) or seen[-1]
    try:
        perception(PerceptionStage(True, score=score, mask_per=mask_per), policy, batch, 3, World(), Metrics())
    finally:
        policy.corrupt = original
    px = seen[0].extras["pixel_values"]  # rows 0 and 1: one group, one image
    assert torch.equal(px[0], px[1]) == (mask_per == "prompt")


def hand_dependency(policy, batch, seeds, score):
    """S of one corrupted copy, the mask drawn from `seeds`, computed straight from the definitions."""
    from rlvr.algos.vppo import full_kl_dependency, visual_dependency

    aug = policy.corrupt(batch, seeds, p=0.5)
    with torch.no_grad():
        if score == "full_kl":
            la, lb = (policy.forward_logits(b).float().log_softmax(-1) for b in (batch, aug))
            return full_kl_dependency(la, lb, batch.loss_mask)
        return visual_dependency(policy.logp(batch)[0], policy.logp(aug)[0], batch.loss_mask)


def perception_batch(policy):
    rows = samples()
    batch = policy.generate(rows, group_ids=torch.tensor([0, 0, 1, 2, 3]), seeds=torch.arange(5),
                            params=SamplingParams(max_new_tokens=8))
    members = {"row": torch.tensor([0, 1, 0, 0, 0]), "prompt": torch.zeros(5, dtype=torch.long)}  # index in the group
    return batch, members


@pytest.mark.parametrize("score, mask_per", [("k3_sampled", "row"), ("full_kl", "prompt")])
def test_one_mask_is_the_rows_own_stream_bit_for_bit(policy, score, mask_per):
    """num_masks = 1 (the default, the reference code) corrupts with the mask of row_seeds(seed, "vppo", group, step,
    member), as before num_masks existed, and S is that one mask's score exactly."""
    from rlvr.distributed import World
    from rlvr.metrics import Metrics
    from rlvr.seeding import row_seeds
    from rlvr.stages import PerceptionStage, perception

    batch, members = perception_batch(policy)
    seeds = row_seeds(0, "vppo", batch.group_ids, torch.full((5,), 3), members[mask_per])
    out = perception(PerceptionStage(True, score=score, mask_per=mask_per, num_masks=1), policy, batch, 3, World(),
                     Metrics())
    expected = hand_dependency(policy, batch, seeds, score)
    assert float(expected[:4].sum()) > 0 and torch.equal(out.extras["dependency"], expected)


@pytest.mark.parametrize("score, mask_per", [("k3_sampled", "row"), ("full_kl", "prompt")])
def test_several_masks_average_the_scores_of_masks_from_derived_streams(policy, score, mask_per):
    """num_masks = 2: S is the mean of the two single-mask scores, mask 0 from the row's stream and mask 1 from that
    stream keyed by 1 (two different masks, so the mean is not either score)."""
    from rlvr.distributed import World
    from rlvr.metrics import Metrics
    from rlvr.seeding import row_seeds
    from rlvr.stages import PerceptionStage, perception

    batch, members = perception_batch(policy)
    keys = (batch.group_ids, torch.full((5,), 3), members[mask_per])
    first = hand_dependency(policy, batch, row_seeds(0, "vppo", *keys), score)
    second = hand_dependency(policy, batch, row_seeds(0, "vppo", *keys, torch.ones(5, dtype=torch.long)), score)
    assert (first[:4] - second[:4]).abs().max() > 1e-4  # image rows: the two masks differ
    out = perception(PerceptionStage(True, score=score, mask_per=mask_per, num_masks=2), policy, batch, 3, World(),
                     Metrics())
    torch.testing.assert_close(out.extras["dependency"], (first + second) / 2, atol=1e-6, rtol=0)
    assert float(out.extras["dependency"][4].abs().sum()) == 0.0  # the text-only row: S = 0 under any mask
    from rlvr.config import load_config
    from rlvr.run import build_perception

    cfg = load_config(None, ["model.config=qwen2.5-vl-micro", "algo.token_weights=perception",
                             "algo.perception.num_masks=2"])
    assert build_perception(cfg, policy).num_masks == 2  # the config reaches the stage


def test_a_chat_template_places_the_images_in_the_user_turn():
    # the shape of Qwen2-VL's template: a content list of {"type": "image"} and {"type": "text"} items
    template = ("{% for m in messages %}<{{ m['role'] }}>{% if m['content'] is string %}{{ m['content'] }}"
                "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|>"
                "<|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{% endfor %}<assistant>")
    policy = HFVisionLM.load(config="qwen2.5-vl-micro", chat_template=template)
    rows = [Sample(prompt="how many?", images=[image(0), image(1)]),
            Sample(prompt=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2="}])]
    ids, mask, extras = policy.encode_inputs(rows)
    text = policy.tokenizer.decode(ids[0][mask[0].bool()])
    slot = "<|vision_start|>" + "<|image_pad|>" * 16 + "<|vision_end|>"
    assert text == "<user>" + slot * 2 + "how many?<assistant>"
    assert policy.tokenizer.decode(ids[1][mask[1].bool()]) == "<system>be brief<user>2+2=<assistant>"
    assert [len(g) for g in extras["image_grid_thw"]] == [2, 0]


def test_lora_adapters_on_a_vision_language_model(tmp_path):
    pytest.importorskip("peft")
    from transformers import AutoModelForImageTextToText

    from rlvr.config import load_config
    from rlvr.trainer import train

    cfg = load_config(None, [
        "model.config=qwen2.5-vl-micro", f"output_dir={tmp_path}", "name=lora", "train.steps=1",
        "task.name=count_shapes", "task.eval_size=2", "rollout.prompts_per_step=2", "rollout.group_size=2",
        "rollout.max_new_tokens=4", "train.progress=false", "algo.token_weights=perception",
        "model.lora={r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}",
        "rewards=[{name: python, kwargs: {function: 'tests/dp_rewards.py:digit_fraction'}}]"])
    assert train(cfg)["steps"] == 1
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "lora" / "final", local_files_only=True)
    assert not any("lora" in name for name, _ in merged.named_parameters())  # adapters merged into the weights


def test_an_unreadable_image_stops_the_run_with_one_line_naming_the_row(tmp_path, capsys):
    from rlvr.cli import main

    image(0).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows = [{"prompt": "how many?", "answer": "1", "image": "good.png"}, {"prompt": "how many?", "answer": "2",
                                                                          "image": "bad.png"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "run.yaml").write_text("name: bad\n")
    code = main(["train", str(tmp_path / "run.yaml"), "model.config=qwen2.5-vl-micro", "task.name=dataset",
                 f"task.kwargs={{path: {tmp_path / 'data.jsonl'}, image_field: image, scorer: exact}}",
                 "task.eval_size=1", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=4",
                 "train.steps=1", f"output_dir={tmp_path}", "train.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("rlvr: stopped: dataset") and "row 2, field 'image': cannot read image" in err


@pytest.mark.parametrize("config", ["qwen2.5-vl-micro", "qwen2-vl-micro"])
def test_videos_reach_the_model_exactly(config, tmp_path):
    """A video (frames + fps) goes in as Qwen2-VL's video processor lays it out: pairs of frames per temporal patch;
    the update's log-probs equal the HF forward fed pixel_values_videos, video_grid_thw and the seconds per temporal
    patch (M-RoPE's temporal ids), and the sampler's."""
    from types import SimpleNamespace

    policy = HFVisionLM.load(config=config, seed=0)
    frames = [image(10 + k) for k in range(5)]  # odd: the last frame is repeated to fill the temporal patch
    video = SimpleNamespace(frames=frames, fps=2.0)
    rows = [Sample("what happens?", videos=[video], task="v", index=0), Sample("what happens?", videos=[video],
            images=[image(0)], task="v", index=1), Sample("2+2=", task="v", index=2)]
    batch = generate(policy, rows)
    assert batch.extras["video_grid_thw"][0].tolist() == [[3, 8, 8]]  # 5 frames -> 3 temporal patches, 8 x 8 each
    assert float(batch.extras["video_seconds"][0]) == pytest.approx(1.0)  # 2 frames per patch at 2 fps
    logp, _ = policy.logp(batch)
    ids, attn, mask = batch.input_ids, batch.attention_mask, batch.completion_mask.bool()
    kw = dict(pixel_values_videos=torch.cat(batch.extras["pixel_values_videos"]),
              video_grid_thw=torch.cat(batch.extras["video_grid_thw"]),
              pixel_values=torch.cat(batch.extras["pixel_values"]),
              image_grid_thw=torch.cat(batch.extras["image_grid_thw"]),
              mm_token_type_ids=(ids == policy.image_token_id).int() + 2 * (ids == policy.video_token_id).int())
    if config == "qwen2.5-vl-micro":
        kw["second_per_grid_ts"] = torch.cat(batch.extras["video_seconds"])
    with torch.no_grad():
        out = policy.model(input_ids=ids, attention_mask=attn, **kw)
    P = batch.prompt_ids.shape[1]
    ref = out.logits[:, P - 1 : -1].float().log_softmax(-1).gather(-1, batch.completion_ids[..., None])[..., 0]
    assert (logp - ref)[mask].abs().max() < 1e-5
    assert (logp - batch.rollout_logp)[mask].abs().max() < 1e-5
    still = [SimpleNamespace(frames=[frames[0]] * 5, fps=2.0)]  # the video is seen: another video, other log-probs
    # the layout: a still video's temporal patch is the image's patch (an image is a 2-frame still in Qwen2-VL)
    px, grid, _ = policy._videos(Sample("x", videos=still), 0)
    image_px = policy._images(Sample("x", images=[frames[0]]), 0)[0]
    assert grid.tolist() == [[3, 8, 8]] and torch.equal(px[:64], image_px) and torch.equal(px[128:], image_px)
    moved, _ = policy.logp(generate(policy, [Sample("what happens?", videos=still, task="v", index=0)])
                           .replace(completion_ids=batch.completion_ids[:1], completion_mask=batch.completion_mask[:1],
                                    loss_mask=batch.loss_mask[:1]))
    assert (moved[0] - logp[0])[mask[0]].abs().max() > 1e-4
