"""Refusal-target ("I don't know") unlearning.

IDK (TOFU, Maini et al., 2024): L_forget = CE(x_f, y_idk) — fine-tune the forget questions onto a
refusal drawn from :func:`obliviate.data.refusals.load_refusals`. No retain term by default.

TOFU's own IDK pools the forget-refusal pairs and the retain pairs into one batch and takes one CE
over all of their answer tokens. ``retain_loss: nll`` is not that: it adds two separate means,
CE(x_f, y_idk) + CE(D_r), about twice the pooled loss (exactly twice when both halves have the
same number of answer tokens). It is closer-look's IDK+GD.

IDK+AP (Yuan et al., 2024, "A Closer Look at Machine Unlearning for Large Language Models"), the
alias ``idk_ap``: L = γ·CE(x_f, y_idk) + α·AP, γ = α = 1, with the answer-preservation term of
:mod:`obliviate.methods.retain` keeping the true retain answers likelier than a refusal:
−(1/β)·mean log σ(β·(S(x_r,y_idk) − S(x_r,y_r))), β = 0.1 (``retain_params: {beta: 0.1}``).
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.methods.base import UnlearnMethod, register, register_alias
from obliviate.methods.common import forward, mean_ce


@register("idk")
@dataclass
class IDK(UnlearnMethod):
    """L = CE(x_f, y_idk) — fine-tune the forget questions onto a refusal."""

    needs = frozenset({"forget_idk"})

    def forget_loss(self, model, batch, ref):
        sub = batch["forget_idk"]
        return mean_ce(forward(model, sub), sub["labels"])


register_alias(
    "idk_ap",
    IDK,
    "L = γ·CE(x_f, y_idk) + α·AP(x_r, y_r, y_idk) — IDK+AP [alias: idk, retain_loss ap]",
    retain_loss="ap",
)
