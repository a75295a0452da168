"""UNDIAL (Dong et al., 2024, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning
in Large Language Models").

At every forget answer token t with true next token y_t, distil from the reference model's logits
with the true token's logit lowered by β:

q_t = softmax(z_ref,t − β · onehot(y_t)),   L_forget = mean_t CE(q_t, p_θ,t) = −mean_t Σ_v q_t(v) log p_θ,t(v)

The penalty goes on the true token only. Upstream code built the one-hot from labels that still
held -100 at masked positions; as a negative index, -100 lands on token V − 100 (V the vocabulary
size), so those positions penalised an arbitrary real token. Here masked positions carry no target.

No retain term by default: the paper distils on the forget set only, and open-unlearning's UNDIAL
config ships its retain weight at ``alpha: 0``. ``retain_loss: nll`` (or ``kl``) adds one.
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.lazy import LazyModule
from obliviate.methods.base import UnlearnMethod, register
from obliviate.methods.common import forward, masked_token_mean, ref_forward, shift
from obliviate.strict import param

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


def undial_targets(ref_logits: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """softmax(z_ref − β·onehot(y)) over the last axis; ``targets`` must be valid indices."""
    z = ref_logits.float()
    penalty = torch.zeros_like(z).scatter_(-1, targets.unsqueeze(-1), beta)
    return F.softmax(z - penalty, -1)


@register("undial")
@dataclass
class UNDIAL(UnlearnMethod):
    """Self-distil from the reference with the true token's logit lowered by β."""

    needs = frozenset({"forget", "ref"})

    beta: float = param(10.0, ge=0)
    """Logit penalty on the true token (the paper's β = 10); ≥ 0 (0: plain self-distillation, a
    negative one would raise the true token instead)."""

    def forget_loss(self, model, batch, ref):
        sub = batch["forget"]
        logits, targets, mask = shift(forward(model, sub), sub["labels"])
        ref_logits, _, _ = shift(ref_forward(ref, sub), sub["labels"])
        q = undial_targets(ref_logits, targets, self.beta)
        ce = -(q * F.log_softmax(logits.float(), -1)).sum(-1)
        return masked_token_mean(ce, mask.float())
