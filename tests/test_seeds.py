"""Seeds and error bars: the mean ± sd aggregation by hand, ``obliviate run`` once and over two
seeds end to end on the mini experiment, the seeded demo, and bad seed input."""

import json
import math
import statistics
from pathlib import Path

import pytest
from mini import MINI

from obliviate.cli import main, run
from obliviate.repeat import (
    aggregate,
    aggregate_summaries,
    format_stat,
    seed_config,
    stats_table,
)

# --------------------------------------------------------------------------------- by hand


def test_aggregate_by_hand():
    # values 0.5 and 0.7: mean 0.6, sd = sqrt((0.1² + 0.1²) / (2 − 1)) = 0.141421
    a = aggregate([0.5, None, 0.7, "unavailable: no retain model", math.nan])
    assert a["mean"] == pytest.approx(0.6) and a["sd"] == pytest.approx(math.sqrt(0.02))
    assert a["n"] == 2 and a["values"] == [0.5, None, 0.7, None, None]
    # 1, 2, 3, 4: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, sd = sqrt(5 / 3)
    b = aggregate([1, 2, 3, 4])
    assert b["mean"] == 2.5 and b["sd"] == pytest.approx(1.2909944)
    assert aggregate([0.3]) == {"mean": 0.3, "sd": None, "n": 1, "values": [0.3]}
    assert aggregate([None, True]) == {"mean": None, "sd": None, "n": 0, "values": [None, None]}


def test_aggregate_summaries_takes_every_numeric_key_once():
    s0 = {"fq": 0.1, "name": "x", "hit": True, "ci95": {"fq": [0, 1]}, "u": "unavailable: y"}
    s1 = {"fq": 0.3, "u": 0.5, "late": 2}
    agg = aggregate_summaries([s0, s1])
    assert list(agg) == ["fq", "u", "late"]
    assert agg["fq"]["mean"] == pytest.approx(0.2) and agg["fq"]["sd"] == pytest.approx(
        math.sqrt(0.02)
    )
    assert agg["u"] == {"mean": 0.5, "sd": None, "n": 1, "values": [None, 0.5]}
    assert agg["late"]["values"] == [None, 2]


def test_format_stat():
    st = {"mean": 0.5123, "sd": 0.0131, "n": 3}
    assert format_stat(st) == "0.512 ± 0.013"
    assert format_stat(st, total=4) == "0.512 ± 0.013 (n=3)"
    assert format_stat(st, "{:.2e}") == "5.12e-01 ± 1.31e-02"
    assert format_stat({"mean": 0.5123, "sd": None, "n": 1}) == "0.512"
    assert format_stat({"mean": None, "sd": None, "n": 0}, total=3) == "-"


def test_stats_table_mixes_single_values_and_mean_sd():
    cols = [("model", "model", "{}"), ("u", "utility", "{:.3f}")]
    rows = [{"model": "target", "u": 0.9}, {"model": "npo", "u": aggregate([0.5, 0.52, 0.54])}]
    assert stats_table(rows, cols).splitlines() == [
        "model         utility",
        "------  -------------",
        "target          0.900",
        "npo     0.520 ± 0.020",
    ]


def test_seed_config_sets_only_the_unlearn_seed():
    from obliviate import load_config

    cfg = load_config("demo", ["seeds=[0,1]", "unlearn.lr=0.001"])
    sub = seed_config(cfg, 7)
    assert sub.unlearn.seed == 7 and sub.seeds is None and sub.unlearn.lr == 0.001
    assert cfg.unlearn.seed == 0 and cfg.seeds == [0, 1]  # the original is left alone


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "--seeds", "0"], "--seeds 0 is not a positive count"),
        (["demo", "--seeds", "-2"], "--seeds -2 is not a positive count"),
        (["run", "seeds=[]"], "seeds is empty"),
        (["run", "seeds=[1,1]"], "repeats a seed"),
        (["demo", "seeds=[0,0,2]"], "repeats a seed"),
        (["run", "seeds=[-1]"], "seeds[0]"),
    ],
)
def test_bad_seeds_are_one_line_errors(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as e:
        main([*argv, f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and needle in err[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_run_refuses_a_dir_holding_a_model(tmp_path, capsys):
    (tmp_path / "run" / "model").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        main(["run", *MINI, f"cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "already holds results (model)" in err[-1]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model"]
    assert not (tmp_path / "cache").exists()  # refused before any data or model was made


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``obliviate run`` of the mini experiment once (its stdout kept), and the common argv."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("seeds")
    common = [*MINI, f"cache_dir={root / 'cache'}", "--no-progress"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run(["run", *common, f"run_dir={root / 'one'}"]) == 0
    return root, common, out.getvalue()


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_run_once_writes_the_unlearn_plus_eval_layout(runs):
    from obliviate.demo import COLUMNS, format_table

    root, common, out = runs
    one = root / "one"
    assert sorted(p.name for p in one.iterdir()) == [
        "config.yaml",
        "eval",
        "model",
        "obliviate.log",
        "summary.json",
    ]
    summary = json.loads((one / "summary.json").read_text())
    assert summary["model"] == str((one / "model").resolve())
    assert (one / "eval" / "forget.json").is_file() and "ci95" in summary
    # the table `obliviate eval` prints for this summary
    assert out == format_table([{**summary, "model": "model"}], COLUMNS) + "\n"
    # and the numbers `obliviate eval` gives the same model
    assert run(["eval", *common, "--model", str(one / "model"), f"run_dir={root / 'ev'}"]) == 0
    ev = json.loads((root / "ev" / "summary.json").read_text())
    timing = {"eval_seconds", "eval_cache_hit", "passes"}
    assert {k: v for k, v in ev.items() if k not in timing} == {
        k: v for k, v in summary.items() if k not in timing
    }


def test_run_over_two_seeds(runs, capsys):
    from obliviate.config import load_config

    root, common, _ = runs
    rd = root / "two"
    assert run(["run", *common, f"run_dir={rd}", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert {p.name for p in rd.iterdir()} >= {"seed0", "seed1", "summary.json", "table.txt"}
    assert not (rd / "model").exists()
    per_seed = []
    for s in (0, 1):
        d = rd / f"seed{s}"
        assert {"model", "eval", "summary.json", "config.yaml"} <= {p.name for p in d.iterdir()}
        assert load_config([str(d / "config.yaml")]).unlearn.seed == s
        per_seed.append(json.loads((d / "summary.json").read_text()))
        assert per_seed[-1]["model"] == str((d / "model").resolve())
    # different seeds: different data order and retain pairing, so different weights
    w0, w1 = _weights(rd / "seed0" / "model"), _weights(rd / "seed1" / "model")
    assert w0.keys() == w1.keys()
    assert any(not (w0[k] == w1[k]).all() for k in w0)
    # ... while seed 0 is the single run's default unlearn.seed: the same weights again
    one = _weights(root / "one" / "model")
    assert all((w0[k] == one[k]).all() for k in w0)
    # the aggregate: every metric's mean and sample sd over the two per-seed summaries
    agg = json.loads((rd / "summary.json").read_text())
    assert agg["seeds"] == [0, 1] and agg["seed_dirs"] == ["seed0", "seed1"]
    metrics = agg["metrics"]
    assert {"forget_quality", "model_utility", "forget_prob", "forget_quality_ks"} <= set(metrics)
    for key, st in metrics.items():
        vals = [s[key] for s in per_seed if isinstance(s.get(key), int | float)]
        assert st["n"] == len(vals) and st["values"] == [s.get(key) for s in per_seed]
        assert st["mean"] == pytest.approx(statistics.fmean(vals))
        assert agg[key] == st["mean"]
        if len(vals) == 2:
            assert st["sd"] == pytest.approx(abs(vals[0] - vals[1]) / math.sqrt(2))
    # the per-seed values differ for a probability metric, so its sd is not 0
    assert metrics["forget_prob"]["sd"] > 0
    table = (rd / "table.txt").read_text()
    assert out == table
    last = table.splitlines()[-1]
    m, sd = metrics["model_utility"]["mean"], metrics["model_utility"]["sd"]
    assert last.startswith("mean ± sd") and f"{m:.3f} ± {sd:.3f}" in last
    assert [line.split()[0] for line in table.splitlines()[2:4]] == ["seed0", "seed1"]

    # finished: refused without --overwrite; with it, one seed replaces both (no stale seed1)
    with pytest.raises(SystemExit) as e:
        main(["run", *common, f"run_dir={rd}", "seeds=[1]"])
    assert e.value.code == 2 and "already holds results" in capsys.readouterr().err
    assert run(["run", *common, f"run_dir={rd}", "seeds=[1]", "--overwrite"]) == 0
    assert not (rd / "seed0").exists() and (rd / "seed1" / "model").is_dir()
    assert json.loads((rd / "summary.json").read_text())["metrics"]["forget_prob"]["n"] == 1


def test_seeded_demo_rows_and_table(runs, capsys):
    root, common, _ = runs
    rd = root / "demo"
    argv = ["demo", *common, f"run_dir={rd}", "demo.methods=[ga]", "--seeds", "2"]
    assert run(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads((rd / "summary.json").read_text())
    names = [r["model"] for r in summary["rows"]]
    assert names == ["retain", "target", "ga/seed0", "ga/seed1"]
    for s in (0, 1):
        assert (rd / "ga" / f"seed{s}" / "eval" / "forget.json").is_file()
    rows = {r["model"]: r for r in summary["rows"]}
    fp = [rows[f"ga/seed{s}"]["forget_prob"] for s in (0, 1)]
    st = summary["aggregate"]["ga"]["forget_prob"]
    assert st["mean"] == pytest.approx(statistics.fmean(fp))
    assert st["sd"] == pytest.approx(statistics.stdev(fp))
    lines = (rd / "table.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["retain", "target", "ga"]
    assert f"{st['mean']:.3f} ± {st['sd']:.3f}" in lines[4] and "±" not in lines[2] + lines[3]
    assert lines[5].startswith("ga: mean ± sd over seeds 0, 1")
    assert out.startswith((rd / "table.txt").read_text())
    # a plain demo into the same dir replaces the seeded folders with single ones
    assert run(["demo", *common, f"run_dir={rd}", "demo.methods=[ga]"]) == 0
    assert not (rd / "ga" / "seed0").exists() and (rd / "ga" / "summary.json").is_file()
    assert "±" not in (rd / "table.txt").read_text()
