"""The progress display, the run log and model cards (no training)."""

from __future__ import annotations

import json
import sys

import pytest

from obliviate import progress
from obliviate.errors import ConfigError
from obliviate.models.card import read_card, record_evaluation, write_card
from obliviate.runs import model_fingerprint


@pytest.fixture(autouse=True)
def _reset():
    yield
    progress.set_enabled(None)


def test_a_drawn_stage_shows_each_pass_and_ends_full(capsys):
    progress.set_enabled(True)
    with progress.stage("evaluating npo"):
        assert list(progress.track(range(3), "scoring 3 sequences", 3)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "━" in err and "evaluating npo" in err and "3/3" in err
    assert capsys.readouterr().out == ""  # the display never touches stdout


def test_a_failed_stage_stops_where_it_was(capsys):
    progress.set_enabled(True)
    with pytest.raises(RuntimeError), progress.stage("unlearning (npo)") as st:
        st.begin("", 10)
        st.update(4, info="loss 1.5  lr 1e-05")
        raise RuntimeError("diverged")
    err = capsys.readouterr().err
    assert "4/10" in err and "10/10" not in err and "loss 1.5" in err


def test_nested_stages_share_the_outer_bar(capsys):
    """rich allows one live display: a stage opened inside a drawn one (the benchmark loaded
    lazily during an evaluation) must not start a second."""
    progress.set_enabled(True)
    with progress.stage("outer") as outer:
        with progress.stage("inner") as inner:
            assert inner is outer
            list(progress.track(range(2), "pass", 2))
        progress.log("a status line above the bar")
    err = capsys.readouterr().err
    assert "a status line above the bar" in err and "inner" not in err


def test_bars_only_on_a_terminal_in_the_main_process(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress.enabled()
    monkeypatch.setenv(progress.ENV, "0")
    assert not progress.enabled()
    monkeypatch.delenv(progress.ENV)
    monkeypatch.setenv("RANK", "1")
    assert not progress.enabled() and not progress.main_process()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setenv("RANK", "0")
    assert not progress.enabled()


def test_quiet_display_is_plain_status_lines(capsys):
    progress.set_enabled(False)
    with progress.stage("fine-tuning"):
        list(progress.track(range(5), "pass", 5))
        progress.log("hello")
    assert capsys.readouterr().err == "[obliviate] hello\n"


def test_no_progress_flag(tmp_path):
    from obliviate.cli import run

    assert run(["generate", "--no-progress", "--out", str(tmp_path / "b")]) == 0
    assert not progress.enabled()


def test_log_file_keeps_lines_and_failures(tmp_path):
    with progress.log_file(tmp_path):
        progress.log("status")
        progress.detail("step 1: loss=2.0")
    with pytest.raises(ValueError), progress.log_file(tmp_path):
        raise ValueError("a crash")
    text = (tmp_path / progress.LOG_NAME).read_text()
    assert "[obliviate] status" in text and "step 1: loss=2.0" in text
    assert "failed: ValueError: a crash" in text and text.count("$ obliviate") == 2


def test_refused_input_rolls_the_log_back_unless_someone_else_wrote(tmp_path):
    log = tmp_path / progress.LOG_NAME
    log.write_text("before\n")
    bad = lambda e: isinstance(e, ConfigError)  # noqa: E731
    with pytest.raises(ConfigError), progress.log_file(tmp_path, discard_on=bad):
        progress.log("checking inputs")
        raise ConfigError("bad", "fix")
    assert log.read_text() == "before\n"
    with pytest.raises(ConfigError), progress.log_file(tmp_path, discard_on=bad):
        with log.open("a") as other:  # another command appends meanwhile
            other.write("another process\n")
        raise ConfigError("bad", "fix")
    assert "another process" in log.read_text()


def test_card_update_keeps_the_model_fingerprint(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    write_card(model, {"stage": "unlearn", "method": "npo", "params": {"beta": 0.1}})
    before = model_fingerprint(str(model))
    summary = {"forget_quality": 0.5, "model_utility": 0.7, "privleak": float("inf")}
    assert record_evaluation(model, summary, tmp_path / "run")
    assert model_fingerprint(str(model)) == before  # a cached evaluation stays valid
    card = read_card(model)
    assert card["evaluation"]["metrics"] == {"forget_quality": 0.5, "model_utility": 0.7}
    readme = (model / "README.md").read_text(encoding="utf-8")
    assert "| forget quality ↑ | 0.5 |" in readme and "| `beta` | `0.1` |" in readme
    json.dumps(card, allow_nan=False)  # no Infinity in the JSON card
    (model / "model.safetensors").write_bytes(b"other weights")
    assert model_fingerprint(str(model)) != before


def test_cards_are_only_written_into_obliviate_model_dirs(tmp_path):
    assert not record_evaluation("org/hub-model", {"forget_quality": 0.5}, tmp_path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert not record_evaluation(foreign, {"forget_quality": 0.5}, tmp_path)
    assert list(foreign.iterdir()) == []
