"""A learned reward: a local Hugging Face sequence-classification checkpoint scores (prompt, completion).

    {name: reward_model, kwargs: {path: /models/my-rm, template: polar}}

1. The checkpoint must have a sequence-classification head (`*ForSequenceClassification`, one label); anything
   else fails when the reward is built, before training starts, naming the path and what it found.
2. template "plain": the input is prompt + completion. template "polar" (POLAR, InternLM; Intern-S1's reward for
   open-ended tasks, arXiv 2508.15763; docs/methods.md §4.3): the reward is relative to the sample's
   reference answer, input = prompt "\\n" reference "<|reward|>" prompt "\\n" completion "[UNUSED_TOKEN_130]"; a
   sample without a reference gets None (unscorable), never a made-up score.
3. Scores are the head's single logit, computed without gradient in batches; long inputs are truncated from the
   left (the completion's end is kept) to `max_length` tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rlvr.rewards.core import REWARDS

TEMPLATES = ("plain", "polar")


def _prompt_text(sample) -> str:
    if isinstance(sample.prompt, str):
        return sample.prompt
    return "\n".join(str(m.get("content", "")) for m in sample.prompt)


def _check_head(path: Path) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"reward_model: no config.json in '{path}' (a local Hugging Face checkpoint is needed)")
    archs = json.loads(config.read_text()).get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(f"reward_model: '{path}' has no sequence-classification head (architectures: {archs}); "
                         "save a *ForSequenceClassification model with num_labels=1")


def _inputs(template: str, samples, completions) -> tuple[list[str], list[int]]:
    """(texts to score, their row indices); polar rows without a reference are left out."""
    texts, rows = [], []
    for i, (s, c) in enumerate(zip(samples, completions)):
        prompt = _prompt_text(s)
        if template == "plain":
            texts.append(prompt + c)
        elif s.answer is not None:
            texts.append(f"{prompt}\n{s.answer}<|reward|>{prompt}\n{c}[UNUSED_TOKEN_130]")
        else:
            continue
        rows.append(i)
    return texts, rows


@REWARDS.register("reward_model")
def reward_model(*, path: str, template: str = "plain", batch_size: int = 16, max_length: int = 2048,
                 device: str | None = None) -> Any:
    """Score completions with a local sequence-classification reward model (POLAR-style reference template)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if template not in TEMPLATES:
        raise ValueError(f"reward_model: template must be one of {TEMPLATES}, got '{template}'")
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"reward_model: checkpoint folder '{path}' does not exist (nothing is downloaded)")
    _check_head(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    if model.config.num_labels != 1:
        raise ValueError(f"reward_model: '{path}' has num_labels={model.config.num_labels}; a reward needs 1")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.truncation_side = "left"
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    @torch.no_grad()
    def score(samples, completions, **kwargs) -> list[float | None]:
        texts, rows = _inputs(template, samples, completions)
        out: list[float | None] = [None] * len(completions)
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True,
                              truncation=True, max_length=max_length).to(model.device)
            logits = model(**batch).logits[:, 0].float().tolist()
            for r, v in zip(rows[start : start + batch_size], logits):
                out[r] = v
        return out

    return score
