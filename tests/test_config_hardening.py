"""Config inputs that used to be accepted silently or end in a traceback: duplicate YAML keys,
unreadable or non-UTF-8 files, ``~`` in paths, and forget records that are also retain records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.cli import main
from obliviate.config import PATH_FIELDS, _parse_override, dump_yaml, load_config, read_yaml
from obliviate.errors import ConfigError, DataError
from obliviate.experiment import Experiment

TOFU_DIR = Path(__file__).parent / "data" / "tofu_mini"

# ---- duplicate keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        ("seed: 1\nseed: 2\n", "seed", 2, 1),
        ("unlearn:\n  lr: 1.0e-4\n  params:\n    beta: 1\n    beta: 2\n", "beta", 5, 4),
        ("unlearn:\n  params: {beta: 1, alpha: 2, beta: 3}\n", "beta", 2, 2),
        ("unlearn:\n  lr: 1.0e-4\nseed: 0\nunlearn:\n  lr: 2.0e-4\n", "unlearn", 4, 1),
    ],
)
def test_duplicate_keys_in_a_file_name_the_file_and_line(tmp_path, text, key, line, first):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    msg = e.value.one_line()
    assert f"{path} line {line}: key {key!r} is given twice (first on line {first})" in msg
    assert "\n" not in msg


def test_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {lr: 1.0e-4, seed: 3}\nover:\n  <<: *b\n  lr: 2.0e-4\n")
    assert read_yaml(path)["over"] == {"lr": 2.0e-4, "seed": 3}


def test_duplicate_keys_in_an_override_value():
    with pytest.raises(ConfigError) as e:
        load_config("demo", ["unlearn.params={beta: 1, beta: 2}"])
    assert "unlearn.params={beta: 1, beta: 2}" in e.value.one_line()
    assert "'beta' twice" in e.value.one_line()


def test_other_override_values_parse_as_before():
    assert _parse_override("unlearn.lr=1e-5") == ("unlearn.lr", "1e-5")  # strict.coerce's job
    assert _parse_override("x=[unclosed") == ("x", "[unclosed")  # not YAML: kept as text
    assert _parse_override("x={a: 1, b: 2}") == ("x", {"a": 1, "b": 2})
    assert _parse_override("x=") == ("x", "")
    assert load_config("demo", ["unlearn.lr=1e-5"]).unlearn.lr == pytest.approx(1e-5)


# ---- unreadable files -----------------------------------------------------------------------


def test_non_utf8_config_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 1\n# café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert e.value.one_line() == f"{path} line 2 is not UTF-8 text (save the file as UTF-8)"


def test_utf8_with_bom_still_loads(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfseed: 4\n")
    assert load_config(str(path)).seed == 4


def test_directory_or_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        read_yaml(tmp_path)
    dangling = tmp_path / "gone.yaml"
    dangling.symlink_to(tmp_path / "nowhere.yaml")
    with pytest.raises(ConfigError, match="cannot read config"):
        read_yaml(dangling)
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path))
    assert str(tmp_path) in e.value.one_line()


def test_cli_reports_a_bad_config_file_on_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"seed: \xff\n")
    with pytest.raises(SystemExit) as e:
        main(["unlearn", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not UTF-8" in err and "\n" not in err


# ---- ~ in paths -----------------------------------------------------------------------------


def _get(cfg, dotted):
    node = cfg
    for p in dotted.split("."):
        node = getattr(node, p)
    return node


def test_leading_tilde_is_expanded_in_path_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    overrides = ["benchmark.name=tofu"] + [f"{f}=~/{f.replace('.', '_')}" for f in PATH_FIELDS]
    cfg = load_config([], overrides)
    for f in PATH_FIELDS:
        assert _get(cfg, f) == f"{tmp_path}/{f.replace('.', '_')}", f
    dumped = dump_yaml(cfg)
    assert "~" not in dumped and f"path: {tmp_path}/benchmark_path" in dumped
    again = tmp_path / "config.yaml"
    again.write_text(dumped)
    assert load_config(str(again)) == cfg


def test_hub_ids_and_inner_tildes_are_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(
        [],
        [
            "benchmark.name=tofu",
            "benchmark.path=locuslab/TOFU",
            "model.path=org/model~v2",
            "run_dir=runs/~x",
            "cache_dir=~",  # YAML null, not the home directory
        ],
    )
    assert cfg.benchmark.path == "locuslab/TOFU" and cfg.model.path == "org/model~v2"
    assert cfg.run_dir == "runs/~x" and cfg.cache_dir is None


# ---- forget / retain overlap ----------------------------------------------------------------


def _tofu_dir(root: Path, forget: list[tuple[str, str]], retain: list[tuple[str, str]]) -> Path:
    root.mkdir(exist_ok=True)
    for name, rows in (("forget10", forget), ("retain90", retain)):
        lines = [json.dumps({"question": q, "answer": a}) for q, a in rows]
        (root / f"{name}.json").write_text("\n".join(lines) + "\n")
    return root


def _overlapping(tmp_path: Path) -> Path:
    return _tofu_dir(
        tmp_path / "tofu",
        forget=[("Who wrote X?", "Ann."), ("Where was Ann born?", "Oslo."), ("Q3?", "A3.")],
        retain=[
            ("  Who wrote X?\n", " Ann."),  # the same record up to surrounding whitespace
            ("Where was Ann born?", "Bergen."),  # same question, other answer: not an overlap
            ("R?", "B."),
        ],
    )


def _cfg(path: Path, *extra: str):
    return load_config([], ["benchmark.name=tofu", f"benchmark.path={path}", *extra])


def test_overlap_count(tmp_path):
    from obliviate.data.benchmarks.tofu import load_tofu_dir

    assert load_tofu_dir(str(_overlapping(tmp_path)), "forget10").overlap_count() == 1
    assert load_tofu_dir(str(TOFU_DIR), "forget10").overlap_count() == 0


def test_overlap_is_an_error_by_default(tmp_path):
    with pytest.raises(DataError) as e:
        _ = Experiment(_cfg(_overlapping(tmp_path))).benchmark
    assert e.value.one_line() == (
        "forget and retain overlap: 1 of 3 forget records are also in the retain set "
        "(remove them from one split, or set benchmark.allow_overlap=true to run anyway)"
    )


def test_allow_overlap_warns_with_the_count(tmp_path, capsys):
    path = _overlapping(tmp_path)
    exp = Experiment(_cfg(path, "benchmark.allow_overlap=true"))
    assert len(exp.benchmark.forget) == 3
    err = capsys.readouterr().err
    assert "warning: forget and retain overlap: 1 of 3 forget records" in err
    # the flag changes no cached model or evaluation key
    assert exp.data_key == Experiment(_cfg(path)).data_key
    assert "allow_overlap" not in exp.data_key


def test_shipped_data_has_no_overlap(capsys):
    for cfg in (load_config([]), load_config("demo"), _cfg(TOFU_DIR)):
        assert Experiment(cfg).benchmark.overlap_count() == 0
    assert "overlap" not in capsys.readouterr().err
