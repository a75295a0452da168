"""Metric functions against numbers worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from obliviate.eval.metrics import (
    forget_quality,
    harmonic_mean,
    normalized_probability,
    probability,
    rouge_l_f1,
    rouge_l_recall,
    truth_ratio,
    truth_ratio_forget,
    truth_ratio_retain,
)

LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# ROUGE-L


def test_rouge_l_recall_hand_pair() -> None:
    # ref: the cat sat on the mat (6 tokens); gen: the cat lay on a mat
    # LCS = "the cat on mat" = 4 tokens -> recall = 4/6
    assert rouge_l_recall("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(4 / 6)


def test_rouge_l_recall_is_directional() -> None:
    # ref: "the cat" (2 tokens) fully contained in gen -> recall = 2/2 = 1, whatever gen adds
    assert rouge_l_recall("the cat", "the cat sat on the mat") == pytest.approx(1.0)
    # swapped: ref has 6 tokens, LCS "the cat" = 2 -> 2/6
    assert rouge_l_recall("the cat sat on the mat", "the cat") == pytest.approx(2 / 6)


def test_rouge_l_stemming() -> None:
    # Porter: "runs" -> "run", "running" -> "run"; all 3 tokens match -> recall 3/3
    assert rouge_l_recall("he runs fast", "he running fast") == pytest.approx(1.0)
    assert rouge_l_recall("he runs fast", "he run fast") == pytest.approx(1.0)
    # a genuinely different word still misses: LCS "he fast" = 2/3
    assert rouge_l_recall("he runs fast", "he walks fast") == pytest.approx(2 / 3)


def test_rouge_l_case_punctuation_and_empty() -> None:
    # rouge_score lower-cases and drops punctuation: tokens identical -> 1
    assert rouge_l_recall("The cat.", "the cat") == pytest.approx(1.0)
    # nothing generated -> LCS 0 -> 0
    assert rouge_l_recall("the cat", "") == 0.0


def test_rouge_l_f1_hand_pair() -> None:
    # ref: the cat sat on the mat (6); gen: a cat sat on a red mat (7)
    # LCS = "cat sat on mat" = 4 -> R = 4/6, P = 4/7
    # F1 = 2PR/(P+R) = (2*16/42) / (24/42 + 28/42) = 32/52 = 8/13 = 0.615385
    ref, gen = "the cat sat on the mat", "a cat sat on a red mat"
    assert rouge_l_f1(ref, gen) == pytest.approx(8 / 13)
    assert rouge_l_recall(ref, gen) == pytest.approx(4 / 6)


# --------------------------------------------------------------------------------------------
# probability and normalised probability


def test_probability() -> None:
    # exp(-ln 2) = 0.5 ; exp(0) = 1 ; exp(-1) = 0.367879
    assert probability(LN2) == pytest.approx(0.5)
    assert probability(0.0) == 1.0
    assert probability(1.0) == pytest.approx(0.367879, abs=1e-6)


def test_normalized_probability_hand() -> None:
    # p(a) = e^-ln2 = 0.5; p(pert) = e^-ln4 = 0.25 twice -> 0.5 / (0.5 + 0.25 + 0.25) = 0.5
    assert normalized_probability(LN2, [2 * LN2, 2 * LN2]) == pytest.approx(0.5)
    # p(a) = e^-0.5 = 0.606531; p(pert) = e^-1 = 0.367879, e^-2 = 0.135335
    # 0.606531 / (0.606531 + 0.367879 + 0.135335) = 0.606531 / 1.109745 = 0.546549
    assert normalized_probability(0.5, [1.0, 2.0]) == pytest.approx(0.546549, abs=1e-6)


def test_normalized_probability_is_stable() -> None:
    # exp(-1000) underflows to 0 (naive 0/0); shifting all S̄ by 1000 leaves the ratio unchanged:
    # 1 / (1 + e^-1 + e^-2) = 1 / (1 + 0.367879 + 0.135335) = 1 / 1.503215 = 0.665241
    got = normalized_probability(1000.0, [1001.0, 1002.0])
    assert got == pytest.approx(0.665241, abs=1e-6)
    assert got == pytest.approx(normalized_probability(0.0, [1.0, 2.0]))


def test_normalized_probability_empty_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        normalized_probability(1.0, [])


# --------------------------------------------------------------------------------------------
# truth ratio


def test_truth_ratio_r_above_one() -> None:
    # para S̄ = 1.0, pert S̄ = [2.0, 3.0]: mean 2.5 -> R = e^{2.5-1.0} = e^{1.5} = 4.481689
    r = truth_ratio(1.0, [2.0, 3.0])
    assert r == pytest.approx(4.481689, abs=1e-6)
    # forget agg min(R, 1/R) = e^{-1.5} = 0.223130
    assert truth_ratio_forget([r]) == pytest.approx(0.223130, abs=1e-6)
    # retain agg max(0, 1 - 1/R) = 1 - 0.223130 = 0.776870
    assert truth_ratio_retain([r]) == pytest.approx(0.776870, abs=1e-6)


def test_truth_ratio_r_below_one() -> None:
    # para S̄ = 2.0, pert S̄ = [1.0, 1.5]: mean 1.25 -> R = e^{1.25-2.0} = e^{-0.75} = 0.472367
    r = truth_ratio(2.0, [1.0, 1.5])
    assert r == pytest.approx(0.472367, abs=1e-6)
    # forget agg: min(0.472367, 2.117000) = 0.472367
    assert truth_ratio_forget([r]) == pytest.approx(0.472367, abs=1e-6)
    # retain agg: 1 - 1/R = 1 - 2.117000 = -1.117 -> clipped to 0
    assert truth_ratio_retain([r]) == 0.0


def test_truth_ratio_is_geometric_mean_of_probabilities() -> None:
    # P(para) = 0.5 (S̄ = ln 2); P(pert) = 0.5 and 0.125 (S̄ = ln 2, ln 8)
    # geo-mean P(pert) = sqrt(0.5 * 0.125) = sqrt(0.0625) = 0.25 -> R = 0.5 / 0.25 = 2
    assert truth_ratio(LN2, [LN2, 3 * LN2]) == pytest.approx(2.0)
    # R = 1 when para and pert are equally likely -> forget agg 1, retain agg 0
    assert truth_ratio(1.3, [1.3]) == pytest.approx(1.0)
    assert truth_ratio_forget([1.0]) == pytest.approx(1.0)
    assert truth_ratio_retain([1.0]) == pytest.approx(0.0)


def test_truth_ratio_aggregation_over_samples() -> None:
    # ratios: e^{1.5} = 4.481689, e^{-0.75} = 0.472367, 1.0
    ratios = [math.exp(1.5), math.exp(-0.75), 1.0]
    # forget: (0.223130 + 0.472367 + 1.0) / 3 = 1.695497 / 3 = 0.565166
    assert truth_ratio_forget(ratios) == pytest.approx(0.565166, abs=1e-6)
    # retain: (0.776870 + 0 + 0) / 3 = 0.258957
    assert truth_ratio_retain(ratios) == pytest.approx(0.258957, abs=1e-6)
    # numpy input works the same
    assert truth_ratio_forget(np.array(ratios)) == pytest.approx(0.565166, abs=1e-6)


def test_truth_ratio_extremes() -> None:
    # R = 0 (underflow): min(0, inf) = 0 ; max(0, 1 - inf) = 0
    assert truth_ratio_forget([0.0]) == 0.0
    assert truth_ratio_retain([0.0]) == 0.0
    # R = inf: min(inf, 0) = 0 ; 1 - 0 = 1
    assert truth_ratio_forget([math.inf]) == 0.0
    assert truth_ratio_retain([math.inf]) == 1.0


def test_truth_ratio_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="empty"):
        truth_ratio(1.0, [])
    with pytest.raises(ValueError, match="empty"):
        truth_ratio_forget([])
    with pytest.raises(ValueError, match="empty"):
        truth_ratio_retain([])
    with pytest.raises(ValueError, match="NaN"):
        truth_ratio_forget([1.0, math.nan])
    with pytest.raises(ValueError, match="≥ 0"):
        truth_ratio_retain([-1.0])


# --------------------------------------------------------------------------------------------
# forget quality (KS test)


def test_forget_quality_fully_separated() -> None:
    # n = m = 3, every a < every b: D = 1. Of the C(6,3) = 20 equally likely interleavings only
    # aaabbb and bbbaaa reach D = 1 -> exact two-sided p = 2/20 = 0.1
    assert forget_quality([0.1, 0.2, 0.3], [0.7, 0.8, 0.9]) == pytest.approx(0.1)


def test_forget_quality_partial_overlap() -> None:
    # a = [1, 2, 4], b = [3, 5, 6]: order a a b a b b, walk (+1 per a, -1 per b) 1 2 1 2 1 0
    # -> D = 2/3. Walks of 3 up/3 down with max |S| <= 1 must alternate pairwise: 2^3 = 8,
    # so 20 - 8 = 12 reach |S| >= 2 -> p = 12/20 = 0.6
    assert forget_quality([1.0, 2.0, 4.0], [3.0, 5.0, 6.0]) == pytest.approx(0.6)
    # interleaved a b a b a b: D = 1/3, which every interleaving reaches -> p = 20/20 = 1
    assert forget_quality([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]) == pytest.approx(1.0)


def test_forget_quality_empty_raises() -> None:
    with pytest.raises(ValueError, match="unlearned_ratios.*empty"):
        forget_quality([], [1.0, 2.0])
    with pytest.raises(ValueError, match="retain_model_ratios.*empty"):
        forget_quality([1.0, 2.0], [])


# --------------------------------------------------------------------------------------------
# harmonic mean


def test_harmonic_mean_hand() -> None:
    # 3 / (1/1 + 1/0.5 + 1/0.25) = 3 / (1 + 2 + 4) = 3/7 = 0.428571
    assert harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)
    assert harmonic_mean([0.3]) == pytest.approx(0.3)
    assert harmonic_mean(np.array([2.0, 2.0])) == pytest.approx(2.0)


def test_harmonic_mean_zero_or_negative_is_zero() -> None:
    assert harmonic_mean([1.0, 0.0, 0.5]) == 0.0
    assert harmonic_mean([1.0, -0.2]) == 0.0


def test_harmonic_mean_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="empty"):
        harmonic_mean([])
    with pytest.raises(ValueError, match="NaN"):
        harmonic_mean([0.5, math.nan])
    # NaN is reported even when a zero would otherwise short-circuit to 0
    with pytest.raises(ValueError, match="NaN"):
        harmonic_mean([0.0, math.nan])


def test_truth_ratio_of_a_collapsed_model_saturates_instead_of_overflowing():
    """S̄(pert) − S̄(para) = 800 nats: exp(800) overflows a float; R saturates at e^709."""
    r = truth_ratio(1.0, [801.0, 801.0])
    assert r == math.exp(709.0) and math.isfinite(r)
    assert truth_ratio_forget([r]) == pytest.approx(1.0 / math.exp(709.0), rel=1e-9)
    assert truth_ratio_retain([r]) == 1.0
    assert truth_ratio(801.0, [1.0]) == 0.0  # the other way it underflows to 0, as before
    assert truth_ratio_forget([0.0]) == 0.0 and truth_ratio_retain([0.0]) == 0.0
