"""Per-token KL estimators between the policy and the reference, (B, T), before masking (docs/methods.md §1.7).

    kl = KL_ESTIMATORS.lookup("k3")(logp, ref_logp)    # then aggregate like the policy loss, times beta

With delta = logp - ref_logp on tokens sampled from the policy (Schulman, "Approximating KL divergence", 2020):
1. k1 = delta and k3 = exp(-delta) + delta - 1 are unbiased for KL(pi || ref); k3 >= 0 per sample.
2. As losses with samples held fixed: grad k2 = delta grad logp has the expectation of grad KL(pi || ref);
   grad k3 = (1 - exp(-delta)) grad logp that of the forward KL(ref || pi); k3_plus has k3's value, k2's gradient.
3. Masked positions are not selected here; AGGREGATIONS select them out with torch.where.
"""

from __future__ import annotations

import torch

from rlvr.registry import Registry

KL_ESTIMATORS = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def k1(logp, ref_logp) -> torch.Tensor:
    """k1 = logp - ref_logp (verl `kl`); unclamped as verl (OpenRLHF clamps to [-10, 10]); no paper id."""
    return logp - ref_logp


@KL_ESTIMATORS.register("abs")
def abs_kl(logp, ref_logp) -> torch.Tensor:
    """|logp - ref_logp| (verl `abs`); no paper id."""
    return (logp - ref_logp).abs()


@KL_ESTIMATORS.register("k2")
def k2(logp, ref_logp) -> torch.Tensor:
    """k2 = 0.5 (logp - ref_logp)^2 (verl `mse`); its gradient is unbiased for grad KL(pi || ref); no paper id."""
    return 0.5 * (logp - ref_logp) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logp, ref_logp, *, clamp: bool = True) -> torch.Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1 (verl `low_var_kl`, GRPO arXiv 2402.03300).

    clamp=True applies verl's clamps: ref - logp to [-20, 20] before exp, the result to [-10, 10]; TRL: clamp=False.
    """
    log_r = ref_logp - logp  # (B, T)
    if clamp:
        log_r = log_r.clamp(-20, 20)
    kl = log_r.exp() - log_r - 1
    return kl.clamp(-10, 10) if clamp else kl


@KL_ESTIMATORS.register("k3_plus")
def k3_plus(logp, ref_logp, *, clamp: bool = True) -> torch.Tensor:
    """verl `k3+`: value of k3, gradient of k2 (k2 - sg[k2] + sg[k3]), unbiased grad of KL(pi || ref); no paper id."""
    straight = k2(logp, ref_logp)
    return straight - straight.detach() + k3(logp, ref_logp, clamp=clamp).detach()
