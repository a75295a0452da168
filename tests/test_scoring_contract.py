"""score_pairs on fixed logits over a 6-token vocabulary: every number is worked out by hand.

The stub LM's next-token logits depend only on the current token: ``logits = ln(w)`` for a
hand-written weight row ``w``, so the next-token distribution is exactly ``w / Σw`` (softmax of
log-weights). Expected values below are computed from those probabilities with ``math`` only.

Vocabulary: 0 <pad>, 1 <s>, 2 </s>, 3 a, 4 b, 5 c.

Next-token distributions (index order <pad>, <s>, </s>, a, b, c); mu = Σ p ln p and
sigma = sqrt(Σ p (ln p − mu)²), i.e. the mean and std of ln p(v) under v ~ p:

    after <pad>  [1,1,1,1,1,15]/20                          (never scored: labels are −100)
    after <s>    [.1, .1, .1, .4, .2, .1]  argmax a
    after </s>   uniform 1/6                                 (never scored)
    after a      [.1, .1, .2, .1, .4, .1]  argmax b   mu = −1.609438  sigma = 0.619970
    after b      [.1, .1, .1, .1, .1, .5]  argmax c   mu = −1.497866  sigma = 0.804719
    after c      [.2, .1, .4, .1, .1, .1]  argmax </s> mu = −1.609438  sigma = 0.619970

    e.g. after a: mu = 4·0.1·ln 0.1 + 0.2·ln 0.2 + 0.4·ln 0.4
                     = −0.921034 − 0.321888 − 0.366516 = −1.609438
    (an unweighted mean of ln p would give −1.956012, a variance 0.384363 instead of sigma)

The stub tokenizer knows a, b, c and drops the plain template's "Question:" / "Answer:" words,
so ``encode_pair(tok, q, a)`` = [<s>] + ids(q) + ids(a) + [</s>], n_prompt = 1 + |ids(q)|.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from obliviate.eval.scoring import PassCounter, score_pairs
from obliviate.models.tokenizer import encode_pair

PAD, BOS, EOS, A, B, C = range(6)
WEIGHTS = {
    PAD: [1, 1, 1, 1, 1, 15],
    BOS: [1, 1, 1, 4, 2, 1],
    EOS: [1, 1, 1, 1, 1, 1],
    A: [1, 1, 2, 1, 4, 1],
    B: [1, 1, 1, 1, 1, 5],
    C: [2, 1, 4, 1, 1, 1],
}


class StubTokenizer:
    """Whitespace tokenizer over {a, b, c}; template words are dropped, anything else raises."""

    vocab = {"a": A, "b": B, "c": C}
    template_words = {"Question:", "Answer:"}
    bos_token, eos_token, pad_token = "<s>", "</s>", "<pad>"
    bos_token_id, eos_token_id, pad_token_id = BOS, EOS, PAD
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        assert add_special_tokens is False
        words = [w for w in text.split() if w not in self.template_words]
        return {"input_ids": [self.vocab[w] for w in words]}


class TableLM(torch.nn.Module):
    """logits[b, t] = ln WEIGHTS[input_ids[b, t]]: a bigram model with a hand-written table."""

    def __init__(self) -> None:
        super().__init__()
        table = [[math.log(w) for w in WEIGHTS[tok]] for tok in range(6)]
        self.register_buffer("table", torch.tensor(table, dtype=torch.float32))
        self.rows_forwarded = 0
        self.saw_padding = False

    @property
    def device(self) -> torch.device:
        return self.table.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        assert attention_mask.shape == input_ids.shape
        self.rows_forwarded += input_ids.shape[0]
        self.saw_padding |= bool((attention_mask == 0).any())
        return SimpleNamespace(logits=self.table[input_ids])


def _p(prev: int) -> list[float]:
    w = WEIGHTS[prev]
    return [x / sum(w) for x in w]


def _mu_sigma(prev: int) -> tuple[float, float]:
    p = _p(prev)
    mu = sum(q * math.log(q) for q in p)
    return mu, math.sqrt(sum(q * (math.log(q) - mu) ** 2 for q in p))


# Pair A = ("a", "b a"): ids [<s>, a, b, a, </s>], n_prompt 2; answer [b, a, </s>] predicted
# after [a, b, a]:
#   b after a:    p = 0.4 -> ln 0.4 = −0.916291, argmax b == b     -> 1
#   a after b:    p = 0.1 -> ln 0.1 = −2.302585, argmax c != a     -> 0
#   </s> after a: p = 0.2 -> ln 0.2 = −1.609438, argmax b != </s>  -> 0
PAIR_A = ("a", "b a")
EXPECTED_A = {
    "logprobs": [math.log(0.4), math.log(0.1), math.log(0.2)],
    "mu": [-1.609438, -1.497866, -1.609438],
    "sigma": [0.619970, 0.804719, 0.619970],
    "argmax_match": [1.0, 0.0, 0.0],
    "prev": [A, B, A],
}
# Pair B = ("b", "c"): ids [<s>, b, c, </s>], n_prompt 2; answer [c, </s>] after [b, c]:
#   c after b:    p = 0.5 -> ln 0.5 = −0.693147, argmax c == c     -> 1
#   </s> after c: p = 0.4 -> ln 0.4 = −0.916291, argmax </s>       -> 1
PAIR_B = ("b", "c")
EXPECTED_B = {
    "logprobs": [math.log(0.5), math.log(0.4)],
    "mu": [-1.497866, -1.609438],
    "sigma": [0.804719, 0.619970],
    "argmax_match": [1.0, 1.0],
    "prev": [B, C],
}
# Pair C = ("a b", "c"): ids [<s>, a, b, c, </s>], n_prompt 3 (a longer prompt, same answer as B):
# same per-token values as B, at positions shifted by one.
PAIR_C = ("a b", "c")
EXPECTED_C = EXPECTED_B


def _check(scored, expected) -> None:
    n = len(expected["logprobs"])
    assert scored.n_tokens == n
    assert scored.ends_with_eos is True  # the last scored token is encode_pair's EOS
    for name in ("logprobs", "mu", "sigma", "argmax_match"):
        arr = getattr(scored, name)
        assert arr.shape == (n,), name
        np.testing.assert_allclose(arr, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # the 6-decimal constants above agree with the exact formulas
    for t, prev in enumerate(expected["prev"]):
        mu, sigma = _mu_sigma(prev)
        assert scored.mu[t] == pytest.approx(mu, rel=1e-5)
        assert scored.sigma[t] == pytest.approx(sigma, rel=1e-5)


def test_stub_tokenizer_encodes_known_ids() -> None:
    tok = StubTokenizer()
    assert encode_pair(tok, *PAIR_A) == ([BOS, A, B, A, EOS], 2)
    assert encode_pair(tok, *PAIR_B) == ([BOS, B, C, EOS], 2)
    assert encode_pair(tok, *PAIR_C) == ([BOS, A, B, C, EOS], 3)


def test_score_pairs_hand_values() -> None:
    out = score_pairs(TableLM(), StubTokenizer(), [PAIR_A, PAIR_B, PAIR_C], batch_size=1)
    assert set(out) == {PAIR_A, PAIR_B, PAIR_C}
    _check(out[PAIR_A], EXPECTED_A)
    _check(out[PAIR_B], EXPECTED_B)
    _check(out[PAIR_C], EXPECTED_C)
    # derived quantities: S = −(ln 0.4 + ln 0.1 + ln 0.2) = −ln 0.008 = 4.828314, S̄ = 1.609438
    assert out[PAIR_A].nll == pytest.approx(-math.log(0.008), rel=1e-6)
    assert out[PAIR_A].mean_nll == pytest.approx(-math.log(0.008) / 3, rel=1e-6)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_padding_does_not_change_scores(batch_size: int) -> None:
    pairs = [PAIR_A, PAIR_B, PAIR_C]
    alone = score_pairs(TableLM(), StubTokenizer(), pairs, batch_size=1)
    model = TableLM()
    batched = score_pairs(model, StubTokenizer(), pairs, batch_size=batch_size)
    # B (4 tokens) shares a batch with a 5-token sequence, so it is right-padded with <pad>,
    # whose row would predict c with p = 0.75 if a padding position were ever scored
    assert model.saw_padding
    for p in pairs:
        for name in ("logprobs", "mu", "sigma", "argmax_match"):
            np.testing.assert_allclose(
                getattr(batched[p], name), getattr(alone[p], name), rtol=1e-6, err_msg=name
            )
    _check(batched[PAIR_B], EXPECTED_B)


def test_repeated_pairs_are_forwarded_once() -> None:
    model, counter = TableLM(), PassCounter()
    pairs = [PAIR_A, PAIR_B, PAIR_A, PAIR_A, PAIR_B]
    out = score_pairs(model, StubTokenizer(), pairs, batch_size=2, counter=counter)
    assert set(out) == {PAIR_A, PAIR_B}
    assert counter.scored_sequences == 2
    assert model.rows_forwarded == 2
    assert counter.forward_batches == 1
    assert counter.requested_pairs == 5
    assert counter.distinct_pairs == {PAIR_A, PAIR_B}
    # real tokens only: 5 (A) + 4 (B)
    assert counter.scored_tokens == 9
    _check(out[PAIR_A], EXPECTED_A)
    _check(out[PAIR_B], EXPECTED_B)
