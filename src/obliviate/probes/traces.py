"""Parametric knowledge traces (Hong et al. 2024, "Intrinsic Evaluation of Unlearning Using
Parametric Knowledge Traces", the ConceptVectors benchmark).

An MLP block writes ``W_down · a`` into the residual stream: column ``j`` of
``mlp.down_proj.weight`` (``[hidden, intermediate]``) is neuron ``j``'s *value vector*, added
with weight ``a_j``. Projected through the output head, ``W_U v`` says which tokens the vector
promotes (Geva et al. 2022). The vectors that point at a concept's tokens are its parametric
trace. Hong et al. find that unlearning methods barely change these vectors (the knowledge stays
in the weights, only its retrieval is suppressed), while ablating them does remove it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.eval.scoring import score_pairs
from obliviate.models.tokenizer import encode_pair

Vector = Sequence[int | float]
"""A value vector's address ``(layer, j)``; a ``(layer, j, score)`` triple is accepted too."""


def value_matrices(model: nn.Module) -> list[Tensor]:
    """Every decoder layer's ``mlp.down_proj.weight`` (``[hidden, intermediate]``), in order.

    Columns are value vectors. Found on ``model.get_decoder().layers`` (Llama-family layout).
    """
    get = getattr(model, "get_decoder", None)
    decoder = get() if callable(get) else getattr(model, "model", model)
    layers = getattr(decoder, "layers", None)
    try:
        mats = [layer.mlp.down_proj.weight for layer in layers]  # type: ignore[union-attr]
    except (AttributeError, TypeError) as e:
        raise ValueError(
            f"{type(model).__name__} has no Llama-style MLP value vectors the traces probe can "
            "find: expected model.get_decoder().layers[i].mlp.down_proj"
        ) from e
    if not mats:
        raise ValueError(f"{type(model).__name__} has no decoder layers")
    return mats


def _unembedding(model: nn.Module) -> Tensor:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), Tensor):
        raise ValueError(f"{type(model).__name__} has no output head (get_output_embeddings)")
    return head.weight  # [V, hidden]


@torch.no_grad()
def concept_vectors(
    model: nn.Module, token_ids: Sequence[int], top_k: int = 20
) -> list[tuple[int, int, float]]:
    """The ``top_k`` value vectors pointing most strongly at the concept tokens, best first.

    For value vector ``v`` (layer ``l``, column ``j``) with vocabulary projection ``z = W_U v``
    (one logit per token, ``W_U`` = the output head's weight, no norm, no bias) and concept
    tokens ``C`` (distinct ids):

        score(l, j) = (mean_{t∈C} z_t − mean_{t∈V} z_t) / std_{t∈V} z_t

    a z-score (population std over the whole vocabulary). It is computed without forming
    ``W_U W_down`` (vocabulary × neurons): with ``μ`` the mean row of ``W_U``, ``c`` the mean of
    its concept rows and ``Σ`` the covariance of its rows, ``score = (c − μ)·v / sqrt(vᵀ Σ v)``,
    one matrix product per layer. A zero vector scores 0. Returns ``(layer, j, score)``.
    """
    ids = sorted(set(int(t) for t in token_ids))
    if not ids:
        raise ValueError("concept_vectors needs at least one concept token id")
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    unembed = _unembedding(model)
    if ids[0] < 0 or ids[-1] >= unembed.shape[0]:
        raise ValueError(f"concept token ids must lie in [0, {unembed.shape[0]})")
    e = unembed.detach()
    n_vocab, hidden = e.shape
    chunks = range(0, n_vocab, 8192)  # float32 copies of a chunk of rows at a time, not all of W_U
    mu = sum(e[s : s + 8192].float().sum(0) for s in chunks) / n_vocab
    cov = torch.zeros(hidden, hidden, dtype=torch.float32, device=e.device)
    for start in chunks:
        rows = e[start : start + 8192].float() - mu
        cov += rows.T @ rows
    cov /= n_vocab
    direction = e[ids].float().mean(0) - mu
    scores = []
    for w in value_matrices(model):
        w = w.detach().float().to(e.device)  # [hidden, intermediate]
        num = direction @ w
        std = ((cov @ w) * w).sum(0).clamp_min(0).sqrt()
        scores.append(torch.where(std > 0, num / std.clamp_min(1e-30), 0.0))
    widths = [len(s) for s in scores]
    flat = torch.cat(scores)
    top = torch.topk(flat, min(top_k, flat.numel()))
    out = []
    for score, idx in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        layer = 0
        while idx >= widths[layer]:
            idx -= widths[layer]
            layer += 1
        out.append((layer, idx, float(score)))
    return out


def concept_tokens(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[int]:
    """Distinct token ids of ``texts`` (tokenised without special tokens), in first-seen order,
    special tokens (BOS, EOS, pad, …) excluded."""
    special = set(tokenizer.all_special_ids)
    seen: dict[int, None] = {}
    for text in texts:
        for t in tokenizer(text, add_special_tokens=False)["input_ids"]:
            if t not in special:
                seen.setdefault(int(t), None)
    return list(seen)


def _columns(model: nn.Module, vectors: Sequence[Vector]) -> list[tuple[Tensor, int]]:
    mats = value_matrices(model)
    out = []
    for v in vectors:
        layer, j = int(v[0]), int(v[1])
        if not (0 <= layer < len(mats) and 0 <= j < mats[layer].shape[1]):
            raise ValueError(f"no value vector ({layer}, {j}) in {type(model).__name__}")
        out.append((mats[layer], j))
    return out


@torch.no_grad()
def trace_similarity(
    original: nn.Module, changed: nn.Module, vectors: Sequence[Vector]
) -> dict[str, float | list[float]]:
    """How much each value vector moved from ``original`` to ``changed`` (same architecture).

    For ``v`` in ``original`` and ``v'`` in ``changed``: ``cos = v·v' / (‖v‖ ‖v'‖)`` (1 when both
    are zero, 0 when only one is) and the relative change ``‖v' − v‖ / ‖v‖`` (0 when both are
    zero, inf when only ``v`` is). Returns ``{"per_vector": [cos …], "mean_cosine",
    "min_cosine", "mean_relative_change"}``.
    """
    if not vectors:
        raise ValueError("trace_similarity needs at least one vector")
    cosines, changes = [], []
    for (w0, j), (w1, _) in zip(
        _columns(original, vectors), _columns(changed, vectors), strict=True
    ):
        a = w0[:, j].detach().double().cpu()
        b = w1[:, j].detach().double().cpu()
        na, nb = float(a.norm()), float(b.norm())
        if na == 0 and nb == 0:
            cos = 1.0
        elif na == 0 or nb == 0:
            cos = 0.0
        else:
            cos = float(a @ b) / (na * nb)
        diff = float((b - a).norm())
        changes.append(diff / na if na > 0 else (0.0 if diff == 0 else float("inf")))
        cosines.append(cos)
    return {
        "per_vector": cosines,
        "mean_cosine": sum(cosines) / len(cosines),
        "min_cosine": min(cosines),
        "mean_relative_change": sum(changes) / len(changes),
    }


@torch.no_grad()
def ablate_(model: nn.Module, vectors: Sequence[Vector]) -> None:
    """Zero, in place, the ``down_proj`` columns ``(layer, j)`` listed: ``W_down[:, j] = 0``."""
    for w, j in _columns(model, vectors):
        w[:, j] = 0


def _mean_prob(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    batch_size: int,
    max_length: int,
    desc: str,
    encode: Callable = encode_pair,
) -> float:
    scored = score_pairs(model, tokenizer, pairs, batch_size, max_length, desc=desc, encode=encode)
    return sum(math.exp(-scored[p].mean_nll) for p in pairs) / len(pairs)


def _random_vectors(
    model: nn.Module, n: int, exclude: Sequence[Vector], seed: int
) -> list[tuple[int, int]]:
    widths = [w.shape[1] for w in value_matrices(model)]
    starts = [sum(widths[:i]) for i in range(len(widths))]
    taken = {starts[int(v[0])] + int(v[1]) for v in exclude}
    total = sum(widths)
    draw = random.Random(seed).sample(range(total), min(total, n + len(taken)))
    chosen = [i for i in draw if i not in taken][:n]
    out = []
    for i in chosen:
        layer = max(k for k, s in enumerate(starts) if s <= i)
        out.append((layer, i - starts[layer]))
    return out


def parametric_traces(
    target: PreTrainedModel,
    unlearned: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    fact_texts: Sequence[str],
    top_k: int = 20,
    seed: int = 0,
    batch_size: int = 32,
    max_length: int = 512,
    encode: Callable = encode_pair,
) -> dict[str, object]:
    """The parametric-trace probe: are the forget facts' value vectors still in the weights?

    1. Concept vectors: the ``top_k`` value vectors of ``target`` scored by
       :func:`concept_vectors` on the tokens of ``fact_texts`` (:func:`concept_tokens`).
    2. Did unlearning change them? :func:`trace_similarity` target → unlearned, against as many
       random value vectors (seeded by ``seed``, disjoint from the concept vectors) as the
       control: a mean cosine near the control's (≈ 1 for small-step unlearning) means the
       trace survived.
    3. Do they carry the knowledge? ``prob = mean over pairs of exp(−S̄)`` (score_pairs) of the
       target as it is, with the concept vectors ablated (:func:`ablate_`) and with the random
       vectors ablated. The ablations are undone afterwards: ``target`` ends bit-identical.

    Returns plain floats / ints / lists (JSON-able).
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("parametric_traces needs at least one (question, answer) pair")
    tokens = concept_tokens(tokenizer, fact_texts)
    if not tokens:
        raise ValueError("the fact texts have no (non-special) tokens")
    vectors = concept_vectors(target, tokens, top_k)
    control = _random_vectors(target, len(vectors), vectors, seed)
    concept_sim = trace_similarity(target, unlearned, vectors)
    random_sim = trace_similarity(target, unlearned, control)

    def prob(desc: str) -> float:
        return _mean_prob(target, tokenizer, pairs, batch_size, max_length, desc, encode)

    before = prob("traces: target")
    ablated = _with_ablation(target, vectors, lambda: prob("traces: concept vectors ablated"))
    ablated_random = _with_ablation(target, control, lambda: prob("traces: random vectors ablated"))
    return {
        "n_concept_tokens": len(tokens),
        "top_k": len(vectors),
        "seed": seed,
        "vectors": [[layer, j, score] for layer, j, score in vectors],
        "random_vectors": [[layer, j] for layer, j in control],
        "per_vector_cosine": concept_sim["per_vector"],
        "mean_cosine": concept_sim["mean_cosine"],
        "min_cosine": concept_sim["min_cosine"],
        "mean_relative_change": concept_sim["mean_relative_change"],
        "random_mean_cosine": random_sim["mean_cosine"],
        "random_min_cosine": random_sim["min_cosine"],
        "random_mean_relative_change": random_sim["mean_relative_change"],
        "prob_before": before,
        "prob_ablated": ablated,
        "prob_random_ablated": ablated_random,
    }


@torch.no_grad()
def _with_ablation(model: nn.Module, vectors: Sequence[Vector], measure) -> float:
    """``measure()`` with ``vectors`` zeroed, then the saved columns written back exactly."""
    saved = [(w, j, w[:, j].clone()) for w, j in _columns(model, vectors)]
    try:
        ablate_(model, vectors)
        return measure()
    finally:
        for w, j, col in reversed(saved):
            w[:, j] = col
