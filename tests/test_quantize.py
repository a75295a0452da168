"""Fake quantisation (the quantisation attack): hand-computed RTN and NF4 values, the NF4 codebook
against QLoRA's published table, and which weights quantize_model_ touches.

Round-to-nearest by hand, w = [1.0, −0.5, 0.26, 0.0], max|w| = 1:

    8 bits, Q = 127: w·Q = [127, −63.5, 33.02, 0] → codes [127, −64, 33, 0]
                     (−63.5 is a tie: half to even gives −64) → [1, −64/127, 33/127, 0]
    4 bits, Q = 7:   w·Q = [7, −3.5, 1.82, 0]     → codes [7, −4, 2, 0]
                     (−3.5 is a tie: half to even gives −4)   → [1, −4/7, 2/7, 0]

NF4 of the same values (absmax 1): −0.5 lies between −0.5251 and −0.3949, nearer −0.5251;
0.26 between 0.2461 and 0.3379, nearer 0.2461 → [1, −0.5251, 0.2461, 0].
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from obliviate.attacks.quantize import (
    NF4_CODEBOOK,
    quantize_model_,
    quantize_nf4,
    quantize_rtn,
)

W = torch.tensor([[1.0, -0.5, 0.26, 0.0], [0.0, 0.0, 0.0, 0.0]])

# bitsandbytes' NF4 table (QLoRA), as printed to 4 decimals and in full float32
NF4_PUBLISHED_4DP = [
    -1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
    0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0,
]  # fmt: skip
NF4_PUBLISHED = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]  # fmt: skip


def _close(a: torch.Tensor, expected: list[list[float]], atol: float = 1e-7) -> None:
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, torch.tensor(expected), rtol=0, atol=atol)


def test_rtn_8bit_hand_values() -> None:
    _close(quantize_rtn(W, 8), [[1.0, -64 / 127, 33 / 127, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_rtn_4bit_hand_values() -> None:
    _close(quantize_rtn(W, 4), [[1.0, -4 / 7, 2 / 7, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_rtn_rounds_half_to_even() -> None:
    # max|w| = 7 at 4 bits: the scale is exactly 1, so the codes are round(w) themselves
    w = torch.tensor([[7.0, 2.5, -3.5, 0.5, -0.5, 1.5, -6.5]])
    assert quantize_rtn(w, 4).tolist() == [[7.0, 2.0, -4.0, 0.0, 0.0, 2.0, -6.0]]


def test_zero_rows_and_blocks_stay_zero() -> None:
    z = torch.zeros(3, 5)
    for q in (quantize_rtn(z, 8), quantize_rtn(z, 4), quantize_nf4(z, block_size=4)):
        assert torch.equal(q, z) and not q.isnan().any()


@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_quantising_twice_equals_once(scheme: str) -> None:
    fn = {
        "int8": lambda w: quantize_rtn(w, 8),
        "int4": lambda w: quantize_rtn(w, 4),
        "nf4": quantize_nf4,
    }[scheme]
    torch.manual_seed(0)
    w = torch.randn(64, 100) * torch.rand(64, 1) * 3
    once = fn(w)
    assert not torch.equal(once, w)
    assert torch.equal(fn(once), once)


def test_level_counts_per_row() -> None:
    torch.manual_seed(1)
    w = torch.randn(16, 512)
    for bits, most in ((4, 15), (8, 255)):
        q = quantize_rtn(w, bits)
        assert max(len(torch.unique(row)) for row in q) <= most
    assert max(len(torch.unique(row)) for row in quantize_rtn(w, 4)) == 15  # all used here


def test_rtn_keeps_shape_and_row_absmax() -> None:
    torch.manual_seed(2)
    w = torch.randn(5, 3, 4, dtype=torch.float64)
    q = quantize_rtn(w, 8)
    assert q.shape == w.shape and q.dtype == torch.float32
    rows = w.reshape(5, -1).abs().amax(1).float()
    torch.testing.assert_close(q.reshape(5, -1).abs().amax(1), rows, rtol=1e-6, atol=0)


def test_nf4_codebook_matches_published_table() -> None:
    assert NF4_CODEBOOK.shape == (16,)
    torch.testing.assert_close(NF4_CODEBOOK, torch.tensor(NF4_PUBLISHED_4DP), rtol=0, atol=1e-4)
    torch.testing.assert_close(NF4_CODEBOOK, torch.tensor(NF4_PUBLISHED), rtol=0, atol=1e-6)
    assert (NF4_CODEBOOK > 0).sum() == 8 and (NF4_CODEBOOK < 0).sum() == 7
    assert NF4_CODEBOOK[7] == 0.0 and NF4_CODEBOOK[0] == -1.0 and NF4_CODEBOOK[-1] == 1.0
    assert torch.all(NF4_CODEBOOK[1:] > NF4_CODEBOOK[:-1])


def test_nf4_hand_values() -> None:
    q = quantize_nf4(W, block_size=4)  # block 1 = row 0, block 2 = the zero row
    c = NF4_CODEBOOK
    assert q.tolist() == [[1.0, float(c[2]), float(c[10]), 0.0], [0.0, 0.0, 0.0, 0.0]]
    torch.testing.assert_close(q[0], torch.tensor([1.0, -0.5251, 0.2461, 0.0]), rtol=0, atol=1e-4)


def test_nf4_returns_codebook_times_absmax_exactly() -> None:
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 16, (64,), generator=gen)
    idx[17] = 0  # level −1: this block's absmax is a
    a = 0.37
    block = NF4_CODEBOOK[idx] * a
    assert torch.equal(quantize_nf4(block), block)
    small = torch.tensor([a, -0.5 * a, 0.0])
    expected = torch.stack([NF4_CODEBOOK[15], NF4_CODEBOOK[2], NF4_CODEBOOK[7]]) * torch.tensor(a)
    assert torch.equal(quantize_nf4(small, block_size=3), expected)


def test_nf4_blocks_have_their_own_absmax() -> None:
    # 70 values, blocks of 64: the last block (6 values) is scaled by its own absmax 0.1
    w = torch.zeros(7, 10)
    flat = w.view(-1)
    flat[0] = 2.0
    flat[1] = -1.0  # −0.5 of the absmax
    flat[64:70] = torch.tensor([0.1, -0.05, 0.0, 0.026, 0.1, -0.1])
    q = quantize_nf4(w).view(-1)
    c = NF4_CODEBOOK
    assert q[0] == 2.0 and q[1] == float(c[2] * 2.0)
    assert torch.equal(q[2:64], torch.zeros(62))
    expected = torch.stack([c[15], c[2], c[7], c[10], c[15], c[0]]) * torch.tensor(0.1)
    assert torch.equal(q[64:], expected)


def test_nf4_ties_go_to_the_lower_level() -> None:
    mid = float((NF4_CODEBOOK[7] + NF4_CODEBOOK[8]) / 2)
    q = quantize_nf4(torch.tensor([1.0, mid]))
    assert q.tolist() == [1.0, 0.0]


def _tiny_llama(tied: bool) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_quantize_model_touches_only_layer_linears(scheme: str, tied: bool) -> None:
    model = _tiny_llama(tied)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = quantize_model_(model, scheme)
    after = model.state_dict()
    linear = {n + ".weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    linear.discard("lm_head.weight")
    assert len(linear) == 2 * 7  # q, k, v, o, gate, up, down per layer
    for name, value in after.items():
        if name in linear:
            assert not torch.equal(value, before[name]), name
        else:  # embedding, lm_head, norms: bit-identical
            assert torch.equal(value, before[name]), name
    assert stats["scheme"] == scheme
    assert stats["layers"] == 14
    assert stats["parameters"] == sum(after[n].numel() for n in linear)
    assert 0 < stats["relative_error"] < (0.01 if scheme == "int8" else 0.2)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


def test_quantize_model_stats_on_a_constructed_module() -> None:
    first = nn.Linear(4, 2)
    second = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(W)
        second.weight.copy_(torch.tensor([[2.0, 1.0]]))  # 1.0·7/2 = 3.5 → 4 → 8/7
    bias = first.bias.clone()
    stats = quantize_model_(nn.Sequential(first, nn.ReLU(), second), "int4")
    errors = [0.0, 4 / 7 - 0.5, 2 / 7 - 0.26, 0.0, 0, 0, 0, 0, 0.0, 8 / 7 - 1.0]
    norms = [1.0, 0.5, 0.26, 2.0, 1.0]
    assert stats["scheme"] == "int4" and stats["layers"] == 2 and stats["parameters"] == 10
    assert stats["mean_abs_error"] == pytest.approx(sum(errors) / 10, abs=1e-7)
    rel = math.sqrt(sum(e * e for e in errors)) / math.sqrt(sum(x * x for x in norms))
    assert stats["relative_error"] == pytest.approx(rel, abs=1e-7)
    assert torch.equal(first.bias, bias)
    torch.testing.assert_close(second.weight, torch.tensor([[2.0, 8 / 7]]), rtol=0, atol=1e-7)


def test_unknown_scheme_names_the_choices() -> None:
    with pytest.raises(ValueError, match="int8, int4, nf4"):
        quantize_model_(nn.Linear(2, 2), "int3")
