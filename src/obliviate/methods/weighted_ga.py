"""Token-reweighted gradient ascent: each forget token's NLL ℓ_t = −log p_t is ascended with a
weight computed from its own (detached) probability p_t = exp(−ℓ_t).

WGA (Wang et al., 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go
Beyond"):  L_forget = −mean_t [p_t^β · ℓ_t]
SatImp (Yang et al., 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning"):
L_forget = −mean_t [p_t^β1 · (1 − p_t)^β2 · ℓ_t]

Means run over all answer tokens of the batch. Neither needs a reference model (upstream code built
one and never used it).
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.lazy import LazyModule
from obliviate.methods.base import UnlearnMethod, register
from obliviate.methods.common import forward, masked_token_mean, token_nll
from obliviate.strict import param

torch = LazyModule("torch")


def _weighted_ascent(model, batch, weight_fn) -> torch.Tensor:
    sub = batch["forget"]
    nll, mask = token_nll(forward(model, sub), sub["labels"])
    p = torch.exp(-nll.detach())
    return -masked_token_mean(weight_fn(p) * nll, mask)


@register("wga")
@dataclass
class WGA(UnlearnMethod):
    """Gradient ascent with each token weighted by p_t^β (β = 1, retain ``nll``)."""

    needs = frozenset({"forget"})

    beta: float = param(1.0, ge=0)
    """Exponent of p_t (the paper's 1; 0: plain GA). Negative would weight the least likely
    tokens without bound."""
    retain_loss: str | None = "nll"

    def forget_loss(self, model, batch, ref):
        return _weighted_ascent(model, batch, lambda p: p**self.beta)


@register("satimp")
@dataclass
class SatImp(UnlearnMethod):
    """Gradient ascent weighted by p_t^β1·(1−p_t)^β2 (β1 = 5, β2 = 1, retain ``nll`` at α = 0.1)."""

    needs = frozenset({"forget"})

    beta1: float = param(5.0, ge=0)
    """Exponent of p_t (the paper's 5); ≥ 0."""
    beta2: float = param(1.0, ge=0)
    """Exponent of 1 − p_t: the paper's 1; the authors' README recommends 0.1. ≥ 0."""
    alpha: float = param(0.1, ge=0)
    """Retain weight: forget : retain = 10 : 1, as in the paper and open-unlearning's config."""
    retain_loss: str | None = "nll"

    def forget_loss(self, model, batch, ref):
        return _weighted_ascent(model, batch, lambda p: p**self.beta1 * (1.0 - p) ** self.beta2)
