"""SimNPO (Fan et al., 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for
LLM Unlearning").

L_forget = −(2/β) · mean_i log σ(β · S̄_θ(x_i, y_i) − δ)

NPO with the reference model replaced by length normalisation: S̄ = S/|y| is the per-token NLL, so
the reward is (1/|y|)·log π_θ(y|x) = −S̄_θ and the loss falls as the forget answer's per-token NLL
rises. δ ≥ 0 is the reward margin (the paper's γ; open-unlearning writes β·(S̄ − δ), the same at
δ = 0). Reference-free: never loads a reference model. Some write-ups print σ(−β·S̄_θ − δ); with
S̄ an NLL that sign would reward relearning the forget answers, so the paper's sign is used here.

Defaults as in the paper's TOFU runs: β = 4.5 (its range 2.5–4.5), δ = 0, forget weight γ = 0.125,
retain term ``nll`` with α = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.lazy import LazyModule
from obliviate.methods.base import UnlearnMethod, register
from obliviate.methods.common import forward, masked_token_mean, token_nll
from obliviate.strict import param

F = LazyModule("torch.nn.functional")


@register("simnpo")
@dataclass
class SimNPO(UnlearnMethod):
    """Reference-free, length-normalised NPO: −(2/β)·log σ(β·S̄_θ − δ)."""

    needs = frozenset({"forget"})

    beta: float = param(4.5, gt=0)
    """Inverse temperature (the paper's 2.5–4.5); > 0, the loss divides by it."""
    delta: float = param(0.0, ge=0)
    """Reward margin δ ≥ 0 (the paper's γ)."""
    gamma: float = param(0.125, ge=0)
    retain_loss: str | None = "nll"

    def forget_loss(self, model, batch, ref):
        sub = batch["forget"]
        nll, mask = token_nll(forward(model, sub), sub["labels"])
        n_tokens = mask.sum(-1)
        s_bar = nll.sum(-1) / n_tokens.clamp_min(1.0)
        per_seq = -(2.0 / self.beta) * F.logsigmoid(self.beta * s_bar - self.delta)
        return masked_token_mean(per_seq, (n_tokens > 0).float())
