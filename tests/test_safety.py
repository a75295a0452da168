"""Failure behaviour end to end: divergence stops a run (exit 3, no model), a SIGKILLed run resumes
to the same weights, an interrupted --overwrite keeps the old result, logs stay off stdout.

The runs use the miniature experiment (tests/mini.py) through real ``obliviate`` processes, since
SIGKILL and pipes are process-level behaviour.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mini import MINI
from safetensors.torch import load_file

from obliviate.runs import model_fingerprint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "OBLIVIATE_CACHE": str(cache), "OMP_WAIT_POLICY": "PASSIVE"}


def obliviate(env, *args, kill_at=None, cwd=None):
    e = dict(env)
    if kill_at is not None:
        e["OBLIVIATE_TEST_KILL_AT_STEP"] = str(kill_at)
    return subprocess.run(
        [sys.executable, "-m", "obliviate", *args],
        capture_output=True,
        text=True,
        env=e,
        cwd=cwd,
    )


def weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def visible(run: Path) -> list[str]:
    """A run dir's results: not the hidden stage, not the command log."""
    return sorted(p.name for p in run.iterdir() if p.name[0] != "." and p.name != "obliviate.log")


GRADDIFF = [*MINI, "unlearn.method=graddiff", "unlearn.save_every=2"]


def test_sigkill_then_resume_gives_the_uninterrupted_weights_and_metrics(env, tmp_path):
    """GradDiff (retain pairs drawn per step) killed at the end of step 6, before its step-6
    checkpoint is saved: --resume restarts from checkpoint 4, mid-epoch, and must reproduce the
    uninterrupted run bit for bit."""
    full, res = tmp_path / "full", tmp_path / "res"
    assert obliviate(env, "unlearn", *GRADDIFF, f"run_dir={full}").returncode == 0

    killed = obliviate(env, "unlearn", *GRADDIFF, f"run_dir={res}", kill_at=6)
    assert killed.returncode == -9
    assert not (res / "model").exists()  # nothing poses as a result
    ckpts = res / ".partial-unlearn" / "work" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "checkpoint-4"]

    resumed = obliviate(env, "unlearn", *GRADDIFF, f"run_dir={res}", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the interrupted unlearn" in resumed.stderr
    assert resumed.stdout.strip() == str(res / "model")
    assert same_weights(full / "model", res / "model")
    assert visible(res) == ["config.yaml", "model"] and not (res / ".partial-unlearn").exists()
    card = lambda d: json.loads((d / "model" / "obliviate.json").read_text())  # noqa: E731
    assert card(res)["steps"] == card(full)["steps"] == 12

    summaries = []
    for name in ("full", "res"):
        out = obliviate(
            env,
            "eval",
            *MINI,
            f"model.path={tmp_path / name / 'model'}",
            "eval.cache=false",
            f"run_dir={tmp_path / (name + '-eval')}",
        )
        assert out.returncode == 0, out.stderr
        s = json.loads((tmp_path / (name + "-eval") / "summary.json").read_text())
        summaries.append({k: v for k, v in s.items() if isinstance(v, float) and "second" not in k})
    assert summaries[0] == summaries[1] and "forget_quality" in summaries[0]


def test_resume_refuses_changed_settings(env, tmp_path):
    run = tmp_path / "run"
    assert obliviate(env, "unlearn", *GRADDIFF, f"run_dir={run}", kill_at=3).returncode == -9
    out = obliviate(env, "unlearn", *GRADDIFF, "unlearn.lr=1e-3", f"run_dir={run}", "--resume")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: --resume: the settings differ")
    # a start without --resume clears the interrupted run and trains afresh
    fresh = obliviate(env, "unlearn", *GRADDIFF, "unlearn.lr=1e-3", f"run_dir={run}")
    assert fresh.returncode == 0 and "removing the partial outputs" in fresh.stderr
    assert visible(run) == ["config.yaml", "model"] and not (run / ".partial-unlearn").exists()


def test_finetune_resumes_from_its_cache_checkpoint(env, tmp_path):
    """A killed fine-tuning leaves its checkpoints in the cache's temp folder; --resume adopts
    it and ends with the weights of an uninterrupted fine-tuning (another cache)."""
    ft = [*MINI, "finetune.save_every=3", "finetune.epochs=3"]
    other = {**env, "OBLIVIATE_CACHE": str(tmp_path / "other-cache")}
    assert obliviate(other, "finetune", *ft, f"run_dir={tmp_path / 'a'}").returncode == 0
    cache = tmp_path / "cache"
    mine = {**env, "OBLIVIATE_CACHE": str(cache)}
    assert obliviate(mine, "finetune", *ft, f"run_dir={tmp_path / 'b'}", kill_at=7).returncode == -9
    assert len(list(cache.glob("finetune/*.tmp*"))) == 1  # kept: it holds a checkpoint
    assert visible(tmp_path / "b") == []  # only the killed command's hidden stage
    out = obliviate(mine, "finetune", *ft, f"run_dir={tmp_path / 'b'}", "--resume")
    assert out.returncode == 0, out.stderr
    assert visible(tmp_path / "b") == ["config.yaml", "model"]
    assert same_weights(tmp_path / "a" / "model", tmp_path / "b" / "model")
    assert not list(cache.rglob("*.tmp*"))


def test_overwrite_killed_midway_keeps_the_old_result(env, tmp_path):
    run = tmp_path / "run"
    assert obliviate(env, "unlearn", *MINI, f"run_dir={run}").returncode == 0
    before = model_fingerprint(str(run / "model"))
    config = (run / "config.yaml").read_text()

    killed = obliviate(
        env, "unlearn", *MINI, "unlearn.lr=1e-3", f"run_dir={run}", "--overwrite", kill_at=5
    )
    assert killed.returncode == -9
    assert model_fingerprint(str(run / "model")) == before
    assert (run / "config.yaml").read_text() == config
    assert visible(run) == ["config.yaml", "model"]

    done = obliviate(env, "unlearn", *MINI, "unlearn.lr=1e-3", f"run_dir={run}", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert model_fingerprint(str(run / "model")) != before
    assert "lr: 0.001" in (run / "config.yaml").read_text()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "model", "obliviate.log"]


@pytest.mark.parametrize(
    "overrides, why",
    [
        (["unlearn.params.gamma=1e38"], "the loss is inf"),  # finite, in range, overflows fp32
        (["model.dtype=float16", "unlearn.lr=10"], "diverged at step"),
        (["unlearn.abort_grad_norm=1e-3"], "exceeds unlearn.abort_grad_norm=0.001"),
    ],
)
def test_divergence_exits_3_and_writes_no_model(env, tmp_path, overrides, why):
    run = tmp_path / "run"
    out = obliviate(env, "unlearn", *MINI, *overrides, "unlearn.save_every=1", f"run_dir={run}")
    assert out.returncode == 3, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unlearning (npo) diverged at step") and why in last
    assert "no model was written" in last and "Traceback" not in out.stderr
    assert out.stdout == ""
    assert not (run / "model").exists()
    # the log keeps the failure and every step before it
    log = (run / "obliviate.log").read_text()
    step = int(re.search(r"diverged at step (\d+)", last).group(1))
    assert f"diverged at step {step}" in log
    assert (f"unlearning (npo) step {step - 1}/" in log) == (step > 1)


def test_eval_overwrite_replaces_every_output(env, tmp_path):
    run = tmp_path / "run"
    args = [*MINI, f"run_dir={run}", "eval.metrics=[rouge_l_recall]"]
    assert obliviate(env, "eval", *args).returncode == 0
    (run / "eval" / "stale_split.json").write_text("[]")
    again = obliviate(env, "eval", *args)
    assert again.returncode == 2 and "already holds results" in again.stderr
    assert obliviate(env, "eval", *args, "--overwrite").returncode == 0
    assert not (run / "eval" / "stale_split.json").exists()
    assert visible(run) == ["config.yaml", "eval", "summary.json"]


def test_collapsed_model_is_scored(env, tmp_path):
    """GA at lr 1 collapses the model (finite weights, answers of probability ~0): its truth
    ratios saturate instead of overflowing, and eval reports the numbers."""
    ga = tmp_path / "ga"
    assert obliviate(env, "unlearn", *MINI, "unlearn.method=ga", "unlearn.lr=1", f"run_dir={ga}")
    out = obliviate(env, "eval", *MINI, f"model.path={ga / 'model'}", f"run_dir={tmp_path / 'e'}")
    assert out.returncode == 0, out.stderr
    s = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert s["forget_prob"] < 0.01 and s["forget_quality"] is not None
    # the table goes to stdout, the progress to stderr
    assert out.stdout.splitlines()[0].startswith("model") and len(out.stdout.splitlines()) == 3


def test_unlearn_stdout_is_only_the_model_path(env, tmp_path):
    out = obliviate(env, "unlearn", *MINI, f"run_dir={tmp_path / 'r'}")
    assert out.returncode == 0
    assert out.stdout == f"{tmp_path / 'r' / 'model'}\n"
    # no HF loss dicts or progress bars on the terminal (stderr is a pipe: status lines only) ...
    assert "{'loss'" not in out.stderr and "it/s]" not in out.stderr and "━" not in out.stderr
    assert all(line.startswith("[obliviate] ") for line in out.stderr.splitlines())
    # ... every step is in the run's log and in the model card's training curve
    log = (tmp_path / "r" / "obliviate.log").read_text()
    card = json.loads((tmp_path / "r" / "model" / "obliviate.json").read_text())
    assert f"unlearning (npo) step {card['steps']}/{card['steps']}: loss=" in log
    assert [r["step"] for r in card["train_log"]] == list(range(1, card["steps"] + 1))


def test_closed_pipe_is_quiet_and_version():
    """The reader of stdout goes away before anything is written (``obliviate methods | head``
    with a fast head): no traceback, exit 141 like a shell tool killed by SIGPIPE."""
    p = subprocess.Popen(
        [sys.executable, "-m", "obliviate", "methods"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait() == 141 and err == ""
    v = subprocess.run(
        [sys.executable, "-m", "obliviate", "--version"], capture_output=True, text=True
    )
    assert v.returncode == 0 and v.stdout.startswith("obliviate ")


def test_killed_demo_leaves_the_previous_demo_whole(env, tmp_path):
    run = tmp_path / "demo"
    first = obliviate(env, "demo", *MINI, "demo.methods=[ga]", f"run_dir={run}")
    assert first.returncode == 0, first.stderr
    files = {
        p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name in visible(run)
    }
    assert set(files) == {"config.yaml", "summary.json", "table.txt", "report.html"}

    killed = obliviate(
        env, "demo", *MINI, "demo.methods=[ga]", "unlearn.lr=1e-3", f"run_dir={run}", kill_at=3
    )  # the new GA run dies mid-training
    assert killed.returncode == -9
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name in files} == files

    other = obliviate(env, "demo", *MINI, "demo.methods=[graddiff]", f"run_dir={run}")
    assert other.returncode == 0, other.stderr
    assert visible(run) == [
        "config.yaml",
        "graddiff",
        "report.html",
        "retain",
        "summary.json",
        "table.txt",
        "target",
    ]
    assert other.stdout == (run / "table.txt").read_text() + f"report: {run / 'report.html'}\n"
