"""Supervised warm start: teach a (tiny, random) model the task's answer format from its reference answers.

1. Build the policy from `sft.init` (a tiny config name or a local checkpoint; default: the `model` section).
2. Each step takes the next `batch_size` task items, appends the reference answer and EOS to the prompt,
   and minimises the token-mean cross-entropy of the answer tokens (the prompt is not trained on). A multi-turn
   task's reference interleaves the environment's replies (`Task.reference_turns`): they are attended to, never
   trained on, exactly as in RL.
3. Evaluate greedily every `eval_every` steps, through the run's sampler (its environment, if any); stop at `steps`
   or once accuracy reaches `target_accuracy`, so RL can start from a model that is right only part of the time.
4. Save a Hugging Face folder (`sft.output`, default runs/<name>-sft/model) that `rlvr train` loads via
   `model.path`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rlvr.batch import Batch
from rlvr.checkpoint import save_model_atomic
from rlvr.config import Config, ConfigError
from rlvr.evaluate import evaluate
from rlvr.metrics import RunLogger
from rlvr.policies import load_policy_of


def sft_batch(policy, samples, turns: list[list[tuple[str, bool]]]) -> Batch:
    """Prompt + reference segments + EOS as a Batch: loss_mask 1 on trained segments and EOS, completions
    right-padded. Each segment is tokenized on its own, as the multi-turn loop tokenizes turns and observations."""
    from rlvr.envs.base import Observation

    tok = policy.tokenizer
    prompt_ids, prompt_mask, extras = policy.encode_inputs(samples)
    rows, flags, shown = [], [], []  # shown: per row, the (pixels, grid) of observations that show images
    for segments in turns:
        ids, trained, images = [], [], []
        for text, train in segments:
            if isinstance(text, Observation) and text.images:  # an environment's reply that shows images
                piece, px, grid = policy.observation_tokens(text.text, text.images)
                images.append((px, grid))
            else:
                piece = tok(text.text if isinstance(text, Observation) else text, add_special_tokens=False)["input_ids"]
            ids, trained = ids + piece, trained + [float(train)] * len(piece)
        rows.append(ids + [tok.eos_token_id])
        flags.append(trained + [1.0])
        shown.append(images)
    if any(shown):
        extras = _with_observed_images(extras, shown)
    T = max(len(r) for r in rows)
    comp = torch.full((len(rows), T), policy.pad_id, dtype=torch.long)
    comp_mask, loss_mask = torch.zeros((len(rows), T), dtype=torch.long), torch.zeros(len(rows), T)
    for i, (r, f) in enumerate(zip(rows, flags)):
        comp[i, : len(r)], comp_mask[i, : len(r)], loss_mask[i, : len(r)] = torch.tensor(r), 1, torch.tensor(f)
    dev = policy.device
    return Batch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=comp.to(dev),
                 completion_mask=comp_mask.to(dev), loss_mask=loss_mask.to(dev), rollout_logp=torch.zeros_like(
                     loss_mask, device=dev), truncated=torch.zeros(len(rows), dtype=torch.bool, device=dev),
                 texts=["".join(getattr(t, "text", t) for t, _ in seg) for seg in turns],
                 group_ids=torch.arange(len(rows), device=dev), samples=list(samples), extras=extras)


def _with_observed_images(extras: dict[str, Any], shown: list[list[tuple]]) -> dict[str, Any]:
    """Each row's prompt images followed by the images its observations show, in token order."""
    import torch

    pixels, grids = extras["pixel_values"], extras["image_grid_thw"]
    return {**extras, "pixel_values": [torch.cat([p, *(px for px, _ in s)]) for p, s in zip(pixels, shown)],
            "image_grid_thw": [torch.cat([g, *(gr for _, gr in s)]) for g, s in zip(grids, shown)]}


def sft(cfg: Config, *, out: str | None = None) -> dict[str, Any]:
    """Run the warm start; returns accuracy history and the saved model folder."""
    from rlvr.run import build_sampler, build_task

    s = cfg.sft
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    source = init_source(s.init or cfg.model.config or cfg.model.path or cfg.model.gguf_file)
    policy = load_policy_of(**source, config_overrides=cfg.model.config_overrides if source["config"] else None,
                            tokenizer=cfg.model.tokenizer or source["path"], seed=cfg.seed,
                            lean=cfg.model.lean_forward, chat_template=cfg.model.chat_template,
                            processor=cfg.model.processor or None)
    print(f"rlvr: prompts reach the model as {policy.prompt_format}", file=sys.stderr)
    task, eval_task = build_task(cfg, eval_split=False), build_task(cfg, eval_split=True)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=s.lr, weight_decay=0.0)
    out_dir = Path(out or s.output or cfg.run_dir.with_name(cfg.name + "-sft") / "model")
    logger = RunLogger(out_dir.parent)
    sampler = build_sampler(cfg, policy)
    ev = lambda: evaluate(sampler, eval_task, size=cfg.task.eval_size, batch_size=128)  # noqa: E731
    history, t0 = [], time.perf_counter()
    bar = tqdm(range(1, s.steps + 1), desc=f"rlvr sft {cfg.name}", unit="step", disable=not cfg.train.progress,
               dynamic_ncols=True)
    for step in bar:
        loss = _sft_step(policy, task, optimizer, step, s.batch_size)
        row = {"sft/loss": loss}
        bar.set_postfix(loss=f"{loss:.3f}")
        due = (s.eval_every and step % s.eval_every == 0) or step == s.steps
        if due and cfg.task.eval_size > 0:  # eval_every 0: only at the end; eval_size 0: never
            row.update({f"eval/{k}": v for k, v in ev().items()})
            history.append((step, row["eval/accuracy"]))
            bar.write(f"sft step {step}: loss {loss:.3f}, held-out greedy accuracy {row['eval/accuracy']:.3f}")
            if s.target_accuracy and row["eval/accuracy"] >= s.target_accuracy:
                logger.log(step, row)
                break
        logger.log(step, row)
    logger.close()
    save_model_atomic(policy, out_dir)
    return {"model": str(out_dir), "history": history, "seconds": time.perf_counter() - t0}


def init_source(init: str | None, key: str = "sft.init") -> dict[str, Any]:
    """Where the warm start begins, as HFCausalLM.load's path= / config= / gguf_file=: a tiny config name, a
    checkpoint folder, or a GGUF file (a path or a package that ships one)."""
    from rlvr.config import require_gguf_reader
    from rlvr.policies import TINY_CONFIGS, VLM_CONFIGS
    from rlvr.policies.hf import resolve_gguf

    if not init:
        raise ConfigError(f"{key}: name a tiny config (e.g. qwen2-tiny), a local checkpoint folder or a GGUF file")
    if init in TINY_CONFIGS or init in VLM_CONFIGS:
        return {"path": None, "config": init, "gguf_file": None}
    if Path(init).is_dir():
        return {"path": str(init), "config": None, "gguf_file": None}
    try:
        resolve_gguf(init)
    except ValueError:
        names = sorted({**TINY_CONFIGS, **VLM_CONFIGS})
        raise ConfigError(f"{key}: '{init}' is neither a tiny config ({names}), an existing checkpoint folder nor a "
                          "GGUF file (a path, or an installed package that ships one); nothing is downloaded") from None
    require_gguf_reader(key)
    return {"path": None, "config": None, "gguf_file": str(init)}


def _sft_step(policy, task, optimizer, step: int, batch_size: int) -> float:
    policy.train()
    idx = [((step - 1) * batch_size + j) % len(task) for j in range(batch_size)]
    samples = [task[i] for i in idx]
    batch = sft_batch(policy, samples, [task.reference_turns(x) for x in samples])
    logp, _ = policy.logp(batch)
    loss = -(logp * batch.loss_mask).sum() / batch.loss_mask.sum()
    loss.backward()
    loss = loss.detach()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
