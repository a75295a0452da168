"""Negative Preference Optimization (Zhang et al., 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning").

L_forget = −(2/β)·mean_i log σ(−β·(S_ref(x_i, y_i) − S_θ(x_i, y_i)))

with S the summed answer-token NLL. The log-ratio log π_θ/π_ref = S_ref − S_θ; NPO pushes it down
but, unlike GA, its gradient vanishes once the forget answer is unlikely enough, so it does not
collapse. Default retain term: ``nll`` (NPO+RT in the paper, as in open-unlearning's default).
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.lazy import LazyModule
from obliviate.methods.base import UnlearnMethod, register
from obliviate.methods.common import log_ratio, masked_token_mean
from obliviate.strict import param

F = LazyModule("torch.nn.functional")


@register("npo")
@dataclass
class NPO(UnlearnMethod):
    """Negative preference optimisation against a frozen reference (β = 0.1, NPO+RT)."""

    needs = frozenset({"forget", "ref"})

    beta: float = param(0.1, gt=0)
    """Inverse temperature of the log-sigmoid (the paper's 0.1); > 0, the loss divides by it."""
    retain_loss: str | None = "nll"

    def forget_loss(self, model, batch, ref):
        ratio, answered = log_ratio(model, ref, batch["forget"])
        per_seq = -(2.0 / self.beta) * F.logsigmoid(-self.beta * ratio)
        return masked_token_mean(per_seq, answered.float())  # rows without answer tokens skipped
