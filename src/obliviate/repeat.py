"""``obliviate run``: unlearn and evaluate in one run dir, once or once per seed (mean ± sd).

Without ``seeds`` the run dir gets what ``obliviate unlearn`` and ``obliviate eval`` into the same
dir would write: ``model/``, ``eval/``, ``summary.json``, ``config.yaml``. With ``seeds=[s, ...]``
each seed gets its own complete run dir ``seed<s>/`` (``model/``, ``eval/``, ``summary.json``,
``config.yaml`` with ``unlearn.seed=s``), and the run dir an aggregate ``summary.json`` (every
numeric metric's mean, sample sd, n and per-seed values; see :func:`aggregate_summaries`) and
``table.txt``. Either way everything appears at once when the last model is scored, or nothing.

``unlearn.seed`` seeds the unlearning run only: its data order, the retain samples paired with
forget batches, and the method's own randomness where it draws from it (dropout, ULD's LoRA
initialisation, ECO's noise, SSD's reference shuffle). The target and retain models are the same
cached ones for every seed, so the spread is that of unlearning, not of fine-tuning. A method
parameter with its own seed (RMU's ``unlearn.params.seed``) keeps it.

The aggregation helpers here (:func:`aggregate`, :func:`format_stat`, :func:`stats_table`) also
serve ``obliviate demo --seeds`` and ``benchmarks/methods.py --seeds``.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.config import ExperimentConfig
from obliviate.errors import ConfigError
from obliviate.eval.directions import is_number
from obliviate.tables import aligned

SEED_DIR = re.compile(r"seed\d+")
"""Names of per-seed sub-run dirs (``seed0``, ``seed1``, ...)."""
MEAN_ROW = "mean ± sd"


# --------------------------------------------------------------------------------------------
# aggregation


def aggregate(values: Sequence[Any]) -> dict[str, Any]:
    """``{"mean", "sd", "n", "values"}`` of one metric over seeds: mean and sample standard
    deviation (ddof = 1) of the available values, ``n`` how many there were, ``values`` the
    per-seed values as given (None where unavailable). ``mean`` is None for n = 0, ``sd`` for
    n < 2."""
    nums = [float(v) for v in values if is_number(v)]
    return {
        "mean": statistics.fmean(nums) if nums else None,
        "sd": statistics.stdev(nums) if len(nums) >= 2 else None,
        "n": len(nums),
        "values": [v if is_number(v) else None for v in values],
    }


def aggregate_summaries(summaries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`aggregate` of every top-level key that is a number in at least one summary, in
    order of first appearance (nested sections such as ``ci95`` are left out)."""
    keys: dict[str, None] = {}
    for s in summaries:
        keys.update((k, None) for k, v in s.items() if is_number(v))
    return {k: aggregate([s.get(k) for s in summaries]) for k in keys}


def format_stat(stat: Mapping[str, Any], fmt: str = "{:.3f}", total: int | None = None) -> str:
    """``0.512 ± 0.013`` (both in ``fmt``); the mean alone for one value, ``-`` for none, and
    ``(n=k)`` after it when only k of ``total`` seeds gave a value."""
    n = stat.get("n", 0)
    if not n or stat.get("mean") is None:
        return "-"
    text = fmt.format(stat["mean"])
    if stat.get("sd") is not None:
        text += f" ± {fmt.format(stat['sd'])}"
    if total is not None and n < total:
        text += f" (n={n})"
    return text


def is_stat(v: Any) -> bool:
    return isinstance(v, Mapping) and "mean" in v and "n" in v


def format_cell(v: Any, fmt: str, total: int | None = None) -> str:
    """One table cell: an :func:`aggregate` as mean ± sd, a number in ``fmt``, else ``-``."""
    if is_stat(v):
        return format_stat(v, fmt, total)
    if is_number(v):
        return fmt.format(v)
    return "-"


def stats_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str, str]],
    total: int | None = None,
) -> str:
    """A plain-text table like :func:`obliviate.demo.format_table` whose cells may be
    :func:`aggregate` results (printed as mean ± sd) or single numbers."""
    head = [title for _, title, _ in columns]
    body = [
        [
            str(r.get(k, "")) if k == "model" else format_cell(r.get(k), fmt, total)
            for k, _, fmt in columns
        ]
        for r in rows
    ]
    return aligned(head, body)


def seed_config(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """``cfg`` for one seed of a repeated experiment: ``unlearn.seed=seed``, no ``seeds``."""
    return dataclasses.replace(cfg, seeds=None, unlearn=dataclasses.replace(cfg.unlearn, seed=seed))


def seed_dir(seed: int) -> str:
    return f"seed{seed}"


# --------------------------------------------------------------------------------------------
# obliviate run


@dataclass
class RunResult:
    """What :func:`run_experiment` wrote: the run dir, the seeds (None: one run), each run's
    summary, the aggregate (None without seeds) and the table it prints."""

    run_dir: Path
    seeds: list[int] | None
    summaries: list[dict[str, Any]]
    aggregate: dict[str, dict[str, Any]] | None
    table: str
    note: str | None = None


def columns_for(cfg: ExperimentConfig) -> list[tuple[str, str, str]]:
    from obliviate.demo import COLUMNS, MUSE_COLUMNS

    return MUSE_COLUMNS if cfg.benchmark.name == "muse" else COLUMNS


def run_experiment(cfg: ExperimentConfig, overwrite: bool = False) -> RunResult:
    """Unlearn with ``cfg.unlearn`` and evaluate, into ``cfg.run_dir`` (see the module docstring).

    All or nothing: the outputs are built in ``<run_dir>/.partial-run`` and swapped in when the
    last evaluation is done. A run dir holding results (a summary, a model or seed dirs) is
    refused unless ``overwrite``, and then everything a previous ``run`` wrote there is replaced.
    """
    from obliviate import api, distributed, stages
    from obliviate.experiment import Experiment, log
    from obliviate.runs import staged_run, write_config, write_json, write_text

    exp = Experiment.of(cfg)
    cfg = exp.cfg
    run = Path(cfg.run_dir).expanduser()
    previous = _previous_seed_dirs(run)
    held = [n for n in ("summary.json", "model") if (run / n).exists()] + previous
    if held and not overwrite:
        raise ConfigError(
            f"{run} already holds results ({', '.join(held)})",
            "choose another run_dir or pass --overwrite",
        )
    stages.require_trainable(exp, "unlearn")
    owns = ("model", "eval", "summary.json", "config.yaml", "table.txt", "robustness.json")
    seeds = list(cfg.seeds) if cfg.seeds else None
    with staged_run(run, "run", (*owns, *previous), "summary.json", overwrite) as st:
        m, e = cfg.model, cfg.eval
        api.check_inputs(exp, [m.path, m.retain_path, e.reference_model])
        api.check_selection_inputs(exp)
        source = stages.target_model(exp)
        reference = api.retain_reference(exp)  # once for every seed
        write_config(cfg, st.out)
        if seeds is None:
            work = st.work / "checkpoints"
            summaries = [_unlearn_and_evaluate(exp, source, st.out, run, work, reference)]
            agg = None
        else:
            summaries = []
            for i, s in enumerate(seeds, 1):
                log(f"seed {s} ({i}/{len(seeds)})")
                sub = exp.with_config(seed_config(cfg, s))
                out = st.out / seed_dir(s)
                write_config(sub.cfg, out)
                work = st.work / f"checkpoints-{seed_dir(s)}"
                summaries.append(
                    _unlearn_and_evaluate(sub, source, out, run / seed_dir(s), work, reference)
                )
            agg = aggregate_summaries(summaries)
            write_json(st.out / "summary.json", aggregate_summary(cfg, seeds, summaries, agg))
        result = _result(cfg, run, seeds, summaries, agg)
        if seeds is not None:
            write_text(st.out / "table.txt", result.table + "\n")

    def record_cards() -> None:
        for s, summary in zip(seeds or [None], summaries, strict=True):
            final = run if s is None else run / seed_dir(s)
            api.record_card_metrics(str(final / "model"), summary, final)

    distributed.on_main(record_cards)
    log(f"results in {run}/")
    return result


def _unlearn_and_evaluate(
    exp: Any, source: str, out: Path, final: Path, checkpoints: Path, reference: Any
) -> dict[str, Any]:
    """Unlearn into ``out/model`` and evaluate it into ``out`` against the retain ``reference``
    (``final``: where ``out`` will be once the run is in place, which the summary names as the
    model's location). In a multi-process launch every process trains and the main process
    evaluates (as :func:`obliviate.api.evaluate` does)."""
    from obliviate import api, distributed, stages
    from obliviate.runs import write_json

    stages.unlearn_to(exp, out / "model", source, checkpoints)

    def evaluate() -> dict[str, Any]:
        model = str(out / "model")
        summary, result = api.summarize_model(exp, model, reference, False, label=final.name)
        summary["model"] = str((final / "model").resolve())
        api.write_results(out, result, exp.cfg.eval.write_generations)
        write_json(out / "summary.json", summary)
        return summary

    return distributed.on_main(evaluate)


def aggregate_summary(
    cfg: ExperimentConfig,
    seeds: list[int],
    summaries: list[dict[str, Any]],
    agg: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The run dir's ``summary.json`` over seeds: ``seeds``, ``seed_dirs``, ``metrics`` (each
    numeric metric's mean, sd, n, per-seed values), then every metric's mean at the top level,
    so ``obliviate compare`` and ``report`` rank a repeated run by its means."""
    return {
        "seeds": seeds,
        "seed_dirs": [seed_dir(s) for s in seeds],
        "method": cfg.unlearn.method,
        "benchmark": cfg.benchmark.name,
        "metrics": agg,
        **{k: v["mean"] for k, v in agg.items()},
        "forget_quality_reference": summaries[0].get("forget_quality_reference"),
        "split_roles": summaries[0].get("split_roles"),
    }


def _result(
    cfg: ExperimentConfig,
    run: Path,
    seeds: list[int] | None,
    summaries: list[dict[str, Any]],
    agg: dict[str, dict[str, Any]] | None,
) -> RunResult:
    from obliviate.demo import format_table

    columns = columns_for(cfg)
    fq_missing = cfg.benchmark.name != "muse" and all(
        s.get("forget_quality") is None for s in summaries
    )
    note = (
        f"forget quality is unavailable: {summaries[0].get('forget_quality_reference')}"
        if fq_missing
        else None
    )
    if seeds is None:
        s = summaries[0]
        table = format_table([{**s, "model": Path(s["model"]).name}], columns)
        return RunResult(run, None, summaries, None, table, note)
    rows = [{**s, "model": seed_dir(seed)} for seed, s in zip(seeds, summaries, strict=True)]
    rows.append({**(agg or {}), "model": MEAN_ROW})
    table = stats_table(rows, columns, total=len(seeds))
    return RunResult(run, seeds, summaries, agg, table, note)


def print_run(result: RunResult) -> None:
    """Print the run's table on stdout (a single run: the table ``obliviate eval`` prints)."""
    from obliviate.experiment import log
    from obliviate.progress import main_process

    if not main_process():  # a launch's other processes: the table once
        return
    print(result.table)
    if result.note:
        log(result.note)


def _previous_seed_dirs(run: Path) -> list[str]:
    """The ``seed<s>`` dirs a previous repeated run left in ``run`` (replaced, never mixed in)."""
    try:
        return sorted(p.name for p in run.iterdir() if p.is_dir() and SEED_DIR.fullmatch(p.name))
    except OSError:
        return []
