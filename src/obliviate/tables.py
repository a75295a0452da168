"""Plain-text tables for the terminal: the demo's results and ``obliviate compare``."""

from __future__ import annotations

from collections.abc import Collection


def aligned(head: list[str], body: list[list[str]], left: Collection[int] = (0,)) -> str:
    """Columns padded to their widest cell, two spaces apart, a dashed rule under the header;
    the columns in ``left`` are left-aligned (text), the rest right-aligned (numbers)."""
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in pairs).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), rule, *(line(r) for r in body)])


def number(v: object, signed: bool = False, missing: str = "-") -> str:
    """``v`` with two decimals (``+`` sign with ``signed``), or ``missing`` for a non-number."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f"{v:+.2f}" if signed else f"{v:.2f}"
    return missing
