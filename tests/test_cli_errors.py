"""Bad input gets one line on stderr and exit code 2, with no partial output left behind."""

import subprocess
import sys

import pytest

from obliviate.cli import main


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["unlearn", "unlearn.lr=abc"], "unlearn.lr"),
        (["eval", "missing.yaml"], "config file not found"),
        (["eval", "--model", "/nonexistent/model"], "model directory not found"),
        (["demo", "demo.methods=[]"], "demo.methods"),
        (
            ["unlearn", "benchmark.name=tofu", "benchmark.path=/no/such/dir", "model.path=org/m"],
            "benchmark directory not found",
        ),
        (
            ["generate", "benchmark.name=tofu", "benchmark.path=/tmp", "--out", "/tmp/x"],
            "generate writes the synthetic benchmark",
        ),
        (["eval", "benchmark.name=nope"], "not a known benchmark"),
        (["eval", "benchmark.name=muse"], "benchmark.path is required"),
        (["eval", "eval.metrics=[rouge_l_recal]"], "unknown metric"),
        (["eval", "model.path=/tmp"], "has no config.json"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    code, out = _run(args + [f"run_dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    lines = [line for line in out.err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and needle in lines[-1]
    assert not (tmp_path / "run" / "summary.json").exists()


def test_methods_listing():
    out = subprocess.run(
        [sys.executable, "-m", "obliviate", "methods"], capture_output=True, text=True, check=True
    )
    for m in ("ga", "graddiff", "npo"):
        assert m in out.stdout
