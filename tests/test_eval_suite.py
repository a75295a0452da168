"""One evaluation call on a random tiny model: every metric per sample and in the summary, the
"unavailable" paths, PrivLeak against a saved retain-model evaluation, and the eval cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate import api, load_config
from obliviate.config import TinyModelConfig
from obliviate.data.synthetic import generate_benchmark
from obliviate.eval import closer_look as CL
from obliviate.eval.mia import ATTACKS, mia_auc, privleak
from obliviate.eval.reference import RetainReference
from obliviate.models.io import save_model_dir
from obliviate.models.tiny import build_tiny_model
from obliviate.models.tokenizer import train_bpe_tokenizer

BENCH = [
    "benchmark.n_authors=10",
    "benchmark.qa_per_author=10",
    "benchmark.n_holdout=2",
    "benchmark.n_general=8",
    "benchmark.retain_eval_size=10",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny Llama whose tokenizer covers the small synthetic benchmark."""
    root = tmp_path_factory.mktemp("suite")
    splits = generate_benchmark(10, 10, 2, 8, seed=0)
    texts = [
        t
        for recs in splits.values()
        for r in recs
        for t in (r.question, r.answer, r.paraphrased_question or "", *r.perturbed_answer)
    ]
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    mcfg = TinyModelConfig(
        vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64
    )
    out = root / "model"
    save_model_dir(build_tiny_model(mcfg, tok), tok, out, {"stage": "test"})
    return root, str(out)


def _cfg(root: Path, model: str, *extra: str):
    cfg = load_config(
        "demo",
        [
            *BENCH,
            f"cache_dir={root / 'cache'}",
            f"model.path={model}",
            f"model.retain_path={model}",
            "eval.max_new_tokens=6",
            "eval.entailment=false",
            *extra,
        ],
    )
    api.setup_runtime(cfg)
    return cfg


@pytest.fixture(scope="module")
def evaluated(tiny):
    root, model = tiny
    cfg = _cfg(root, model, "eval.gradnorm=true", f"eval.reference_model={model}")
    summary = api.evaluate(cfg, model, root / "run1", overwrite=True)
    return root, model, summary


def test_every_metric_per_sample(evaluated):
    root, _, _ = evaluated
    forget = json.loads((root / "run1" / "eval" / "forget.json").read_text())
    hold = json.loads((root / "run1" / "eval" / "holdout.json").read_text())
    per_forget = {
        "rouge_l_recall",
        "prob",
        "truth_ratio",
        "exact_memorization",
        "extraction_strength",
        "token_entropy",
        "qa_exact_match",
        "paraphrased_rouge_l_recall",
        "paraphrased_prob",
        "paraphrased_generation",
        *(f"mia_{a}" for a in ATTACKS),
    }
    assert per_forget <= set(forget[0])
    if CL.default_embedder_dir() is not None:
        assert 0.0 <= forget[0]["cosine_similarity"] <= 1.0
    assert {f"mia_{a}" for a in ATTACKS} <= set(hold[0]) and "generation" not in hold[0]
    # The reference model is the model itself: S̄_θ − S̄_ref = 0 (up to batch padding noise).
    assert all(abs(r["mia_reference"]) < 1e-4 for r in forget + hold)


def test_summary_has_every_aggregate(evaluated):
    _, _, s = evaluated
    for a in ATTACKS:
        assert 0.0 <= s[f"mia_auc_{a}"] <= 1.0
        if a in ("gradnorm", "reference"):  # not computed for an on-the-fly retain model
            assert s[f"privleak_{a}"].startswith("unavailable: no retain-model AUC")
        else:  # the retain model (scored on the fly) is this very model: PrivLeak is 0
            assert s[f"privleak_{a}"] == pytest.approx(0.0, abs=1e-6)
    assert s["privleak"] == s["privleak_min_k"]
    for k in (
        "forget_exact_memorization",
        "forget_extraction_strength",
        "forget_token_entropy",
        "retain_paraphrased_rouge_l_recall",
        "closer_look_model_utility",
        "forget_efficacy",
        "semeval_task_aggregate",
        "semeval_final",
        "forget_quality",
        "model_utility",
        "forget_rouge",
        "forget_prob",
        "retain_rouge",
        "retain_prob",
    ):
        assert isinstance(s[k], float), k
    assert s["forget_entailment"].startswith("unavailable: disabled")
    # Closer-look utility: {retain, general} x {ROUGE, Prob, TR, TE, CS}; entailment is off.
    per_split = 5 if CL.default_embedder_dir() is not None else 4
    assert len(s["closer_look_model_utility_terms"]) == 2 * per_split
    assert s["passes"]["scored_sequences"] == s["passes"]["distinct_sequences"]


def test_unavailable_models_say_why(tiny, monkeypatch):
    root, model = tiny
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from obliviate.eval import suite

    suite.load_nli.cache_clear()
    monkeypatch.setattr(
        suite, "load_embedder", lambda: CL.Unavailable("embedder", "package not installed")
    )
    cfg = _cfg(root, model, "eval.entailment=true", "eval.nli_model=no-such/nli-model")
    s = api.evaluate(cfg, model, root / "run2", overwrite=True)
    assert s["forget_cosine_similarity"] == "unavailable: embedder: package not installed"
    assert s["forget_entailment"].startswith("unavailable: entailment model 'no-such/nli-model'")
    assert s["mia_auc_gradnorm"].startswith("unavailable: off by default")
    assert s["mia_auc_reference"].startswith("unavailable: needs eval.reference_model")
    assert isinstance(s["forget_efficacy"], float)  # from the numbers that exist


def test_entailment_plumbing_with_a_stub_scorer(tiny):
    """A stub NLI model that entails everything: gate by ROUGE < 0.1, direction per split."""
    root, model = tiny
    from obliviate.eval import suite
    from obliviate.models.io import load_model, load_tokenizer

    seen: list[tuple[str, str]] = []

    class Yes:
        def predict_entailment(self, premises, hypotheses):
            seen.extend(zip(premises, hypotheses, strict=True))
            return [1] * len(premises)

    cfg = _cfg(root, model)
    bench = api.load_benchmark(cfg)
    opts = suite.EvalOptions(max_new_tokens=6, cosine=False)
    res = suite.evaluate_splits(
        load_model(model), load_tokenizer(model), bench, opts, nli=Yes(), embedder=None
    )
    forget = res.by_role("forget")
    for smp in forget.samples:
        assert smp["entailment"] == float(smp["rouge_l_recall"] >= CL.ROUGE_GATE)
        if smp["entailment"]:
            assert (smp["generation"], smp["answer"]) in seen  # forget: premise = generation


def test_privleak_from_a_saved_retain_evaluation(evaluated, tiny):
    root, model, _ = evaluated
    cfg = _cfg(root, model, f"eval.retain_eval={root / 'run1'}")
    bench = api.load_benchmark(cfg)
    ref = api.read_reference(root / "run1", bench)
    forget = json.loads((root / "run1" / "eval" / "forget.json").read_text())
    hold = json.loads((root / "run1" / "eval" / "holdout.json").read_text())
    auc = mia_auc([r["mia_min_k"] for r in forget], [r["mia_min_k"] for r in hold])
    assert ref.mia_auc["min_k"] == pytest.approx(auc)
    # A hand-made reference AUC of 0.5: PrivLeak = ((1 − AUC) − 0.5) / 0.5 × 100.
    fake = RetainReference(ref.forget_ratios, {"min_k": 0.5}, "test")
    s = api.evaluate(cfg, model, root / "run3", reference=fake, overwrite=True)
    assert s["privleak"] == pytest.approx(privleak(auc, 0.5))
    assert s["privleak_loss"].startswith("unavailable")


def test_second_evaluation_hits_the_cache(evaluated):
    root, model, first = evaluated
    cfg = _cfg(root, model, "eval.gradnorm=true", f"eval.reference_model={model}")
    again = api.evaluate(cfg, model, root / "run4", overwrite=True)
    assert again["eval_cache_hit"] and not first["eval_cache_hit"]
    assert again["eval_seconds"] < first["eval_seconds"] / 3
    skip = {"eval_seconds", "eval_cache_hit"}
    assert {k: v for k, v in again.items() if k not in skip} == {
        k: v for k, v in first.items() if k not in skip
    }
    for split in ("forget", "retain", "holdout"):
        a = (root / "run1" / "eval" / f"{split}.json").read_text()
        assert (root / "run4" / "eval" / f"{split}.json").read_text() == a
    changed = _cfg(root, model, "eval.gradnorm=false", f"eval.reference_model={model}")
    assert not api.evaluate(changed, model, root / "run5", overwrite=True)["eval_cache_hit"]


def test_entailment_from_a_local_nli_model_dir(tiny, tmp_path):
    """eval.nli_model = a local 3-label classifier that always says entailment: each split's
    entailment equals its share of generations passing the ROUGE gate."""
    from test_closer_look import _save_tiny_nli

    root, model = tiny
    nli = _save_tiny_nli(tmp_path / "nli", winning_index=1)
    cfg = _cfg(root, model, "eval.entailment=true", f"eval.nli_model={nli}", "eval.cosine=false")
    s = api.evaluate(cfg, model, tmp_path / "run", overwrite=True)
    forget = json.loads((tmp_path / "run" / "eval" / "forget.json").read_text())
    gate = [float(r["rouge_l_recall"] >= CL.ROUGE_GATE) for r in forget]
    assert [r["entailment"] for r in forget] == gate
    assert s["forget_entailment"] == pytest.approx(sum(gate) / len(gate))
    assert s["forget_cosine_similarity"] == "unavailable: disabled (eval.cosine=false)"


def _split(name, role, samples, aggregates):
    from obliviate.eval.suite import SplitResult

    return SplitResult(name, role, samples, aggregates)


def test_summarize_hand_computed():
    """Suite aggregates from constructed per-sample values (no model)."""
    from obliviate.eval.suite import SuiteResult
    from obliviate.eval.summary import summarize

    f = [{"mia_min_k": v, "mia_loss": v, "truth_ratio": 1.0} for v in (1.0, 2.0)]
    h = [{"mia_min_k": v, "mia_loss": v} for v in (1.5, 3.0)]
    # pairs (h > f): 1.5>1 yes, 1.5>2 no, 3>1 yes, 3>2 yes -> AUC 3/4
    agg_f = {
        "rouge": 0.5,
        "prob": 0.4,
        "truth_ratio": 0.8,
        "cosine_similarity": 0.6,
        "entailment": 0.2,
        "qa_exact_match": 0.5,
    }
    agg_r = {
        "rouge": 0.5,
        "prob": 0.5,
        "truth_ratio": 0.5,
        "token_entropy": 0.5,
        "cosine_similarity": 0.5,
        "entailment": "unavailable: x",
        "qa_exact_match": 0.25,
    }
    res = [
        _split("forget", "forget", f, agg_f),
        _split("retain", "retain", [{}], agg_r),
        _split("holdout", "holdout", h, {"prob": 0.1}),
    ]
    ref = RetainReference([1.0, 1.0], {"min_k": 0.5, "loss": 0.6}, "test")
    s = summarize(SuiteResult(res), ref)
    assert s["mia_auc_min_k"] == pytest.approx(0.75)
    # MUSE's convention: a = 1 − AUC; ((1 − 0.75) − (1 − 0.5)) / (1 − 0.5) × 100 = −50
    assert s["privleak"] == pytest.approx(-50.0)
    # ((1 − 0.75) − (1 − 0.6)) / (1 − 0.6) × 100 = (0.25 − 0.4) / 0.4 × 100 = −37.5
    assert s["privleak_loss"] == pytest.approx(-37.5)
    assert s["mia_auc_zlib"].startswith("unavailable")
    # forget efficacy: 1 − mean(0.5, 0.4, 1 − 0.8, 0.6, 0.2) = 1 − 0.38
    assert s["forget_efficacy"] == pytest.approx(0.62)
    # closer-look utility: hmean of the five numeric retain values (all 0.5) = 0.5
    assert s["closer_look_model_utility"] == pytest.approx(0.5)
    assert len(s["closer_look_model_utility_terms"]) == 5
    # SemEval: hmean(1 − 0.5, 1 − 0.5, 0.5, 0.25) = 4 / (2 + 2 + 2 + 4) = 0.4
    assert s["semeval_task_aggregate"] == pytest.approx(0.4)
    # MIA score 1 − 2|0.75 − 0.5| = 0.5; utility = model utility hmean(0.5, 0.5, 0.5) = 0.5
    assert s["semeval_mia_score"] == pytest.approx(0.5)
    assert s["semeval_final"] == pytest.approx((0.4 + 0.5 + 0.5) / 3)
    assert s["model_utility"] == pytest.approx(0.5)  # holdout's prob is not a utility term
    mm = summarize(SuiteResult(res), ref, mmlu=0.8)
    assert mm["semeval_final"] == pytest.approx((0.4 + 0.5 + 0.8) / 3)
    assert mm["semeval_utility_source"].startswith("mmlu")
