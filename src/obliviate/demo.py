"""The demo: synthetic benchmark → target + retain models → GA / GradDiff / NPO → evaluate all → table.

Data and models are cached by content hash, so a second run only re-evaluates. With ``seeds``
(``--seeds N``) every method unlearns once per seed (``unlearn.seed``) into ``<method>/seed<s>/``
and the table shows each method's mean ± sd; the target and retain rows stay single (they are
not seeded by ``unlearn.seed``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from obliviate import api, progress, stages
from obliviate.config import ExperimentConfig, apply_method_block, from_dict
from obliviate.errors import ConfigError
from obliviate.experiment import Experiment
from obliviate.methods import get_method
from obliviate.runs import staged_run
from obliviate.tables import aligned

REPORT = "report.html"

COLUMNS = [
    ("model", "model", "{}"),
    ("forget_quality", "forget quality", "{:.2e}"),
    ("model_utility", "model utility", "{:.3f}"),
    ("forget_rouge", "forget ROUGE", "{:.3f}"),
    ("forget_prob", "forget prob", "{:.3f}"),
    ("forget_fact_recall", "forget facts", "{:.2f}"),
    ("retain_rouge", "retain ROUGE", "{:.3f}"),
    ("retain_prob", "retain prob", "{:.3f}"),
]
MUSE_COLUMNS = [
    ("model", "model", "{}"),
    ("verbmem_f", "VerbMem", "{:.3f}"),
    ("knowmem_forget_f", "KnowMem forget", "{:.3f}"),
    ("privleak", "PrivLeak", "{:.1f}"),
    ("knowmem_retain_f", "KnowMem retain", "{:.3f}"),
]


def method_config(cfg: ExperimentConfig, method: str) -> ExperimentConfig:
    """``cfg`` with ``method`` selected, as ``unlearn.method=<method>`` on the same command would.

    The experiment's unlearn schedule, the method's defaults (the published values) and the
    method's ``unlearn.per_method`` entry (demo.yaml: RMU's tiny-model lr and α), the same
    resolution as :func:`~obliviate.config.load_config`, so the demo and
    ``obliviate unlearn demo unlearn.method=<m>`` (or ``methods/<m>``) train the same model.
    ``unlearn.params`` belong to ``unlearn.method`` and are not carried over to other methods: give
    a demo method its own under ``unlearn.per_method.<m>.params``.
    """
    unlearn = cfg.unlearn
    name = get_method(method, at="demo.methods").name
    current = str(unlearn.method).lower()
    if name == current:
        out = dataclasses.replace(cfg, unlearn=dataclasses.replace(unlearn, method=method))
    else:
        # the schedule in ``cfg`` is the current method's: it must not carry that method's
        # per-method values (which replaced the experiment's) into another method's run
        target = unlearn.per_method.get(name, {})
        carried = sorted(
            k for k in unlearn.per_method.get(current, {}) if k != "params" and k not in target
        )
        if carried:
            raise ConfigError(
                f"demo.methods: cannot derive {method}'s config from one resolved for "
                f"unlearn.method={unlearn.method}, whose per-method {', '.join(carried)} replaced "
                "the experiment's",
                "leave unlearn.method at the experiment's value when running the demo",
            )
        section = dataclasses.asdict(unlearn)
        section.update(method=method, params={})
        section = apply_method_block(section, target)
        out = dataclasses.replace(cfg, unlearn=from_dict(type(unlearn), section, at="unlearn"))
    out.unlearn.validate("unlearn")
    return out


def run_demo(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Run the demo into ``run_dir``: its outputs replace the previous demo's there all at once,
    when every model is trained and scored (a killed demo leaves the previous results whole)."""
    t0 = time.perf_counter()
    exp = Experiment(cfg)  # the benchmark is loaded once for every stage below
    run = Path(cfg.run_dir).expanduser()
    stages.require_tiny_model(exp, "trains and unlearns")
    configs = {m: method_config(cfg, m) for m in cfg.demo.methods}  # all checked before training
    names = ["retain", "target", *cfg.demo.methods]
    owns = ["config.yaml", "summary.json", "table.txt", REPORT, *names, *_previous_rows(run)]
    with staged_run(run, "demo", owns, "summary.json", overwrite=True) as st:
        exp.benchmark  # noqa: B018 - the data is checked before any training
        rows = _run(exp, configs, st.out, run, t0)
    from obliviate.report import write_report

    with progress.log_file(run):  # once the results are in their final place
        for r in rows:
            api.record_card_metrics(r["model_path"], r, run / r["model"], quiet=True)
        report = write_report([run], run / REPORT)
        api.log(
            f"done in {time.perf_counter() - t0:.0f}s; results in {run}/ (per-sample JSON under <model>/eval/)"
        )
    print((run / "table.txt").read_text(), end="")
    print(f"report: {report}")
    return rows


def _previous_rows(run: Path) -> list[str]:
    """The model folders a previous demo in ``run`` wrote (they are replaced, not mixed in): a
    row's name, or for a seeded row (``npo/seed0``) its method folder."""
    try:
        rows = json.loads((run / "summary.json").read_text()).get("rows", [])
        names = (str(r["model"]).split("/")[0] for r in rows if str(r.get("model", "")))
        return list(dict.fromkeys(n for n in names if n not in ("", ".", "..")))
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return []


def _run(
    exp: Experiment, configs: dict[str, ExperimentConfig], out: Path, final: Path, t0: float
) -> list[dict[str, Any]]:
    """Train and score every model into ``out`` (the stage of the run dir ``final``).

    With ``cfg.seeds`` each method unlearns once per seed: rows ``<method>/seed<s>`` (each
    evaluated into that folder), the summary's ``aggregate`` holds each method's
    :func:`~obliviate.repeat.aggregate_summaries` and the table one mean ± sd row per method."""
    from obliviate.repeat import seed_config, seed_dir

    cfg = exp.cfg
    api.write_config(cfg, out)
    seeds = list(cfg.seeds) if cfg.seeds else None
    # (row name, config, log label): one per method, or one per method and seed
    runs = [
        (m, configs[m], m)
        if seeds is None
        else (f"{m}/{seed_dir(s)}", seed_config(configs[m], s), f"{m}, seed {s}")
        for m in cfg.demo.methods
        for s in (seeds or [None])
    ]
    steps = 2 + 2 * len(runs) + 2
    step = iter(range(1, steps + 1))

    api.log(f"[{next(step)}/{steps}] target model (fine-tuned on all authors)")
    target = api.finetune(exp, "full")
    api.log(f"[{next(step)}/{steps}] retain model (fine-tuned without the forget authors)")
    retain = api.finetune(exp, "retain")

    models: list[tuple[str, str]] = [("retain", retain), ("target", target)]
    for name, run_cfg, label in runs:
        api.log(f"[{next(step)}/{steps}] unlearning: {label}")
        models.append((name, api.unlearned_model(exp.with_config(run_cfg))))

    rows = []
    reference = None
    for name, path in models:
        api.log(f"[{next(step)}/{steps}] evaluating {name}")
        summary = api.evaluate(
            exp,
            path,
            out / name,
            reference=reference,
            is_reference=(name == "retain"),
            record_config=False,
            record_card=False,
        )
        if name == "retain":
            saved = api.read_reference(out / "retain", exp.benchmark)
            # named by where it will be once the demo's outputs are in place
            reference = dataclasses.replace(saved, source=f"saved evaluation {final / 'retain'}")
        rows.append({**summary, "model": name, "model_path": path})
    if seeds is not None:
        return _write_seeded(cfg, seeds, rows, out, t0)
    api.write_json(
        out / "summary.json", {"rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    )
    (out / "table.txt").write_text(format_table(rows) + "\n")
    return rows


def _write_seeded(
    cfg: ExperimentConfig, seeds: list[int], rows: list[dict[str, Any]], out: Path, t0: float
) -> list[dict[str, Any]]:
    """A seeded demo's ``summary.json`` (rows, seeds, per-method aggregate) and ``table.txt``
    (retain and target as they are, each method as mean ± sd over the seeds)."""
    from obliviate.repeat import aggregate_summaries, stats_table

    methods = cfg.demo.methods
    by_method = {
        m: aggregate_summaries([r for r in rows if r["model"].split("/")[0] == m]) for m in methods
    }
    seconds = round(time.perf_counter() - t0, 1)
    summary = {"rows": rows, "seeds": seeds, "aggregate": by_method, "seconds": seconds}
    api.write_json(out / "summary.json", summary)
    table_rows = [r for r in rows if r["model"] in ("retain", "target")]
    table_rows += [{"model": m, **by_method[m]} for m in methods]
    note = (
        f"{', '.join(methods)}: mean ± sd over seeds {', '.join(map(str, seeds))} "
        "(unlearn.seed); retain and target are trained once"
    )
    table = stats_table(table_rows, COLUMNS, total=len(seeds))
    (out / "table.txt").write_text(f"{table}\n{note}\n")
    return rows


def format_table(
    rows: list[dict[str, Any]], columns: list[tuple[str, str, str]] | None = None
) -> str:
    """A plain-text table: ``columns`` are (summary key, title, format); missing values print ``-``."""
    columns = COLUMNS if columns is None else columns
    head = [title for _, title, _ in columns]
    body = []
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append(fmt.format(v) if isinstance(v, int | float) or key == "model" else "-")
        body.append(cells)
    return aligned(head, body)
