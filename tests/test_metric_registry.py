"""The metric registry: per-sample metrics read exactly the pairs they declare (hand-valued), the
suite plans its passes from the selected metrics, and a new metric needs no edit to the suite."""

from __future__ import annotations

import math

import numpy as np
import pytest

from obliviate import load_config
from obliviate.data.benchmarks.base import Benchmark, EvalSplit
from obliviate.data.schema import QARecord
from obliviate.errors import ConfigError
from obliviate.eval import registry as R
from obliviate.eval.builtin_metrics import paraphrased_prob, paraphrased_truth_ratio, truth_ratio
from obliviate.eval.scored import ScoredSequence
from obliviate.eval.suite import EvalOptions, evaluate_splits


def seq(mean_nll: float, n: int = 2) -> ScoredSequence:
    lp = np.full(n, -mean_nll)
    return ScoredSequence(lp, np.zeros(n), np.ones(n), np.ones(n))


REC = QARecord(
    question="Q?",
    answer="A",
    paraphrased_answer="PA",
    perturbed_answer=["X", "Y"],
    paraphrased_question="PQ?",
)
# Every pair a metric could read, each with its own mean NLL, so reading the wrong one shows.
NLL = {
    ("Q?", "A"): 0.1,
    ("Q?", "PA"): 0.2,
    ("Q?", "X"): 1.0,
    ("Q?", "Y"): 2.0,
    ("PQ?", "A"): 0.7,
    ("PQ?", "PA"): 0.4,
    ("PQ?", "X"): 1.5,
    ("PQ?", "Y"): 0.5,
}


def sample(role: str = "forget", declared: set[tuple[str, str]] | None = None) -> R.Sample:
    pairs = NLL if declared is None else {k: v for k, v in NLL.items() if k in declared}
    return R.Sample(
        record=REC,
        role=role,
        index=0,
        scored_map={k: seq(v) for k, v in pairs.items()},
        generated_map={},
        score_key=lambda p, a: (p, a),
        gen_key=lambda p: p,
    )


def declared_pairs(metric: str) -> set[tuple[str, str]]:
    m = R.metrics()[metric]
    return {
        p
        for name in m.reads
        if name in R.READS and R.READS[name].pairs
        for p in R.READS[name].pairs(REC)
    }


def test_paraphrased_prob_reads_the_paraphrased_question_pair():
    # exp(−S̄(A | PQ?)) = exp(−0.7) = 0.49659, not exp(−0.1) (the question's pair)
    assert paraphrased_prob(sample()) == pytest.approx(math.exp(-0.7))
    assert declared_pairs("paraphrased_prob") == {("PQ?", "A")}
    # with only the declared pairs scored, it still runs (it reads nothing undeclared)
    assert paraphrased_prob(sample(declared={("PQ?", "A")})) == pytest.approx(0.496585, abs=1e-6)


def test_truth_ratio_reads_paraphrase_on_forget_and_answer_on_utility():
    # forget: R = exp(mean(1.0, 2.0) − 0.2) = exp(1.3) = 3.669297
    assert truth_ratio(sample("forget")) == pytest.approx(3.669297, abs=1e-6)
    # utility: the answer stands in for the paraphrase: exp(1.5 − 0.1) = exp(1.4) = 4.055200
    assert truth_ratio(sample("utility")) == pytest.approx(4.055200, abs=1e-6)
    assert truth_ratio(sample("forget", declared_pairs("truth_ratio"))) == pytest.approx(
        3.669297, abs=1e-6
    )


def test_paraphrased_truth_ratio_hand_computed():
    # R = exp(mean(S̄(PQ?, X), S̄(PQ?, Y)) − S̄(PQ?, PA)) = exp(mean(1.5, 0.5) − 0.4) = exp(0.6)
    assert paraphrased_truth_ratio(sample()) == pytest.approx(1.822119, abs=1e-6)
    assert declared_pairs("paraphrased_truth_ratio") == {("PQ?", "PA"), ("PQ?", "X"), ("PQ?", "Y")}
    assert paraphrased_truth_ratio(sample(declared=declared_pairs("paraphrased_truth_ratio"))) > 1


def test_undeclared_read_fails_loudly():
    with pytest.raises(KeyError):
        paraphrased_prob(sample(declared={("Q?", "A")}))


def test_selection_default_opt_in_and_unknown():
    sel = R.select_metrics(None)
    names = [m.name for m in sel.active]
    assert "truth_ratio" in names and "paraphrased_truth_ratio" not in names
    assert "mia_gradnorm" not in names
    more = R.select_metrics(["default", "paraphrased_truth_ratio"])
    assert "paraphrased_truth_ratio" in [m.name for m in more.active]
    with pytest.raises(ConfigError, match="unknown metric 'nope'"):
        R.select_metrics(["prob", "nope"])
    with pytest.raises(ConfigError, match="eval.metrics names an unknown metric"):
        load_config("demo", ["eval.metrics=[prob, nope]"])


class CountingModel:
    """A stand-in model: the suite's passes are monkeypatched, so it is never called."""


def _bench() -> Benchmark:
    recs = [REC, QARecord("Q2?", "B", perturbed_answer=["Z"])]
    return Benchmark(
        "t",
        "t",
        "forget10",
        recs,
        [],
        recs,
        eval_splits=[EvalSplit("forget", "forget", recs), EvalSplit("general", "utility", recs)],
    )


def _stub_passes(monkeypatch, seen: dict[str, list]):
    from obliviate.eval import suite

    def score(model, tok, pairs, *a, counter=None, **k):
        seen.setdefault("scored", []).extend(pairs)
        if counter is not None:
            counter.distinct_pairs.update(pairs)
        return {p: seq(NLL.get(p, 0.3)) for p in pairs}

    def generate(model, tok, prompts, *a, **k):
        seen.setdefault("generated", []).extend(prompts)
        return {p: ("A", [5]) for p in prompts}

    monkeypatch.setattr(suite, "score_pairs", score)
    monkeypatch.setattr(suite, "generate_answers", generate)


def test_passes_are_planned_from_the_selected_metrics(monkeypatch):
    seen: dict[str, list] = {}
    _stub_passes(monkeypatch, seen)
    res = evaluate_splits(
        CountingModel(), None, _bench(), EvalOptions(metrics=["prob"]), embedder=None, nli=None
    )
    # prob reads (question, answer) only: no perturbed / paraphrased scoring, no generation
    assert sorted(set(seen["scored"])) == [("Q2?", "B"), ("Q?", "A")]
    assert "generated" not in seen
    row = res.by_role("forget").samples[0]
    assert row["prob"] == pytest.approx(math.exp(-0.1)) and "truth_ratio" not in row
    assert res.by_role("forget").aggregates["prob"] == pytest.approx(
        (math.exp(-0.1) + math.exp(-0.3)) / 2
    )
    # one scoring call over both splits: the shared pairs are requested together, scored once
    assert len(seen["scored"]) == 4 and len(set(seen["scored"])) == 2


def test_a_new_metric_needs_no_edit_to_the_suite(monkeypatch):
    """Register a metric the way the README says; it runs and aggregates with no other change."""
    seen: dict[str, list] = {}
    _stub_passes(monkeypatch, seen)
    monkeypatch.setattr(R, "_METRICS", dict(R.metrics()))  # undo the registration afterwards

    @R.register_metric("answer_nll_x2", reads=["answer"], roles=["forget"], default=False)
    def answer_nll_x2(s: R.Sample) -> float:
        """Twice the answer's mean NLL."""
        return 2 * s.answer.mean_nll

    from obliviate.eval.summary import summarize

    res = evaluate_splits(
        CountingModel(),
        None,
        _bench(),
        EvalOptions(metrics=["answer_nll_x2"]),
        embedder=None,
        nli=None,
    )
    assert res.by_role("forget").samples[0]["answer_nll_x2"] == pytest.approx(0.2)
    assert summarize(res, None)["forget_answer_nll_x2"] == pytest.approx((0.2 + 0.6) / 2)
    assert "answer_nll_x2" not in res.by_role("utility").samples[0]  # role filter
