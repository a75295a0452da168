"""Memorisation metrics from one teacher-forced pass: exact memorisation and extraction strength.

Both read ``ScoredSequence.argmax_match``: ``m_t = 1[argmax_v p_θ(v | x, y_<t) = y_t]`` for the
answer tokens ``t = 0 … |y|−1`` WITHOUT the closing EOS of a QA answer
(:meth:`ScoredSequence.without_eos`), as published (Wang et al. 2025; open-unlearning's
``exact_memorization`` / ``extraction_strength``). An answer whose only scored token is the EOS
(an empty answer) keeps that token, so both stay defined.
"""

from __future__ import annotations

import numpy as np

from obliviate.eval.scored import ScoredSequence


def _matches(seq: ScoredSequence, name: str) -> np.ndarray:
    m = np.asarray(seq.without_eos().argmax_match).reshape(-1)
    if m.size == 0:
        raise ValueError(f"{name}: the sequence has no answer tokens")
    if not np.isin(m, (0, 1)).all():
        raise ValueError(f"{name}: argmax_match must hold only 0/1 (or booleans)")
    return m.astype(bool)


def exact_memorization(seq: ScoredSequence) -> float:
    """EM = ``(1/|y|) Σ_t 1[argmax p_θ(· | x, y_<t) = y_t]`` (Tirumala et al. 2022, "Memorization
    without overfitting"; used for unlearning by Wang et al. 2025, "Towards effective evaluations
    and comparisons for LLM unlearning methods", ICLR), over the answer tokens without the
    closing EOS.
    """
    return float(_matches(seq, "exact_memorization").mean())


def extraction_strength(seq: ScoredSequence) -> float:
    """ES = ``1 − k*/|y|`` (Carlini et al. 2021; Wang et al. 2025, ICLR), over the answer tokens
    without the closing EOS.

    Exact reading used here: ``k* = min{k ∈ {0, …, |y|} : m_t = 1 for every t ≥ k}``, the shortest
    answer prefix ``y_<k`` after which every remaining answer token is the teacher-forced argmax.
    Equivalently ``|y| − k*`` is the length of the longest all-match *suffix*, so
    ``ES = (length of the trailing run of matches) / |y|``:

    - every token matches → ``k* = 0``, ES = 1 (the whole answer is extracted from the question);
    - the last token mismatches → no non-empty suffix qualifies, ``k* = |y|``, ES = 0 ("0 if
      never"; the empty suffix is vacuously matched, which is what makes ``k* = |y|`` the
      fallback). open-unlearning's loop stops at ``k = |y| − 1`` and so returns ``1/|y|`` here;
      0 is kept, as the definition gives.

    Teacher forcing is exact here, not an approximation: if every argmax from position k on
    equals the ground truth, greedy decoding from ``x, y_<k`` feeds itself exactly those tokens
    and so reproduces ``y_≥k``; and if some argmax differs, greedy decoding from that prefix
    diverges at the first such position.
    """
    m = _matches(seq, "extraction_strength")
    n = m.size
    mismatches = np.flatnonzero(~m)
    k_star = 0 if mismatches.size == 0 else int(mismatches[-1]) + 1
    return 1.0 - k_star / n
