"""Run-directory I/O: atomic writes, the guard against overwriting a finished run, fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from obliviate.config import ExperimentConfig, dump_yaml
from obliviate.errors import ObliviateError


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default, allow_nan=True))
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def write_config(cfg: ExperimentConfig, run: Path) -> None:
    """``<run>/config.yaml``: the fully resolved config that produced the run."""
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / "config.yaml.tmp"
    tmp.write_text(dump_yaml(cfg))
    os.replace(tmp, run / "config.yaml")


def fresh_dir(path: Path, overwrite: bool = False) -> Path:
    """``path`` ready to be written: refused if it holds results, unless ``overwrite``."""
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise ObliviateError(
                f"{path} already holds results", "choose another run_dir or pass --overwrite"
            )
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def guard_evaluation(run: Path, overwrite: bool) -> None:
    if (run / "summary.json").exists() and not overwrite:
        raise ObliviateError(
            f"{run} already holds an evaluation", "choose another run_dir or pass --overwrite"
        )


def model_fingerprint(path: str) -> str | None:
    """SHA-256 over a local model dir's files (names + bytes); None for a hub id."""
    root = Path(path)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()
