"""What one teacher-forced pass yields for one (prompt, answer) sequence.

Every likelihood-based metric (probability, truth ratio, MIA scores, exact memorisation,
extraction strength) is a pure function of these arrays; the model is run once per distinct
sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass
class ScoredSequence:
    """Arrays over the scored answer tokens (length ``n`` = number of scored tokens).

    - ``logprobs[t]``: log p_θ(y_t | x, y_<t)
    - ``mu[t]``, ``sigma[t]``: mean and std of log p_θ(v | x, y_<t) under v ~ p_θ (for Min-K%++)
    - ``argmax_match[t]``: 1 if the teacher-forced argmax equals y_t
    - ``ends_with_eos``: the last scored token is the closing EOS that the QA template appends
      (:func:`obliviate.models.tokenizer.encode_pair`); False for raw text (MUSE PrivLeak's
      :func:`obliviate.eval.scoring.encode_raw_pair` appends none).

    ``n_tokens``, ``nll`` and ``mean_nll`` cover the full scored span, EOS included: probability
    and truth ratio are defined on it (TOFU). Exact memorisation, extraction strength and the MIA
    token statistics use :meth:`without_eos`, as published.
    """

    logprobs: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    argmax_match: np.ndarray
    ends_with_eos: bool = False

    @property
    def n_tokens(self) -> int:
        return int(self.logprobs.shape[0])

    @property
    def nll(self) -> float:
        """S: summed NLL over the full scored span."""
        return float(-self.logprobs.sum())

    @property
    def mean_nll(self) -> float:
        """S̄ = S / |y| over the full scored span (0 for an empty answer)."""
        return float(-self.logprobs.mean()) if self.n_tokens else 0.0

    def without_eos(self) -> ScoredSequence:
        """The answer tokens without the closing EOS (``ends_with_eos`` False in the result).

        Returns ``self`` when there is no closing EOS. Edge case: when the EOS is the ONLY scored
        token (an empty answer), the full span is kept (still flagged ``ends_with_eos``) rather
        than returning zero tokens, so the metrics stay defined on the one token there is.
        """
        if not self.ends_with_eos or self.n_tokens <= 1:
            return self
        return replace(
            self,
            logprobs=self.logprobs[:-1],
            mu=self.mu[:-1],
            sigma=self.sigma[:-1],
            argmax_match=self.argmax_match[:-1],
            ends_with_eos=False,
        )
