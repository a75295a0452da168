"""A leaderboard: runs ranked by one metric in its better direction, as text, Markdown or CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

from obliviate.errors import ConfigError
from obliviate.eval.directions import (
    EXPLAIN,
    badness,
    direction,
    format_value,
    headline_keys,
    is_number,
    merged_roles,
    metric_keys,
    reference_value,
)
from obliviate.report.runs import Run
from obliviate.tables import aligned

FORMATS = ("table", "markdown", "csv")


def _unknown(what: str, available: list[str]) -> ConfigError:
    shown = ", ".join(available[:10])
    more = f", … ({len(available)} in all)" if len(available) > 10 else ""
    return ConfigError(
        f"compare: {what}",
        f"use one of: {shown}{more}" if available else "no run has any numeric metric",
    )


def rank(runs: list[Run], by: str, ascending: bool | None = None) -> list[tuple[int | None, Run]]:
    """``(rank, run)`` best first; runs without a number for ``by`` last with rank None.

    The order follows ``by``'s direction (``ascending`` given: by raw value instead). Tied values
    share a rank. Raises :class:`ConfigError` when the order is undefined.
    """
    available = metric_keys(runs)
    if by not in available:
        raise _unknown(f"no run has a number for metric {by!r}", available)
    d = direction(by, merged_roles(runs))
    ref = None
    if ascending is None:
        if d is None:
            raise ConfigError(
                f"compare: {by} has no better direction ({EXPLAIN[None]})",
                "pass --ascending or --descending",
            )
        if d == "ref":
            ref = reference_value(runs, by)
            if ref is None:
                raise ConfigError(
                    f"compare: ranking by {by} (closer to the retain model is better) needs a "
                    "retain run with that number",
                    "add the retain model's run dir, or pass --ascending or --descending",
                )

    def key(r: Run) -> float:
        v = float(r.summary[by])
        if ascending is not None:
            return v if ascending else -v
        b = badness(d, v, ref)
        assert b is not None
        return b

    have = [r for r in runs if is_number(r.summary.get(by))]
    lack = [r for r in runs if not is_number(r.summary.get(by))]
    ordered = sorted(have, key=key)  # stable: ties keep input order
    out: list[tuple[int | None, Run]] = []
    for i, r in enumerate(ordered):
        tied = i > 0 and key(r) == key(ordered[i - 1])
        out.append((out[-1][0] if tied else i + 1, r))
    out += [(None, r) for r in lack]
    return out


def leaderboard(
    runs: list[Run],
    by: str,
    fmt: str = "table",
    columns: list[str] | None = None,
    ascending: bool | None = None,
) -> str:
    """Runs ranked by metric ``by`` (see :func:`rank`) as ``"table"`` (aligned text),
    ``"markdown"`` (GitHub pipe table) or ``"csv"`` (full precision).

    Columns: rank, run, role, ``by``, then ``columns`` (default: the headline metrics present).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"compare: unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    ranked = rank(runs, by, ascending)
    available = metric_keys(runs)
    if columns is None:
        columns = [k for k in headline_keys(runs) if k != by]
    else:
        bad = [c for c in columns if c not in available]
        if bad:
            raise _unknown(f"no run has a number for column {bad[0]!r}", available)
        columns = [c for c in dict.fromkeys(columns) if c != by]
    keys = [by, *columns]
    head = ["rank", "run", "role", *keys]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(head)
        for n, r in ranked:
            vals = [_raw(r.summary.get(k)) for k in keys]
            w.writerow(["" if n is None else n, r.name, r.role, *vals])
        return buf.getvalue()
    body = [
        ["-" if n is None else str(n), r.name, r.role] + [_shown(k, r.summary.get(k)) for k in keys]
        for n, r in ranked
    ]
    if fmt == "markdown":
        return _markdown(head, body)
    return aligned(head, body, left=(1, 2)) + "\n"  # run and role are text


def _raw(v: Any) -> str:
    if not is_number(v):
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def _shown(key: str, v: Any) -> str:
    return format_value(key, v) if is_number(v) else "-"


def _markdown(head: list[str], body: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return s.replace("\\", "\\\\").replace("|", "\\|")

    align = ["---:" if i not in (1, 2) else ":---" for i in range(len(head))]
    return (
        "\n".join("| " + " | ".join(map(cell, row)) + " |" for row in [head, align, *body]) + "\n"
    )
