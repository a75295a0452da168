"""Pure TOFU-style metric functions over floats, numpy arrays and strings (no model code).

Notation (TOFU, Maini et al. 2024; the README's metric reference): for an answer ``y`` of ``|y|``
tokens with teacher-forced token log-probs ``log p(y_t)``, the summed negative log-likelihood is
``S = -Σ_t log p(y_t)`` and the length-normalised one is ``S̄ = S / |y|``. Every likelihood metric
below takes ``S̄`` values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from rouge_score import rouge_scorer, scoring
from scipy import stats

# --------------------------------------------------------------------------------------------
# helpers


def _as_1d_float(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """``values`` as a 1-D float64 array; ValueError if empty or containing NaN."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name}: got an empty sequence, need at least one value")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: got NaN at index {int(np.flatnonzero(np.isnan(arr))[0])}")
    return arr


def _logsumexp(x: np.ndarray) -> float:
    """log Σ_i exp(x_i), shifted by max(x) so that no term overflows or underflows to 0/0."""
    m = float(np.max(x))
    if math.isinf(m):
        return m
    return m + math.log(float(np.sum(np.exp(x - m))))


# --------------------------------------------------------------------------------------------
# ROUGE


@lru_cache(maxsize=1)
def _rouge_l_scorer() -> rouge_scorer.RougeScorer:
    """The one RougeL scorer (Porter stemming on), built on first use."""
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _rouge_l(reference: str, generated: str) -> scoring.Score:
    """rouge_score's RougeL ``Score(precision, recall, fmeasure)`` for one pair."""
    return _rouge_l_scorer().score(target=reference, prediction=generated)["rougeL"]


def rouge_l_recall(reference: str, generated: str) -> float:
    """ROUGE-L recall = LCS(ref, gen) / |ref| in tokens (TOFU's ROUGE).

    Tokens are ``rouge_score``'s: lower-cased, non-alphanumerics dropped, Porter-stemmed.
    """
    return float(_rouge_l(reference, generated).recall)


def rouge_l_f1(reference: str, generated: str) -> float:
    """ROUGE-L F1 = 2·P·R / (P + R), P = LCS/|gen|, R = LCS/|ref| (MUSE's ROUGE)."""
    return float(_rouge_l(reference, generated).fmeasure)


# --------------------------------------------------------------------------------------------
# likelihood metrics


def probability(mean_nll: float) -> float:
    """p = exp(−S̄): the per-token geometric-mean probability of the answer."""
    return math.exp(-float(mean_nll))


def normalized_probability(answer_mean_nll: float, perturbed_mean_nlls: Sequence[float]) -> float:
    """p(a) / (p(a) + Σ_i p(pert_i)), each p = exp(−S̄) (length-normalised).

    Computed in log space: exp(−S̄(a) − logsumexp([−S̄(a), −S̄(pert_1), …])), so that large
    S̄ values do not underflow to 0/0.
    """
    pert = _as_1d_float(perturbed_mean_nlls, "normalized_probability perturbed_mean_nlls")
    a = float(answer_mean_nll)
    if math.isnan(a):
        raise ValueError("normalized_probability: answer_mean_nll is NaN")
    log_terms = np.concatenate(([-a], -pert))
    return math.exp(-a - _logsumexp(log_terms))


MAX_LOG_RATIO = 709.0
"""log R is computed first and R = exp(log R) saturates at e^709 ≈ 8e307 (the largest power of e
a float holds), so that a collapsed model whose S̄ values differ by hundreds of nats still scores:
its ratios sit at the saturation point instead of overflowing."""


def truth_ratio(para_mean_nll: float, perturbed_mean_nlls: Sequence[float]) -> float:
    """R = exp(mean_j S̄(pert_j) − S̄(para)).

    Equivalently P(para) / geo-mean_j P(pert_j), with P the per-token probability exp(−S̄).
    R > 1 means the model prefers the paraphrased correct answer over the perturbed ones.
    Computed in log space; R saturates at e^709 (:data:`MAX_LOG_RATIO`) instead of overflowing.
    """
    pert = _as_1d_float(perturbed_mean_nlls, "truth_ratio perturbed_mean_nlls")
    para = float(para_mean_nll)
    if math.isnan(para):
        raise ValueError("truth_ratio: para_mean_nll is NaN")
    return math.exp(min(float(pert.mean()) - para, MAX_LOG_RATIO))


def _ratios(ratios: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = _as_1d_float(ratios, name)
    if (arr < 0).any():
        raise ValueError(f"{name}: truth ratios must be ≥ 0, got {float(arr.min())}")
    return arr


def truth_ratio_forget(ratios: Sequence[float] | np.ndarray) -> float:
    """Forget-set aggregation: mean_i min(R_i, 1/R_i) (1 = no preference, 0 = strong one)."""
    arr = _ratios(ratios, "truth_ratio_forget")
    with np.errstate(divide="ignore"):
        return float(np.mean(np.minimum(arr, 1.0 / arr)))


def truth_ratio_retain(ratios: Sequence[float] | np.ndarray) -> float:
    """Retain-type aggregation (TOFU's code): mean_i max(0, 1 − 1/R_i).

    1 − 1/R = 1 − P(pert)/P(para): near 1 when the correct paraphrase is strongly preferred,
    0 when the perturbed answers are at least as likely.
    """
    arr = _ratios(ratios, "truth_ratio_retain")
    with np.errstate(divide="ignore"):
        return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / arr)))


def forget_quality(
    unlearned_ratios: Sequence[float] | np.ndarray,
    retain_model_ratios: Sequence[float] | np.ndarray,
) -> float:
    """p-value of the two-sample Kolmogorov–Smirnov test: ks_2samp(R_unlearned, R_retain).pvalue.

    D = sup_x |F_unlearned(x) − F_retain(x)| over the empirical CDFs of the per-sample forget-set
    truth ratios; a high p-value means the unlearned model is indistinguishable from a model
    never trained on the forget set.
    """
    a = _as_1d_float(unlearned_ratios, "forget_quality unlearned_ratios")
    b = _as_1d_float(retain_model_ratios, "forget_quality retain_model_ratios")
    return float(stats.ks_2samp(a, b).pvalue)


def harmonic_mean(values: Sequence[float] | np.ndarray) -> float:
    """n / Σ_i 1/x_i; 0.0 if any x_i ≤ 0 (one zeroed metric zeroes model utility)."""
    arr = _as_1d_float(values, "harmonic_mean")
    if (arr <= 0).any():
        return 0.0
    return float(arr.size / np.sum(1.0 / arr))
