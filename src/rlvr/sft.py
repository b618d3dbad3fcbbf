"""Supervised warm start: teach a (tiny, random) model the task's answer format from its reference answers.

1. Build the policy from `sft.init` (a tiny config name or a local checkpoint; default: the `model` section).
2. Each step takes the next `batch_size` task items, appends the reference answer and EOS to the prompt,
   and minimises the token-mean cross-entropy of the answer tokens (the prompt is not trained on).
3. Evaluate greedily every `eval_every` steps; stop at `steps` or once accuracy reaches `target_accuracy`,
   so RL can start from a model that is right only part of the time.
4. Save a Hugging Face folder (`sft.output`, default runs/<name>-sft/model) that `rlvr train` loads via
   `model.path`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rlvr.checkpoint import save_model_atomic
from rlvr.config import Config, ConfigError
from rlvr.evaluate import evaluate
from rlvr.metrics import RunLogger
from rlvr.policies import encode_prompts, load_policy
from rlvr.update import policy_logp


def sft_batch(tokenizer, samples, references: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, loss_mask) for prompt + reference + EOS, completions right-padded."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [s.prompt for s in samples])
    answers = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in references]
    T = max(len(a) for a in answers)
    comp = torch.full((len(answers), T), tokenizer.pad_token_id, dtype=torch.long)
    comp_mask = torch.zeros((len(answers), T), dtype=torch.long)
    for i, a in enumerate(answers):
        comp[i, : len(a)] = torch.tensor(a)
        comp_mask[i, : len(a)] = 1
    return torch.cat([prompt_ids, comp], 1), torch.cat([prompt_mask, comp_mask], 1), comp_mask.float()


def sft(cfg: Config, *, out: str | None = None) -> dict[str, Any]:
    """Run the warm start; returns accuracy history and the saved model folder."""
    from rlvr.run import build_task

    s = cfg.sft
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    init = s.init or cfg.model.config or cfg.model.path
    if not init:
        raise ConfigError("sft.init: name a tiny config (e.g. qwen2-tiny) or a local checkpoint folder")
    is_path = Path(init).exists()
    model, tokenizer = load_policy(path=init if is_path else None, config=None if is_path else init,
                                   config_overrides=cfg.model.config_overrides, tokenizer=cfg.model.tokenizer,
                                   seed=cfg.seed)
    task, eval_task = build_task(cfg, eval_split=False), build_task(cfg, eval_split=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.0)
    out_dir = Path(out or s.output or cfg.run_dir.with_name(cfg.name + "-sft") / "model")
    logger = RunLogger(out_dir.parent)
    ev = lambda: evaluate(model, tokenizer, eval_task, size=cfg.task.eval_size,  # noqa: E731
                          max_new_tokens=cfg.rollout.max_new_tokens, batch_size=128)
    history, t0 = [], time.perf_counter()
    bar = tqdm(range(1, s.steps + 1), desc=f"rlvr sft {cfg.name}", unit="step", disable=not cfg.train.progress,
               dynamic_ncols=True)
    for step in bar:
        loss = _sft_step(model, tokenizer, task, optimizer, step, s.batch_size, lean=cfg.model.lean_forward)
        row = {"sft/loss": loss}
        bar.set_postfix(loss=f"{loss:.3f}")
        if step % s.eval_every == 0 or step == s.steps:
            row.update({f"eval/{k}": v for k, v in ev().items()})
            history.append((step, row["eval/accuracy"]))
            bar.write(f"sft step {step}: loss {loss:.3f}, held-out greedy accuracy {row['eval/accuracy']:.3f}")
            if s.target_accuracy and row["eval/accuracy"] >= s.target_accuracy:
                logger.log(step, row)
                break
        logger.log(step, row)
    logger.close()
    save_model_atomic(model, tokenizer, out_dir)
    return {"model": str(out_dir), "history": history, "seconds": time.perf_counter() - t0}


def _sft_step(model, tokenizer, task, optimizer, step: int, batch_size: int, *, lean: bool = True) -> float:
    model.train()
    idx = [((step - 1) * batch_size + j) % len(task) for j in range(batch_size)]
    samples = [task[i] for i in idx]
    ids, attn, loss_mask = sft_batch(tokenizer, samples, [task.reference(x) for x in samples])
    logp, _ = policy_logp(model, ids, attn, loss_mask.shape[1], lean=lean)
    loss = -(logp * loss_mask).sum() / loss_mask.sum()
    loss.backward()
    loss = loss.detach()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
