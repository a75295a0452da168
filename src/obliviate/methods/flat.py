"""FLAT (Wang et al., 2024, "LLM Unlearning via Loss Adjustment with Only Forget Data", ICLR 2025).

Maximise a variational lower bound on the f-divergence between template (refusal) answers and forget
answers, using forget data only — no retain set, no reference model:

L_forget = −mean_i g(P_e,i) + mean_i f*(g(P_f,i))

P_e,i / P_f,i: mean next-token probability of the refusal / forget answer of forget question i;
g the divergence's variational activation, f* its convex conjugate (Nowozin et al., 2016, Table 2):

  tv       g(v) = ½·tanh(v)           f*(t) = t               →  −½tanh(P_e) + ½tanh(P_f)
  kl       g(v) = v                   f*(t) = exp(t − 1)      →  −P_e + exp(P_f − 1)
  js       g(v) = log 2 − softplus(−v)  f*(t) = −log(2 − eᵗ)  →  softplus(−P_e) + softplus(P_f) − 2·log 2
  pearson  g(v) = v                   f*(t) = t²/4 + t        →  −P_e + P_f²/4 + P_f

The authors' code averages the probabilities over padding too and applies g once per batch; here
P is a per-sequence mean over answer tokens and the bound's expectations are means over sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from obliviate.errors import ConfigError
from obliviate.lazy import LazyModule
from obliviate.methods.base import UnlearnMethod, register
from obliviate.methods.common import forward, masked_token_mean, token_nll

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")

#: divergence → (−g(P_e) term, f*(g(P_f)) term), each applied per sequence.
DIVERGENCES = {
    "tv": (lambda pe: -0.5 * torch.tanh(pe), lambda pf: 0.5 * torch.tanh(pf)),
    "kl": (lambda pe: -pe, lambda pf: torch.exp(pf - 1.0)),
    "js": (lambda pe: F.softplus(-pe) - math.log(2.0), lambda pf: F.softplus(pf) - math.log(2.0)),
    "pearson": (lambda pe: -pe, lambda pf: pf**2 / 4.0 + pf),
}


def _mean_token_prob(model, sub) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence mean probability of the answer tokens, and whether the row has any."""
    nll, mask = token_nll(forward(model, sub), sub["labels"])
    n = mask.sum(-1)
    return (torch.exp(-nll) * mask).sum(-1) / n.clamp_min(1.0), (n > 0).float()


@register("flat")
@dataclass
class FLAT(UnlearnMethod):
    needs = frozenset({"forget", "forget_idk"})

    divergence: str = "tv"

    def validate(self, at: str) -> None:
        super().validate(at)
        if self.divergence not in DIVERGENCES:
            raise ConfigError(
                f"{at}.divergence={self.divergence!r} is unknown",
                f"use one of {', '.join(DIVERGENCES)}",
            )

    def forget_loss(self, model, batch, ref):
        template, forget = DIVERGENCES[self.divergence]
        p_e, has_e = _mean_token_prob(model, batch["forget_idk"])
        p_f, has_f = _mean_token_prob(model, batch["forget"])
        return masked_token_mean(template(p_e), has_e) + masked_token_mean(forget(p_f), has_f)
