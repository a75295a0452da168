"""``obliviate sweep``: the space and formula checks (torch-free, bad input in one line), the
Pareto filter, and studies on the MINI model (3 trials; Pareto; failed trials; 2 workers)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from obliviate.config import load_config
from obliviate.errors import ConfigError, DivergenceError
from obliviate.sweep_space import (
    FQ_FLOOR,
    derived_values,
    formula_needs,
    metric_needs,
    parse_formula,
    parse_space,
)

# --------------------------------------------------------------------------------------------
# formulas


@pytest.mark.parametrize(
    "text, values, expected",
    [
        (
            "log10_forget_quality + 10 * model_utility_ratio",
            {"log10_forget_quality": -2, "model_utility_ratio": 0.5},
            3.0,
        ),
        ("1 + 2 * 3", {}, 7.0),
        ("(1 + 2) * 3", {}, 9.0),
        ("2 - 3 - 4", {}, -5.0),  # left-associative
        ("8 / 2 / 2", {}, 2.0),
        ("-2 * 3", {}, -6.0),
        ("--2", {}, 2.0),
        ("+x - -x", {"x": 1.5}, 3.0),
        ("log10(1000) + log10(x)", {"x": 0.01}, 1.0),
        ("1.5e2 / .5", {}, 300.0),
        ("retain_prob / target_retain_prob", {"retain_prob": 0.3, "target_retain_prob": 0.6}, 0.5),
    ],
)
def test_formula_values_by_hand(text, values, expected):
    assert parse_formula(text, "sweep.score")(values) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text, values",
    [("log10(x)", {"x": 0.0}), ("1 / x", {"x": 0}), ("x + 1", {}), ("x", {"x": "unavailable"})],
)
def test_formula_undefined_values_are_nan(text, values):
    assert math.isnan(parse_formula(text, "sweep.score")(values))


def test_formula_names_in_order_once():
    f = parse_formula("a * (b + log10(a)) - c", "s")
    assert f.names == ("a", "b", "c")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "sweep.score is empty"),
        ("forget_quality +", "expected a number, a metric name or (, found the end"),
        ("2 ** 3", "found '*' at position 4"),
        ("forget_quality @ 2", "unexpected character '@' at position 16"),
        ("log10 forget_quality", "expected ( after log10"),
        ("(forget_quality", "expected ), found the end"),
        ("forget_quality)", "expected an operator or the end, found ')'"),
        ("__import__('os')", "unexpected character"),
    ],
)
def test_formula_syntax_errors_are_one_line(text, fragment):
    with pytest.raises(ConfigError) as e:
        parse_formula(text, "sweep.score")
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_formula_needs_what_its_metrics_read():
    fq = formula_needs(parse_formula("log10_forget_quality + 10 * model_utility_ratio", "s"), "s")
    assert fq.reference
    assert fq.metrics == {"truth_ratio", "rouge_l_recall", "prob", "prob_normalized"}
    assert fq.roles == {"forget", "retain", "utility"}
    fp = metric_needs("forget_prob", "s")
    assert "prob" in fp.metrics and "forget" in fp.roles and not fp.reference
    assert metric_needs("retain_rouge", "s").metrics == {"rouge_l_recall"}
    assert metric_needs("forget_fact_recall", "s").metrics == {"fact_recalled"}
    # "prob" is both prob (retain-type splits) and prob_normalized (utility splits)
    assert metric_needs("general_prob", "s").metrics == {"prob", "prob_normalized"}
    assert metric_needs("target_retain_prob", "s") == metric_needs("retain_prob", "s")
    with pytest.raises(ConfigError, match="unknown metric 'forget_probb'"):
        metric_needs("forget_probb", "s")


def test_derived_values_by_hand():
    d = derived_values({"forget_quality": 0.01, "model_utility": 0.6}, {"model_utility": 0.8})
    assert d["log10_forget_quality"] == pytest.approx(-2.0)
    assert d["model_utility_ratio"] == pytest.approx(0.75)
    assert d["target_model_utility"] == 0.8
    assert derived_values({"forget_quality": 0.0}, None) == {
        "log10_forget_quality": math.log10(FQ_FLOOR)
    }
    # the ratio is undefined over a target utility of 0, not infinite
    assert "model_utility_ratio" not in derived_values({"model_utility": 0.5}, {"model_utility": 0})


# --------------------------------------------------------------------------------------------
# the space, through load_config (as a user's YAML and overrides are read)

LR = "sweep.space.unlearn.lr={low: 1e-5, high: 1e-3, log: true}"


def test_space_accepts_dotted_nested_and_override_forms():
    cfg = load_config(
        ["demo", "sweeps/npo"],
        [
            "sweep.space.unlearn.lr={low: 1e-4, high: 2e-4}",  # replaces the file's range
            "sweep.space.unlearn.params.beta=null",  # takes it out of the space
            "sweep.space.unlearn.params.retain_loss={choices: [nll, kl]}",
            "sweep.space.unlearn.abort_grad_norm={choices: [1e-6, 1.0e6, 1.0e+7]}",
        ],
    )
    assert cfg.sweep.space == {
        "unlearn.lr": {"low": 1e-4, "high": 2e-4},
        "unlearn.epochs": {"low": 2, "high": 12, "int": True},
        "unlearn.params.retain_loss": {"choices": ["nll", "kl"]},
        "unlearn.abort_grad_norm": {"choices": [1e-6, 1e6, 1e7]},  # floats, not YAML's strings
    }
    dims = parse_space(cfg.sweep.space, "sweep.space")
    assert [(d.key, d.kind) for d in dims] == [
        ("unlearn.lr", "float"),
        ("unlearn.epochs", "int"),
        ("unlearn.params.retain_loss", "choice"),
        ("unlearn.abort_grad_norm", "choice"),
    ]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("sweep.space.unlearn.lrr={low: 1, high: 2}", "unlearn has no setting 'lrr'"),
        ("sweep.space.model.dtype={choices: [float32]}", "only unlearn.* settings can be swept"),
        ("sweep.space.unlearn.method={choices: [ga, npo]}", "unlearn.method cannot be swept"),
        ("sweep.space.unlearn.per_method.rmu.lr={low: 1, high: 2}", "unlearn.per_method cannot"),
        ("sweep.space.unlearn.lr={low: 1e-2, high: 1e-3}", "low=0.01 is not below high=0.001"),
        ("sweep.space.unlearn.lr={low: 0, high: 1e-3, log: true}", "log scale needs low > 0"),
        ("sweep.space.unlearn.params.retain_loss={choices: []}", "choices is empty"),
        ("sweep.space.unlearn.lr={choices: [1, 1]}", "repeats a value"),
        ("sweep.space.unlearn.lr={low: 1e-4}", "has no high"),
        ("sweep.space.unlearn.lr={low: abc, high: 1}", "low must be a finite number"),
        ("sweep.space.unlearn.lr={low: 1e-4, high: 1e-3, stepp: 1}", "unknown keys stepp"),
        ("sweep.space.unlearn.lr={low: 1e-4, high: 1e-3, step: 1e-4, log: true}", "step and log"),
        ("sweep.space.unlearn.epochs={low: 1, high: 3.5, int: true}", "not a whole number"),
        ("sweep.space.unlearn.batch_size={low: 2, high: 8}", "is an integer setting"),
        ("sweep.space.unlearn.scheduler={low: 1, high: 2}", "not a numeric setting"),
        ("sweep.space.unlearn.lr=0.1", "must be a mapping"),
        ("sweep.space.unlearn.lora.rr={low: 1, high: 2, int: true}", "has no setting 'rr'"),
        ("sweep.space.unlearn.params={low: 1, high: 2}", "names no parameter"),
        ("sweep.trials=0", "sweep.trials=0 is out of range"),
        ("sweep.jobs=0", "sweep.jobs=0 is out of range"),
        ("sweep.objective=best", "sweep.objective='best' is not one of score, pareto"),
        ("sweep.sampler=grid", "is not one of tpe, nsga2, random"),
        ("sweep.score=forget_qualty + 1", "sweep.score reads an unknown metric 'forget_qualty'"),
        ("sweep.pareto=[forget_quality]", "sweep.pareto needs at least two objectives"),
        ("sweep.pareto=[forget_quality, utility]", "sweep.pareto[1] reads an unknown metric"),
    ],
)
def test_bad_sweep_sections_are_one_line_errors(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(["demo", "sweeps/npo"], [override])
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_loading_a_sweep_imports_neither_torch_nor_optuna():
    code = (
        "import sys; from obliviate.config import load_config; "
        "load_config(['demo', 'sweeps/rmu'], ['sweep.score=forget_prob + retain_rouge']); "
        "print('torch' in sys.modules, 'optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("method", ["ga", "graddiff", "npo", "simnpo", "rmu", "undial"])
def test_shipped_sweeps_load_and_their_bounds_are_valid_settings(method, tmp_path):
    from obliviate.sweep import TrialConfigs

    cfg = load_config(["demo", f"sweeps/{method}"])
    assert cfg.unlearn.method == method and cfg.run_dir == f"runs/sweeps/{method}"
    dims = parse_space(cfg.sweep.space, "sweep.space")
    assert {"unlearn.lr", "unlearn.epochs"} <= {d.key for d in dims}
    TrialConfigs(cfg, tmp_path).check_bounds(dims)  # raises on a refused bound


def test_unknown_method_parameter_is_refused_before_any_work(tmp_path):
    from obliviate.sweep import run_sweep

    run = tmp_path / "run"
    cfg = load_config(
        ["demo"],
        [
            "unlearn.method=npo",
            "sweep.space.unlearn.params.betta={low: 0.1, high: 1}",
            f"run_dir={run}",
        ],
    )
    with pytest.raises(ConfigError, match=r"unlearn.params.betta: the value 0.1 is refused"):
        run_sweep(cfg)
    assert not run.exists()


def test_missing_optuna_is_one_line(monkeypatch):
    from obliviate import sweep

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'obliviate\[sweep\]'"):
        sweep.run_sweep(load_config(["demo", "sweeps/npo"]))


# --------------------------------------------------------------------------------------------
# the Pareto filter and the choice of the best trial


def test_pareto_front_by_hand():
    from obliviate.sweep import pareto_front

    points = [[1, 1], [2, 0], [0, 2], [0.5, 0.5], [1, 1], [2, -1]]
    # [0.5,0.5] < [1,1]; [2,-1] < [2,0]; equal points do not dominate each other
    assert pareto_front(points) == [0, 1, 2, 4]


def test_best_is_the_top_score_within_the_pareto_set():
    from obliviate.sweep import choose

    recs = [
        {"number": 0, "state": "COMPLETE", "objectives": [1, 1], "score": 5.0},
        {"number": 1, "state": "COMPLETE", "objectives": [0, 0], "score": 9.0},  # dominated
        {"number": 2, "state": "COMPLETE", "objectives": [2, 0], "score": 6.0},
        {"number": 3, "state": "FAIL", "error": "diverged"},
    ]
    front, best = choose(recs, pareto=True)
    assert [r["number"] for r in front] == [2, 0] and best["number"] == 2
    front, best = choose(recs, pareto=False)
    assert [r["number"] for r in front] == [1, 2, 0] and best["number"] == 1


def test_override_values_read_back_as_themselves():
    from obliviate.sweep import override_value

    for v in [1e-05, 0.000123456789, 3, True, None, "nll", "null", "1e-3", 2.5]:
        assert yaml.safe_load(override_value(v)) == v and type(
            yaml.safe_load(override_value(v))
        ) is type(v)


# --------------------------------------------------------------------------------------------
# studies on the MINI model

SCORE = "sweep.score=log10_forget_quality + 10 * retain_prob / target_retain_prob"
SPACE = [
    "sweep.space.unlearn.lr={low: 1e-4, high: 1e-2, log: true}",
    "sweep.space.unlearn.params.beta={low: 0.05, high: 1.0}",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sweep_cache")


def mini(cache, run, *extra):
    from mini import MINI

    return load_config(
        ["demo"],
        [*MINI, "unlearn.method=npo", f"cache_dir={cache}", f"run_dir={run}", *extra],
    )


@pytest.fixture(scope="module")
def three_trials(cache, tmp_path_factory):
    from obliviate import api
    from obliviate.sweep import run_sweep

    run = tmp_path_factory.mktemp("sweep") / "run"
    cfg = mini(cache, run, "sweep.trials=3", SCORE, *SPACE)
    api.setup_runtime(cfg)
    text = run_sweep(cfg)
    return cfg, run, text


def _unlearn(cfg):
    """An unlearn section as a comparable dict (per_method: which entries survive depends on
    which layer set what, not on the settings used)."""
    return {k: v for k, v in dataclasses.asdict(cfg.unlearn).items() if k != "per_method"}


def test_three_trial_sweep_outputs(three_trials):
    cfg, run, text = three_trials
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert len(rows) == 3 and {r["state"] for r in rows} == {"COMPLETE"}
    assert {"unlearn.lr", "unlearn.params.beta", "score", "seconds"} <= set(rows[0])
    data = json.loads((run / "trials.json").read_text())
    trials, target = data["trials"], data["target"]
    assert data["study"]["complete"] == 3 and len(trials) == 3
    for t, row in zip(trials, rows, strict=True):
        m = t["metrics"]
        # the score, recomputed from the trial's own metrics and the target's
        fq = m["forget_quality"]
        expected = math.log10(max(fq, FQ_FLOOR)) + 10 * m["retain_prob"] / target["retain_prob"]
        assert t["score"] == pytest.approx(expected)
        assert float(row["score"]) == pytest.approx(expected)
        assert 1e-4 <= t["params"]["unlearn.lr"] <= 1e-2
        assert 0.05 <= t["params"]["unlearn.params.beta"] <= 1.0
        assert os.path.isdir(t["model"])  # the trial's unlearned model, cached by content
        # a partial model utility (no ROUGE was computed) is not reported as model utility
        assert "model_utility" not in m and "forget_rouge" not in m
    best = max(trials, key=lambda t: t["score"])
    assert data["study"]["best"] == best["number"]
    top = json.loads((run / "pareto.json").read_text())
    assert top["best"] == best["number"]
    scores = [t["score"] for t in top["trials"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    lines = text.splitlines()
    assert lines[2].startswith("target") and sum(line.endswith("*") for line in lines) == 1
    assert (run / "table.txt").read_text().strip() in text


def test_best_yaml_reproduces_the_best_trial(three_trials, cache):
    from mini import MINI

    cfg, run, _ = three_trials
    data = json.loads((run / "trials.json").read_text())
    best = next(t for t in data["trials"] if t["number"] == data["study"]["best"])
    loaded = load_config(run / "best.yaml")
    assert loaded.unlearn.lr == best["params"]["unlearn.lr"]
    assert loaded.unlearn.params["beta"] == best["params"]["unlearn.params.beta"]
    assert loaded.run_dir == str(run / "best")
    # the same settings as the trial: the experiment plus the trial's overrides
    trial = mini(cache, run, *best["overrides"])
    assert _unlearn(loaded) == _unlearn(trial)
    assert dataclasses.replace(loaded, run_dir="x", sweep=cfg.sweep) == dataclasses.replace(
        trial, run_dir="x", unlearn=loaded.unlearn, sweep=cfg.sweep
    )
    # tuned.yaml is the same unlearn section as a layer over the base config
    tuned = load_config(["demo", run / "tuned.yaml"], [*MINI, f"cache_dir={cache}"])
    assert _unlearn(tuned) == _unlearn(trial)
    from obliviate.stages import result_settings

    # and it trains the cached model of that trial
    assert {k: v for k, v in result_settings(loaded.unlearn).items() if k != "per_method"} == {
        k: v for k, v in result_settings(trial.unlearn).items() if k != "per_method"
    }


def test_sweep_is_deterministic_and_refuses_a_finished_run_dir(three_trials, cache, tmp_path):
    from obliviate.sweep import run_sweep

    cfg, run, _ = three_trials
    first = json.loads((run / "trials.json").read_text())["trials"]
    with pytest.raises(ConfigError, match="already holds results"):
        run_sweep(cfg)
    again = dataclasses.replace(cfg, run_dir=str(tmp_path / "again"))
    run_sweep(again)
    second = json.loads((tmp_path / "again" / "trials.json").read_text())["trials"]
    assert [t["params"] for t in second] == [t["params"] for t in first]
    assert [t["score"] for t in second] == [t["score"] for t in first]
    run_sweep(cfg, overwrite=True)  # --overwrite replaces it


def test_default_score_on_a_target_without_utility_is_one_line(cache, tmp_path, three_trials):
    """The MINI target (2 epochs) answers nothing right: model utility 0, so a utility ratio is
    undefined, and the sweep says so before any trial (leaving no run dir)."""
    from obliviate.sweep import run_sweep

    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="model_utility_ratio is undefined"):
        run_sweep(mini(cache, run, "sweep.trials=2", *SPACE))
    assert not run.exists()


def test_pareto_objective_reports_the_non_dominated_trials(cache, tmp_path, three_trials):
    from obliviate.sweep import run_sweep

    cfg = mini(
        cache,
        tmp_path / "run",
        "sweep.trials=5",
        "sweep.objective=pareto",
        "sweep.pareto=[log10_forget_quality, retain_prob]",
        SCORE,
        *SPACE,
    )
    run_sweep(cfg)
    trials = json.loads((tmp_path / "run" / "trials.json").read_text())["trials"]
    pareto = json.loads((tmp_path / "run" / "pareto.json").read_text())
    done = [t for t in trials if t["state"] == "COMPLETE"]
    points = {
        t["number"]: (t["metrics"]["log10_forget_quality"], t["metrics"]["retain_prob"])
        for t in done
    }
    for t in done:
        assert t["objectives"] == pytest.approx(list(points[t["number"]]))
    front = {t["number"] for t in pareto["trials"]}

    def dominated(a, b):  # b dominates a
        pairs = list(zip(a, b, strict=True))
        return all(y >= x for x, y in pairs) and any(y > x for x, y in pairs)

    for n, p in points.items():
        beaten = any(dominated(p, q) for m, q in points.items() if m != n)
        assert (n in front) == (not beaten)
    assert pareto["best"] in front
    loaded = load_config(tmp_path / "run" / "best.yaml")
    best = next(t for t in trials if t["number"] == pareto["best"])
    assert loaded.unlearn.lr == best["params"]["unlearn.lr"]


def test_a_failed_trial_is_recorded_and_the_study_goes_on(cache, tmp_path, three_trials):
    """abort_grad_norm=1e-6 stops a run at its first step (exit 3); the other trials finish."""
    from obliviate.sweep import run_sweep

    space = [
        "sweep.space.unlearn.abort_grad_norm={choices: [1.0e-6, 1.0e6]}",
        "sweep.space.unlearn.lr={low: 1e-4, high: 1e-3, log: true}",
    ]
    run_sweep(mini(cache, tmp_path / "run", "sweep.trials=5", "sweep.seed=1", SCORE, *space))
    trials = json.loads((tmp_path / "run" / "trials.json").read_text())["trials"]
    assert len(trials) == 5
    for t in trials:
        if t["params"]["unlearn.abort_grad_norm"] < 1:
            assert t["state"] == "FAIL" and t["exit_code"] == 3 and "gradient norm" in t["error"]
        else:
            assert t["state"] == "COMPLETE"
    assert {t["state"] for t in trials} == {"FAIL", "COMPLETE"}  # seed 1 draws both
    rows = list(csv.DictReader((tmp_path / "run" / "trials.csv").open()))
    assert [r["state"] for r in rows] == [t["state"] for t in trials]
    # a study whose every trial fails is an error, with nothing left behind
    run = tmp_path / "all_fail"
    bad = ["sweep.space.unlearn.abort_grad_norm={choices: [1.0e-6]}", *space[1:]]
    with pytest.raises(DivergenceError, match="every one of the 2 trials failed"):
        run_sweep(mini(cache, run, "sweep.trials=2", SCORE, *bad))
    assert not (run / "trials.json").exists()


@pytest.mark.slow
def test_two_jobs_run_trials_in_worker_processes(cache, tmp_path, three_trials):
    """jobs=2: trials run in spawned workers sharing the cache; their models and scores are the
    ones this process computes for the same settings (re-scored here, eval.cache off)."""
    from obliviate.sweep import run_sweep

    space = ["sweep.space.unlearn.lr={low: 2e-3, high: 5e-3, log: true}", *SPACE[1:]]
    run_sweep(mini(cache, tmp_path / "par", "sweep.trials=2", "sweep.jobs=2", SCORE, *space))
    par = json.loads((tmp_path / "par" / "trials.json").read_text())["trials"]
    assert [t["state"] for t in par] == ["COMPLETE"] * 2
    assert all(t["pid"] != os.getpid() for t in par)
    run_sweep(mini(cache, tmp_path / "seq", "sweep.trials=2", "eval.cache=false", SCORE, *space))
    seq = json.loads((tmp_path / "seq" / "trials.json").read_text())["trials"]
    assert [t["pid"] for t in seq] == [os.getpid()] * 2
    # the same first batch of settings (TPE's seeded start), the same cached models, the same scores
    assert [t["params"] for t in seq] == [t["params"] for t in par]
    assert [t["model"] for t in seq] == [t["model"] for t in par]
    assert [t["score"] for t in seq] == pytest.approx([t["score"] for t in par], rel=1e-6)
