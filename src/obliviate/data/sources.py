"""The one reader of benchmark files: a local ``.json`` / ``.jsonl`` / ``.parquet`` file or a hub id.

Every benchmark loader reads its splits through :class:`Source`, so there is one rule for local
versus hub, one error line per failure, and line numbers that match the file:

- a location that exists on disk is local; one that looks like a path (``.``, ``/``, ``~``, or not
  exactly ``org/name``) but does not exist is an error; anything else is a hub id read through
  ``datasets`` (offline, that fails with a one-line error saying to download it and point at the
  directory);
- a split ``name`` inside an optional ``subset`` folder is ``<root>/<subset>/<name>.json`` (a JSON
  list, or JSON lines when it does not start with ``[``), ``.jsonl`` or ``.parquet``;
- a broken JSON-lines row is reported with the file's own line number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from obliviate.errors import DataError

EXTENSIONS = (".json", ".jsonl", ".parquet")


def _looks_like_path(location: str) -> bool:
    return location.startswith((".", "/", "~")) or location.count("/") != 1


class Source:
    """Named splits in a local directory or a hub dataset."""

    def __init__(
        self, location: str | Path, what: str = "benchmark", fix: str = "check benchmark.path"
    ) -> None:
        self.location = str(location)
        self.what = what
        self._hub_cache: dict[tuple[str, str | None], list[tuple[str, Any]] | None] = {}
        p = Path(self.location).expanduser()
        self.local: Path | None = p if p.exists() else None
        if self.local is None and _looks_like_path(self.location):
            raise DataError(f"{what} directory not found: {self.location}", fix)
        if self.local is not None and not self.local.is_dir():
            raise DataError(
                f"{what} path {self.location} is not a directory",
                "point at the directory of split files",
            )

    @property
    def is_hub(self) -> bool:
        return self.local is None

    def file(self, name: str, subset: str | None = None) -> Path | None:
        """The local file holding split ``name`` (None when absent or on the hub)."""
        if self.local is None:
            return None
        folder = self.local / subset if subset else self.local
        found = [
            folder / f"{name}{ext}" for ext in EXTENSIONS if (folder / f"{name}{ext}").is_file()
        ]
        if len(found) > 1:
            raise DataError(
                f"split {_label(name, subset)!r} is in {len(found)} files in {folder} "
                f"({', '.join(f.name for f in found)})",
                "keep one of them: which is current is not clear",
            )
        return found[0] if found else None

    def has(self, name: str, subset: str | None = None) -> bool:
        if self.local is not None:
            return self.file(name, subset) is not None
        return self._hub_rows(name, subset) is not None

    def rows(self, name: str, subset: str | None = None) -> list[tuple[str, Any]]:
        """``[(where, row)]`` for split ``name``; ``where`` names the file and line (or row)."""
        if self.local is None:
            rows = self._hub_rows(name, subset)
            if rows is None:
                raise DataError(
                    f"split {_label(name, subset)!r} not found in {self.location}",
                    "check the split name or the hub id",
                )
            return rows
        f = self.file(name, subset)
        if f is None:
            where = self.local / subset if subset else self.local
            raise DataError(
                f"split {_label(name, subset)!r} not found in {where}",
                f"add {name}.json, {name}.jsonl or {name}.parquet there",
            )
        return read_rows(f, f.relative_to(self.local).as_posix())

    def _hub_rows(self, name: str, subset: str | None) -> list[tuple[str, Any]] | None:
        key = (name, subset)
        if key not in self._hub_cache:
            self._hub_cache[key] = _read_hub(self.location, name, subset)
        return self._hub_cache[key]


def _label(name: str, subset: str | None) -> str:
    return f"{subset}/{name}" if subset else name


def read_rows(path: Path, label: str | None = None) -> list[tuple[str, Any]]:
    """Rows of one local file with where each came from (``<label> line N`` / ``<label> row N``;
    ``label`` defaults to the file name, a source passes the path inside its directory)."""
    label = label or path.name
    if path.suffix == ".parquet":
        return _read_parquet(path, label)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (byte {e.start})", "re-save the file as UTF-8"
        ) from None
    except OSError as e:
        raise DataError(f"{path} cannot be read: {e.strerror or e}", "check the file") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path} is not valid JSON (line {e.lineno}: {e.msg})", "fix or regenerate the file"
            ) from None
        return [(f"{label} row {i + 1}", r) for i, r in enumerate(rows)]
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{label} line {lineno}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path} is not valid JSON lines (line {lineno}: {e.msg})",
                "fix that line or regenerate the file",
            ) from None
    return out


def _read_parquet(path: Path, label: str) -> list[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - a corrupt file becomes one actionable line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{path} is not a readable parquet file: {first[:160]}", "fix or re-export it"
        ) from None
    return [(f"{label} row {i + 1}", r) for i, r in enumerate(table.to_pylist())]


def _read_hub(repo: str, name: str, subset: str | None) -> list[tuple[str, Any]] | None:
    """Rows of ``name`` (a config of ``repo``, or a split of config ``subset``); None if absent."""
    try:
        import datasets

        if subset is None:
            ds = datasets.load_dataset(repo, name, split="train")
        else:
            ds = datasets.load_dataset(repo, subset, split=name)
    except ValueError as e:  # an unknown config / split of a reachable dataset
        msg = str(e).lower()
        if "split" in msg or "config" in msg:
            return None
        raise _hub_error(repo, _label(name, subset), e) from None
    except Exception as e:  # noqa: BLE001 - any hub / network failure becomes one actionable line
        raise _hub_error(repo, _label(name, subset), e) from None
    return [(f"{repo}/{_label(name, subset)} row {i + 1}", dict(r)) for i, r in enumerate(ds)]


def _hub_error(repo: str, label: str, e: Exception) -> DataError:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return DataError(
        f"could not load split {label!r} of {repo} from the hub: {first[:160]}",
        "check the network, or download the dataset elsewhere and set benchmark.path to its local directory",
    )
