"""VA-π's pieces (arXiv 2512.19680): RL for an autoregressive image generator with a pixel-space reward under
teacher forcing. Each is a plain function over tensors; `va_pi_step` chains them for one batch of images (the run
loop, config and recipe around it are in rlvr.images.va_pi_train).

    context = noisy_context(codes, p=0.5, codes_n=V, generator=g)        # z̃: z* with tokens replaced at rate p
    z = teacher_forced_samples(logits, G, generator=g)                   # (B, G, T): every position in parallel
    r = pixel_reward(vq.decode(z.flatten(0, 1)), images.repeat_interleave(G, 0))    # −MSE on [−1, 1] pixels
    A = group_advantages(r.view(B, G))                                   # (r − mean) / (std + 1e-8), clamped ±5
    loss = va_pi_loss(logp, old_logp, A, logits, codes, lambda_ce=0.1)

1. Teacher-forced "posterior" q(z | x) = Π_t π(z_t | z̃_{<t}, c): one forward pass over the (noisy) ground-truth
   context gives every position's conditional, and G samples are drawn from all of them at once (not free-running
   generation; evaluation must sample free-running). Position t reads z̃_{<t} only (the causal model's logits at t).
2. Token noise: each context token is replaced, with probability p, by a code drawn uniformly from all V codes
   (which may equal the original). Presets: C2I p off, T2I 0.5, Janus 1.0 (the launch scripts).
3. Reward: r = −(w_mse · MSE(D(z), x) + w_lpips · LPIPS(D(z), x)), MSE over C, H, W with images mapped to [−1, 1]
   as the code does (rlvr images are [0, 1]: the MSE is 4 × the [0, 1] one). LPIPS needs pretrained VGG weights and is
   passed in as a function when a user has them; rlvr ships none.
4. Advantage: per image over its G samples, (r − mean) / (std + 1e-8) with the unbiased std (torch.std), clamped to
   ±5 (VA-π's values, not the GRPO family's 1e-6 and no clamp).
5. Loss: ℓ_PPO = mean over samples of mean over positions of max(−A ρ, −A clip(ρ, 1 − ε, 1 + ε)), ρ = exp(logp −
   old_logp); ℓ_CE = cross-entropy of the same teacher-forced logits against z* (mean over positions and images);
   loss = ℓ_PPO + λ_CE ℓ_CE, ε = 0.2, λ_CE = 0.1.
6. `va_pi_step`: π_old is the sampling pass's log-probs, kept for every update of the batch. By default rollout and
   update run in the same mode (dropout off) and one update per batch (the scripts' one optimizer step per epoch),
   so that update is exactly on-policy (ρ = 1: the clip cannot act). The reference scripts sample from eval-mode
   logits and compute the ratio and CE in train mode, with LlamaGen's token, residual / FFN and class-label dropout
   0.1 (`--sample-model-mode train`), so ρ ≠ 1 from the first update: `dropout` (config algo.train_mode_dropout)
   does that; `updates` > 1 (algo.updates_per_batch) takes more steps on one batch, where ρ moves off 1.
   `ce_step` is plain next-code cross-entropy on the same batch: the AR model's pretraining and VA-π's baseline.
   Under data parallelism (`world`, torchrun) every rank gets the whole batch and trains a contiguous share of its
   images, so a group never spans ranks: the context noise is drawn for the whole batch, the G samples are drawn
   from the ranks' teacher-forced logits gathered in rank order (the same draws as one process), the gradients and
   the metrics are averaged over ranks (equal shares: the global means).
7. With every non-code token banned, the core sampler's free-running distribution over codes (full softmax, banned
   logits −inf) is the same as this module's softmax renormalised over the codes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from rlvr.distributed import World, average_gradients, gather_rows, mean_over_ranks


def noisy_context(codes: torch.Tensor, *, p: float, codes_n: int, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """z̃: each token of `codes` (B, T) replaced by a uniform code with probability p (module docstring 2)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"noisy_context: p must lie in [0, 1], got {p}")
    if p == 0.0:
        return codes.clone()
    hit = torch.rand(codes.shape, generator=generator, device=codes.device) < p
    fresh = torch.randint(codes_n, codes.shape, generator=generator, device=codes.device)
    return torch.where(hit, fresh, codes)


def teacher_forced_samples(logits: torch.Tensor, group: int, *, temperature: float = 1.0,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, T, V) teacher-forced logits -> (B, G, T) codes, each position drawn independently from its conditional."""
    probs = (logits.float() / temperature).softmax(-1)
    b, t, v = probs.shape
    draws = torch.multinomial(probs.reshape(b * t, v), group, replacement=True, generator=generator)  # (B·T, G)
    return draws.view(b, t, group).transpose(1, 2)


def pixel_reward(decoded: torch.Tensor, target: torch.Tensor, *, w_mse: float = 1.0, w_lpips: float = 0.0,
                 lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(N,) r = −(w_mse · MSE + w_lpips · LPIPS) on [0, 1] images mapped to [−1, 1] (module docstring 3)."""
    if decoded.shape != target.shape:
        raise ValueError(f"pixel_reward: decoded {tuple(decoded.shape)} and target {tuple(target.shape)} differ")
    if w_lpips and lpips is None:
        raise ValueError("pixel_reward: w_lpips > 0 needs an lpips function (rlvr ships no LPIPS weights)")
    a, b = decoded * 2 - 1, target * 2 - 1
    r = -w_mse * (a - b).square().flatten(1).mean(1)
    if w_lpips:
        r = r - w_lpips * lpips(a, b).flatten()
    return r


def group_advantages(rewards: torch.Tensor, *, eps: float = 1e-8, clamp: float = 5.0) -> torch.Tensor:
    """(B, G) rewards -> (B, G) advantages (module docstring 4)."""
    mean, std = rewards.mean(1, keepdim=True), rewards.std(1, keepdim=True)
    return ((rewards - mean) / (std + eps)).clamp(-clamp, clamp)


def va_pi_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, logits: torch.Tensor,
               targets: torch.Tensor, *, clip: float = 0.2, lambda_ce: float = 0.1) -> tuple[torch.Tensor, dict]:
    """(loss, metrics) for logp / old_logp (N, T) of the sampled codes, advantages (N,), the teacher-forced logits
    (B, T, V) and ground-truth codes (B, T) (module docstring 5)."""
    ratio = (logp - old_logp).exp()
    a = advantages[:, None]
    ppo = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)).mean(1).mean()
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
    dev = (ratio.detach() - 1).abs()
    return ppo + lambda_ce * ce, {"va_pi/ppo": float(ppo.detach()), "va_pi/ce": float(ce.detach()),
                                  "va_pi/clip_frac": float((dev > clip).float().mean()),
                                  "va_pi/ratio_dev": float(dev.mean())}


def teacher_forced_logits(policy, labels: torch.Tensor, context: torch.Tensor, *, dropout: float = 0.0,
                          generator: torch.Generator | None = None, rows: tuple[int, slice] | None = None
                          ) -> torch.Tensor:
    """(B, T, V) logits over the codes of an image policy (rlvr.images.ar) at every position, reading its class
    token and the context codes before it: input [<class>, z̃_0 .. z̃_{T−2}]. The softmax is renormalised over the
    codes, the tokens the sampler may draw.

    dropout > 0: the reference's train-mode forward (LlamaGen's token, residual and FFN dropout and class-label
    dropout, all at that rate; module docstring 6): the input embeddings, each layer's attention and MLP outputs
    are dropped element-wise and the class token is replaced by `<unk>` (the null class) per image. The masks are
    drawn from `generator` for the whole batch, `rows` = (its size, this rank's share), so they do not depend on
    the number of ranks."""
    from rlvr.images.ar import first_code_id

    tok, model = policy.tokenizer, policy.model
    first, n_codes = first_code_id(tok), len(tok) - first_code_id(tok)
    classes = torch.tensor([tok.convert_tokens_to_ids(f"<class_{int(k)}>") for k in labels], device=context.device)
    ids = torch.cat([classes[:, None], context[:, :-1] + first], 1)
    if not dropout:
        return model(input_ids=ids).logits[..., first : first + n_codes]
    from rlvr.policies.hf_forward import mask_sites, masked_logits

    n, share = rows or (len(ids), slice(None))
    H, dev = model.config.hidden_size, ids.device

    def keep(*shape) -> torch.Tensor:  # (n, *shape) inverted-dropout scales, this rank's rows
        return ((torch.rand((n, *shape), generator=generator, device=dev) >= dropout).float() / (1 - dropout))[share]

    null_class = torch.rand(n, generator=generator, device=dev)[share] < dropout
    masks = [keep(ids.shape[1], H) for _ in range(mask_sites(model))]  # embeddings, then (attention, MLP) per layer
    ids = torch.cat([torch.where(null_class, tok.unk_token_id, ids[:, 0])[:, None], ids[:, 1:]], 1)
    return masked_logits(model, ids, masks)[..., first : first + n_codes]


def va_pi_step(policy, vq, images: torch.Tensor, labels: torch.Tensor, optimizer, *, group: int = 8, p: float = 0.0,
               clip: float = 0.2, lambda_ce: float = 0.1, w_mse: float = 1.0, w_lpips: float = 0.0,
               lpips: Callable | None = None, generator: torch.Generator | None = None,
               world: World | None = None, updates: int = 1, dropout: float = 0.0) -> dict[str, float]:
    """One VA-π round on a batch of images and their classes (module docstring): encode, corrupt the context,
    one teacher-forced forward, G parallel samples per image, pixel rewards through the frozen VQ decoder, clamped
    group advantages, then `updates` optimizer steps of PPO-clip + λ_CE CE, each ratio against the sampling pass's
    log-probs (π_old); with `dropout` the sampling pass runs without dropout and every update with it (the
    reference's train mode, `teacher_forced_logits`). Returns its metrics (the ratio's, averaged over the updates).
    Under data parallelism every rank passes the whole batch and trains its share (module docstring 6)."""
    if group < 2:
        raise ValueError(f"va_pi_step: group must be >= 2 (advantages are relative within it), got {group}")
    if updates < 1 or not 0.0 <= dropout < 1.0:
        raise ValueError(f"va_pi_step: updates must be >= 1 and dropout in [0, 1), got {updates}, {dropout}")
    world = world or World()
    with torch.no_grad():
        target = vq.encode(images)
    n = len(images)
    context = noisy_context(target, p=p, codes_n=vq.config.codes, generator=generator)  # the whole batch's draws
    share = rank_share(n, world)
    images, labels, target = images[share], labels[share], target[share]
    reuse = not dropout  # the first update's forward is the sampling pass's (one forward, exactly on-policy)
    with torch.set_grad_enabled(reuse):
        logits = teacher_forced_logits(policy, labels, context[share])  # (B / ranks, T, V)
    b, t, v = logits.shape
    with torch.no_grad():
        everyone, mine = gather_rows(logits.detach(), world)  # (B, T, V) in rank order
        z = teacher_forced_samples(everyone, group, generator=generator)[mine]  # (B / ranks, G, T)
        rewards = pixel_reward(vq.decode(z.flatten(0, 1)), images.repeat_interleave(group, 0), w_mse=w_mse,
                               w_lpips=w_lpips, lpips=lpips)
        advantages = group_advantages(rewards.view(b, group))
        greedy_mse = float((vq.decode(logits.argmax(-1)) - images).square().mean())

    def logp_of(x: torch.Tensor) -> torch.Tensor:  # (B G, T) log-probs of the drawn codes
        return x.log_softmax(-1)[:, None].expand(b, group, t, v).gather(-1, z[..., None])[..., 0].flatten(0, 1)

    old_logp = logp_of(logits.detach())  # π_old: the sampling pass
    totals: dict[str, float] = {}
    for k in range(updates):
        if not (k == 0 and reuse):
            logits = teacher_forced_logits(policy, labels, context[share], dropout=dropout, generator=generator,
                                           rows=(n, share))
        logp = logp_of(logits)
        loss, metrics = va_pi_loss(logp, old_logp, advantages.flatten(), logits, target, clip=clip,
                                   lambda_ce=lambda_ce)
        _update(policy, optimizer, loss, world)
        for key, value in {**metrics, "va_pi/loss": float(loss.detach())}.items():
            totals[key] = totals.get(key, 0.0) + value / updates
    return mean_over_ranks({**totals, "va_pi/reward": float(rewards.mean()), "va_pi/greedy_mse": greedy_mse}, world)


def ce_step(policy, vq, images: torch.Tensor, labels: torch.Tensor, optimizer, *, p: float = 0.0,
            generator: torch.Generator | None = None, world: World | None = None) -> dict[str, float]:
    """One plain cross-entropy (next-code) update on a batch: the AR model's pretraining, and the baseline VA-π is
    measured against (the same steps, batches and optimizer without the pixel reward). Returns its metrics. Under
    data parallelism every rank passes the whole batch and trains its share."""
    world = world or World()
    with torch.no_grad():
        target = vq.encode(images)
    context = noisy_context(target, p=p, codes_n=vq.config.codes, generator=generator)
    share = rank_share(len(images), world)
    images, labels, target = images[share], labels[share], target[share]
    logits = teacher_forced_logits(policy, labels, context[share])  # (B / ranks, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten())
    _update(policy, optimizer, loss, world)
    with torch.no_grad():
        greedy_mse = float((vq.decode(logits.argmax(-1)) - images).square().mean())
    return mean_over_ranks({"va_pi/ce": float(loss.detach()), "va_pi/greedy_mse": greedy_mse}, world)


def rank_share(n: int, world: World) -> slice:
    """This rank's contiguous share of a batch of n images (n divisible by the ranks: checked with the config)."""
    if n % world.size:
        raise ValueError(f"a batch of {n} images does not split over {world.size} ranks")
    k = n // world.size
    return slice(world.rank * k, (world.rank + 1) * k)


def _update(policy, optimizer, loss: torch.Tensor, world: World) -> None:
    optimizer.zero_grad()
    loss.backward()
    average_gradients(list(policy.model.parameters()), world)  # equal shares: the mean is the whole batch's
    optimizer.step()
