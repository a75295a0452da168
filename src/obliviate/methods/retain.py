"""Retain-side regularisers any forget loss can be combined with (``retain_loss: nll|kl|ap``).

Each term is a small dataclass: its fields are the term's own parameters, set through the method's
``retain_params`` mapping (only ``ap`` has one, ``beta``). A method holds the built term as
:attr:`UnlearnMethod.retain <obliviate.methods.base.UnlearnMethod.retain>` and adds
``alpha * term(model, batch, ref)`` to its loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from obliviate.lazy import LazyModule
from obliviate.methods.common import (
    forward,
    masked_token_mean,
    mean_ce,
    ref_forward,
    shift,
    token_nll,
)
from obliviate.strict import param

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


@dataclass
class RetainTerm:
    """Base class: ``needs`` names the sub-batches (and ``ref``) the term reads."""

    needs: ClassVar[frozenset[str]] = frozenset({"retain"})

    def __call__(self, model, batch, ref) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class RetainNLL(RetainTerm):
    """``nll``: CE(D_r), the gradient-descent term of GradDiff."""

    def __call__(self, model, batch, ref) -> torch.Tensor:
        sub = batch["retain"]
        return mean_ce(forward(model, sub), sub["labels"])


@dataclass
class RetainKL(RetainTerm):
    """``kl``: KL(π_ref ‖ π_θ) per answer token of D_r, averaged over answer tokens only.

    The public implementations average over padding and prompt positions too; we mask them.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"retain", "ref"})

    def __call__(self, model, batch, ref) -> torch.Tensor:
        sub = batch["retain"]
        logits, _, mask = shift(forward(model, sub), sub["labels"])
        ref_logits, _, _ = shift(ref_forward(ref, sub), sub["labels"])
        logp = F.log_softmax(logits.float(), -1)
        logq = F.log_softmax(ref_logits.float(), -1)
        kl = (logq.exp() * (logq - logp)).sum(-1)
        return masked_token_mean(kl, mask.float())


@dataclass
class RetainAP(RetainTerm):
    """``ap``: answer preservation (Yuan et al., 2024, "A Closer Look at Machine Unlearning for
    Large Language Models"):

        AP = −(1/β) · mean_i log σ(β · (S_θ(x_r, y_idk) − S_θ(x_r, y_r)))

    Small when the true retain answer stays likelier than the refusal (S(y_r) < S(y_idk)), so a
    refusal-trained model does not start refusing retain questions. Only the model's own
    likelihoods enter: no reference model. Pairs with no answer token on either side are skipped.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"retain", "retain_idk"})

    beta: float = param(0.1, gt=0)
    """β of the log-sigmoid (the paper's 0.1); > 0, the loss divides by it."""

    def __call__(self, model, batch, ref) -> torch.Tensor:
        true, idk = batch["retain"], batch["retain_idk"]
        nll_true, m_true = token_nll(forward(model, true), true["labels"])
        nll_idk, m_idk = token_nll(forward(model, idk), idk["labels"])
        margin = nll_idk.sum(-1) - nll_true.sum(-1)
        pairs = ((m_true.sum(-1) > 0) & (m_idk.sum(-1) > 0)).float()
        return masked_token_mean(-F.logsigmoid(self.beta * margin) / self.beta, pairs)


RETAIN_TERMS: dict[str, type[RetainTerm]] = {"nll": RetainNLL, "kl": RetainKL, "ap": RetainAP}
