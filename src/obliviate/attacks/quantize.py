"""The quantisation attack: round the unlearned weights to 8 or 4 bits and re-measure.

Zhang et al. (ICLR 2025, "Catastrophic failure of LLM unlearning via quantization") observe that
unlearning with a utility constraint moves the weights so little that 4-bit quantisation maps the
unlearned and the target weights to the same grid points, and the forgotten knowledge returns.

Everything here is *fake* quantisation in plain torch: each weight is quantised and immediately
dequantised, so the model keeps its dtype and runs unchanged, on the values a quantised
deployment would compute with. Three schemes:

- ``int8`` / ``int4``: symmetric round-to-nearest (RTN) per output channel, :func:`quantize_rtn`;
- ``nf4``: QLoRA's 4-bit NormalFloat codebook with blockwise absmax scales, :func:`quantize_nf4`.

As bitsandbytes and ``transformers`` do by default, only the ``torch.nn.Linear`` weights are
quantised; embeddings, norms, biases and the output head stay in full precision.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SCHEMES = ("int8", "int4", "nf4")


def quantize_rtn(w: Tensor, bits: int) -> Tensor:
    """Symmetric round-to-nearest fake quantisation, one scale per output channel (row).

    With ``Q = 2^(bits−1) − 1`` (127 at 8 bits, 7 at 4 bits) and row ``r`` of ``w`` (a Linear
    weight is ``[out, in]``; other shapes are viewed as ``[w.shape[0], −1]``):

        scale_r = max_j |w_rj| / Q
        q_rj    = clamp(round(w_rj / scale_r), −Q, Q)     (computed as w_rj · Q / max_j |w_rj|)
        result  = q_rj · scale_r

    ``round`` is :func:`torch.round`, which rounds halves to the even integer (2.5 → 2,
    3.5 → 4). The grid is symmetric, so at most ``2Q + 1`` distinct levels per row (15 at 4
    bits); an all-zero row has scale 0 and stays zero. Computed and returned in float32;
    quantising the result again returns it unchanged.
    """
    if bits < 2:
        raise ValueError(f"bits must be at least 2, got {bits}")
    if w.dim() == 0:
        raise ValueError("quantize_rtn needs a tensor with an output-channel dimension")
    q_max = 2 ** (bits - 1) - 1
    rows = w.detach().float().reshape(w.shape[0], -1)
    absmax = rows.abs().amax(dim=1, keepdim=True)
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))  # zero rows: 0 / 1 = 0
    # w·Q / max|w| rather than w / scale: one rounding fewer, so a value that is a tie in exact
    # arithmetic (w = −0.5, max|w| = 1, Q = 7 → −3.5) is a tie here too
    q = torch.clamp(torch.round(rows * q_max / safe), -q_max, q_max)
    return (q * (absmax / q_max)).reshape(w.shape)


def nf4_codebook() -> Tensor:
    """The 16 NormalFloat4 levels of QLoRA (Dettmers et al. 2023), derived from normal quantiles.

    Quantiles of N(0, 1) at probabilities evenly spaced from 0.5 to ``1 − δ``, where
    ``δ = ½(1/32 + 1/30)`` (the mean of 1/(2·16) and 1/(2·15)) keeps the outermost quantile
    finite:

        positive: Φ⁻¹(p_i), p = linspace(0.5, 1 − δ, 9) without 0.5   → 8 levels
        negative: −Φ⁻¹(p_i), p = linspace(0.5, 1 − δ, 8) without 0.5  → 7 levels
        plus an exact 0, all divided by Φ⁻¹(1 − δ) so the range is [−1, 1].

    The asymmetry (8 positive, 7 negative levels) is what lets 0 be represented exactly with
    4 bits. Sorted ascending, float32 (matches the published table to ~2e-7).
    """
    top = 1.0 - 0.5 * (1 / 32 + 1 / 30)
    pos = torch.special.ndtri(torch.linspace(0.5, top, 9, dtype=torch.float64)[1:])
    neg = -torch.special.ndtri(torch.linspace(0.5, top, 8, dtype=torch.float64)[1:])
    levels = torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos])
    levels = levels / levels.abs().max()
    return torch.sort(levels).values.float()


NF4_CODEBOOK: Tensor = nf4_codebook()
"""QLoRA's NF4 levels, ascending: −1.0, −0.6962, …, 0.0, 0.0796, …, 0.7230, 1.0."""


def quantize_nf4(w: Tensor, block_size: int = 64) -> Tensor:
    """Blockwise-absmax NF4 fake quantisation (QLoRA / bitsandbytes ``nf4``).

    ``w`` is flattened and cut into consecutive blocks of ``block_size`` values (the last block
    may be shorter). With ``a_b = max_{i∈b} |w_i|`` and the codebook ``c`` (:data:`NF4_CODEBOOK`):

        result_i = c_k · a_b,   k = argmin_k |w_i / a_b − c_k|

    The nearest level is found against the midpoints between consecutive levels; a value exactly
    on a midpoint goes to the lower level. An all-zero block stays zero. Returns float32 with
    ``w``'s shape; quantising the result again returns it unchanged.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    flat = w.detach().float().reshape(-1)
    n = flat.numel()
    pad = (-n) % block_size
    blocks = torch.cat([flat, flat.new_zeros(pad)]).view(
        -1, block_size
    )  # zero padding: absmax kept
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    code = NF4_CODEBOOK.to(flat.device)
    mids = (code[:-1] + code[1:]) / 2
    idx = torch.bucketize(blocks / safe, mids)  # mids[k-1] < x <= mids[k] → k
    out = code[idx] * absmax
    return out.reshape(-1)[:n].reshape(w.shape)


def _quantizer(scheme: str):
    if scheme == "int8":
        return lambda w: quantize_rtn(w, 8)
    if scheme == "int4":
        return lambda w: quantize_rtn(w, 4)
    if scheme == "nf4":
        return quantize_nf4
    raise ValueError(f"unknown quantisation scheme {scheme!r}: choose from {', '.join(SCHEMES)}")


@torch.no_grad()
def quantize_model_(model: nn.Module, scheme: str) -> dict[str, str | int | float]:
    """Fake-quantise, in place, the weight of every ``nn.Linear`` except the output head.

    ``scheme``: ``int8`` / ``int4`` (:func:`quantize_rtn`) or ``nf4`` (:func:`quantize_nf4`).
    Skipped: the output head (``model.get_output_embeddings()``) and any Linear sharing its
    weight or the input embedding's (with tied embeddings the head *is* the embedding);
    embeddings, norms and biases are not Linear weights and stay as they are. The quantised
    values are written back in the weight's own dtype.

    Returns ``{"scheme", "layers": number of Linear weights quantised, "parameters": their
    element count, "mean_abs_error": Σ|w − q(w)| / parameters, "relative_error":
    ‖w − q(w)‖₂ / ‖w‖₂}``, both errors over all quantised weights together (0 when none).
    """
    quantize = _quantizer(scheme)
    skip: set[int] = set()
    for getter in ("get_output_embeddings", "get_input_embeddings"):
        fn = getattr(model, getter, None)
        module = fn() if callable(fn) else None
        if module is not None:
            skip.add(id(module))
            if isinstance(getattr(module, "weight", None), Tensor):
                skip.add(id(module.weight))
    layers = params = 0
    abs_err = sq_err = sq_norm = 0.0
    seen: set[int] = set()
    for module in model.modules():
        if not isinstance(module, nn.Linear) or id(module) in skip:
            continue
        weight = module.weight
        if id(weight) in skip or id(weight) in seen:
            continue
        seen.add(id(weight))
        original = weight.detach().double()
        weight.copy_(quantize(weight).to(weight.dtype))
        diff = original - weight.detach().double()
        layers += 1
        params += weight.numel()
        abs_err += float(diff.abs().sum())
        sq_err += float(diff.square().sum())
        sq_norm += float(original.square().sum())
    return {
        "scheme": scheme,
        "layers": layers,
        "parameters": params,
        "mean_abs_error": abs_err / params if params else 0.0,
        "relative_error": (sq_err**0.5) / (sq_norm**0.5) if sq_norm > 0 else 0.0,
    }
