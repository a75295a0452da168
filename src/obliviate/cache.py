"""Content-hash cache for generated data and trained models.

An entry is a directory ``<root>/<kind>/<hash>``; it is built in a temporary sibling
(``<hash>.tmp<pid>``) and renamed into place when complete, so an interrupted build never poses as
a result. A later build removes the temporary folders of dead processes; one that holds a complete
training checkpoint is kept for ``--resume`` (which adopts it) until a build of the same entry
starts without ``--resume``.

In a multi-process launch (:mod:`obliviate.distributed`) every process sees the main process's
hit / miss decision; an entry that trains (:data:`TRAINED_KINDS`) is built by all processes
together in the main process's temporary dir and committed by the main process alone, once every
process has finished; any other entry is built by the main process while the others wait.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obliviate import distributed
from obliviate.errors import ConfigError

#: Bump when a change to generation or training code must invalidate cached artefacts.
CODE_VERSION = "3"

#: Entries built by training: in a multi-process launch every process takes part (DDP needs them).
TRAINED_KINDS = frozenset({"finetune", "unlearn"})


def default_cache_root() -> Path:
    env = os.environ.get("OBLIVIATE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "obliviate"


def content_hash(obj: Any) -> str:
    text = json.dumps({"v": CODE_VERSION, "obj": obj}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Cache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_root()

    def path(self, kind: str, key: Any) -> Path:
        return self.root / kind / content_hash(key)

    def get_or_build(
        self, kind: str, key: Any, build: Callable[[Path], None], resume: bool = False
    ) -> tuple[Path, bool]:
        """Return ``(dir, hit)``. On a miss, ``build(tmp_dir)`` fills a temp dir that is then
        renamed. ``resume``: a dead process's temp dir for this entry is handed to ``build``
        (its checkpoints let the build continue) instead of being removed.

        In a multi-process launch: a ``kind`` in :data:`TRAINED_KINDS` is built by every process
        in the same temp dir (``build`` must leave writing the result to the main process) and
        committed by the main process; any other kind is built by the main process alone."""
        if not distributed.active():
            return self._get_or_build(kind, key, build, resume)
        distributed.barrier()  # every process is at the check: one decision for all
        if kind not in TRAINED_KINDS:
            return distributed.on_main(lambda: self._get_or_build(kind, key, build, resume))
        return self._build_together(kind, key, build, resume)

    def _get_or_build(
        self, kind: str, key: Any, build: Callable[[Path], None], resume: bool
    ) -> tuple[Path, bool]:
        final = self.path(kind, key)
        if (final / ".complete").is_file():
            return final, True
        tmp = self._start(final, resume)
        try:
            build(tmp)
            self._commit(tmp, final, key)
        except BaseException:
            _discard(tmp)
            raise
        return final, False

    def _build_together(
        self, kind: str, key: Any, build: Callable[[Path], None], resume: bool
    ) -> tuple[Path, bool]:
        """A trained entry in a multi-process launch (see :meth:`get_or_build`)."""
        final = self.path(kind, key)

        def plan() -> Path | None:  # main: None on a hit, else the temp dir all build in
            return None if (final / ".complete").is_file() else self._start(final, resume)

        tmp = distributed.on_main(plan)
        if tmp is None:
            return final, True
        try:
            build(tmp)
        except BaseException:
            distributed.all_ok(False)
            if distributed.is_main():
                _discard(tmp)
            raise
        if not distributed.all_ok(True):
            if distributed.is_main():
                _discard(tmp)
            raise distributed.peer_failed(f"building the cached {kind} entry")
        distributed.on_main(lambda: self._commit(tmp, final, key))
        return final, False

    def _start(self, final: Path, resume: bool) -> Path:
        """A fresh temp dir for building ``final`` (a dead process's, with ``resume``)."""
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        self._ensure(final.parent)
        if tmp.exists():
            shutil.rmtree(tmp)
        adopted = self._clear_dead(final, resume)
        if adopted is not None:
            os.replace(adopted, tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def _commit(self, tmp: Path, final: Path, key: Any) -> None:
        try:
            (tmp / ".key.json").write_text(json.dumps(key, indent=1, sort_keys=True, default=str))
            (tmp / ".complete").write_text("ok\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            _discard(tmp)
            raise

    def _ensure(self, folder: Path) -> None:
        """``folder`` exists and is writable, or one line saying which cache dir is unusable."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ConfigError(
                f"the cache dir {self.root} is not usable: {e.strerror or e}",
                "set cache_dir (or $OBLIVIATE_CACHE) to a writable directory",
            ) from None

    def _clear_dead(self, final: Path, resume: bool) -> Path | None:
        """Remove dead processes' temp dirs of ``final``'s kind (those of other entries only when
        they hold no checkpoint); with ``resume``, return one of ``final``'s to adopt."""
        adopt = None
        for d in sorted(final.parent.glob("*.tmp*")):
            pid = d.name.rsplit(".tmp", 1)[-1]
            if not pid.isdigit() or pid_alive(int(pid)):
                continue
            resumable = holds_checkpoint(d)
            if d.name.startswith(final.name + ".tmp") and resume and resumable and adopt is None:
                adopt = d
            elif not resumable or d.name.startswith(final.name + ".tmp"):
                shutil.rmtree(d, ignore_errors=True)
        return adopt


def _discard(tmp: Path) -> None:
    """Remove a failed build's temp dir, unless it holds a checkpoint (kept for --resume)."""
    if tmp.exists() and not holds_checkpoint(tmp):
        shutil.rmtree(tmp, ignore_errors=True)


COMPLETE = "COMPLETE"
"""Written into a training checkpoint folder once every file of it is saved."""
CHECKPOINT_PREFIX = "checkpoint-"


def holds_checkpoint(folder: Path) -> bool:
    """Whether a trainer folder directly inside ``folder`` holds a complete checkpoint (the
    layout of :mod:`obliviate.training.guard`; kept here, torch-free, for the run and cache
    bookkeeping that decides what survives for ``--resume``)."""
    return any(folder.glob(f"*/{CHECKPOINT_PREFIX}*/{COMPLETE}"))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
