"""Image rewards from local model folders (issue 22 item 3), differentiable in the pixels so that DMD's joint RL
(rlvr.algos.dmd.rl_loss) can take their gradient:

    rl: {reward: "classifier:/models/my-vit:square"}       # log p(label | image) of an image classifier
    rl: {rewards: {"clip:/models/my-clip:a red square": 1.0, "my_reward.py:fn": 0.5}}   # CLIP image-text cosine

1. `classifier:<folder>:<label>`: a transformers image-classification folder (AutoModelForImageClassification:
   ViT, ConvNeXt, ...; config.json with id2label) scores log softmax(logits)[label]; the label is a class name of
   its id2label or an index.
2. `clip:<folder>:<prompt>`: a CLIPModel folder with its tokenizer scores the cosine between the image's and the
   prompt's projected embeddings (CLIPScore's quantity, arXiv 2104.08718 §3, without its 2.5 x max(., 0)).
3. Pixels: the loop hands images in [-1, 1]; they are mapped to [0, 1], resized bilinearly to the model's
   image_size and normalised with the folder's preprocessor_config.json image_mean / image_std (0.5 / 0.5 when it
   has none), all in torch, so the reward's gradient reaches the generator. The folder and the label are checked,
   and the model loaded, when the reward is built: before the run's first step.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn import functional as F

KINDS = ("classifier", "clip")


def is_scorer(spec: str) -> bool:
    return spec.split(":", 1)[0] in KINDS


def parse(spec: str) -> tuple[str, Path, str]:
    """(kind, folder, label or prompt) of 'kind:<folder>:<label>'; ValueError naming what is wrong."""
    kind, _, rest = spec.partition(":")
    folder, sep, arg = rest.rpartition(":")
    if kind not in KINDS or not sep or not folder or not arg:
        raise ValueError(f"{spec!r}: an image scorer is 'classifier:<folder>:<label>' or 'clip:<folder>:<prompt>'")
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"{spec!r}: {folder} is not a model folder (no config.json)")
    return kind, Path(folder), arg


def _preprocess(images: torch.Tensor, folder: Path, size: int) -> torch.Tensor:
    config = folder / "preprocessor_config.json"
    extra = json.loads(config.read_text()) if config.is_file() else {}
    mean = torch.tensor(extra.get("image_mean", [0.5] * 3), dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(extra.get("image_std", [0.5] * 3), dtype=images.dtype).view(1, -1, 1, 1)
    x = (images.clamp(-1, 1) + 1) / 2
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - mean) / std


def classifier_reward(folder: Path, label: str):
    """images (N, 3, H, W) in [-1, 1] -> (N,) log p(label | image) (module docstring 1)."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(str(folder)).eval().requires_grad_(False)
    names = {str(v): int(k) for k, v in model.config.id2label.items()}
    if label in names:
        index = names[label]
    elif label.isdigit() and int(label) < model.config.num_labels:
        index = int(label)
    else:
        raise ValueError(f"classifier {folder}: label {label!r} is not one of its classes ({', '.join(names)}) or an "
                         f"index below {model.config.num_labels}")
    size = int(getattr(model.config, "image_size", 224))

    def reward(images: torch.Tensor) -> torch.Tensor:
        logits = model(pixel_values=_preprocess(images, folder, size)).logits
        return logits.log_softmax(-1)[:, index]
    return reward


def _projected(out) -> torch.Tensor:
    """get_*_features' projected embedding: a tensor (transformers 4) or the output's pooler_output (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_reward(folder: Path, prompt: str):
    """images (N, 3, H, W) in [-1, 1] -> (N,) cosine of image and prompt embeddings (module docstring 2)."""
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(str(folder)).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        ids = tokenizer([prompt], padding=True, return_tensors="pt")
        text = F.normalize(_projected(model.get_text_features(**ids)), dim=-1)
    size = int(model.config.vision_config.image_size)

    def reward(images: torch.Tensor) -> torch.Tensor:
        image = _projected(model.get_image_features(pixel_values=_preprocess(images, folder, size)))
        return (F.normalize(image, dim=-1) * text).sum(-1)
    return reward


def scorer(spec: str):
    """The reward function of a scorer spec (module docstring); ValueError naming the spec."""
    kind, folder, arg = parse(spec)
    return (classifier_reward if kind == "classifier" else clip_reward)(folder, arg)
