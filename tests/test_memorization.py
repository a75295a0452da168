"""Exact memorisation and extraction strength against hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from obliviate.eval.memorization import exact_memorization, extraction_strength
from obliviate.eval.scored import ScoredSequence


def seq(matches, eos=False) -> ScoredSequence:
    m = np.asarray(matches)
    n = m.shape[0]
    return ScoredSequence(
        logprobs=np.full(n, -1.0),
        mu=np.zeros(n),
        sigma=np.ones(n),
        argmax_match=m,
        ends_with_eos=eos,
    )


def test_exact_memorization():
    # (1 + 0 + 1 + 1) / 4 = 0.75
    assert exact_memorization(seq([1, 0, 1, 1])) == pytest.approx(0.75)
    assert exact_memorization(seq([True, True])) == 1.0
    assert exact_memorization(seq([0.0, 0.0, 0.0])) == 0.0


@pytest.mark.parametrize(
    ("matches", "es"),
    [
        ([1, 1, 1], 1.0),  # k* = 0 → 1 − 0/3
        ([1, 0, 1, 1], 0.5),  # last mismatch at t = 1 → k* = 2 → 1 − 2/4
        ([0, 1, 1, 1, 1], 0.8),  # k* = 1 → 1 − 1/5
        ([1, 1, 0], 0.0),  # last token wrong → k* = |y| = 3 → 0 ("0 if never")
        ([0], 0.0),
        ([1], 1.0),
    ],
)
def test_extraction_strength(matches, es):
    assert extraction_strength(seq(matches)) == pytest.approx(es)


def test_extraction_strength_matches_definition_on_all_patterns():
    # k* = min{k ∈ 0..n : m_t = 1 ∀ t ≥ k}, checked by brute force for every 0/1 pattern, n ≤ 6
    for n in range(1, 7):
        for pattern in itertools.product([0, 1], repeat=n):
            k_star = min(k for k in range(n + 1) if all(pattern[k:]))
            assert extraction_strength(seq(list(pattern))) == pytest.approx(1 - k_star / n)


def test_extraction_strength_is_0_not_1_over_n_when_the_last_token_mismatches():
    # k* = |y| = 4 → 1 − 4/4 = 0. open-unlearning's loop stops at k = |y| − 1 and reports
    # 1 − 3/4 = 0.25 = 1/|y| here; obliviate keeps the definition's 0.
    assert extraction_strength(seq([1, 1, 1, 0])) == 0.0


def test_closing_eos_is_left_out():
    # answer tokens match [1, 0, 1], closing EOS matches (1): EM = 2/3 (with EOS: 3/4)
    s = seq([1, 0, 1, 1], eos=True)
    assert exact_memorization(s) == pytest.approx(2 / 3)
    # ES on [1, 0, 1]: k* = 2 → 1 − 2/3 = 1/3 (with EOS: k* = 2 → 1 − 2/4 = 0.5)
    assert extraction_strength(s) == pytest.approx(1 / 3)
    # a mismatching EOS does not zero ES: [1, 1] all match → 1 (with EOS [1, 1, 0]: 0)
    assert extraction_strength(seq([1, 1, 0], eos=True)) == 1.0
    assert exact_memorization(seq([1, 1, 0], eos=True)) == 1.0
    # raw text (no EOS flag): every token counts, [1, 1, 0] → EM 2/3, ES 0
    assert exact_memorization(seq([1, 1, 0])) == pytest.approx(2 / 3)
    assert extraction_strength(seq([1, 1, 0])) == 0.0


def test_eos_only_answer_keeps_the_eos():
    # an empty answer scores only the EOS: that one token is kept (not an empty span)
    assert exact_memorization(seq([1], eos=True)) == 1.0
    assert extraction_strength(seq([0], eos=True)) == 0.0


def test_rejects_empty_and_non_binary():
    with pytest.raises(ValueError):
        exact_memorization(seq([]))
    with pytest.raises(ValueError):
        extraction_strength(seq([]))
    with pytest.raises(ValueError):
        exact_memorization(seq([0.5, 1.0]))
