"""Intrinsic probes on a tiny random Llama: the logit lens (last layer = the model's own ``prob``,
layers made equal by zeroing what later layers write) and parametric knowledge traces (a value
vector built to point at a token ranks first; cosines and ablation by construction)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from obliviate.eval.scoring import score_pairs
from obliviate.models.tokenizer import encode_pair, train_bpe_tokenizer
from obliviate.probes.logit_lens import final_norm, logit_lens
from obliviate.probes.traces import (
    ablate_,
    concept_tokens,
    concept_vectors,
    parametric_traces,
    trace_similarity,
    value_matrices,
)

PAIRS = [
    ("Where was Ada Quill born?", "Ada Quill was born in Lisbon."),
    ("What does Ada Quill write?", "She writes crime novels."),
    ("Who is Bo Tran?", "Bo Tran is a painter from Hanoi."),
    ("What did Bo Tran paint?", "A mural of the harbour."),
]
FACTS = [a for _, a in PAIRS[:2]]


@pytest.fixture(scope="module")
def tok():
    texts = [t for p in PAIRS for t in p] * 3
    return train_bpe_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def base(tok) -> LlamaForCausalLM:
    """Two layers, 32 wide; weights drawn wider than HF's default so probabilities vary."""
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def model(base) -> LlamaForCausalLM:
    return copy.deepcopy(base)


def _prob(model, tok, pairs) -> float:
    scored = score_pairs(model, tok, pairs, batch_size=3)
    return sum(math.exp(-scored[p].mean_nll) for p in pairs) / len(pairs)


# --- logit lens -----------------------------------------------------------------------------


def test_last_layer_is_the_models_prob(model, tok) -> None:
    lens = logit_lens(model, tok, PAIRS, batch_size=3)
    assert len(lens) == 3  # embedding output + 2 layers
    assert lens[-1] == pytest.approx(_prob(model, tok, PAIRS), abs=1e-6)
    assert all(0 < v < 1 for v in lens)
    assert abs(lens[0] - lens[-1]) > 1e-3  # the layers do differ


def test_batch_size_and_duplicates(model, tok) -> None:
    one = logit_lens(model, tok, PAIRS, batch_size=1)
    assert one == pytest.approx(logit_lens(model, tok, PAIRS, batch_size=32), abs=1e-6)
    a = logit_lens(model, tok, PAIRS[:1])
    b = logit_lens(model, tok, PAIRS[1:2])
    both = logit_lens(model, tok, [PAIRS[0], PAIRS[0], PAIRS[1]])
    assert both == pytest.approx([(2 * x + y) / 3 for x, y in zip(a, b, strict=True)], abs=1e-7)


def test_layer_zero_by_hand(model, tok) -> None:
    """Entry 0 = softmax(W_U · norm(embedding)) read at the answer positions."""
    q, a = PAIRS[2]
    ids, n_prompt = encode_pair(tok, q, a, 512)
    with torch.no_grad():
        h = model.model.embed_tokens(torch.tensor(ids))
        lp = torch.log_softmax(model.lm_head(model.model.norm(h)), -1)
    tok_lp = [float(lp[t - 1, ids[t]]) for t in range(n_prompt, len(ids))]
    assert ids[-1] == tok.eos_token_id  # the closing EOS is scored too
    expected = math.exp(np.mean(tok_lp))
    assert logit_lens(model, tok, [(q, a)])[0] == pytest.approx(expected, abs=1e-6)


def test_layers_that_write_nothing_leave_the_lens_unchanged(model, tok) -> None:
    """Zero the last layer's o_proj and down_proj: the residual stream after layer 1 equals the
    one after layer 2, so their lens values are equal (and equal the model's prob)."""
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    lens = logit_lens(model, tok, PAIRS)
    assert lens[1] == pytest.approx(lens[2], abs=1e-6)
    assert lens[0] != pytest.approx(lens[1], abs=1e-4)
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
    lens = logit_lens(model, tok, PAIRS)
    assert lens[0] == pytest.approx(lens[1], abs=1e-6)
    assert lens[0] == pytest.approx(lens[2], abs=1e-6)


def test_final_norm_found_or_explained(model) -> None:
    assert final_norm(model) is model.model.norm

    class NoNorm(nn.Module):
        def get_decoder(self) -> nn.Module:
            return nn.Module()

    with pytest.raises(ValueError, match="final norm"):
        final_norm(NoNorm())


# --- parametric knowledge traces -----------------------------------------------------------


def _z_scores(model, token_ids: list[int]) -> list[tuple[int, int, float]]:
    """Brute force: z = W_U v for every value vector, (mean z[C] − mean z) / std z."""
    e = model.lm_head.weight.detach().double()
    out = []
    for layer, w in enumerate(value_matrices(model)):
        z = e @ w.detach().double()  # [V, intermediate]
        s = (z[token_ids].mean(0) - z.mean(0)) / z.std(0, unbiased=False)
        out += [(layer, j, float(s[j])) for j in range(z.shape[1])]
    return sorted(out, key=lambda x: -x[2])


def test_a_vector_pointing_at_a_token_ranks_first(model) -> None:
    t = 57
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[:, 5] = 3.0 * model.lm_head.weight[t]
    top = concept_vectors(model, [t], top_k=5)
    assert top[0][:2] == (1, 5)
    brute = _z_scores(model, [t])[:5]
    assert [v[:2] for v in top] == [v[:2] for v in brute]
    for got, want in zip(top, brute, strict=True):
        assert got[2] == pytest.approx(want[2], rel=1e-4)


def test_concept_scores_match_brute_force_for_several_tokens(model) -> None:
    ids = [10, 57, 100, 57]  # a repeated id counts once
    top = concept_vectors(model, ids, top_k=8)
    brute = _z_scores(model, [10, 57, 100])[:8]
    assert [v[:2] for v in top] == [v[:2] for v in brute]
    assert [v[2] for v in top] == pytest.approx([v[2] for v in brute], rel=1e-4)


def test_concept_tokens_distinct_without_specials(tok) -> None:
    text = "Lisbon Lisbon</s><pad>"
    ids = concept_tokens(tok, [text, "Lisbon"])
    raw = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.eos_token_id in raw and tok.pad_token_id in raw
    expected = list(dict.fromkeys(i for i in raw if i not in tok.all_special_ids))
    assert ids == expected and len(ids) == len(set(ids))


def test_trace_similarity_identical_and_constructed(model) -> None:
    other = copy.deepcopy(model)
    vectors = [(0, 1), (1, 2, 9.9)]
    same = trace_similarity(model, other, vectors)
    assert same["per_vector"] == pytest.approx([1.0, 1.0], abs=1e-12)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["min_cosine"] == pytest.approx(1.0)
    assert same["mean_relative_change"] == 0.0
    e = torch.zeros(32)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[:, 1] = e.index_fill(0, torch.tensor([0, 1]), 1)
        other.model.layers[0].mlp.down_proj.weight[:, 1] = e.index_fill(0, torch.tensor([0]), 2)
    sim = trace_similarity(model, other, vectors)
    # (1,1,0…) vs (2,0,0…): cos = 2 / (√2 · 2) = 1/√2; ‖(1,−1)‖ / ‖(1,1)‖ = 1
    assert sim["per_vector"] == pytest.approx([1 / math.sqrt(2), 1.0], abs=1e-7)
    assert sim["mean_cosine"] == pytest.approx((1 / math.sqrt(2) + 1) / 2, abs=1e-7)
    assert sim["min_cosine"] == pytest.approx(1 / math.sqrt(2), abs=1e-7)
    assert sim["mean_relative_change"] == pytest.approx(0.5, abs=1e-7)
    ablate_(other, [(0, 1)])
    assert trace_similarity(model, other, [(0, 1)])["per_vector"] == [0.0]


def test_ablate_zeroes_exactly_those_columns(model) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ablate_(model, [(0, 3), (1, 7, 1.5)])
    after = model.state_dict()
    for name, value in after.items():
        if name.endswith("mlp.down_proj.weight"):
            col = 3 if ".layers.0." in name else 7
            assert torch.equal(value[:, col], torch.zeros(32))
            keep = [j for j in range(64) if j != col]
            assert torch.equal(value[:, keep], before[name][:, keep])
            assert before[name][:, col].abs().sum() > 0
        else:
            assert torch.equal(value, before[name]), name
    with pytest.raises(ValueError, match="no value vector"):
        ablate_(model, [(2, 0)])


def test_parametric_traces_on_a_tiny_model(model, tok) -> None:
    unlearned = copy.deepcopy(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in unlearned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = parametric_traces(model, unlearned, tok, PAIRS[:2], FACTS, top_k=5, seed=0)
    json.dumps(out)
    for k, v in model.state_dict().items():  # the ablations were undone
        assert torch.equal(v, before[k]), k
    assert out["top_k"] == 5 and len(out["vectors"]) == 5 and len(out["random_vectors"]) == 5
    assert out["n_concept_tokens"] == len(concept_tokens(tok, FACTS))
    concept = {tuple(v[:2]) for v in out["vectors"]}
    assert concept.isdisjoint(tuple(v) for v in out["random_vectors"])
    numbers = [v for v in out.values() if isinstance(v, float)] + out["per_vector_cosine"]
    assert numbers and all(math.isfinite(x) for x in numbers)
    assert -1 <= out["min_cosine"] <= out["mean_cosine"] <= 1
    assert out["prob_before"] == pytest.approx(_prob(model, tok, PAIRS[:2]), abs=1e-9)
    assert out["prob_ablated"] != out["prob_before"]
    assert out["prob_random_ablated"] != out["prob_before"]
    again = parametric_traces(model, unlearned, tok, PAIRS[:2], FACTS, top_k=5, seed=0)
    assert again == out
    other = parametric_traces(model, unlearned, tok, PAIRS[:2], FACTS, top_k=5, seed=1)
    assert other["random_vectors"] != out["random_vectors"]
