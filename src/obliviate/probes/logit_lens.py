"""The logit lens (nostalgebraist 2020): decode every layer's residual stream as if it were the last.

An unlearned model whose *output* no longer gives the forget answer may still carry it in its
intermediate layers, suppressed only near the top (Lynch et al. 2024, "Eight methods to evaluate
robust unlearning in LLMs"; Hong et al. 2024). The lens reads each layer's hidden state through
the model's final norm and output head and reports the answer probability per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.eval.scoring import sorted_batches
from obliviate.models.tokenizer import encode_pair

_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f")


def final_norm(model: PreTrainedModel) -> nn.Module:
    """The norm applied to the last hidden state before the output head (``model.model.norm`` for
    Llama-family models), looked up on ``model.get_decoder()`` as ``norm`` / ``final_layernorm``
    / ``final_layer_norm`` / ``ln_f``."""
    get = getattr(model, "get_decoder", None)
    holders = [get() if callable(get) else None, getattr(model, "model", None), model]
    for holder in holders:
        for name in _NORM_NAMES:
            module = getattr(holder, name, None) if holder is not None else None
            if isinstance(module, nn.Module):
                return module
    raise ValueError(
        f"{type(model).__name__} has no final norm the logit lens can find: looked for "
        f"{', '.join(_NORM_NAMES)} on model.get_decoder() (a Llama-family decoder has .norm)"
    )


@torch.no_grad()
def logit_lens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 32,
    max_length: int = 512,
    encode: Callable[[PreTrainedTokenizerBase, str, str, int], tuple[list[int], int]] = encode_pair,
) -> list[float]:
    """Per-layer answer probability: entry ``l`` for l = 0 … L (L decoder layers).

    With ``h_l`` the residual stream after decoder layer ``l`` (``h_0`` the embedding output),
    ``N`` the final norm and ``W_U`` the output head, the lens distribution at each position is
    ``softmax(W_U N(h_l))`` and, over the answer tokens y_1 … y_n of a pair (the positions after
    ``n_prompt``, the closing EOS of :func:`encode_pair` included):

        S̄_l = −(1/n) Σ_t log softmax(W_U N(h_l))[y_t]      (read at the position before y_t)
        value_l = mean over pairs of exp(−S̄_l)

    the per-token geometric-mean probability of obliviate's ``prob`` metric (a pair listed twice
    counts twice; zero answer tokens give 1, as ``mean_nll = 0`` does). HF's last
    ``hidden_states`` entry is already normed for Llama, so entry L is taken from the model's
    own logits: it equals ``prob`` from :func:`obliviate.eval.scoring.score_pairs` (to rounding).
    Only the answer positions are decoded (memory ∝ answer tokens × vocabulary, per layer).
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("logit_lens needs at least one (question, answer) pair")
    norm = final_norm(model)
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output head (get_output_embeddings)")
    per_pair: dict[tuple[str, str], torch.Tensor] = {}
    model.eval()
    batches = sorted_batches(model, tokenizer, pairs, batch_size, max_length, encode, "logit lens")
    for chunk, batch in batches:
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states
        if hidden is None or len(hidden) < 2:
            raise ValueError(f"{type(model).__name__} returned no per-layer hidden states")
        labels = batch["labels"][:, 1:]
        scored = labels != -100  # [B, T-1]: position t predicts token t+1
        rows = scored.nonzero(as_tuple=True)[0]
        target = labels[scored]
        counts = scored.sum(1)
        values = []
        for layer in range(len(hidden)):
            if layer == len(hidden) - 1:
                logits = out.logits[:, :-1][scored.to(out.logits.device)]
            else:  # a model split over devices keeps each layer's states where the layer ran
                h = hidden[layer][:, :-1]
                logits = head(norm(h[scored.to(h.device)].to(head.weight.device)))
            lp = torch.log_softmax(logits.float(), dim=-1)
            lp = lp.gather(-1, target.to(lp.device)[:, None]).squeeze(-1).to(rows.device)
            total = torch.zeros(len(chunk), dtype=torch.float64, device=lp.device)
            total.index_add_(0, rows, lp.double())
            mean_nll = torch.where(counts > 0, -total / counts.clamp_min(1), 0.0)
            values.append(torch.exp(-mean_nll))
        stacked = torch.stack(values, dim=1).cpu()  # [B, L+1]
        for i, p in enumerate(chunk):
            per_pair[p] = stacked[i]
    return [float(v) for v in torch.stack([per_pair[p] for p in pairs]).mean(0)]
