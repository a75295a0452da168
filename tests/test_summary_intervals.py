"""Bootstrap intervals and forget quality's KS statistic in the summary, against hand numbers
(no model)."""

import numpy as np
import pytest

from obliviate.eval import metrics as M
from obliviate.eval.reference import RetainReference
from obliviate.eval.suite import SplitResult, SuiteResult
from obliviate.eval.summary import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_mean_interval,
    ks_statistic,
    mean_replicates,
    percentile_interval,
    resample_indices,
    summarize,
)


def test_all_equal_samples_give_a_zero_width_interval():
    lo, hi = bootstrap_mean_interval([0.3] * 5)
    assert lo == hi == pytest.approx(0.3)


def test_two_point_sample_spans_both_points():
    """Means of resamples of {0, 1} (n = 2) are 0, 0.5, 1 with chances 1/4, 1/2, 1/4: 0 and 1
    each hold ~250 of 1000 replicates, far more than the 25 in each 2.5 % tail."""
    assert bootstrap_mean_interval([0.0, 1.0]) == [0.0, 1.0]


def test_bernoulli_interval_near_the_normal_one():
    """50 zeros and 50 ones: the mean's standard error is sqrt(0.25 / 100) = 0.05, so the
    interval is about 0.5 ± 1.96 · 0.05 = [0.402, 0.598] (a 90 % one, ± 1.645 · 0.05, would miss)."""
    lo, hi = bootstrap_mean_interval([0.0] * 50 + [1.0] * 50)
    assert lo == pytest.approx(0.402, abs=0.015) and hi == pytest.approx(0.598, abs=0.015)
    assert lo < 0.5 < hi


def test_deterministic_given_the_seed_and_key():
    v = np.random.default_rng(1).random(40)
    assert bootstrap_mean_interval(v, "forget") == bootstrap_mean_interval(v, "forget")
    assert bootstrap_mean_interval(v, "forget") != bootstrap_mean_interval(v, "retain")
    idx = resample_indices(40, "forget")
    assert idx.shape == (BOOTSTRAP_RESAMPLES, 40) and idx.min() >= 0 and idx.max() < 40


def test_fewer_than_two_samples_get_no_interval():
    assert bootstrap_mean_interval([0.7]) is None
    assert bootstrap_mean_interval([]) is None


def test_percentile_interval_interpolates_linearly():
    """Replicates 0..999: the 2.5th percentile sits at rank 0.025 · 999 = 24.975, the 97.5th at
    0.975 · 999 = 974.025 (linear interpolation between neighbours)."""
    assert percentile_interval(np.arange(1000.0)) == pytest.approx([24.975, 974.025])
    assert percentile_interval(np.array([np.nan, np.nan])) is None


def test_mean_replicates_skip_missing_values():
    values = np.array([1.0, np.nan, 3.0])
    idx = np.array([[0, 1, 2], [1, 1, 1], [0, 0, 2]])
    r = mean_replicates(values, idx)
    assert r[0] == pytest.approx(2.0) and np.isnan(r[1]) and r[2] == pytest.approx(5 / 3)


def test_ks_statistic_by_hand():
    # F_a − F_b at x = 2, 3, 4: 0.5 − 0, 0.75 − 0.25, 1 − 0.5: sup 0.5
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    assert ks_statistic([1, 2], [3, 4]) == pytest.approx(1.0)
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0


def _rows(**cols):
    n = len(next(iter(cols.values())))
    return [{k: v[i] for k, v in cols.items() if v[i] is not None} for i in range(n)]


def _suite(retain_rouge=(0.5, 0.5, 0.5, 0.5), forget_agg_override=None):
    """Forget: ROUGE 0/1, prob, truth ratios 2 and 0.5 (min(R, 1/R) = 0.5 for each). Retain:
    constant per metric, ROUGE as given, prob 0.25, R = 2 (max(0, 1 − 1/R) = 0.5)."""
    f_rouge = [0.0, 1.0, 0.0, 1.0]
    f_prob = [0.2, 0.4, None, 0.6]  # one sample without a value
    f_tr = [2.0, 0.5, 2.0, 0.5]
    forget = _rows(rouge_l_recall=f_rouge, prob=f_prob, truth_ratio=f_tr)
    agg_f = {"n": 4.0, "rouge": 0.5, "prob": 0.4, "truth_ratio": 0.5}
    agg_f.update(forget_agg_override or {})
    retain = _rows(rouge_l_recall=list(retain_rouge), prob=[0.25] * 4, truth_ratio=[2.0] * 4)
    agg_r = {
        "n": 4.0,
        "rouge": float(np.mean(retain_rouge)),
        "prob": 0.25,
        "truth_ratio": 0.5,
    }
    return SuiteResult(
        [
            SplitResult("forget", "forget", forget, agg_f),
            SplitResult("retain", "retain", retain, agg_r),
        ]
    )


def test_summary_intervals_for_means_and_model_utility():
    ref = RetainReference([1.0, 1.5, 3.0], {}, "test")
    s = summarize(_suite(), ref)
    ci = s["ci95"]
    # existing numbers are untouched by the new keys
    assert s["forget_rouge"] == 0.5 and s["retain_prob"] == 0.25
    assert s["model_utility"] == pytest.approx(3 / (2 + 4 + 2))  # hmean(0.5, 0.25, 0.5)
    # forget ROUGE: a mean of 0/1 over four samples, both ends reachable
    assert ci["forget_rouge"] == [0.0, 1.0]
    # every forget truth ratio gives min(R, 1/R) = 0.5: the transformed values are constant
    assert ci["forget_truth_ratio"] == pytest.approx([0.5, 0.5])
    # forget prob over the three samples that have one: within [0.2, 0.6], around 0.4
    lo, hi = ci["forget_prob"]
    assert 0.2 <= lo < 0.4 < hi <= 0.6
    # constant retain values: zero-width intervals, the composite too
    assert ci["retain_rouge"] == pytest.approx([0.5, 0.5])
    assert ci["model_utility"] == pytest.approx([0.375, 0.375])
    assert ci["model_utility"][0] == ci["model_utility"][1]
    assert "forget_quality" not in ci and not any(k.startswith("mia") for k in ci)
    assert "B=1000" in s["ci95_method"]


def test_model_utility_interval_moves_with_its_terms():
    """Retain ROUGE 0.2 / 0.8: utility's interval has width, inside the range of the harmonic
    means its extreme resamples give (all 0.2 → hmean(0.2, 0.25, 0.5); all 0.8 → hmean(0.8, …))."""
    s = summarize(_suite(retain_rouge=(0.2, 0.8, 0.2, 0.8)), None)
    lo, hi = s["ci95"]["model_utility"]
    low, high = M.harmonic_mean([0.2, 0.25, 0.5]), M.harmonic_mean([0.8, 0.25, 0.5])
    assert low <= lo < s["model_utility"] < hi <= high


def test_no_interval_when_the_aggregate_is_not_the_mean_of_its_rows():
    s = summarize(_suite(forget_agg_override={"rouge": 0.9}), None)
    assert "forget_rouge" not in s["ci95"]
    assert "forget_prob" in s["ci95"]


def test_forget_quality_reports_ks_and_sizes_beside_an_unchanged_p_value():
    own = [2.0, 0.5, 2.0, 0.5]
    ref_ratios = [1.0, 1.5, 3.0]
    s = summarize(_suite(), RetainReference(ref_ratios, {}, "test"))
    assert s["forget_quality"] == M.forget_quality(own, ref_ratios)
    # sorted own 0.5 0.5 2 2, ref 1 1.5 3: at x = 0.5 F = 0.5 vs 0 -> D = 0.5
    # (at 1.5: 0.5 vs 2/3; at 2: 1 vs 2/3; at 3: 1 vs 1)
    assert s["forget_quality_ks"] == pytest.approx(0.5)
    assert (s["forget_quality_n_forget"], s["forget_quality_n_retain"]) == (4, 3)
    itself = summarize(_suite(), None, is_reference=True)
    assert itself["forget_quality"] == 1.0 and itself["forget_quality_ks"] == 0.0
    none = summarize(_suite(), None)
    assert none["forget_quality"] is None and none["forget_quality_ks"] is None
    assert none["forget_quality_n_forget"] is None


def test_composites_resample_their_terms_together():
    """Forget efficacy = 1 − mean(ROUGE, prob, 1 − TR) on the forget split (no CS / ES here):
    its replicates must come from the same resampled rows for every term, which this recomputes
    from the split's index draws."""
    suite = _suite()
    forget = suite.splits[0]
    for row, em in zip(forget.samples, (1.0, 0.0, 0.0, 1.0), strict=True):
        row["qa_exact_match"] = em
    for row in suite.splits[1].samples:
        row["qa_exact_match"] = 1.0
    forget.aggregates["qa_exact_match"] = 0.5
    suite.splits[1].aggregates["qa_exact_match"] = 1.0
    s = summarize(suite, None)
    idx = resample_indices(4, "forget")
    rouge = np.array([0.0, 1.0, 0.0, 1.0])[idx].mean(axis=1)
    prob = mean_replicates(np.array([0.2, 0.4, np.nan, 0.6]), idx)
    fe = 1.0 - (rouge + prob + (1.0 - 0.5)) / 3
    assert s["forget_efficacy"] == pytest.approx(1 - (0.5 + 0.4 + 0.5) / 3)
    assert s["ci95"]["forget_efficacy"] == pytest.approx(percentile_interval(fe))
    lo, hi = s["ci95"]["forget_efficacy"]
    assert lo < s["forget_efficacy"] < hi
    # SemEval: hmean(1 − forget ROUGE, 1 − forget EM, retain ROUGE 0.5, retain EM 1), the forget
    # terms from the same draws (a resample with ROUGE or EM 1 gives a zero term: hmean 0)
    em = np.array([1.0, 0.0, 0.0, 1.0])[idx].mean(axis=1)
    terms = np.stack([1 - rouge, 1 - em, np.full(1000, 0.5), np.ones(1000)], axis=1)
    with np.errstate(divide="ignore"):
        ta = np.where((terms <= 0).any(axis=1), 0.0, 4 / (1 / terms).sum(axis=1))
    assert s["semeval_task_aggregate"] == pytest.approx(4 / (2 + 2 + 2 + 1))
    assert s["ci95"]["semeval_task_aggregate"] == pytest.approx(percentile_interval(ta))


def test_point_values_only_skip_the_bootstrap_and_keep_every_number():
    """``intervals=False`` (evaluations during training, sweep trials): the same numbers, no
    ``ci95``."""
    ref = RetainReference([1.0, 1.5, 3.0], {}, "test")
    full, points = summarize(_suite(), ref), summarize(_suite(), ref, intervals=False)
    assert "ci95" not in points and "ci95_method" not in points
    assert points == {k: v for k, v in full.items() if k not in ("ci95", "ci95_method")}
