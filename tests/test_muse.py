"""MUSE as a registered benchmark (tests/data/muse_mini): loading, VerbMem / KnowMem / PrivLeak
through the shared passes against hand-computed values, and `obliviate eval benchmark.name=muse`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.cli import main
from obliviate.config import TinyModelConfig
from obliviate.data.benchmarks.muse import cut_at_stop, knowmem_prompt, load_muse_dir
from obliviate.errors import DataError
from obliviate.eval import suite
from obliviate.eval.evaluate import evaluate_model
from obliviate.eval.metrics import rouge_l_f1
from obliviate.eval.scoring import PassCounter
from obliviate.models.io import load_model, load_tokenizer, save_model_dir
from obliviate.models.tiny import build_tiny_model
from obliviate.models.tokenizer import train_bpe_tokenizer

MUSE_DIR = Path(__file__).parent / "data" / "muse_mini"


def test_loads_the_muse_layout_with_aliases():
    b = load_muse_dir(str(MUSE_DIR))
    assert [s.name for s in b.eval_splits] == [
        "verbmem",
        "knowmem_forget",
        "knowmem_retain",
        "privleak_forget",
        "privleak_holdout",
    ]
    verb = b.split("verbmem")
    assert len(verb.records) == 3 and verb.records[0].answer.startswith("a storm")
    assert verb.template == "raw" and verb.max_new_tokens == 128
    kf = b.split("knowmem_forget")
    assert [r.answer for r in kf.records] == ["1921", "Ada Brenn", "the river Tam"]
    assert kf.records[0].question.count("Question: ") == 3  # two in-context examples + the question
    assert kf.max_new_tokens == 32 and kf.stop
    kr = b.split("knowmem_retain")  # retain2_qa.jsonl (the GitHub repo's name), no ICL file
    assert kr.records[1].answer == "840" and kr.records[1].question.count("Question: ") == 1
    pf, ph = b.split("privleak_forget"), b.split("privleak_holdout")
    assert (pf.role, ph.role) == ("forget", "holdout") and len(pf.records) == 3
    assert ph.records[0].answer.startswith("A new ferry") and ph.records[0].question == ""
    assert not b.trainable


def test_missing_dir_and_offline_hub_give_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="holds no MUSE data"):
        load_muse_dir(str(tmp_path))
    with pytest.raises(DataError, match="not found"):
        load_muse_dir(str(tmp_path / "nope"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        load_muse_dir("muse-bench/MUSE-News")
    msg = e.value.one_line()
    assert "muse-bench/MUSE-News" in msg and "local directory" in msg and "\n" not in msg


def test_knowmem_prompt_and_stop_strings():
    icl = [("Q1?", "A1"), ("Q2?", "A2")]
    assert knowmem_prompt(icl, "Q?") == (
        "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q?\nAnswer: "
    )
    assert cut_at_stop("Ada Brenn\n\nQuestion: next") == "Ada Brenn"
    assert cut_at_stop("1921\nQuestion: x") == "1921"
    assert cut_at_stop("plain") == "plain"


def test_verbmem_and_knowmem_hand_computed(monkeypatch):
    """A stub generator: the exact gt for the first VerbMem prompt, a half-right one for the
    second, nothing for the third; KnowMem answers 1921 (then junk after a stop) to the Velmore
    question and "nobody" otherwise. VerbMem = (1 + F1 + 0) / 3, KnowMem forget = 1/3."""
    b = load_muse_dir(str(MUSE_DIR))
    b.eval_splits = [s for s in b.eval_splits if s.name in ("verbmem", "knowmem_forget")]
    verb = b.split("verbmem").records

    def fake_generate(model, tok, prompts, max_new_tokens, *a, encode=None, **k):
        out = {}
        for p in prompts:
            if "Question" not in p:
                i = [r.question for r in verb].index(p)
                text = {0: verb[0].answer, 1: "will stay closed", 2: ""}[i]
            else:
                last = p.split("Question: ")[-1]
                text = "1921\n\nQuestion: junk" if "Velmore" in last else "nobody"
            out[p] = (text, [1] * len(text.split()))
        return out

    monkeypatch.setattr(suite, "generate_answers", fake_generate)
    res = suite.evaluate_splits(None, None, b, suite.EvalOptions(), embedder=None, nli=None)
    # "will stay closed" vs "will stay open on Sundays from next spring.": LCS 2, P 2/3, R 2/8.
    f1 = 2 * (2 / 3) * (2 / 8) / (2 / 3 + 2 / 8)
    rows = res.by_role("verbmem").samples
    assert rows[1]["rouge_l_f1"] == pytest.approx(f1)
    assert res.by_role("verbmem").aggregates["f"] == pytest.approx((1.0 + f1 + 0.0) / 3)
    k = res.by_role("knowmem_forget")
    assert k.samples[0]["generation"] == "1921"  # cut before "\n\nQuestion"
    assert k.aggregates["f"] == pytest.approx(1 / 3)
    assert rouge_l_f1("1921", "1921") == 1.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    b = load_muse_dir(str(MUSE_DIR))
    texts = [r.question + " " + r.answer for s in b.eval_splits for r in s.records]
    tok = train_bpe_tokenizer(texts + ["Question: Answer:"], vocab_size=300)
    cfg = TinyModelConfig(
        vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64
    )
    out = tmp_path_factory.mktemp("muse") / "model"
    save_model_dir(build_tiny_model(cfg, tok), tok, out, {"stage": "test"})
    return out


def test_evaluate_muse_in_memory_on_a_tiny_model(tiny):
    from obliviate.eval.reference import RetainReference

    b = load_muse_dir(str(MUSE_DIR))
    model, tok = load_model(str(tiny)), load_tokenizer(str(tiny))
    ev = evaluate_model(
        model, tok, b, RetainReference(None, {"min_k": 0.5}), embedder=None, nli=None
    )
    s = ev.summary
    for key in ("verbmem_f", "knowmem_forget_f", "knowmem_retain_f"):
        assert 0.0 <= s[key] <= 1.0
    for a in ("loss", "zlib", "min_k", "min_k_pp"):
        assert 0.0 <= s[f"mia_auc_{a}"] <= 1.0
    # MUSE's convention: ((1 − AUC) − (1 − 0.5)) / (1 − 0.5) × 100
    assert s["privleak"] == pytest.approx(((1 - s["mia_auc_min_k"]) - 0.5) / 0.5 * 100)
    # each prompt generated once, each text scored once; TOFU metrics do not run on MUSE
    assert s["passes"]["generated_prompts"] == 3 + 3 + 2
    assert s["passes"]["scored_sequences"] == s["passes"]["distinct_sequences"] == 6
    assert "forget_rouge" not in s and "model_utility" in s and s["model_utility"] is None
    assert "rouge_l_f1" in ev.result.by_role("verbmem").samples[0]
    c = PassCounter()
    plain = suite.evaluate_splits(model, tok, b, counter=c, embedder=None, nli=None)
    assert c.generated_prompts == 8 and plain.by_role("forget").samples[0]["mia_loss"] > 0


def test_muse_eval_from_the_cli_with_a_saved_retrain_evaluation(tiny, tmp_path, capsys):
    base = [
        "eval",
        "benchmark.name=muse",
        f"benchmark.path={MUSE_DIR}",
        f"model.path={tiny}",
        f"cache_dir={tmp_path / 'cache'}",
        "eval.batch_size=4",
    ]
    with pytest.raises(SystemExit) as e:
        main([*base, f"run_dir={tmp_path / 'retrain'}"])
    assert e.value.code == 0
    first = json.loads((tmp_path / "retrain" / "summary.json").read_text())
    assert first["privleak"].startswith("unavailable")  # no retrained model given
    assert (tmp_path / "retrain" / "eval" / "verbmem.json").is_file()
    assert "VerbMem" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([*base, f"run_dir={tmp_path / 'u'}", f"eval.retain_eval={tmp_path / 'retrain'}"])
    assert e.value.code == 0
    again = json.loads((tmp_path / "u" / "summary.json").read_text())
    assert again["mia_auc_min_k"] == pytest.approx(first["mia_auc_min_k"])
    assert again["privleak"] == pytest.approx(0.0)  # the same model as its own retrained reference


def test_muse_cannot_be_unlearned_on(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "unlearn",
                "benchmark.name=muse",
                f"benchmark.path={MUSE_DIR}",
                "model.path=x/y",
                f"run_dir={tmp_path}",
            ]
        )
    assert e.value.code == 2
    assert "no training data" in capsys.readouterr().err
