"""Membership-inference scores and aggregates against hand-computed values."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from obliviate.eval.mia import (
    ATTACKS,
    gradient_norm,
    gradnorm_score,
    loss_score,
    mia_auc,
    mia_score_semeval,
    mia_scores,
    min_k_count,
    mink_score,
    minkpp_score,
    minkpp_z,
    privleak,
    reference_score,
    zlib_score,
)
from obliviate.eval.scored import ScoredSequence


def seq(logprobs, mu=None, sigma=None, eos=False) -> ScoredSequence:
    lp = np.asarray(logprobs, dtype=np.float64)
    return ScoredSequence(
        logprobs=lp,
        mu=np.asarray(mu if mu is not None else np.full_like(lp, -1.0), dtype=np.float64),
        sigma=np.asarray(sigma if sigma is not None else np.ones_like(lp), dtype=np.float64),
        argmax_match=np.ones(lp.shape, dtype=bool),
        ends_with_eos=eos,
    )


# --------------------------------------------------------------------------------------------
# per-sample scores


def test_loss_score():
    # S̄ = (1 + 2 + 3) / 3 = 2
    assert loss_score(seq([-1.0, -2.0, -3.0])) == pytest.approx(2.0)


def test_zlib_score():
    # numerator is the MEAN NLL S̄ = (1 + 2 + 3) / 3 = 2 (not the sum 6);
    # zlib("hello world") = 2-byte header + 13-byte fixed-Huffman block + 4-byte Adler-32
    # = 19 bytes → 2 / 19 ≈ 0.105263
    assert len(zlib.compress(b"hello world")) == 19
    assert zlib_score(seq([-1.0, -2.0, -3.0]), "hello world") == pytest.approx(2 / 19)
    # empty text still compresses to 8 bytes (header + empty block + checksum): 2 / 8
    assert zlib_score(seq([-1.0, -2.0, -3.0]), "") == pytest.approx(0.25)
    # two texts of different lengths, same per-token loss 1: S̄/zlib = 1/19 vs 1/8, whatever
    # their token counts (the summed S would have given 4/19 and 1/8: the order flips)
    assert zlib_score(seq([-1.0] * 4), "hello world") == pytest.approx(1 / 19)
    assert zlib_score(seq([-1.0]), "") == pytest.approx(1 / 8)


@pytest.mark.parametrize(
    ("n", "k", "m"),
    [
        (5, 0.4, 2),  # 0.4·5 = 2 exactly
        (10, 0.4, 4),  # 0.4·10 = 4
        (7, 0.4, 2),  # ⌊2.8⌋ = 2 (a ceiling would give 3)
        (3, 0.4, 1),  # ⌊1.2⌋ = 1
        (9, 0.5, 4),  # ⌊4.5⌋ = 4
        (10, 0.7, 7),  # 0.7·10 = 7.000000000000001 in floats → 7
        (100, 0.29, 29),  # 0.29·100 = 28.999999999999996 in floats, still 29 (not 28)
        (2, 0.4, 1),  # ⌊0.8⌋ = 0 → max(1, 0) = 1
        (1, 0.4, 1),  # never 0 tokens
        (4, 1.0, 4),
    ],
)
def test_min_k_count(n, k, m):
    assert min_k_count(n, k) == m


def test_min_k_count_rejects_bad_k():
    with pytest.raises(ValueError):
        min_k_count(5, 0.0)
    with pytest.raises(ValueError):
        min_k_count(5, 1.5)


def test_mink_score():
    s = seq([-0.1, -5.0, -0.2, -3.0, -0.3])
    # k = 0.4, n = 5 → m = 2; lowest two: −5, −3 → mean −4 → score 4
    assert mink_score(s) == pytest.approx(4.0)
    # k = 0.5 → m = ⌊2.5⌋ = 2; lowest two: −5, −3 → score 4 (a ceiling, m = 3, gave 8.3/3)
    assert mink_score(s, k=0.5) == pytest.approx(4.0)
    # k = 0.7 → m = ⌊3.5⌋ = 3; lowest three: −5, −3, −0.3 → mean −8.3/3 → score 2.7667
    assert mink_score(s, k=0.7) == pytest.approx(8.3 / 3)
    # k = 1 → plain mean = S̄ = 8.6 / 5 = 1.72
    assert mink_score(s, k=1.0) == pytest.approx(loss_score(s)) == pytest.approx(1.72)


def test_minkpp_z_and_score_with_zero_sigma_guard():
    s = seq([-1.0, -3.0, -4.0], mu=[-2.0, -2.0, -2.0], sigma=[1.0, 2.0, 0.0])
    # z = [(−1+2)/1, (−3+2)/2, σ=0 → 0] = [1, −0.5, 0]
    np.testing.assert_allclose(minkpp_z(s), [1.0, -0.5, 0.0])
    # n = 3, k = 0.4 → m = ⌊1.2⌋ = 1; lowest z: −0.5 → score 0.5
    assert minkpp_score(s) == pytest.approx(0.5)
    # k = 0.7 → m = ⌊2.1⌋ = 2; lowest two z: −0.5, 0 → mean −0.25 → score 0.25
    assert minkpp_score(s, k=0.7) == pytest.approx(0.25)


def test_minkpp_rejects_mismatched_shapes():
    bad = ScoredSequence(
        logprobs=np.array([-1.0, -2.0]),
        mu=np.array([-1.0]),
        sigma=np.array([1.0, 1.0]),
        argmax_match=np.array([1, 1]),
    )
    with pytest.raises(ValueError):
        minkpp_z(bad)


def test_reference_score():
    # S̄_θ = 2, S̄_ref = 0.5 → 1.5
    assert reference_score(seq([-1.0, -2.0, -3.0]), seq([-0.5, -0.5])) == pytest.approx(1.5)


def test_gradnorm_score_validates():
    assert gradnorm_score(3.0) == 3.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            gradnorm_score(bad)


def test_empty_sequence_rejected():
    with pytest.raises(ValueError):
        loss_score(seq([]))
    with pytest.raises(ValueError):
        mink_score(seq([]))


def test_without_eos_drops_only_a_closing_eos():
    s = seq([-1.0, -2.0, -9.0], eos=True)
    t = s.without_eos()
    np.testing.assert_allclose(t.logprobs, [-1.0, -2.0])
    assert t.n_tokens == 2 and not t.ends_with_eos
    assert t.without_eos() is t  # idempotent
    # the full-span statistics keep the EOS: S̄ = (1 + 2 + 9) / 3 = 4
    assert s.mean_nll == pytest.approx(4.0) and s.n_tokens == 3
    raw = seq([-1.0, -2.0, -9.0])  # raw text (encode_raw_pair): no EOS, nothing dropped
    assert raw.without_eos() is raw


def test_mia_token_statistics_skip_the_closing_eos():
    # answer tokens log p = [−1, −2, −3], closing EOS log p = −9 (μ = −1, σ = 1 everywhere)
    s = seq([-1.0, -2.0, -3.0, -9.0], eos=True)
    # LOSS = (1 + 2 + 3) / 3 = 2 (with the EOS it would be 15/4 = 3.75)
    assert loss_score(s) == pytest.approx(2.0)
    # ZLib = 2 / 19
    assert zlib_score(s, "hello world") == pytest.approx(2 / 19)
    # Min-K%: n = 3, m = ⌊1.2⌋ = 1 → lowest −3 → 3 (with the EOS: m = ⌊1.6⌋ = 1 → 9)
    assert mink_score(s) == pytest.approx(3.0)
    # Min-K%++: z = (lp + 1) / 1 = [0, −1, −2] → lowest one −2 → 2
    np.testing.assert_allclose(minkpp_z(s), [0.0, -1.0, -2.0])
    assert minkpp_score(s) == pytest.approx(2.0)
    # Reference: 2 − ref's (0.5 + 0.5) / 2 = 1.5, the ref's EOS (−7) left out too
    ref = seq([-0.5, -0.5, -7.0], eos=True)
    assert reference_score(s, ref) == pytest.approx(1.5)
    scores = mia_scores(s, "hello world", ref_seq=ref)
    assert scores == pytest.approx(
        {"loss": 2.0, "zlib": 2 / 19, "min_k": 3.0, "min_k_pp": 2.0, "reference": 1.5}
    )


def test_eos_only_answer_keeps_its_one_token():
    # an empty answer scores only the EOS: the full span (that one token) is kept
    s = seq([-0.5], eos=True)
    assert s.without_eos() is s
    assert loss_score(s) == pytest.approx(0.5)
    assert mink_score(s) == pytest.approx(0.5)


def test_mia_scores_leaves_out_unsupplied_attacks():
    s = seq([-1.0, -2.0, -3.0])
    assert set(mia_scores(s, "abc")) == {"loss", "zlib", "min_k", "min_k_pp"}
    full = mia_scores(s, "abc", ref_seq=seq([-1.0]), grad_norm=0.5)
    assert tuple(full) == ATTACKS
    assert full["reference"] == pytest.approx(1.0)  # 2 − 1
    assert full["gradnorm"] == 0.5


# --------------------------------------------------------------------------------------------
# gradient norm


class _Bigram(torch.nn.Module):
    """logits[t] = W[input_ids[t]]: a model whose gradient is easy to write by hand."""

    def __init__(self, vocab: int = 2):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(vocab, vocab))
        self.frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, input_ids, attention_mask=None):
        class Out:
            pass

        out = Out()
        out.logits = self.drop(self.w[input_ids])
        return out


def test_gradient_norm_one_answer_token():
    model = _Bigram()
    model.train()
    # labels [−100, 1]: one scored token, predicted from position 0 → logits W[0] = [0, 0],
    # p = [½, ½], S̄ = −log ½. ∂S̄/∂W[0] = p − onehot(1) = [½, −½], ∂S̄/∂W[1] = 0
    # ‖g‖ = sqrt(¼ + ¼) = sqrt(½) ≈ 0.70711 (dropout would change it: eval mode is required);
    # `w` is the one trainable tensor (`frozen` is excluded), so the mean over tensors is ‖g_w‖
    g = gradient_norm(model, torch.tensor([0, 1]), torch.tensor([1, 1]), torch.tensor([-100, 1]))
    assert g == pytest.approx(math.sqrt(0.5))
    assert model.training  # mode restored
    assert model.w.grad is None  # .grad untouched


def test_gradient_norm_is_of_the_mean_nll():
    model = _Bigram()
    # labels [−100, 1, 0]: position 0 (W[0]) predicts 1, position 1 (W[1]) predicts 0.
    # S̄ = ½(ℓ₀ + ℓ₁) → ∂S̄/∂W[0] = ½[½, −½], ∂S̄/∂W[1] = ½[−½, ½]
    # ‖g‖² = 4 · (¼)² = ¼ → ‖g‖ = ½   (a summed NLL would give 1/√2)
    g = gradient_norm(model, torch.tensor([[0, 1, 0]]), None, torch.tensor([[-100, 1, 0]]))
    assert g == pytest.approx(0.5)


class _BigramBias(torch.nn.Module):
    """logits[t] = W[input_ids[t]] + b over a 3-token vocabulary: two parameter tensors."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3, 3))
        self.b = torch.nn.Parameter(torch.zeros(3))
        self.unused = torch.nn.Parameter(torch.ones(2))  # never reached by the loss

    def forward(self, input_ids, attention_mask=None):
        class Out:
            pass

        out = Out()
        out.logits = self.w[input_ids] + self.b
        return out


def test_gradient_norm_is_the_mean_of_per_tensor_norms():
    # labels [−100, 1]: position 0 predicts 1 from logits W[0] + b = 0 → p = [⅓, ⅓, ⅓];
    # ∂S̄/∂logits = p − onehot(1) = [⅓, −⅔, ⅓], ‖·‖² = 1/9 + 4/9 + 1/9 = 2/3.
    # ∂S̄/∂W: row 0 = that, row 1 = row 2 = 0 → ‖g_W‖ = √(2/3); ∂S̄/∂b = that → ‖g_b‖ = √(2/3).
    # `unused` gets no gradient and is left out.
    # mean over tensors = √(2/3) ≈ 0.816497 (one global norm would be √(4/3) ≈ 1.1547)
    g = gradient_norm(_BigramBias(), torch.tensor([0, 1]), None, torch.tensor([-100, 1]))
    assert g == pytest.approx(math.sqrt(2 / 3))


def test_gradient_norm_two_tokens_and_drop_eos():
    ids, labels = torch.tensor([0, 1, 2]), torch.tensor([-100, 1, 2])
    # all labels: S̄ = ½(ℓ(W[0] → 1) + ℓ(W[1] → 2)); ∂S̄/∂logits₀ = ½[⅓, −⅔, ⅓],
    # ∂S̄/∂logits₁ = ½[⅓, ⅓, −⅔], each of norm ½·√(2/3) = √6/6.
    # ‖g_W‖ = √(2 · 6/36) = √(1/3) ≈ 0.577350; g_b = ½[⅔, −⅓, −⅓] → ‖g_b‖ = ½·√(6/9) = √6/6
    # ≈ 0.408248; mean = (0.577350 + 0.408248) / 2 ≈ 0.492799
    full = gradient_norm(_BigramBias(), ids, None, labels)
    assert full == pytest.approx((math.sqrt(1 / 3) + math.sqrt(6) / 6) / 2)
    # drop_eos: the last label (2, the EOS here) is left out → the one-token case above, √(2/3)
    g = gradient_norm(_BigramBias(), ids, None, labels, drop_eos=True)
    assert g == pytest.approx(math.sqrt(2 / 3))
    # an EOS-only answer keeps its one label (labels [−100, 1] again: √(2/3))
    one = gradient_norm(_BigramBias(), ids[:2], None, labels[:2], drop_eos=True)
    assert one == pytest.approx(math.sqrt(2 / 3))


def test_gradient_norm_needs_answer_tokens():
    with pytest.raises(ValueError):
        gradient_norm(_Bigram(), torch.tensor([0, 1]), None, torch.tensor([-100, -100]))


# --------------------------------------------------------------------------------------------
# aggregates


def test_mia_auc_hand_computed():
    # pairs (holdout > forget): 3>1 ✓, 3>2 ✓, 1.5>1 ✓, 1.5>2 ✗ → 3/4
    assert mia_auc([1.0, 2.0], [3.0, 1.5]) == pytest.approx(0.75)
    # ties count ½: forget [1], holdout [1, 2] → (½ + 1) / 2 = 0.75
    assert mia_auc([1.0], [1.0, 2.0]) == pytest.approx(0.75)


def test_mia_auc_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        mia_auc([], [1.0])
    with pytest.raises(ValueError):
        mia_auc([float("nan")], [1.0])


def test_privleak_target_like_is_about_minus_100():
    # MUSE-News's retrained model: Min-40% AUC 0.4772 in MUSE's (1 − x) convention
    # (muse_bench constants.py) → obliviate's AUC 0.5228. A target that still recognises the
    # forget set: obliviate AUC 0.999 → a_u = 0.001, a_r = 0.4772
    # → (0.001 − 0.4772) / 0.4772 × 100 = −0.4762 / 0.4772 × 100 = −99.7904 (MUSE: −99.8)
    assert privleak(0.999, 0.5228) == pytest.approx(-99.7904, abs=1e-4)
    # the limit: AUC 1 → a_u = 0 → exactly −100
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)


def test_privleak_retrain_like_is_0():
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.5228, 0.5228) == pytest.approx(0.0)


def test_privleak_asymmetric_hand_computed():
    # AUC_u = 0.7, AUC_r = 0.4 → a_u = 0.3, a_r = 0.6 → (0.3 − 0.6) / 0.6 × 100 = −50
    # (the old formula on the AUC itself gave (0.7 − 0.4) / 0.4 × 100 = +75)
    assert privleak(0.7, 0.4) == pytest.approx(-50.0)
    # over-unlearning: AUC_u = 0.2, AUC_r = 0.4 → a_u = 0.8 → (0.8 − 0.6) / 0.6 × 100 = +33.33
    assert privleak(0.2, 0.4) == pytest.approx(100 / 3)
    # AUC_r = 0 is fine now (a_r = 1): AUC_u = 0.25 → (0.75 − 1) / 1 × 100 = −25
    assert privleak(0.25, 0.0) == pytest.approx(-25.0)


def test_privleak_undefined_and_out_of_range():
    with pytest.raises(ValueError, match="undefined"):
        privleak(0.5, 1.0)  # a_retrain = 1 − 1 = 0
    for bad in ((1.5, 0.5), (-0.1, 0.5), (0.5, 1.2), (0.5, -0.2)):
        with pytest.raises(ValueError):
            privleak(*bad)


def test_mia_score_semeval():
    # 1 − 2|AUC − ½|: 0.5 → 1, 0.75 → 0.5, 0.1 → 0.2, 1 → 0
    assert mia_score_semeval(0.5) == 1.0
    assert mia_score_semeval(0.75) == pytest.approx(0.5)
    assert mia_score_semeval(0.1) == pytest.approx(0.2)
    assert mia_score_semeval(1.0) == 0.0


# --------------------------------------------------------------------------------------------
# all six attacks on constructed members / non-members

_WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def _population(rng, n, mean_lp, grad_range):
    """n samples: per-token log-probs ≈ mean_lp, a reference model at −1.0 per token for all."""
    out = []
    for _ in range(n):
        length = int(rng.integers(5, 16))
        lp = mean_lp + rng.normal(0.0, 0.1, size=length)
        mu = rng.uniform(-1.7, -1.3, size=length)
        sigma = rng.uniform(0.5, 1.5, size=length)
        s = seq(np.minimum(lp, -1e-3), mu=mu, sigma=sigma)
        ref = seq(np.full(length, -1.0))
        text = " ".join(rng.choice(_WORDS, size=length))
        out.append(mia_scores(s, text, ref_seq=ref, grad_norm=float(rng.uniform(*grad_range))))
    return out


def _aucs(forget, holdout):
    return {a: mia_auc([f[a] for f in forget], [h[a] for h in holdout]) for a in ATTACKS}


def test_all_six_attacks_separate_members():
    rng = np.random.default_rng(0)
    members = _population(rng, 25, mean_lp=-0.2, grad_range=(0.1, 0.5))  # low loss, small grad
    nonmembers = _population(rng, 25, mean_lp=-2.0, grad_range=(1.0, 2.0))
    aucs = _aucs(forget=members, holdout=nonmembers)
    assert set(aucs) == set(ATTACKS)
    for attack, auc in aucs.items():
        assert auc > 0.9, (attack, auc)
    # swapped: the "forget" set is the high-loss population → AUC < 0.1 for every attack
    swapped = _aucs(forget=nonmembers, holdout=members)
    for attack, auc in swapped.items():
        assert auc < 0.1, (attack, auc)
