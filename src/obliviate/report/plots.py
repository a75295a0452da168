"""The report's figures as PNG bytes (matplotlib's Agg canvas, no pyplot, no global state).

matplotlib is imported inside the functions so that ``import obliviate`` stays light.
"""

from __future__ import annotations

import io
import math
from typing import Any

from obliviate.eval.directions import ARROWS, direction, is_number, merged_roles
from obliviate.report.runs import Run

DPI = 100
TARGET_COLOR = "#b23a48"
RETAIN_COLOR = "#2e7d32"
PALETTE = ["#1f77b4", "#ff7f0e", "#7b4fa6", "#8c564b", "#d62790", "#17becf", "#bcbd22", "#555555"]
MARKERS = {"target": "X", "retain": "*"}
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def colors(runs: list[Run]) -> dict[str, str]:
    """One colour per run name: red for the target, green for retain, a palette for the rest."""
    out, i = {}, 0
    for r in runs:
        if r.role == "target":
            out[r.name] = TARGET_COLOR
        elif r.role == "retain":
            out[r.name] = RETAIN_COLOR
        else:
            out[r.name] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _plain(text: str) -> str:
    """A run name shown as typed: ``$`` would start matplotlib mathtext (tick labels keep it)."""
    return text.replace("$", r"\$")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _panels(n: int, max_cols: int, width: float, height: float) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels, at most ``max_cols`` a row, each ``width`` × ``height`` inches;
    the grid's unused cells are hidden. Call inside :func:`_style`."""
    ncols = min(max_cols, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(width * ncols, height * nrows)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _style() -> Any:
    import matplotlib

    return matplotlib.rc_context(STYLE)


# ------------------------------------------------------------------------------ trade-off


def tradeoff_axes(runs: list[Run]) -> tuple[str, str, bool] | None:
    """(x key, y key, log y) of the trade-off plot: TOFU's model utility vs forget quality, else
    MUSE's KnowMem retain vs VerbMem; None when no run has both numbers of either pair."""
    for x, y, log in (
        ("model_utility", "forget_quality", True),
        ("knowmem_retain_f", "verbmem_f", False),
    ):
        if any(is_number(r.summary.get(x)) and is_number(r.summary.get(y)) for r in runs):
            return x, y, log
    return None


def tradeoff_points(runs: list[Run]) -> tuple[list[tuple[Run, float, float]], list[str]]:
    """The runs placed on the trade-off plot as (run, x, y), and why each other run is not."""
    axes = tradeoff_axes(runs)
    if axes is None:
        return [], [f"{r.name} (no model utility or forget quality)" for r in runs]
    x, y, log = axes
    points, left_out = [], []
    for r in runs:
        vx, vy = r.summary.get(x), r.summary.get(y)
        if not (is_number(vx) and is_number(vy)):
            missing = [k for k, v in ((x, vx), (y, vy)) if not is_number(v)]
            left_out.append(f"{r.name} (no {' or '.join(missing)})")
        elif log and vy <= 0:
            left_out.append(f"{r.name} ({y} = {vy:g} cannot sit on a log scale)")
        else:
            points.append((r, float(vx), float(vy)))
    return points, left_out


def tradeoff(runs: list[Run]) -> bytes | None:
    """Model utility (x) vs forget quality (y, log scale), one labelled point per run (MUSE:
    KnowMem retain vs VerbMem); None when no run has both numbers."""
    axes = tradeoff_axes(runs)
    points, _ = tradeoff_points(runs)
    if axes is None or not points:
        return None
    xkey, ykey, log = axes
    col = colors(runs)
    with _style():
        fig = _figure(7.0, 4.6)
        ax = fig.add_subplot()
        for r, x, y in points:
            marker = MARKERS.get(r.role, "o")
            size = {"X": 110, "*": 200}.get(marker, 60)
            ax.scatter(
                [x],
                [y],
                s=size,
                marker=marker,
                color=col[r.name],
                edgecolor="white",
                linewidth=0.8,
                zorder=3,
                label=_plain(f"{r.name} ({r.role})"),
            )
            ax.annotate(
                _plain(r.name),
                (x, y),
                xytext=(6, 5),
                textcoords="offset points",
                fontsize=8,
                color="#333333",
            )
        if log:
            ax.set_yscale("log")
        ax.set_xlabel(f"{xkey.replace('_', ' ')} {ARROWS['up']}")
        ylab = ykey.replace("_", " ")
        ax.set_ylabel(
            f"{ylab} {ARROWS['up'] if log else ARROWS['down']}" + (" (log)" if log else "")
        )
        if not log:
            ax.invert_yaxis()  # MUSE VerbMem: lower is better, so better is still up
        ax.set_title("better: up and to the right ↗", loc="right", color="#777777", fontsize=9)
        xs = [p[1] for p in points]
        pad = max(0.05, (max(xs) - min(xs)) * 0.15)
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
        if log:
            ys = [p[2] for p in points]
            ax.set_ylim(min(ys) / 2, max(ys) * 2)
        if len(points) <= 12:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
        return _png(fig)


# ------------------------------------------------------------------------------ bars


def _short(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) < 1e-2 or abs(v) >= 1e4:
        return f"{v:.1e}"
    return f"{v:.3g}"


def metric_bars(runs: list[Run], keys: list[str]) -> bytes | None:
    """A grid of small bar charts, one per metric in ``keys``, one bar per run."""
    keys = [k for k in keys if any(is_number(r.summary.get(k)) for r in runs)]
    if not keys or not runs:
        return None
    roles = merged_roles(runs)
    col = colors(runs)
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    height = nrows * (0.28 * len(runs) + 1.0)
    names = [r.name for r in runs]
    with _style():
        fig = _figure(10.0, max(2.2, height))
        grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        for i, ax in enumerate(grid.flat):
            if i >= len(keys):
                ax.set_visible(False)
                continue
            key = keys[i]
            vals = [float(v) if is_number(v) else None for v in (r.summary.get(key) for r in runs)]
            ypos = list(range(len(runs)))
            log = key == "forget_quality" and all(v > 0 for v in vals if v is not None)
            present = [v for v in vals if v is not None]
            missing = float("nan") if log else 0.0
            bars = [missing if v is None else v for v in vals]
            base = min(present) if log else 0.0
            ax.barh(ypos, bars, color=[col[n] for n in names], height=0.65, zorder=2)
            ax.grid(axis="y", visible=False)
            for y, v in zip(ypos, vals, strict=True):
                ax.annotate(
                    "n/a" if v is None else _short(v),
                    (base if v is None else v, y),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7,
                    color="#444444",
                )
            if log:
                ax.set_xscale("log")
            ax.margins(x=0.22)
            d = direction(key, roles)
            ax.set_title(f"{key} {ARROWS[d]}" if d else key, loc="left")
            ax.set_yticks(ypos, [_plain(n) for n in names])
        grid.flat[0].invert_yaxis()  # shared: the first run on top everywhere
        return _png(fig)


# ------------------------------------------------------------------------------ curves


def curve_series(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Plot name → {"xlabel", "ylabel", "lines": {run name: (xs, ys)}}: training loss from each
    model card's ``train_log`` (one plot per training stage when runs differ in stage), then
    every summary ``curves`` entry."""
    out: dict[str, dict[str, Any]] = {}
    logs = []
    for r in runs:
        xs, ys = [], []
        for i, e in enumerate(r.train_log):
            step, loss = e.get("step", i), e.get("loss")
            if is_number(step) and is_number(loss):
                xs.append(float(step))
                ys.append(float(loss))
        if xs:
            logs.append((r, str(r.card.get("stage") or ""), xs, ys))
    several = len({stage for _, stage, _, _ in logs}) > 1
    for r, stage, xs, ys in logs:
        name = f"training loss ({stage or 'unknown stage'})" if several else "training loss"
        plot = out.setdefault(name, {"xlabel": "step", "ylabel": "loss", "lines": {}})
        plot["lines"][r.name] = (xs, ys)
    for r in runs:
        curves = r.summary.get("curves")
        if not isinstance(curves, dict):
            continue
        for name, c in curves.items():
            if not isinstance(c, dict):
                continue
            x, y = c.get("x"), c.get("y")
            if not (isinstance(x, list) and isinstance(y, list)):
                continue
            pairs = [
                (float(a), float(b))
                for a, b in zip(x, y, strict=False)
                if is_number(a) and is_number(b)
            ]
            if not pairs:
                continue
            plot = out.setdefault(
                str(name),
                {
                    "xlabel": str(c.get("xlabel", "x")),
                    "ylabel": str(c.get("ylabel", name)),
                    "lines": {},
                },
            )
            plot["lines"][r.name] = ([p[0] for p in pairs], [p[1] for p in pairs])
    return out


def curves(runs: list[Run]) -> bytes | None:
    """Training loss vs step (one line per run with a train_log) and one plot per summary
    ``curves`` name (one line per run that has it), in one figure; None when no run has any."""
    series = curve_series(runs)
    if not series:
        return None
    col = colors(runs)
    with _style():
        fig, axes = _panels(len(series), 2, 5.0, 3.3)
        for ax, (name, plot) in zip(axes, series.items(), strict=True):
            for run, (xs, ys) in plot["lines"].items():
                marker = "o" if len(xs) <= 30 else None
                ax.plot(
                    xs,
                    ys,
                    color=col.get(run, "#555555"),
                    marker=marker,
                    markersize=3,
                    linewidth=1.4,
                    label=_plain(run),
                )
            ax.set_title(name, loc="left")
            ax.set_xlabel(plot["xlabel"])
            ax.set_ylabel(plot["ylabel"])
            ax.legend()
        return _png(fig)


# ------------------------------------------------------------------------------ robustness


def logit_lens(runs: list[Run]) -> bytes | None:
    """Per attacked run, the forget answer's probability decoded from every layer for the
    target, the retain model and the unlearned model; None when no run has a logit-lens probe."""
    lensed = []
    for r in runs:
        robustness = r.summary.get("robustness")
        probes = robustness.get("probes") if isinstance(robustness, dict) else None
        lens = probes.get("logit_lens") if isinstance(probes, dict) else None
        if isinstance(lens, dict) and "prob_by_layer" in lens:  # not an unavailable probe
            lensed.append((r, lens))
    if not lensed:
        return None
    col = colors(runs)
    with _style():
        fig, axes = _panels(len(lensed), 3, 3.6, 3.0)
        for ax, (run, lens) in zip(axes, lensed, strict=True):
            curves = lens["prob_by_layer"]
            for who, color in (
                ("target", TARGET_COLOR),
                ("retain", RETAIN_COLOR),
                ("unlearned", col.get(run.name, PALETTE[0])),
            ):
                if who in curves:
                    ys = curves[who]
                    label = _plain(run.name) if who == "unlearned" else who
                    ax.plot(range(len(ys)), ys, color=color, marker="o", markersize=3, label=label)
            ax.set_title(_plain(run.name), loc="left")
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_ylabel("forget answer probability")
            ax.set_ylim(0, 1.02)
            ax.legend()
        return _png(fig)
