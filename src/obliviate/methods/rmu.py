"""RMU, representation misdirection for unlearning (Li et al., 2024, "The WMDP Benchmark: Measuring
and Reducing Malicious Use With Unlearning").

With h_ℓ the residual stream after decoder layer ℓ, u a fixed random unit vector and c the
steering coefficient:

L = γ · mean_t ‖h_ℓ(x_f)_t − c·u‖² / d + α · mean_t ‖h_ℓ(x_r)_t − h_ℓ^ref(x_r)_t‖² / d

over all non-padding tokens (attention mask) of the forget / retain sequences; the 1/d (hidden size)
matches the element-wise MSE of the WMDP code, which α is calibrated against. Only the MLP
down-projections of layers ℓ−2..ℓ train; :meth:`prepare` freezes everything else.

h_ℓ is captured with a forward hook on decoder layer ℓ itself, so it is always the raw residual
stream, never normalised — also for the last layer, where HF's ``hidden_states[-1]`` would be the
output of the model's final norm (steering that would only move a normalised vector).

Defaults: ℓ = min(7, num_layers // 2) (the paper's ℓ = 7 on 32-layer 7B models), α = 100 (the
paper's 100–1200). The published c = 6.5–20 fits 7B activation norms; here c defaults to
``steer_scale`` × the mean activation norm ‖h_ℓ‖ on the first forget batch, so one default works on
a 4-layer toy model and on a 7B model (an obliviate choice, not the paper's); set ``steer_coeff``
for a fixed c as published.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from obliviate.errors import ConfigError
from obliviate.lazy import LazyModule
from obliviate.methods.base import UnlearnMethod, register
from obliviate.strict import param

torch = LazyModule("torch")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's list of decoder layers (``model.model.layers`` for HF Llama-style models)."""
    n_layers = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if (
            (name == "layers" or name.endswith(".layers"))
            and isinstance(module, torch.nn.ModuleList)
            and len(module) == n_layers
        ):
            return module
    raise ConfigError(
        f"rmu found no list of {n_layers} decoder layers named `layers` in the model",
        "RMU supports Llama-style models (model.layers.<i>.mlp.down_proj)",
    )


def hidden_at(model: torch.nn.Module, sub: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Output of decoder layer ``layer`` (0-based), shape [B, T, d], before any final norm."""
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"])
    finally:
        handle.remove()
    return captured[0]


def token_sq_dist(
    h: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """mean over unmasked tokens of ‖h − target‖² / d."""
    per_token = (h.float() - target.float()).pow(2).mean(-1)
    m = attention_mask.float()
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


@register("rmu")
@dataclass
class RMU(UnlearnMethod):
    """Steer layer-ℓ activations of D_f to c·u, keep D_r's at the reference's."""

    needs = frozenset({"forget", "retain", "ref"})

    layer: int | None = param(None, ge=0)
    """Steered layer ℓ (0-based). None: min(7, num_layers // 2) — 7 as published for 32-layer models."""
    trainable_layers: list[int] | None = param(None, ge=0)
    """Layers whose ``trainable_module`` trains. None: ℓ−2..ℓ (clipped at 0)."""
    trainable_module: str = "mlp.down_proj"
    steer_coeff: float | None = param(None, gt=0)
    """Fixed c. None: steer_scale × mean ‖h_ℓ‖ measured in :meth:`prepare`."""
    steer_scale: float = param(4.0, gt=0)
    """c = steer_scale × mean ‖h_ℓ‖ when ``steer_coeff`` is null."""
    seed: int = param(0, ge=0, le=2**64 - 1)
    """Seeds the random direction u."""
    alpha: float = param(100.0, ge=0)
    """Weight of the activation retain term (the paper's 100–1200, element-wise MSE scale)."""

    def __post_init__(self) -> None:
        self._layer: int | None = None
        self._u: torch.Tensor | None = None
        self._coeff: float | None = self.steer_coeff

    def validate(self, at: str) -> None:
        if self.retain_loss is not None or self.retain_params:
            raise ConfigError(
                f"{at}.retain_loss={self.retain_loss!r} is not used by rmu",
                "RMU has its own activation retain term; leave retain_loss and retain_params unset",
            )
        super().validate(at)  # layer ≥ 0, steer_coeff / steer_scale > 0: their declared ranges

    def prepare(self, model, ref, sample=None) -> None:
        n_layers = model.config.num_hidden_layers
        layer = min(7, n_layers // 2) if self.layer is None else self.layer
        if layer >= n_layers:
            raise ConfigError(
                f"unlearn.params.layer={layer} but the model has {n_layers} layers",
                f"use a layer in [0, {n_layers - 1}] or null",
            )
        train = (
            self.trainable_layers
            if self.trainable_layers is not None
            else range(max(0, layer - 2), layer + 1)
        )
        if any(not 0 <= i < n_layers for i in train):
            raise ConfigError(
                f"unlearn.params.trainable_layers={list(train)} is out of range",
                f"the model has layers 0..{n_layers - 1}",
            )
        patterns = [
            re.compile(rf"(^|\.)layers\.{i}\.{re.escape(self.trainable_module)}\.") for i in train
        ]
        hits = 0
        for name, p in model.named_parameters():
            p.requires_grad_(any(pat.search(name) for pat in patterns))
            hits += p.requires_grad
        if not hits:
            raise ConfigError(
                f"unlearn.params.trainable_module={self.trainable_module!r} matches no parameter of layers {list(train)}",
                "name a module inside each decoder layer, e.g. mlp.down_proj",
            )
        self._layer = layer
        d = model.config.hidden_size
        u = torch.rand(d, generator=torch.Generator().manual_seed(self.seed))
        self._u = u / u.norm()
        if self._coeff is None and sample is not None:
            self._coeff = self._calibrate(model, sample["forget"])

    def _calibrate(self, model, sub) -> float:
        with torch.no_grad():
            norms = hidden_at(model, sub, self._layer).float().norm(dim=-1)
            m = sub["attention_mask"].float()
            return self.steer_scale * float((norms * m).sum() / m.sum().clamp_min(1.0))

    def forget_loss(self, model, batch, ref):
        if self._u is None:
            raise RuntimeError("RMU.prepare(model, ref, sample) must run before the first loss")
        sub = batch["forget"]
        h = hidden_at(model, sub, self._layer)
        if self._coeff is None:
            self._coeff = self._calibrate(model, sub)
        target = (self._coeff * self._u).to(h.device)
        return token_sq_dist(h, target.expand_as(h), sub["attention_mask"])

    def retain_term(self, model, batch, ref) -> torch.Tensor:
        sub = batch["retain"]
        with torch.no_grad():
            h_ref = hidden_at(ref, sub, self._layer)
        return token_sq_dist(hidden_at(model, sub, self._layer), h_ref, sub["attention_mask"])

    def loss(self, model, batch, ref=None):
        forget = self.forget_loss(model, batch, ref)
        return self.gamma * forget + self.alpha * self.retain_term(model, batch, ref)
