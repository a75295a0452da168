"""Staged run directories, cache temp folders and checkpoint bookkeeping (no training)."""

import os
import subprocess
import sys

import pytest

from obliviate.cache import Cache, pid_alive
from obliviate.errors import ConfigError
from obliviate.runs import staged_run
from obliviate.training.guard import COMPLETE, items_consumed, latest_checkpoint


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_outputs_appear_only_on_success_and_replace_everything_owned(tmp_path):
    run = tmp_path / "run"
    with staged_run(run, "eval", ("eval", "summary.json"), "summary.json") as st:
        (st.out / "eval").mkdir()
        (st.out / "eval" / "forget.json").write_text("[1]")
        (st.out / "summary.json").write_text("{}")
        assert not run.joinpath("summary.json").exists()  # not before the end
    assert sorted(p.name for p in run.iterdir()) == ["eval", "obliviate.log", "summary.json"]

    (run / "eval" / "stale.json").write_text("[]")
    (run / "notes.txt").write_text("the user's")
    with staged_run(run, "eval", ("eval", "summary.json"), "summary.json", overwrite=True) as st:
        (st.out / "eval").mkdir()
        (st.out / "summary.json").write_text('{"new": 1}')
    assert sorted(p.name for p in run.iterdir()) == [
        "eval",
        "notes.txt",
        "obliviate.log",
        "summary.json",
    ]
    assert list((run / "eval").iterdir()) == []  # the stale split file went with the old eval/
    assert (run / "summary.json").read_text() == '{"new": 1}'


def test_finished_run_refused_and_failure_keeps_old_result(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model").mkdir()
    with (
        pytest.raises(ConfigError, match="already holds results"),
        staged_run(run, "unlearn", ("model",), "model"),
    ):
        pass
    with (
        pytest.raises(RuntimeError),
        staged_run(run, "unlearn", ("model",), "model", overwrite=True) as st,
    ):
        (st.out / "model").mkdir()
        raise RuntimeError("killed in the middle")
    # old result, no stage left; the refused first attempt left no log, the failed one did
    assert sorted(p.name for p in run.iterdir()) == ["model", "obliviate.log"]
    log = (run / "obliviate.log").read_text()
    assert "killed in the middle" in log and "already holds results" not in log


def test_failure_in_a_new_run_dir_leaves_only_its_log(tmp_path):
    run = tmp_path / "a" / "run"
    with pytest.raises(ConfigError), staged_run(run, "unlearn", ("model",), "model"):
        raise ConfigError("bad data", "fix it")  # refused input: nothing at all is left
    assert not run.exists()
    with pytest.raises(ValueError), staged_run(run, "unlearn", ("model",), "model"):
        raise ValueError("a crash")
    assert [p.name for p in run.iterdir()] == ["obliviate.log"]
    assert "failed: ValueError: a crash" in (run / "obliviate.log").read_text()


def test_refused_input_puts_an_existing_log_back(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "obliviate.log").write_text("earlier lines\n")
    with pytest.raises(ConfigError), staged_run(run, "eval", (), "summary.json"):
        raise ConfigError("bad data", "fix it")
    assert (run / "obliviate.log").read_text() == "earlier lines\n"


def test_stage_with_checkpoint_survives_failure_for_resume(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), staged_run(run, "unlearn", ("model",), "model") as st:
        ck = st.work / "checkpoints" / "checkpoint-2"
        ck.mkdir(parents=True)
        (ck / COMPLETE).write_text("ok")
        st.check_resume_key({"lr": 1})
        raise KeyboardInterrupt
    with staged_run(run, "unlearn", ("model",), "model", resume=True) as st:
        assert st.resumed and (st.work / "checkpoints" / "checkpoint-2").is_dir()
        with pytest.raises(ConfigError, match="settings differ"):
            st.check_resume_key({"lr": 2})
        st.check_resume_key({"lr": 1})
        (st.out / "model").mkdir()
    assert sorted(p.name for p in run.iterdir()) == ["model", "obliviate.log"]


def test_run_dir_problems_are_one_line_errors(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"), staged_run(f, "eval", (), "summary.json"):
        pass
    with (
        pytest.raises(ConfigError, match="cannot be created"),
        staged_run(f / "run", "eval", (), "summary.json"),
    ):
        pass


def test_a_live_writer_is_not_disturbed(tmp_path):
    run = tmp_path / "run"
    stage = run / ".partial-unlearn"
    stage.mkdir(parents=True)
    (stage / "pid").write_text(f"{os.getppid()}\n")  # alive, and not us
    with (
        pytest.raises(ConfigError, match=f"pid {os.getppid()}"),
        staged_run(run, "unlearn", ("model",), "model"),
    ):
        pass
    (stage / "pid").write_text(f"{dead_pid()}\n")
    with staged_run(run, "unlearn", ("model",), "model") as st:  # a dead one's is cleared
        (st.out / "model").mkdir()
    assert sorted(p.name for p in run.iterdir()) == ["model", "obliviate.log"]


def test_cache_clears_dead_temp_dirs_and_resume_adopts_one(tmp_path):
    cache = Cache(tmp_path)
    final = cache.path("finetune", {"k": 1})
    pid = dead_pid()
    stale = final.with_name(final.name + f".tmp{pid}")
    (stale / "trainer" / "checkpoint-3").mkdir(parents=True)
    (stale / "trainer" / "checkpoint-3" / COMPLETE).write_text("ok")
    other = final.with_name("0123456789abcdef" + f".tmp{pid}")  # another entry's, no checkpoint
    other.mkdir()
    seen = []

    def build(tmp):
        seen.append(sorted(p.name for p in (tmp / "trainer").iterdir()))
        (tmp / "model").mkdir()

    path, hit = cache.get_or_build("finetune", {"k": 1}, build, resume=True)
    assert not hit and seen == [["checkpoint-3"]]  # adopted
    assert not other.exists() and not stale.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [final.name]


def test_pid_alive():
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid())


@pytest.mark.parametrize(
    "steps, n, batch, accum, expected",
    [
        (0, 10, 4, 1, 0),
        (2, 10, 4, 1, 8),  # two full batches
        (3, 10, 4, 1, 10),  # the epoch's last batch holds 2
        (4, 10, 4, 1, 14),  # one epoch (10) + one batch
        (6, 10, 4, 1, 20),
        (1, 10, 4, 2, 8),  # two batches a step
        (2, 10, 4, 2, 10),  # the last step takes the one batch left
        (3, 10, 4, 2, 18),
    ],
)
def test_items_consumed(steps, n, batch, accum, expected):
    assert items_consumed(steps, n, batch, accum) == expected


def test_latest_checkpoint_ignores_and_removes_incomplete(tmp_path):
    for step, done in ((2, True), (4, True), (6, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if done:
            (d / COMPLETE).write_text("ok")
    assert latest_checkpoint(tmp_path).name == "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()
    assert latest_checkpoint(tmp_path / "missing") is None
