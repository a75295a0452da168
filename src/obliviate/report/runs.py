"""Reading finished run directories (demo, unlearn + eval, eval) into :class:`Run` records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.errors import ConfigError
from obliviate.eval.directions import guess_role

FIX = "give a run directory written by obliviate demo, eval or unlearn"


@dataclass
class Run:
    """One evaluated model: its summary, its per-sample rows and its model card."""

    name: str
    path: Path
    """The folder holding the run's summary.json and eval/."""
    summary: dict[str, Any]
    role: str
    """``"target"`` (before unlearning), ``"retain"`` (never saw the forget set) or
    ``"unlearned"``."""
    card: dict[str, Any] = field(default_factory=dict)
    """The evaluated model's ``obliviate.json`` ({} when the model dir is gone or has none)."""
    _samples: dict[str, list[dict[str, Any]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def samples(self) -> dict[str, list[dict[str, Any]]]:
        """Split name → per-sample rows from ``eval/<split>.json`` (read once; {} when none)."""
        if self._samples is None:
            out: dict[str, list[dict[str, Any]]] = {}
            folder = self.path / "eval"
            files = sorted(folder.glob("*.json")) if folder.is_dir() else []
            for f in files:
                rows = _read_json(f, f"run {self.name}: eval file {f}")
                if not isinstance(rows, list):
                    raise ConfigError(
                        f"run {self.name}: eval file {f} is not a list of samples",
                        "re-run obliviate eval for this run, or remove the file",
                    )
                out[f.stem] = [r for r in rows if isinstance(r, dict)]
            self._samples = out
        return self._samples

    @property
    def train_log(self) -> list[dict[str, Any]]:
        """The model card's per-step training log ([] when it has none)."""
        log = self.card.get("train_log", [])
        return [e for e in log if isinstance(e, dict)] if isinstance(log, list) else []

    @property
    def split_roles(self) -> dict[str, str]:
        """Split name → role, from the summary, else guessed from the eval file names."""
        roles = self.summary.get("split_roles")
        if isinstance(roles, dict) and roles:
            return {str(k): str(v) for k, v in roles.items()}
        folder = self.path / "eval"
        stems = sorted(f.stem for f in folder.glob("*.json")) if folder.is_dir() else []
        return {s: guess_role(s) for s in stems}

    @property
    def method(self) -> str | None:
        """The unlearning method from the model card, if any."""
        m = self.card.get("method")
        return str(m) if m else None


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} cannot be read: {e}", "check the file's permissions") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{what} is not valid JSON (line {e.lineno}: {e.msg})",
            "re-run the command that wrote it; a killed run can leave a truncated file",
        ) from e


def _read_summary(path: Path) -> dict[str, Any]:
    data = _read_json(path, str(path))
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} is not a JSON object (got {type(data).__name__})",
            "point at a run directory whose summary.json obliviate wrote",
        )
    return data


def _read_card(candidates: list[Any]) -> dict[str, Any]:
    """The first readable ``obliviate.json`` among candidate model dirs ({} when none)."""
    for c in candidates:
        if not isinstance(c, str | Path) or not str(c):
            continue
        try:
            f = Path(c) / "obliviate.json"
            if not f.is_file():
                continue
            card = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(card, dict):
            return card
    return {}


def _role(name: str | None, summary: dict[str, Any], card: dict[str, Any]) -> str:
    if name in ("target", "retain"):
        return name
    if card.get("stage") == "finetune":
        if card.get("split") == "full":
            return "target"
        if card.get("split") == "retain":
            return "retain"
    ref = summary.get("forget_quality_reference")
    if isinstance(ref, str) and ref.startswith("itself"):
        return "retain"
    return "unlearned"


def _demo_runs(folder: Path, summary: dict[str, Any]) -> list[Run]:
    rows = summary["rows"]
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("model"), str) or not row["model"]:
            raise ConfigError(
                f"{folder / 'summary.json'}: row {i} is not a summary with a model name",
                "re-run obliviate demo into this folder",
            )
        name = row["model"]
        card = _read_card([row.get("model_path")])
        out.append(Run(name, folder / name, dict(row), _role(name, row, card), card))
    return out


def _eval_run(folder: Path, summary: dict[str, Any]) -> Run:
    card = _read_card([summary.get("model"), folder / "model"])
    return Run(folder.name, folder, summary, _role(None, summary, card), card)


def _runs_in(folder: Path) -> list[Run]:
    summary = _read_summary(folder / "summary.json")
    if isinstance(summary.get("rows"), list):
        return _demo_runs(folder, summary)
    return [_eval_run(folder, summary)]


def _expand(path: str | Path) -> list[Run]:
    p = Path(path).expanduser()
    if not str(path).strip():
        raise ConfigError("an empty run directory path was given", FIX)
    if not p.exists():
        raise ConfigError(f"run directory {p} does not exist", FIX)
    if not p.is_dir():
        raise ConfigError(f"{p} is not a directory", FIX)
    if (p / "summary.json").is_file():
        return _runs_in(p)
    try:
        subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "summary.json").is_file())
    except OSError as e:
        raise ConfigError(f"{p} cannot be listed: {e}", "check its permissions") from e
    if not subs:
        raise ConfigError(
            f"no summary.json in {p} or its immediate sub-folders",
            "give a run directory that obliviate demo or eval wrote (run obliviate eval on a "
            "model dir first)",
        )
    return [r for d in subs for r in _runs_in(d)]


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Runs from demo dirs (one per row), eval run dirs, or folders of such run dirs.

    Names repeated across inputs become ``<parent folder>/<name>``; the same run given twice is
    kept once. Raises :class:`ConfigError` for a missing or unreadable input, or when no run is
    found.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise ConfigError("no run directory given", FIX)
    runs: list[Run] = []
    seen: set[tuple[Path, str]] = set()
    for path in paths:
        for r in _expand(path):
            key = (r.path.resolve(), r.name)
            if key not in seen:
                seen.add(key)
                runs.append(r)
    if not runs:
        raise ConfigError(f"no runs found in {', '.join(str(p) for p in paths)}", FIX)
    _infer_anchors(runs)
    _disambiguate(runs)
    return runs


def _resolved(p: Any) -> Path | None:
    if not isinstance(p, str | Path) or not str(p):
        return None
    try:
        return Path(p).expanduser().resolve()
    except (OSError, RuntimeError):
        return None


def _infer_anchors(runs: list[Run]) -> None:
    """Eval runs of models obliviate did not fine-tune (a hub or TOFU model) carry no role in
    their card: the target is the model another run was unlearned from (its card's
    ``source_model``), the retain model the one a run's forget quality was measured against."""
    by_model = {_resolved(r.summary.get("model")): r for r in runs}
    by_path = {_resolved(r.path): r for r in runs}
    by_model.pop(None, None)
    for r in runs:
        source = by_model.get(_resolved(r.card.get("source_model")))
        if source is not None and source is not r and source.role == "unlearned":
            source.role = "target"
        ref = r.summary.get("forget_quality_reference")
        if not isinstance(ref, str):
            continue
        for prefix, table in (("retain model ", by_model), ("saved evaluation ", by_path)):
            if ref.startswith(prefix):
                other = table.get(_resolved(ref[len(prefix) :]))
                if other is not None and other is not r and other.role == "unlearned":
                    other.role = "retain"


def _disambiguate(runs: list[Run]) -> None:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    for r in runs:
        if counts[r.name] > 1:
            r.name = f"{r.path.parent.name}/{r.name}"
    taken: set[str] = set()
    for r in runs:  # still equal (same parent folder name): number them
        base, n = r.name, 2
        while r.name in taken:
            r.name, n = f"{base} #{n}", n + 1
        taken.add(r.name)
