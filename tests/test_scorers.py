"""Image rewards from local model folders (rlvr.images.scorers): a tiny ViT classifier's log p(label | image) and a
tiny CLIP's image-text cosine, both on the loop's [-1, 1] pixels with the folder's normalisation, differentiable;
bad specs and labels are one-line errors; a `loop: dmd` run takes the classifier's gradient."""

import pytest
import torch
from torch.nn import functional as F

from rlvr.config import ConfigError
from rlvr.images.scorers import parse, scorer


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification

    folder = tmp_path_factory.mktemp("vit")
    names = ["circle", "square", "triangle", "cross"]
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=32, num_labels=4,
                                        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
                              ).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text('{"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.4, 0.3]}')
    return folder


def test_the_classifier_reward_is_its_log_probability_on_normalised_resized_pixels(vit):
    from transformers import ViTForImageClassification

    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images.requires_grad_(True)
    r = scorer(f"classifier:{vit}:square")(images)
    model = ViTForImageClassification.from_pretrained(vit).eval()
    x = F.interpolate((images.detach() + 1) / 2, size=(8, 8), mode="bilinear", align_corners=False)
    x = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = model(pixel_values=x).logits.log_softmax(-1)[:, 1]
    torch.testing.assert_close(r.detach(), want)
    r.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0  # differentiable in the pixels
    torch.testing.assert_close(scorer(f"classifier:{vit}:1")(images).detach(), want)


def test_the_clip_reward_is_the_image_text_cosine(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from rlvr.images.diffusers_nets import tiny_text_encoder

    tokenizer, _ = tiny_text_encoder()
    n = len(tokenizer)
    config = CLIPConfig(text_config={"vocab_size": n, "hidden_size": 16, "intermediate_size": 32,
                                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
                                     "bos_token_id": n - 2, "eos_token_id": n - 1, "pad_token_id": n - 1},
                        vision_config={"image_size": 8, "patch_size": 4, "hidden_size": 16, "intermediate_size": 32,
                                       "num_hidden_layers": 1, "num_attention_heads": 2}, projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    red, blue = (scorer(f"clip:{tmp_path}:{p}")(images) for p in ("a red square", "a blue circle"))
    assert red.shape == (2,) and bool((red.abs() <= 1 + 1e-6).all())
    assert not torch.allclose(red, blue)  # the prompt matters
    model = CLIPModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ids = tokenizer(["a red square"], padding=True, return_tensors="pt")
        t = F.normalize(model.text_projection(model.text_model(**ids).pooler_output), dim=-1)
        pixels = ((images + 1) / 2 - 0.5) / 0.5  # no preprocessor_config.json: mean / std 0.5
        v = F.normalize(model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1)
    torch.testing.assert_close(red.detach(), (v * t).sum(-1), atol=1e-5, rtol=0)


def test_bad_scorer_specs_are_one_line_errors(vit, tmp_path):
    for spec, match in [(f"classifier:{tmp_path / 'none'}:square", "not a model folder"),
                        (f"classifier:{vit}", "an image scorer is"), ("clip::x", "an image scorer is")]:
        with pytest.raises(ValueError, match=match):
            parse(spec)
    with pytest.raises(ValueError, match="label 'hexagon' is not one of its classes"):
        scorer(f"classifier:{vit}:hexagon")


def test_a_dmd_image_run_takes_a_classifier_reward(vit, tmp_path):
    from test_dmd_diffusers import tiny

    from rlvr.images.dmd_train import train, validate

    summary = train(tiny(tmp_path, "cls", rl__reward=f"classifier:{vit}:square", rl__lambda_R=1.0))
    assert summary["final"]["reward"] < 0  # a log-probability
    with pytest.raises(ConfigError, match=r"^rl.reward: 'classifier:"):
        validate(tiny(tmp_path, "bad", rl__reward=f"classifier:{tmp_path / 'nothing'}:square", rl__lambda_R=1.0))
