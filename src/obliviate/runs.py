"""Run-directory I/O: staged (all-or-nothing) command outputs, atomic writes, fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate import distributed, progress
from obliviate.cache import holds_checkpoint, pid_alive
from obliviate.config import ExperimentConfig, dump_yaml
from obliviate.errors import ConfigError, ObliviateError
from obliviate.experiment import log


def write_text(path: Path, text: str) -> None:
    """Atomic UTF-8 text write: a hidden ``.<name>.tmp<pid>`` beside ``path``, then a rename, so
    a reader sees the old file or the new one, never half of one. Raises OSError. In a
    multi-process launch only the main process writes (the others skip it)."""
    if distributed.active() and not distributed.is_main():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write."""
    write_text(path, json.dumps(obj, indent=1, default=_json_default, allow_nan=True))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def write_config(cfg: ExperimentConfig, run: Path) -> None:
    """``<run>/config.yaml``: the fully resolved config that produced the run."""
    write_text(run / "config.yaml", dump_yaml(cfg))


@dataclass
class Stage:
    """A command's outputs under construction: ``out`` holds what is swapped into the run dir on
    success, ``work`` what is not (checkpoints, the resume key)."""

    run: Path
    path: Path
    resumed: bool

    @property
    def out(self) -> Path:
        return self.path / "out"

    @property
    def work(self) -> Path:
        return self.path / "work"

    def check_resume_key(self, key: Any) -> None:
        """Record what this run's result depends on; a resumed run must have the same."""
        f = self.work / "key.json"
        text = json.dumps(key, sort_keys=True, default=str)

        def check() -> None:
            if self.resumed and f.is_file() and f.read_text() != text:
                raise ConfigError(
                    f"--resume: the settings differ from those of the interrupted run in {self.run}",
                    "resume with the same config, or drop --resume to start afresh",
                )
            f.write_text(text)

        distributed.on_main(check)  # in a launch: once, by the main process


@contextmanager
def staged_run(
    run: str | Path,
    command: str,
    owns: Iterable[str],
    finished: str,
    overwrite: bool = False,
    resume: bool = False,
) -> Iterator[Stage]:
    """Build a command's outputs in ``<run>/.partial-<command>`` and swap them in on success.

    ``finished`` (an entry such as ``model`` or ``summary.json``) marks a finished run: one is
    refused unless ``overwrite``, and the old result stays in place until the new one is complete.
    The swap replaces every entry in ``owns`` (plus whatever the stage wrote), so stale files never
    survive; ``finished`` leaves first and arrives last, so a run dir without it is never taken
    for a finished one. On failure the stage is removed, unless it holds a complete checkpoint
    (``--resume`` continues from it; a start without ``--resume`` removes it). The run dir's
    writability is checked here, before any heavy work. The command's status lines go to
    ``<run>/obliviate.log`` meanwhile (a failed run's log stays, unless its input was refused: then nothing is left).

    In a multi-process launch every process runs the body in the same stage; the main process
    alone checks, claims, logs and swaps in (:func:`_shared_staged_run`).
    """
    if distributed.active():
        with _shared_staged_run(run, command, owns, finished, overwrite, resume) as stage:
            yield stage
        return
    run = Path(run).expanduser()
    created = _make_run_dir(run)
    try:
        _clear_trash(run)
        if (run / finished).exists() and not overwrite:
            raise ConfigError(
                f"{run} already holds results", "choose another run_dir or pass --overwrite"
            )
        stage = Stage(run, run / f".partial-{command}", resumed=False)
        _claim(stage, command, resume)
        # the log opens once the run dir is this command's (a refused start never touches it)
        with progress.log_file(run, discard_on=_bad_input):
            try:
                yield stage
            except BaseException:
                if not holds_checkpoint(stage.work):
                    shutil.rmtree(stage.path, ignore_errors=True)
                else:
                    (stage.path / "pid").unlink(missing_ok=True)
                    log(f"the partial run is kept in {stage.path}; --resume continues it")
                raise
            _commit(stage, set(owns), finished)
    except BaseException:
        if created and run.is_dir() and not any(run.iterdir()):
            run.rmdir()
        raise


@contextmanager
def _shared_staged_run(
    run: str | Path,
    command: str,
    owns: Iterable[str],
    finished: str,
    overwrite: bool,
    resume: bool,
) -> Iterator[Stage]:
    """:func:`staged_run` for every process of a launch: the main process opens the stage as a
    one-process run would (its checks and refusals reach every process), all processes run the
    body in it, and the main process swaps it in once every process has finished the body (or
    removes it, keeping checkpoints, when any process failed)."""
    opened: list[Any] = []

    def open_stage() -> Stage:
        cm = staged_run(run, command, owns, finished, overwrite, resume)
        stage = cm.__enter__()
        opened.append(cm)
        return stage

    stage = distributed.on_main(open_stage)
    try:
        yield stage
    except BaseException as e:
        distributed.all_ok(False)
        if opened:
            opened[0].__exit__(type(e), e, e.__traceback__)
        raise
    if not distributed.all_ok(True):
        err = distributed.peer_failed(f"writing {stage.run}")
        if opened:
            opened[0].__exit__(type(err), err, None)
        raise err
    distributed.on_main(lambda: opened[0].__exit__(None, None, None))


def _bad_input(e: BaseException) -> bool:
    """Refused input (exit 2): the one-line error says everything, so the log is put back."""
    return isinstance(e, ObliviateError) and e.exit_code == 2


def _make_run_dir(run: Path) -> bool:
    """Create ``run`` if needed (True when created here); one line when that is impossible."""
    if run.exists() and not run.is_dir():
        raise ConfigError(f"run_dir {run} is a file", "choose a directory path for run_dir")
    created = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"run_dir {run} cannot be created: {e.strerror or e}", "choose a writable run_dir"
        ) from None
    return created


def _claim(stage: Stage, command: str, resume: bool) -> None:
    """Take the stage: refuse one a live process holds; keep (``resume``) or clear a dead one's."""
    pid_file = stage.path / "pid"
    if stage.path.exists():
        pid = _read_pid(pid_file)
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            raise ConfigError(
                f"another obliviate process (pid {pid}) is writing {stage.run}",
                "wait for it to finish or choose another run_dir",
            )
        if resume and holds_checkpoint(stage.work):
            stage.resumed = True
            log(f"resuming the interrupted {command} in {stage.run}")
        else:
            log(f"removing the partial outputs of an interrupted {command} in {stage.run}")
            shutil.rmtree(stage.path)
    elif resume:
        log(f"nothing to resume in {stage.run}: starting afresh")
    try:
        stage.out.mkdir(parents=True, exist_ok=True)
        stage.work.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")
    except OSError as e:
        shutil.rmtree(stage.path, ignore_errors=True)
        raise ConfigError(
            f"run_dir {stage.run} is not writable: {e.strerror or e}", "choose a writable run_dir"
        ) from None


def _commit(stage: Stage, owns: set[str], finished: str) -> None:
    new = sorted(p.name for p in stage.out.iterdir())
    replaced = (owns | set(new)) - {finished}
    trash = stage.run / f".trash-{os.getpid()}"
    trash.mkdir(exist_ok=True)
    for name in [finished, *sorted(replaced)]:
        if (stage.run / name).exists() or (stage.run / name).is_symlink():
            os.replace(stage.run / name, trash / name)
    for name in [n for n in new if n != finished] + [n for n in new if n == finished]:
        os.replace(stage.out / name, stage.run / name)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(stage.path, ignore_errors=True)


def _clear_trash(run: Path) -> None:
    for t in run.glob(".trash-*"):
        pid = t.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and pid_alive(int(pid))):
            shutil.rmtree(t, ignore_errors=True)


def _read_pid(f: Path) -> int | None:
    try:
        return int(f.read_text().strip())
    except (OSError, ValueError):
        return None


def model_fingerprint(path: str) -> str | None:
    """SHA-256 over a local model dir's files (names + bytes), leaving out the model card (its
    metrics are added after an evaluation) and hidden files at its top; None for a hub id."""
    from obliviate.models.card import CARD_FILES

    root = Path(path)
    if not root.is_dir():
        return None
    h = hashlib.sha256()

    def counted(p: Path) -> bool:  # not the card, nor a card update's temp file
        return p.is_file() and not (p.parent == root and (p.name in CARD_FILES or p.name[0] == "."))

    files = sorted(filter(counted, root.rglob("*")))
    # hashing a 7B model reads ~14 GB: within one process, files unchanged since the last hash
    # (same names, sizes and modification times) reuse it (a wrapper checks its base per load)
    stats = [(str(f.relative_to(root)), f.stat()) for f in files]
    key = (str(root.resolve()), tuple((n, st.st_size, st.st_mtime_ns) for n, st in stats))
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    _FINGERPRINTS[key] = h.hexdigest()
    return _FINGERPRINTS[key]


_FINGERPRINTS: dict[tuple, str] = {}
