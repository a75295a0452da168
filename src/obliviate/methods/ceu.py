"""CE-U, cross-entropy unlearning (Yang, 2025, "CE-U: Cross Entropy Unlearning", arXiv:2503.01224).

At each forget answer token with true next token y, the target is the model's own distribution with
y removed, held fixed:

q = stopgrad(softmax(z with z_y = −∞)),   L_forget = mean_t −Σ_v q(v) · log p_θ(v)

Its gradient p_θ − q only moves mass off y onto the model's other candidates, and stays bounded
where GA's explodes. As in the paper, the first ``skip_first`` answer tokens of each sequence are
not targets. No reference model, no retain set.
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.lazy import LazyModule
from obliviate.methods.base import UnlearnMethod, register
from obliviate.methods.common import forward, masked_token_mean, shift
from obliviate.strict import param

F = LazyModule("torch.nn.functional")


@register("ceu")
@dataclass
class CEU(UnlearnMethod):
    needs = frozenset({"forget"})

    skip_first: int = param(1, ge=0)
    """Leading answer tokens of each sequence that are not targets (the paper's 1; 0: none)."""

    def forget_loss(self, model, batch, ref):
        sub = batch["forget"]
        logits, targets, mask = shift(forward(model, sub), sub["labels"])
        mask = mask & (mask.cumsum(-1) > self.skip_first)
        logits = logits.float()
        q = F.softmax(logits.detach().scatter(-1, targets.unsqueeze(-1), float("-inf")), -1)
        ce = -(q * F.log_softmax(logits, -1)).sum(-1)
        return masked_token_mean(ce, mask.float())
