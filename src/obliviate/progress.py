"""What a command shows while it works, and the log file that keeps the full detail.

- **Terminal.** One progress display per stage (fine-tuning, unlearning, evaluating a model), a
  ``rich`` bar with steps, elapsed time and ETA, and the loss and learning rate in the bar. Status
  lines (``[obliviate] …``) print above it. Bars are drawn only when stderr is a terminal and
  progress is not switched off (``--no-progress`` or ``OBLIVIATE_PROGRESS=0``); otherwise only the
  status lines are written. stdout is never used: it holds a command's result.
- **Log file.** While a command writes a run dir, ``<run_dir>/obliviate.log`` receives every status
  line and every detail line (the trainer's per-step loss, learning rate and gradient norm), with
  timestamps, appended across commands.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")
ENV = "OBLIVIATE_PROGRESS"
LOG_NAME = "obliviate.log"

_show: bool | None = None  # None: decide from the terminal and the environment
_log: IO[str] | None = None
_log_path: Path | None = None
_stage: Stage | None = None
_live: Stage | None = None  # the one stage drawing a bar (rich allows one live display)
_written = 0  # bytes this command appended to the log file


def set_enabled(show: bool | None) -> None:
    """Force bars on or off (``None``: on exactly when stderr is a terminal and
    ``OBLIVIATE_PROGRESS`` is not ``0``)."""
    global _show
    _show = show


def main_process() -> bool:
    """False in the non-zero ranks of a multi-process launch: they neither draw nor write the
    log (rank 0 does, once)."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("", "0")


def enabled() -> bool:
    if not main_process():
        return False
    if _show is not None:
        return _show
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return sys.stderr.isatty()


# ------------------------------------------------------------------------------ lines


def log(msg: str) -> None:
    """A status line: on stderr (above any live bar) and in the run's log file."""
    line = f"[obliviate] {msg}"
    _to_file(line)
    if not main_process():  # a launch's other processes: one copy of each line, not N
        return
    if _live is not None and _live.live is not None:
        _live.live.console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        print(line, file=sys.stderr, flush=True)


def detail(msg: str) -> None:
    """A line for the log file only (per-step training numbers and the like)."""
    _to_file(msg)


def _to_file(line: str) -> None:
    global _written
    if _log is None:
        return
    text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n"
    try:
        _log.write(text)
        _log.flush()
        _written += len(text.encode("utf-8"))
    except OSError:  # a full disk must not stop the run over its log
        pass


@contextmanager
def log_file(
    run_dir: Path, discard_on: Callable[[BaseException], bool] | None = None
) -> Iterator[Path | None]:
    """Append this command's lines to ``<run_dir>/obliviate.log`` while the block runs. Nested
    calls (the demo evaluating into its own run dir) keep the outermost file. When the block
    fails with an error ``discard_on`` accepts (refused input), the file is put back as it was
    (unless another process appended to it meanwhile). Only the main process writes it."""
    global _log, _log_path, _written
    if _log is not None or not main_process():
        yield _log_path
        return
    path = Path(run_dir) / LOG_NAME
    try:
        size = path.stat().st_size if path.exists() else None
        fh = path.open("a", encoding="utf-8")
    except OSError:
        yield None
        return
    _log, _log_path, _written = fh, path, 0
    detail(f"$ obliviate {' '.join(sys.argv[1:])}" if sys.argv else "$ obliviate")
    try:
        yield path
    except BaseException as e:
        if discard_on is not None and discard_on(e):
            fh.close()
            _rollback(path, size, _written)
        else:
            detail(f"failed: {type(e).__name__}: {e}")
        raise
    finally:
        _log, _log_path = None, None
        fh.close()


def _rollback(path: Path, size: int | None, written: int) -> None:
    """Undo this command's appends, if the file holds nothing else new."""
    try:
        if path.stat().st_size != (size or 0) + written:
            return  # another process wrote to it too: leave it
        if size is None:
            path.unlink(missing_ok=True)
        else:
            os.truncate(path, size)
    except OSError:
        pass


# ------------------------------------------------------------------------------ bars


class Stage:
    """One stage's display: a single bar whose total and label follow the stage's current pass."""

    def __init__(self, title: str, total: int | None = None) -> None:
        global _live
        self.title = title
        self.live: Any = None
        self.task: Any = None
        if enabled() and _live is None:  # a stage inside a drawn one is not drawn
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.table import Column

            def text(fmt: str, width: int | None = None) -> TextColumn:
                col = Column(no_wrap=True, overflow="ellipsis", max_width=width)
                return TextColumn(fmt, table_column=col)

            self.live = Progress(
                text("{task.description}", 40),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(compact=True),
                text("{task.fields[info]}"),
                console=Console(stderr=True),
                transient=False,
                redirect_stdout=False,  # stdout is the command's result, never the display's
            )
            self.live.start()
            self.task = self.live.add_task(title, total=total, info="")
            _live = self

    def begin(self, what: str, total: int, completed: int = 0) -> None:
        """Start a pass of ``total`` steps (``what``: e.g. ``scoring 730 sequences``)."""
        if self.live is not None:
            label = f"{self.title}: {what}" if what else self.title
            self.live.reset(self.task, total=total, completed=completed, description=label)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        if self.live is not None:
            fields = {} if info is None else {"info": info}
            self.live.update(self.task, advance=n, **fields)

    def update(self, completed: int, info: str | None = None) -> None:
        if self.live is not None:
            fields = {} if info is None else {"info": info}
            self.live.update(self.task, completed=completed, **fields)

    def close(self, ok: bool = True) -> None:
        """Stop the bar: when ``ok``, left full under the stage's title with its last loss and
        learning rate; on failure, where it stopped."""
        global _live
        if self.live is None:
            return
        if ok:
            task = self.live.tasks[0]
            total = task.total if task.total is not None else 1  # a stage without steps: done
            self.live.update(self.task, description=self.title, total=total, completed=total)
        self.live.stop()
        self.live = None
        if _live is self:
            _live = None


@contextmanager
def stage(title: str, total: int | None = None) -> Iterator[Stage]:
    """The display of one stage; passes inside it (:func:`track`) reuse its bar. Inside a stage
    that is drawn already, that stage's bar serves."""
    global _stage
    if _live is not None:
        yield _live
        return
    outer, st = _stage, Stage(title, total)
    _stage = st
    ok = False
    try:
        yield st
        ok = True
    finally:
        st.close(ok)
        _stage = outer


def track(items: Iterable[T], what: str, total: int) -> Iterator[T]:
    """Iterate ``items`` (``total`` of them) as a pass of the current stage, or of a stage of its
    own when none is open."""
    if _stage is not None:
        _stage.begin(what, total)
        for x in items:
            yield x
            _stage.advance()
        return
    if not enabled():
        yield from items
        return
    with stage(what, total) as st:
        for x in items:
            yield x
            st.advance()


def silence_libraries() -> None:
    """Turn off transformers' / huggingface_hub's / datasets' own progress bars and their
    warnings chatter (obliviate's display replaces them)."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        pass
