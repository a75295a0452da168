"""DPO with refusals as the preferred answer (Rafailov et al., 2023; used for unlearning as IdkDPO
in TOFU, Maini et al., 2024, and "A Closer Look at Machine Unlearning for LLMs", Yuan et al., 2024).

With the log-ratio r(y) = log π_θ(y|x) − log π_ref(y|x) = S_ref(x, y) − S_θ(x, y):

L_forget = −(2/β) · mean_i log σ(β · [r(y_idk) − r(y_f)])

over forget questions x_f, preferring the refusal y_idk to the forget answer y_f. β = 0.1 as in
TOFU and closer-look. Default retain term ``nll`` (IdkDPO+GD, TOFU's and open-unlearning's
default); ``retain_loss: null`` for DPO alone. ``idkdpo`` is the same method under
open-unlearning's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.lazy import LazyModule
from obliviate.methods.base import UnlearnMethod, register, register_alias
from obliviate.methods.common import log_ratio, masked_token_mean
from obliviate.strict import param

F = LazyModule("torch.nn.functional")


@register("dpo")
@dataclass
class DPO(UnlearnMethod):
    """DPO with the refusal preferred over the forget answer, against a frozen reference."""

    needs = frozenset({"forget", "forget_idk", "ref"})

    beta: float = param(0.1, gt=0)
    """Inverse temperature of the log-sigmoid (TOFU's 0.1); > 0, the loss divides by it."""
    retain_loss: str | None = "nll"

    def forget_loss(self, model, batch, ref):
        win, has_win = log_ratio(model, ref, batch["forget_idk"])
        lose, has_lose = log_ratio(model, ref, batch["forget"])
        per_pair = -(2.0 / self.beta) * F.logsigmoid(self.beta * (win - lose))
        return masked_token_mean(per_pair, (has_win & has_lose).float())


register_alias(
    "idkdpo",
    DPO,
    "DPO with the refusal preferred over the forget answer [alias: dpo, open-unlearning's name]",
)
