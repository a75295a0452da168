"""The demo pipeline on the tiny model, asserting real behaviour (slow: trains two models).

Trained models are cached by content hash under $OBLIVIATE_CACHE, so the method-zoo tests reuse
the target model trained here.
"""

import json

import pytest

from obliviate import api, load_config
from obliviate.demo import run_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory):
    cfg = load_config("demo", [f"run_dir={tmp_path_factory.mktemp('demo')}"])
    api.setup_runtime(cfg)
    rows = run_demo(cfg)
    return {r["model"]: r for r in rows}, cfg


def test_target_memorised_and_differs_from_retain_model(demo_rows):
    rows, _ = demo_rows
    target, retain = rows["target"], rows["retain"]
    assert target["forget_rouge"] >= 0.9
    assert target["forget_quality"] < 0.01
    assert retain["forget_quality"] == pytest.approx(1.0)
    # The retain model never saw the forget authors: far lower ROUGE on them (templates only).
    assert retain["forget_rouge"] <= target["forget_rouge"] - 0.25
    assert retain["forget_fact_recall"] <= 0.2 < 0.8 <= target["forget_fact_recall"]


@pytest.mark.parametrize("method", ["npo", "graddiff"])
def test_npo_and_graddiff_forget_while_keeping_retain(demo_rows, method):
    """Forget probability at least halves; retain probability stays above GA's (the same ascent
    without a retain term) and at least 0.6 of the target's.

    The trained weights depend on the CPU's float kernels: measured retain probability (target,
    GA, NPO, GradDiff) was 0.963, 0.730, 0.813, 0.905 on an AMD EPYC and 0.961, 0.570, 0.662,
    0.836 on an Intel Xeon, the same code and seed; the bounds hold on both with a margin."""
    rows, _ = demo_rows
    target, ga, m = rows["target"], rows["ga"], rows[method]
    assert m["forget_prob"] <= 0.5 * target["forget_prob"]
    assert m["retain_prob"] >= 0.6 * target["retain_prob"]
    assert m["retain_prob"] >= ga["retain_prob"] + 0.05


def test_ga_loses_more_utility_than_npo(demo_rows):
    rows, _ = demo_rows
    assert rows["ga"]["model_utility"] < rows["npo"]["model_utility"]


def test_run_dir_contract(demo_rows):
    rows, cfg = demo_rows
    run = __import__("pathlib").Path(cfg.run_dir)
    assert (run / "config.yaml").is_file() and (run / "table.txt").is_file()
    for name in rows:
        per_sample = json.loads((run / name / "eval" / "forget.json").read_text())
        assert per_sample and {
            "question",
            "generation",
            "rouge_l_recall",
            "prob",
            "truth_ratio",
        } <= set(per_sample[0])
        assert json.loads((run / name / "summary.json").read_text())["model_utility"] > 0


def test_second_run_reuses_cached_models(demo_rows, monkeypatch):
    """The demo already trained the target: finetune must hit the cache and build nothing."""
    from pathlib import Path

    from obliviate.cache import Cache

    _, cfg = demo_rows
    real_get_or_build = Cache.get_or_build
    lookups = []

    def must_not_build(tmp):
        raise AssertionError(f"cache miss: rebuilding {tmp.parent.name}/{tmp.name}")

    def spy(self, kind, key, build, resume=False):
        path, hit = real_get_or_build(self, kind, key, must_not_build, resume)
        lookups.append((kind, hit))
        return path, hit

    monkeypatch.setattr(Cache, "get_or_build", spy)
    first = api.finetune(cfg, "full")
    assert api.finetune(cfg, "full") == first
    assert [hit for kind, hit in lookups if kind == "finetune"] == [True, True]
    assert all(hit for _, hit in lookups), lookups
    assert (Path(first).parent / ".complete").is_file()


def test_demo_writes_its_report_and_model_cards(demo_rows):
    """The demo's last step: report.html over its five runs (training curves from the model
    cards included), and each model's README.md naming method, forget set and metrics."""
    from pathlib import Path

    rows, cfg = demo_rows
    run = Path(cfg.run_dir)
    html = (run / "report.html").read_text()
    assert html.count('<tr data-run="') == len(rows) == 5
    assert "http://" not in html and "https://" not in html
    assert "No run logged a curve" not in html  # the cards' train_log became curves
    npo = rows["npo"]
    card = json.loads((Path(npo["model_path"]) / "obliviate.json").read_text())
    assert card["artefact"] == "full model" and len(card["train_log"]) == card["steps"]
    assert card["evaluation"]["metrics"]["forget_quality"] == npo["forget_quality"]
    readme = (Path(npo["model_path"]) / "README.md").read_text()
    for needle in ("full model", "`npo`", "`forget10`", "| `beta` |", "forget quality ↑"):
        assert needle in readme, needle


def test_demo_report_works_in_chromium(demo_rows):
    from pathlib import Path

    from browser import check_report_in_browser
    from test_report_browser import ARTIFACTS, need_browser

    need_browser()
    rows, cfg = demo_rows
    names = ["retain", "target", "ga", "graddiff", "npo"]
    seen = check_report_in_browser(
        Path(cfg.run_dir) / "report.html", names, ARTIFACTS / "demo-report.png"
    )
    assert seen["metrics_rows"] == 5 and seen["images"] >= 3  # trade-off, bars, curves
    assert seen["samples"] > 100 and 0 < seen["search_rows"] < seen["samples"]


def test_relearning_brings_back_what_npo_hid_but_teaches_the_retain_model_nothing(demo_rows):
    """The robustness benchmark's finding, on the demo's models: 20 steps on half of the forget
    set bring back a large share of the forget-probability gap on the *other* half (measured
    +0.52 NPO), while the retain model trained the same way gains nothing (−0.00): relearning,
    not learning. 8-bit rounding brings nothing back (±0.00)."""
    from obliviate.attacks.run import AttackRunner, Subjects
    from obliviate.experiment import Experiment

    rows, cfg = demo_rows
    exp = Experiment(cfg)
    s = Subjects(
        rows["npo"]["model_path"], rows["target"]["model_path"], rows["retain"]["model_path"]
    )
    res = AttackRunner(exp).robustness(s, ["relearn", "quant8"])
    relearn, quant = res["attacks"]["relearn"], res["attacks"]["quant8"]
    assert relearn["recovered"]["prob"] >= 0.25
    assert abs(relearn["retain_recovered"]["prob"]) <= 0.05
    assert abs(quant["recovered"]["prob"]) <= 0.05
    assert 0.0 <= res["robust_forget_score"] <= 1.0
    assert res["worst"]["attack"] in ("relearn", "none", "quant8")
