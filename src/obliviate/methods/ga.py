"""Gradient ascent (GA) and its alias gradient difference (GradDiff).

GA: L = −CE(D_f) — ascend the NLL of the forget answers (Jang et al., 2023, "Knowledge Unlearning
for Mitigating Privacy Risks in Language Models"; TOFU, Maini et al., 2024).
GradDiff: L = −γ·CE(D_f) + α·CE(D_r), α = γ = 1 (Liu et al., 2022, "Continual Learning and Private
Unlearning"; TOFU) — GA with ``retain_loss: nll``.
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.methods.base import UnlearnMethod, register, register_alias
from obliviate.methods.common import forward, mean_ce


@register("ga")
@dataclass
class GradAscent(UnlearnMethod):
    """L = −CE(D_f) — gradient ascent on the forget answers (no retain term: it collapses)."""

    def forget_loss(self, model, batch, ref):
        sub = batch["forget"]
        return -mean_ce(forward(model, sub), sub["labels"])


register_alias(
    "graddiff",
    GradAscent,
    "L = −γ·CE(D_f) + α·CE(D_r) — gradient difference [alias: ga, retain_loss nll]",
    retain_loss="nll",
)
