"""obliviate.report on fabricated run dirs (tests/report_dirs.py): loading, directions,
leaderboards, plots and the self-contained HTML report. No training, no browser."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_dirs import ESCAPE_QUESTION, NUMBERS, demo_dir, eval_dir

from obliviate.errors import ConfigError
from obliviate.eval.directions import direction, format_value, headline_keys, metric_keys
from obliviate.report import Run, leaderboard, load_runs, plots, render_report, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def one_line_config_error(exc: pytest.ExceptionInfo) -> str:
    e = exc.value
    assert isinstance(e, ConfigError) and e.fix
    assert "\n" not in str(e)
    return str(e)


def run(name: str, role: str = "unlearned", **summary: float | str) -> Run:
    return Run(name, Path("/nowhere") / name, dict(summary), role)


# ------------------------------------------------------------------------------ loading


def test_demo_dir_expands_to_its_rows_in_order(tmp_path):
    d = demo_dir(tmp_path)
    runs = load_runs([d])
    assert [r.name for r in runs] == ["target", "retain", "ga", "npo"]
    assert [r.role for r in runs] == ["target", "retain", "unlearned", "unlearned"]
    assert [r.path for r in runs] == [d / n for n in ("target", "retain", "ga", "npo")]
    ga = runs[2]
    assert ga.summary["forget_quality"] == 0.05 and ga.card["method"] == "ga"
    assert [e["step"] for e in ga.train_log] == [1, 2, 3, 4, 5]
    assert runs[0].train_log == []  # finetune cards carry no train_log here
    assert ga.split_roles == {"forget": "forget", "retain": "retain", "holdout": "holdout"}
    samples = ga.samples()
    assert sorted(samples) == ["forget", "holdout", "retain"]
    assert samples["forget"][1]["question"] == ESCAPE_QUESTION
    assert ga.samples() is samples  # read once


def test_eval_dirs_and_a_folder_of_run_dirs(tmp_path):
    root = tmp_path / "runs"
    eval_dir(root, "b-unlearned", row="npo")
    eval_dir(root, "a-base", row="target")  # finetune card, split full: the target
    eval_dir(root, "c-retain", row="retain", card={"stage": "finetune", "split": "retain"})
    eval_dir(root, "d-gone", row="ga", model_inside=False)  # model dir deleted: no card
    eval_dir(root, "e-ref", row="ga", card={}, forget_quality_reference="itself (retain)")
    (root / "not-a-run").mkdir()
    runs = load_runs([root])
    assert [r.name for r in runs] == ["a-base", "b-unlearned", "c-retain", "d-gone", "e-ref"]
    assert [r.role for r in runs] == ["target", "unlearned", "retain", "unlearned", "retain"]
    gone = runs[3]
    assert gone.card == {} and gone.train_log == [] and gone.path == root / "d-gone"
    assert runs[1].method == "npo" and len(runs[1].train_log) == 5
    one = load_runs([root / "b-unlearned"])
    assert [(r.name, r.role) for r in one] == [("b-unlearned", "unlearned")]


def test_split_roles_are_guessed_from_eval_file_names_for_old_runs(tmp_path):
    d = eval_dir(tmp_path, "old", split_roles=False)
    assert "split_roles" not in json.loads((d / "summary.json").read_text())
    for stem in ("forget10", "retain_perturbed", "real_authors", "holdout10"):
        (d / "eval" / f"{stem}.json").write_text("[]")
    (r,) = load_runs([d])
    assert r.split_roles == {
        "forget": "forget",
        "forget10": "forget",
        "holdout": "holdout",
        "holdout10": "holdout",
        "real_authors": "utility",
        "retain": "retain",
        "retain_perturbed": "retain",
    }


def test_repeated_names_get_their_parent_folder(tmp_path):
    a = demo_dir(tmp_path, "first")
    b = demo_dir(tmp_path, "second", rows=["target", "retain", "npo"])
    c = eval_dir(tmp_path / "x", "solo")
    runs = load_runs([a, b, c, a])  # the same demo given twice is read once
    names = [r.name for r in runs]
    assert names == [
        "first/target",
        "first/retain",
        "ga",
        "first/npo",
        "second/target",
        "second/retain",
        "second/npo",
        "solo",
    ]
    assert len(set(names)) == len(names)


def test_missing_model_dirs_leave_runs_without_cards(tmp_path):
    d = demo_dir(tmp_path, cards=False)
    runs = load_runs([d])
    assert [r.role for r in runs] == ["target", "retain", "unlearned", "unlearned"]
    assert all(r.card == {} and r.train_log == [] for r in runs)


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "file.txt").write_text("hi")
    (tmp / "empty").mkdir()
    (tmp / "badjson").mkdir()
    (tmp / "badjson" / "summary.json").write_text('{"forget_quality": 0.')
    (tmp / "list").mkdir()
    (tmp / "list" / "summary.json").write_text("[1, 2]")
    (tmp / "norows").mkdir()
    (tmp / "norows" / "summary.json").write_text('{"rows": [], "seconds": 1}')
    (tmp / "badrow").mkdir()
    (tmp / "badrow" / "summary.json").write_text('{"rows": [{"forget_quality": 1}]}')
    return {
        "missing": (tmp / "nope", "does not exist"),
        "file": (tmp / "file.txt", "is not a directory"),
        "empty": (tmp / "empty", "no summary.json"),
        "badjson": (tmp / "badjson", "not valid JSON"),
        "list": (tmp / "list", "not a JSON object"),
        "norows": (tmp / "norows", "no runs found"),
        "badrow": (tmp / "badrow", "row 0"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "file", "empty", "badjson", "list", "norows", "badrow"]
)
def test_bad_inputs_are_one_line_config_errors(tmp_path, case):
    path, words = _bad_inputs(tmp_path)[case]
    with pytest.raises(ConfigError) as e:
        load_runs([path])
    assert words in one_line_config_error(e)
    assert str(path) in str(e.value)


def test_no_paths_and_a_corrupt_eval_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_runs([])
    one_line_config_error(e)
    d = eval_dir(tmp_path, "r")
    (d / "eval" / "forget.json").write_text("[{")
    (r,) = load_runs([d])
    with pytest.raises(ConfigError) as e:
        r.samples()
    assert "forget.json" in one_line_config_error(e)


# ------------------------------------------------------------------------------ directions

ROLES = {"forget": "forget", "retain": "retain", "general": "utility", "holdout": "holdout"}


@pytest.mark.parametrize(
    "key, expected",
    [
        ("forget_quality", "up"),
        ("model_utility", "up"),
        ("closer_look_model_utility", "up"),
        ("forget_efficacy", "up"),
        ("semeval_final", "up"),
        ("semeval_mia_score", "up"),
        ("forget_rouge", "down"),
        ("forget_prob", "down"),
        ("forget_fact_recall", "down"),
        ("forget_exact_memorization", "down"),
        ("forget_extraction_strength", "down"),
        ("forget_qa_exact_match", "down"),
        ("forget_cosine_similarity", "down"),
        ("forget_paraphrased_rouge_l_recall", "down"),
        ("forget_paraphrased_prob", "down"),
        ("forget_truth_ratio", "up"),
        ("forget_paraphrased_truth_ratio", "up"),
        ("forget_token_entropy", None),
        ("retain_rouge", "up"),
        ("retain_truth_ratio", "up"),
        ("retain_token_entropy", None),
        ("general_prob", "up"),
        ("general_paraphrased_prob", "up"),
        ("holdout_prob", None),
        ("holdout_exact_memorization", None),
        ("mia_auc_loss", "ref"),
        ("mia_auc_min_k_pp", "ref"),
        ("privleak", "zero"),
        ("privleak_zlib", "zero"),
        ("verbmem_f", "down"),
        ("knowmem_forget_f", "down"),
        ("knowmem_retain_f", "up"),
        ("eval_seconds", None),
        ("something_new", None),
        ("forget_custom_score", None),
    ],
)
def test_direction(key, expected):
    assert direction(key, ROLES) == expected


def test_direction_follows_split_roles_not_names():
    roles = {"forget10": "forget", "world_facts": "utility", "extra": "holdout", "f2": "forget"}
    assert direction("forget10_rouge", roles) == "down"
    assert direction("f2_truth_ratio", roles) == "up"
    assert direction("world_facts_rouge", roles) == "up"
    assert direction("extra_prob", roles) is None
    # no split_roles (old runs): guessed from the key
    assert direction("forget05_prob", {}) == "down"
    assert direction("retain_perturbed_rouge", {}) == "up"
    assert direction("real_authors_truth_ratio", {}) == "up"
    assert direction("holdout_prob", {}) is None


def test_metric_keys_order_and_bookkeeping_left_out():
    a = run(
        "a",
        retain_rouge=0.5,
        mia_auc_loss=0.4,
        forget_rouge=0.2,
        eval_seconds=3.0,
        seconds=9.0,
        semeval_final=0.5,
        model_utility=0.7,
        forget_quality=0.1,
        general_prob=0.3,
    )
    b = run(
        "b", eval_cache_hit=True, forget_prob=float("nan"), privleak=3.0, forget_truth_ratio=0.6
    )
    b.summary.update(passes={"n": 1}, model_utility_terms=["x"], forget_entailment="unavailable")
    keys = metric_keys([a, b])
    assert keys == [
        "forget_quality",
        "model_utility",
        "forget_rouge",
        "forget_truth_ratio",
        "retain_rouge",
        "general_prob",
        "mia_auc_loss",
        "privleak",
        "semeval_final",
    ]


def test_headline_keys_for_tofu_and_muse():
    tofu = run("t", forget_quality=0.1, model_utility=0.5, forget_rouge=0.3, privleak=2.0)
    assert headline_keys([tofu]) == ["forget_quality", "model_utility", "forget_rouge"]
    muse = run("m", verbmem_f=0.3, knowmem_forget_f=0.2, knowmem_retain_f=0.5, privleak=-3.0)
    assert headline_keys([muse]) == [
        "verbmem_f",
        "knowmem_forget_f",
        "privleak",
        "knowmem_retain_f",
    ]


def test_format_value():
    assert format_value("forget_quality", 0.0709) == "7.09e-02"
    assert format_value("forget_quality", 1.0) == "1.00e+00"
    assert format_value("forget_rouge", 0.23) == "0.230"
    assert format_value("privleak", -69.293) == "-69.29"
    assert format_value("x", 123.456) == "123.5"
    assert format_value("tiny", 0.00002) == "2.00e-05"
    assert format_value("count", 7) == "7"
    assert format_value("x", "unavailable: y") == format_value("x", None) == "–"


# ------------------------------------------------------------------------------ leaderboard


def order(text: str) -> list[tuple[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    return [(r["rank"], r["run"]) for r in rows]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> list[Run]:
    return load_runs([demo_dir(tmp_path_factory.mktemp("demo"), curves=True)])


def test_leaderboard_orders_by_direction(demo_runs):
    # up: forget quality 1.0 (retain) > 0.2 (npo) > 0.05 (ga) > 0.001 (target)
    assert order(leaderboard(demo_runs, "forget_quality", "csv")) == [
        ("1", "retain"),
        ("2", "npo"),
        ("3", "ga"),
        ("4", "target"),
    ]
    # down: forget ROUGE 0.10 (ga) < 0.30 (retain) < 0.35 (npo) < 0.95 (target)
    assert [n for _, n in order(leaderboard(demo_runs, "forget_rouge", "csv"))] == [
        "ga",
        "retain",
        "npo",
        "target",
    ]
    # ref: |AUC − 0.50|: retain 0, npo 0.12, ga 0.20, target 0.45
    assert [n for _, n in order(leaderboard(demo_runs, "mia_auc_loss", "csv"))] == [
        "retain",
        "npo",
        "ga",
        "target",
    ]
    # up on forget truth ratio, mean min(R, 1/R): ga 0.75, retain 0.60, npo 0.55, target 0.40
    assert [n for _, n in order(leaderboard(demo_runs, "forget_truth_ratio", "csv"))] == [
        "ga",
        "retain",
        "npo",
        "target",
    ]
    # zero: |PrivLeak|: retain 0, npo 24, ga 40, target 90
    assert [n for _, n in order(leaderboard(demo_runs, "privleak", "csv"))] == [
        "retain",
        "npo",
        "ga",
        "target",
    ]
    # a run without the number is last and unranked: ga's fact recall is unavailable
    assert order(leaderboard(demo_runs, "forget_fact_recall", "csv")) == [
        ("1", "retain"),
        ("2", "npo"),
        ("3", "target"),
        ("", "ga"),
    ]


def test_no_direction_needs_ascending_or_descending(demo_runs):
    with pytest.raises(ConfigError) as e:
        leaderboard(demo_runs, "forget_token_entropy")
    assert "--ascending" in one_line_config_error(e)
    # entropy: ga 0.41 < npo 0.88 < retain 0.93 < target 0.97
    up = [
        n for _, n in order(leaderboard(demo_runs, "forget_token_entropy", "csv", ascending=True))
    ]
    assert up == ["ga", "npo", "retain", "target"]
    down = leaderboard(demo_runs, "forget_token_entropy", "csv", ascending=False)
    assert [n for _, n in order(down)] == ["target", "retain", "npo", "ga"]
    # an explicit order overrides the direction: ascending forget quality puts target first
    asc = leaderboard(demo_runs, "forget_quality", "csv", ascending=True)
    assert [n for _, n in order(asc)] == ["target", "ga", "npo", "retain"]


def test_ties_share_a_rank_and_ref_needs_a_retain_run():
    runs = [
        run("a", forget_quality=0.07),
        run("b", forget_quality=0.5),
        run("c", forget_quality=0.07),
    ]
    runs.append(run("d", forget_quality="unavailable: no retain model"))
    assert order(leaderboard(runs, "forget_quality", "csv")) == [
        ("1", "b"),
        ("2", "a"),
        ("2", "c"),
        ("", "d"),
    ]
    with pytest.raises(ConfigError) as e:
        leaderboard([run("a", mia_auc_loss=0.4)], "mia_auc_loss")
    assert "retain" in one_line_config_error(e)


def test_table_markdown_and_csv_formats(demo_runs):
    text = leaderboard(demo_runs, "forget_quality")
    lines = text.splitlines()
    assert lines[0].split() == [
        "rank",
        "run",
        "role",
        "forget_quality",
        "model_utility",
        "forget_rouge",
        "forget_prob",
        "retain_rouge",
        "retain_prob",
    ]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split()[:4] == ["1", "retain", "retain", "1.00e+00"]
    assert lines[5].split()[:5] == ["4", "target", "target", "1.00e-03", "0.620"]
    assert len({len(line) for line in lines[1:]}) == 1  # every row as wide as the rule

    md = leaderboard(demo_runs, "forget_rouge", "markdown", columns=["privleak"])
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines()]
    assert rows[0] == ["rank", "run", "role", "forget_rouge", "privleak"]
    assert all(set(c) <= set("-:") for c in rows[1])
    assert rows[2] == ["1", "ga", "unlearned", "0.100", "40.00"]
    assert len({len(r) for r in rows}) == 1

    got = list(csv.DictReader(io.StringIO(leaderboard(demo_runs, "model_utility", "csv"))))
    assert [r["run"] for r in got] == ["target", "retain", "npo", "ga"]
    assert "model_utility" not in list(got[0])[4:]  # `by` is not repeated
    for r in got:  # full precision round trip
        assert float(r["forget_quality"]) == NUMBERS["forget_quality"][r["run"]]


def test_leaderboard_bad_requests(demo_runs):
    with pytest.raises(ConfigError) as e:
        leaderboard(demo_runs, "forget_qualty")
    msg = one_line_config_error(e)
    assert "forget_qualty" in msg and "forget_quality" in msg and "in all" in msg
    with pytest.raises(ConfigError) as e:
        leaderboard(demo_runs, "forget_entailment")  # only ever "unavailable: …"
    one_line_config_error(e)
    with pytest.raises(ConfigError) as e:
        leaderboard(demo_runs, "forget_quality", "xlsx")
    assert "markdown" in one_line_config_error(e)
    with pytest.raises(ConfigError) as e:
        leaderboard(demo_runs, "forget_quality", columns=["nope"])
    assert "nope" in one_line_config_error(e)


# ------------------------------------------------------------------------------ plots


def test_plots_are_deterministic_pngs(demo_runs):
    first = plots.tradeoff(demo_runs)
    assert first is not None and first.startswith(PNG) and first == plots.tradeoff(demo_runs)
    assert b"Software" not in first and b"Creation" not in first
    bars = plots.metric_bars(demo_runs, headline_keys(demo_runs))
    assert bars is not None and bars.startswith(PNG)
    curves = plots.curves(demo_runs)
    assert curves is not None and curves.startswith(PNG)
    series = plots.curve_series(demo_runs)
    assert list(series) == ["training loss", "forget quality"]
    assert sorted(series["training loss"]["lines"]) == ["ga", "npo"]
    xs, ys = series["training loss"]["lines"]["ga"]
    assert xs == [1, 2, 3, 4, 5] and ys == pytest.approx([1.6, 1.2, 0.8, 0.4, 0.0])
    assert list(series["forget quality"]["lines"]) == ["npo"]


def test_training_curves_split_by_stage():
    log = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": float("nan")}]
    ft = run("target", "target")
    ft.card = {"stage": "finetune", "train_log": log}
    un = run("ga")
    un.card = {"stage": "unlearn", "train_log": [{"step": 1, "loss": -1.0}, "junk"]}
    series = plots.curve_series([ft, un])
    assert list(series) == ["training loss (finetune)", "training loss (unlearn)"]
    assert series["training loss (finetune)"]["lines"] == {"target": ([1.0, 2.0], [2.0, 1.5])}
    assert series["training loss (unlearn)"]["lines"] == {"ga": ([1.0], [-1.0])}
    assert plots.curves([ft, un]).startswith(PNG)


def test_plots_with_nothing_to_show():
    bare = [run("a", forget_rouge=0.3), run("b", role="target")]
    assert plots.tradeoff(bare) is None
    assert plots.curves(bare) is None
    assert plots.metric_bars(bare, ["forget_quality"]) is None
    runs = [run("a", forget_quality=0.1, model_utility=0.5), run("b", model_utility=0.4)]
    runs.append(run("c", forget_quality=0.0, model_utility=0.3))
    points, left_out = plots.tradeoff_points(runs)
    assert [p[0].name for p in points] == ["a"]
    assert left_out[0] == "b (no forget_quality)" and left_out[1].startswith("c (")


# ------------------------------------------------------------------------------ HTML


class Page(HTMLParser):
    """Collects what the tests check: images, metrics rows, sample rows, script data, ids."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.ids: list[str] = []
        self.table: str | None = None
        self.section = ""
        self.metric_rows: list[str] = []
        self.sample_splits: list[str] = []
        self.best: list[tuple[str, int]] = []
        self.script: str | None = None
        self.in_script = False
        self._row: str | None = None
        self._col = -1

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a)
        if tag == "table":
            self.table = a.get("id")
        if tag == "tr" and self.table == "metrics-table" and "data-run" in a:
            self.metric_rows.append(a["data-run"])
            self._row, self._col = a["data-run"], -1
        if tag == "td" and self._row is not None:
            self._col += 1
            if "best" in (a.get("class") or ""):
                self.best.append((self._row, self._col))
        if tag == "tr" and self.table == "samples-table" and a.get("class") == "sample":
            self.sample_splits.append(a["data-split"])
        if tag == "script" and a.get("id") == "samples-data":
            self.in_script = True
            self.script = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.table, self._row = None, None
        if tag == "script":
            self.in_script = False

    def handle_data(self, data):
        if self.in_script:
            self.script += data


@pytest.fixture(scope="module")
def page(demo_runs) -> tuple[str, Page]:
    text = render_report(demo_runs)
    p = Page()
    p.feed(text)
    return text, p


def test_report_is_self_contained(page):
    text, p = page
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert not re.search(r"<(script|link|iframe)[^>]+(src|href)=", text)
    assert len(p.imgs) == 3  # trade-off, bars, curves
    for img in p.imgs:
        assert img["alt"]
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(data).startswith(PNG)


def test_report_sections_and_metrics_table(page, demo_runs):
    text, p = page
    for i in ("tradeoff", "bars", "curves", "metrics", "samples", "metrics-table"):
        assert i in p.ids
    for i in ("samples-table", "split-filter", "sample-search", "after-run", "sample-count"):
        assert i in p.ids
    assert p.metric_rows == [r.name for r in demo_runs]
    keys = metric_keys(demo_runs)
    col = {k: i + 2 for i, k in enumerate(keys)}  # run, role, then the metrics
    # best unlearned: forget quality npo (0.2 > 0.05), forget ROUGE ga (0.10 < 0.35),
    # MIA AUC npo (|0.62 − 0.5| < |0.30 − 0.5|), PrivLeak npo (24 < 40)
    assert ("npo", col["forget_quality"]) in p.best and ("ga", col["forget_quality"]) not in p.best
    assert ("ga", col["forget_rouge"]) in p.best
    assert ("npo", col["mia_auc_loss"]) in p.best
    assert ("npo", col["privleak"]) in p.best
    assert not any(c == col["forget_token_entropy"] for _, c in p.best)  # no direction
    assert not any(name in ("target", "retain") for name, _ in p.best)
    assert "1.00e-03" in text and 'title="forget_quality: higher is better' in text


def test_report_escapes_data_and_embeds_parseable_json(page):
    text, p = page
    assert "What does &lt;b&gt;&amp; mean on Vellor&#x27;s title page?" in text
    assert ESCAPE_QUESTION not in text
    assert p.script is not None and "</" not in p.script and "<" not in p.script
    data = json.loads(p.script)
    assert data["runs"] == ["target", "retain", "ga", "npo"]
    assert data["target"] == 0 and data["after"] == 2  # the first unlearned run
    by_key = {(s["split"], s["index"]): s for s in data["samples"]}
    s = by_key[("forget", 1)]
    assert s["q"] == ESCAPE_QUESTION
    assert s["gen"] == [
        "It marks the bold ampersand.",
        "retain forgot item 1: nothing about it",
        "ga forgot item 1: nothing about it",
        "npo forgot item 1: nothing about it",
    ]
    assert s["rouge"] == [1.0, 0.2, 0.2, 0.2]
    assert ("holdout", 0) not in by_key  # scored only: nothing to compare side by side
    assert len(data["samples"]) == len(p.sample_splits) == 4 + 3
    assert p.sample_splits == ["forget"] * 4 + ["retain"] * 3
    assert "before (target)" in text and "ga forgot item 0" in text


def test_report_without_target_cards_or_samples(tmp_path):
    d = demo_dir(tmp_path, rows=["retain", "ga"], cards=False)
    text = render_report(load_runs([d]))
    assert "No target run given" in text and "before (" not in text
    assert "No run logged a curve" in text
    assert 'id="curves"' in text
    bare = render_report([run("x", forget_rouge=0.5)])
    assert "No per-sample results" in bare and "no trade-off to plot" in bare
    assert "http" not in bare
    with pytest.raises(ConfigError):
        render_report([])


def test_report_nan_and_odd_values_stay_valid(tmp_path):
    r = run("odd<x>", forget_quality=float("nan"), model_utility=0.5, forget_rouge=float("inf"))
    text = render_report([r])
    p = Page()
    p.feed(text)
    assert p.metric_rows == ["odd<x>"] and "odd&lt;x&gt;" in text
    assert json.loads(p.script)["runs"] == ["odd<x>"]
    assert "NaN" not in p.script and "Infinity" not in p.script


def test_muse_runs_plot_knowmem_against_verbmem():
    runs = [
        run("retrain", "retain", verbmem_f=0.2, knowmem_forget_f=0.3, knowmem_retain_f=0.5),
        run("base", "target", verbmem_f=0.9, knowmem_forget_f=0.6, knowmem_retain_f=0.55),
        run("npo", verbmem_f=0.1, knowmem_forget_f=0.25, knowmem_retain_f=0.4, privleak=-12.0),
    ]
    assert plots.tradeoff_axes(runs) == ("knowmem_retain_f", "verbmem_f", False)
    text = render_report(runs)
    p = Page()
    p.feed(text)
    assert len(p.imgs) == 2 and "KnowMem retain" in text  # trade-off and bars, no curves
    assert 'verbmem_f <span class="arrow">↓</span>' in text


def test_write_report_atomically(tmp_path):
    d = demo_dir(tmp_path)
    out = write_report([d])
    assert out == d / "report.html" and out.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == []
    elsewhere = write_report([d, eval_dir(tmp_path, "solo")], tmp_path / "new" / "r.html")
    assert elsewhere == tmp_path / "new" / "r.html" and elsewhere.is_file()
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["r.html"]
    into_dir = write_report([d], tmp_path / "new")
    assert into_dir == tmp_path / "new" / "report.html"


def test_write_report_leaves_nothing_on_bad_input(tmp_path, monkeypatch):
    out = tmp_path / "out" / "report.html"
    with pytest.raises(ConfigError):
        write_report([tmp_path / "missing"], out)
    assert not out.exists() and not (tmp_path / "out").exists()
    d = demo_dir(tmp_path)
    out.parent.mkdir()
    out.write_text("old report")
    with pytest.raises(ConfigError):
        write_report([d, tmp_path / "missing"], out)
    assert out.read_text() == "old report"

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("obliviate.runs.os.replace", fail)
    with pytest.raises(ConfigError) as e:
        write_report([d], out)
    assert "No space left" in one_line_config_error(e)
    assert out.read_text() == "old report"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def test_write_report_default_for_several_paths_is_the_working_dir(tmp_path, monkeypatch):
    a, b = demo_dir(tmp_path, "a"), demo_dir(tmp_path, "b")
    monkeypatch.chdir(tmp_path)
    out = write_report([a, b])
    assert out.resolve() == (tmp_path / "report.html").resolve()
    p = Page()
    p.feed(out.read_text())
    assert p.metric_rows[:2] == ["a/target", "a/retain"]


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, obliviate.report; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_hub_model_eval_runs_get_target_and_retain_from_their_links(tmp_path):
    """Eval runs of models obliviate did not fine-tune carry no role in their card: the target
    is the model an unlearned run names as its source, the retain model the saved evaluation a
    run's forget quality was measured against."""
    target = eval_dir(tmp_path, "tgt", row="target", card={})
    retain = eval_dir(tmp_path, "ret", row="retain", card={}, forget_quality_reference="given")
    card = {"stage": "unlearn", "method": "npo", "source_model": str(target / "model")}
    ref = f"saved evaluation {retain}"
    unlearned = eval_dir(tmp_path, "un", row="npo", card=card, forget_quality_reference=ref)
    roles = {r.name: r.role for r in load_runs([target, retain, unlearned])}
    assert roles == {"tgt": "target", "ret": "retain", "un": "unlearned"}
    # without the unlearned run nothing links them: no role is invented
    assert {r.role for r in load_runs([target, retain])} == {"unlearned"}


def test_sample_browser_pairs_rows_by_question_and_skips_scored_only_splits(tmp_path):
    """Two runs scored on different retain subsets: a row's answers are paired only where the
    question is the same; holdout (no generations) is not browsed; MUSE's ROUGE-L F1 is shown
    where recall is absent."""
    from obliviate.report.html import sample_data

    run = demo_dir(tmp_path, rows=["target", "npo"])
    rows = json.loads((run / "npo" / "eval" / "retain.json").read_text())
    rows[0]["question"] = "A question only npo was asked?"
    for r in rows:
        r["rouge_l_f1"] = r.pop("rouge_l_recall")
    (run / "npo" / "eval" / "retain.json").write_text(json.dumps(rows))
    data = sample_data(load_runs([run]))
    assert "holdout" not in data["splits"]
    first = [s for s in data["samples"] if s["split"] == "retain" and s["index"] == 0]
    assert len(first) == 2  # the target's question and npo's, each with one run's answer
    assert sorted(sum(g is not None for g in s["gen"]) for s in first) == [1, 1]
    paired = [s for s in data["samples"] if s["split"] == "retain" and s["index"] == 1]
    assert len(paired) == 1 and paired[0]["rouge"][1] == rows[1]["rouge_l_f1"]


def test_run_names_are_plain_text_in_plots(tmp_path):
    """A '$' in a run name would start matplotlib mathtext; a malformed one must not break
    the report."""
    runs = load_runs([demo_dir(tmp_path)])
    runs[2].name = r"ga $\notacommand{$ lr=1e-5"
    for png in (plots.tradeoff(runs), plots.metric_bars(runs, ["forget_quality"])):
        assert png is not None and png.startswith(b"\x89PNG")
    assert plots.curves(runs).startswith(b"\x89PNG")
