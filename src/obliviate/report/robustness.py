"""The report's robustness section: each attacked run's attacks and probes (``obliviate attack``)."""

from __future__ import annotations

from html import escape
from typing import Any

from obliviate.report import plots
from obliviate.report.runs import Run
from obliviate.tables import number


def _num(v: Any, signed: bool = False) -> str:
    return number(v, signed, missing="–")


def _metric(a: dict[str, Any], part: str, key: str) -> Any:
    got = a.get(part)
    return got.get(key) if isinstance(got, dict) else None


def _table(res: dict[str, Any]) -> str:
    keys = [str(k) for k in res.get("metrics", [])]
    head = ["attack", "kind", "n"]
    head += [f"recovered {k}" for k in keys] + [f"control {k}" for k in keys] + ["knowledge"]
    rows = []
    for name, a in res.get("attacks", {}).items():
        if not isinstance(a, dict):
            continue
        cells = [
            f'<td class="name">{escape(name)}</td>',
            f"<td>{escape(str(a.get('kind', '')))}</td>",
        ]
        if "unavailable" in a:
            span = 2 * len(keys) + 2
            cells.append(
                f'<td class="missing" colspan="{span}">{escape(str(a["unavailable"]))}</td>'
            )
        else:
            cells.append(f"<td>{a.get('measured', '–')}</td>")
            cells += [f"<td>{_num(_metric(a, 'recovered', k), True)}</td>" for k in keys]
            cells += [f"<td>{_num(_metric(a, 'retain_recovered', k), True)}</td>" for k in keys]
            ks = [v for v in a.get("knowledge", {}).values() if isinstance(v, int | float)]
            cells.append(f"<td>{_num(max(ks)) if ks else '–'}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    return (
        '<div class="scroll"><table class="data">'
        f"<thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _headline(run: Run, res: dict[str, Any]) -> str:
    score = res.get("robust_forget_score")
    text = _num(score) if isinstance(score, int | float) else escape(str(score))
    worst = res.get("worst")
    tail = ""
    if isinstance(worst, dict):
        tail = (
            f" · worst: {escape(str(worst.get('attack')))} on {escape(str(worst.get('metric')))}"
            f" (knowledge {_num(worst.get('knowledge'))})"
        )
    return f"<h3>{escape(run.name)}: robust forget score {text}{tail}</h3>"


def robustness_section(runs: list[Run], img: Any) -> str:
    """The section's HTML; ``img(png, alt)`` embeds a figure."""
    attacked = [
        (r, r.summary["robustness"]) for r in runs if isinstance(r.summary.get("robustness"), dict)
    ]
    if not attacked:
        body = (
            '<p class="note">No run has been attacked: <code>obliviate attack RUN_DIR</code> '
            "adds relearning, quantisation and prompt attacks and the logit lens.</p>"
        )
    else:
        parts = [
            '<p class="how">Recovered: the share of the forget-set gap (unlearned → target) an '
            "attack brings back, 0 = nothing, 1 = all; control: the same attack on the retain "
            "model, which never saw the forget set. Knowledge: where the unlearned model sits "
            "between the retain model (0) and the target (1) under the same attack. The robust "
            "forget score is 1 − the largest knowledge over attacks and metrics.</p>"
        ]
        for run, res in attacked:
            parts.append(_headline(run, res) + _table(res))
        png = plots.logit_lens(runs)
        if png is not None:
            parts.append(f"<h3>Logit lens</h3><figure>{img(png, 'logit lens per layer')}</figure>")
        body = "".join(parts)
    return f'<section id="robustness"><h2>Robustness</h2>{body}</section>'
