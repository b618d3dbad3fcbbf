"""GRPO step throughput of a tiny vision-language model: completions per second of full GRPO steps, rlvr vs TRL.

Standard CPU workload: qwen2.5-vl-tiny (a Qwen2.5-VL with random weights: text model hidden 128, 4 layers, 4 heads,
intermediate 512; vision tower 2 blocks, hidden 64, 14-px patches merged 2 x 2) with the char tokenizer plus the
vision special tokens, and the Qwen2-VL image processor at 112x112 to 224x224 pixels (Qwen2VLImageProcessorPil). Task:
count_shapes (seed 0, training side of the holdout split), one 56x56 image per prompt ("how many shapes?"), resized
to 112x112 = 8 x 8 patches = 16 image tokens; scored by the task's own `score` (the text after "answer:"). 8 prompts x
8 completions = 64 completions per step, up to 16 new tokens, temperature 1.0, no top-k/top-p; one optimizer update
per step (one epoch, one mini-batch, AdamW, lr 1e-6, grad clip 1.0), clipped surrogate (eps 0.2) with token-mean
loss and group-std advantages; no reference model (KL coefficient 0); fp32; 2 torch threads.

Prompt tokens, identical on both sides (`prompt_check` in the JSON compares TRL's first generation batch with rlvr's
first step: prompt ids, pixel_values, image_grid_thw, and the two models' initial weights):
`<|vision_start|>` + 16 x `<|image_pad|>` + `<|vision_end|>` + "how many shapes?", no chat turn markers.
rlvr: `rlvr.trainer.rl_step` with the run's own HFVisionLM (the char tokenizer has no chat template, so the prompt
is the image placeholder then the text, and each `<|image_pad|>` is expanded to the image's 16 merged patches).
TRL: `GRPOTrainer` on the identical model (same config and seed), the same images and prompts in the same order,
and the task's score as its reward. TRL takes images only with conversational prompts and a processor, so:
1. the dataset holds a user turn and the sample's images ("images" column); TRL puts an image block before the text;
2. the processing class is a Qwen2_5_VLProcessor made of the policy's image processor and tokenizer only (the stock
   constructor wants a video processor, which needs torchvision) with a chat template that renders the image
   placeholder per image block and then the text, and no generation prompt: the same string rlvr encodes.
Known differences (`vlm_differences`): TRL's batch holds one copy of each image per completion and encodes all 64
every step (in generate and in the training forward), rlvr encodes the 8 distinct images once per call; TRL's generate
never samples <|image_pad|>, rlvr's sampler none of the four vision tokens (`never_sampled`).
Everything else (warm-up, alternating timed blocks, the per-step clock and the JSON) is benchmarks/grpo_step.py's:
median seconds per step, completions/s = 64 / median, ratio = rlvr completions/s / TRL completions/s. No issue sets
a goal for this ratio (target_ratio null). Prints one JSON object on stdout.

    .venv/bin/python benchmarks/vlm_step.py [--steps 10] [--warmup 2] [--rounds 2] [--threads 2] [--bf16] [--no-trl]
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from grpo_step import SEED, RlvrBench, TrlBench, Workload, main

from rlvr.policies.vlm_models import load_vlm

VLM = Workload(
    name="vlm_step",
    model={"config": "qwen2.5-vl-tiny"},
    task={"name": "count_shapes", "holdout": "train"},  # rlvr's run builds its training task with holdout "train"
    prompts=8, group=8, new_tokens=16, lr=1e-6,
    chat=True,  # TRL: conversational prompts (it takes images with no other kind); rlvr: no template, plain text
    target_ratio=None, target_ratio_bf16=None,
)

# One placeholder per image block, then the text; no turn markers and no generation prompt: what rlvr's HFVisionLM
# encodes for a tokenizer without a chat template (slot * n_images + prompt).
PROMPT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
)

VLM_DIFFERENCES = [
    "vision tower: rlvr encodes each distinct image once per call (8 per step: a group's 8 rows share their prompt's "
    "image) in the sampler's prefill and in the training forward; TRL's batch holds one copy of the image per row "
    "(64 per step) and the model encodes every copy, in generate's prefill and in the training forward",
    "image preprocessing: rlvr runs the image processor once per distinct image; TRL reads the images back from the "
    "datasets table (stored as PNG, decoded per step) and runs the processor twice per step (prompt tokenization for "
    "generate, then processor(images=..., text=...) again for the forward's pixel_values)",
    "sampling: neither samples an image placeholder: TRL's generate suppresses <|image_pad|> (suppress_tokens), "
    "rlvr's sampler never draws the vision tokens of `never_sampled` (its rollout logp is the "
    "full softmax's); the training forward scores the whole vocabulary on both sides",
    "positions: rlvr passes M-RoPE ids from the model's get_rope_index to every forward; TRL lets the model compute "
    "them inside generate and forward (same ids)",
    "loss: rlvr's default train/inference mismatch weight (algo.mismatch token_truncate, c_max 2, as in "
    "grpo_step.py) multiplies the loss; TRL has none without vLLM (on-policy fp32 it is about 1)",
]


def image_text_processor(image_processor, tokenizer):
    """A Qwen2_5_VLProcessor of an image processor and a tokenizer only, with PROMPT_TEMPLATE as its chat template.

    The stock constructor also takes a video processor and checks its class through VIDEO_PROCESSOR_MAPPING, which
    fails without torchvision; `get_attributes` reads the sub-processors off `__init__`'s signature, so a subclass
    whose `__init__` names only these two is a complete processor for image prompts."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageTextProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=PROMPT_TEMPLATE)


SEEN: dict[str, Any] = {}  # what the two sides recorded for the checks: initial weights, TRL's first prompts


def weights_digest(model) -> str:
    """sha256 of every tensor of the state dict, by name: equal digests = identical weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class VlmRlvrBench(RlvrBench):
    """RlvrBench that records its policy's initial weights."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        SEEN["rlvr_weights"] = weights_digest(self.run_.policy.model)


class VlmTrlBench(TrlBench):
    """TrlBench on the VLM: rows carry their images, the processing class is image_text_processor's; records the
    model's initial weights and the prompt ids and vision inputs of TRL's first generation batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        suppressed = self.trainer.generation_config.suppress_tokens or []  # TRL: [image_token_id] with a processor
        SEEN["trl_never_sampled"] = self.trainer.processing_class.tokenizer.convert_ids_to_tokens(suppressed)
        self._keep_first_prompts()

    def row(self, sample, index: int) -> dict[str, Any]:
        return {**super().row(sample, index), "images": list(sample.images)}

    def load(self) -> tuple[Any, Any]:
        model, tok, image_processor = load_vlm(**self.w.model, seed=SEED)  # what rlvr's HFVisionLM.load calls
        SEEN["trl_weights"] = weights_digest(model)
        return model, image_text_processor(image_processor, tok)

    def _keep_first_prompts(self) -> None:
        """Record what `_tokenize_prompts` returns once; later calls go straight to TRL's method."""
        tr = self.trainer
        original = tr._tokenize_prompts

        def tokenize_prompts(prompts):
            out = original(prompts)
            SEEN["trl_prompts"] = out  # (prompt_ids, images, multimodal_fields): what model.generate is fed
            del tr._tokenize_prompts  # the class's own method from now on
            return out

        tr._tokenize_prompts = tokenize_prompts


def prompt_check(rlvr_bench) -> dict[str, Any]:
    """Whether TRL's first generation batch feeds the model what rlvr's first step does: prompt ids (without padding),
    pixel_values and image_grid_thw, row by row; and whether both models started from the same weights. rlvr's side:
    its policy's encode_inputs (what its sampler calls) on step 0's samples, each repeated G times as
    rlvr.rollout.collect does."""
    trl_ids, _, fields = SEEN["trl_prompts"]
    w, run = rlvr_bench.w, rlvr_bench.run_
    samples = [run.stream.item(p) for p in range(w.prompts)]  # step 0 reads data positions 0 .. prompts - 1
    ids, mask, extras = run.policy.encode_inputs([s for s in samples for _ in range(w.group)])
    rlvr_ids = [row[m.bool()].tolist() for row, m in zip(ids, mask)]  # (N, P) left-padded -> N lists
    n_image = rlvr_ids[0].count(run.policy.image_token_id)
    pad = "<|image_pad|>"
    return {
        "rows": len(rlvr_ids),
        "same_prompt_tokens": rlvr_ids == [list(map(int, r)) for r in trl_ids],
        "same_pixel_values": torch.equal(torch.cat(extras["pixel_values"]),
                                         torch.as_tensor(np.asarray(fields["pixel_values"]))),
        "same_image_grid_thw": torch.equal(torch.cat(extras["image_grid_thw"]),
                                           torch.as_tensor(np.asarray(fields["image_grid_thw"])).long()),
        "same_initial_weights": SEEN["rlvr_weights"] == SEEN["trl_weights"],
        "prompt_tokens": sorted({len(r) for r in rlvr_ids}),
        "image_tokens_per_prompt": sorted({r.count(run.policy.image_token_id) for r in rlvr_ids}),
        "prompt_text": run.policy.tokenizer.decode(rlvr_ids[0]).replace(pad * n_image, f"{pad} x {n_image}"),
    }


def extra(rlvr_bench) -> dict[str, Any]:
    """The JSON's VLM keys: the tokens each side never samples; the prompt check and the differences when TRL ran."""
    policy = rlvr_bench.run_.policy
    out: dict[str, Any] = {"never_sampled": {"rlvr": policy.tokenizer.convert_ids_to_tokens(policy.vision_token_ids)}}
    if "trl_prompts" not in SEEN:
        return {**out, "prompt_check": None}
    out["never_sampled"]["trl"] = SEEN["trl_never_sampled"]
    return {**out, "prompt_check": prompt_check(rlvr_bench), "vlm_differences": VLM_DIFFERENCES}


if __name__ == "__main__":
    main(VLM, __doc__, extra, rlvr_bench=VlmRlvrBench, trl_bench=VlmTrlBench)
