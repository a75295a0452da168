"""``obliviate sweep``: an Optuna study over unlearning settings (README, "Reproducing and tuning").

A trial is the experiment's config with the trial's values applied as ``key=value`` overrides,
validated as a user's overrides are (:func:`~obliviate.config.load_config` over the resolved
config). It unlearns through the cached pipeline (the target and retain models are built once,
before any trial; each trial's model is cached by content, so a repeated setting costs nothing)
and is scored in memory on the metrics its objective reads only (:mod:`obliviate.sweep_space`).

- ``objective: score`` maximises one formula (TPE); ``objective: pareto`` maximises several
  together (multi-objective TPE, or NSGA-II) and reports the non-dominated trials.
- ``jobs > 1`` runs trials in worker processes, ``threads / jobs`` CPU threads each, sharing the
  cache (its entries are built in temp dirs and renamed into place). Trials are asked and told in
  batches of ``jobs``, so a study is deterministic for a given ``sweep.seed`` and ``jobs``.
- A trial that fails (a diverged run: exit 3; a setting the method refuses) is recorded as
  failed, and the study goes on; a sweep whose trials all fail is an error.

Outputs under ``run_dir`` (all or nothing): ``trials.csv`` / ``trials.json`` (every trial's
values, metrics, score, state and seconds), ``pareto.json`` (the non-dominated trials, or the top
trials by score), ``best.yaml`` (the full config of the best trial, ready for ``obliviate run`` /
``unlearn``), ``tuned.yaml`` (the best trial's ``unlearn`` section, a layer over the base
config), ``table.txt`` and ``config.yaml`` (the sweep's own config).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from obliviate import progress, stages
from obliviate.config import ExperimentConfig, UnlearnConfig, dump_yaml, load_config
from obliviate.errors import ConfigError, DivergenceError, ObliviateError
from obliviate.experiment import Experiment, log
from obliviate.runs import staged_run, write_config, write_json, write_text
from obliviate.sweep_space import (
    DERIVED,
    TARGET,
    Dimension,
    Formula,
    Needs,
    derived_values,
    missing_reason,
    parse_space,
    study_formulas,
)
from obliviate.tables import aligned

OWNS = (
    "trials.csv",
    "trials.json",
    "pareto.json",
    "best.yaml",
    "tuned.yaml",
    "table.txt",
    "config.yaml",
)
FINISHED = "trials.json"
COMPLETE, FAIL = "COMPLETE", "FAIL"


def import_optuna() -> Any:
    """optuna, or one line saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "obliviate sweep needs optuna, which is not installed",
            "pip install 'obliviate[sweep]'",
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --------------------------------------------------------------------------------------------
# trial configs


def override_value(v: Any) -> str:
    """``v`` as the right-hand side of a ``key=value`` override that reads back as ``v``."""
    text = yaml.safe_dump(v, default_flow_style=True, width=10**9)
    return text.removesuffix("\n...\n").strip()


class TrialConfigs:
    """Trial configs: the resolved base config (written once to a temp YAML file) with a trial's
    values as ``key=value`` overrides, loaded by :func:`load_config` like a user's command."""

    def __init__(self, cfg: ExperimentConfig, folder: Path) -> None:
        self.base = folder / "base.yaml"
        write_text(self.base, dump_yaml(cfg))

    def overrides(self, values: dict[str, Any]) -> list[str]:
        return [f"{k}={override_value(v)}" for k, v in values.items()]

    def load(self, values: dict[str, Any]) -> ExperimentConfig:
        return load_config([self.base], self.overrides(values))

    def check_bounds(self, dims: list[Dimension]) -> None:
        """Each bound and choice, alone, is a valid setting (an unknown method parameter or an
        out-of-range bound is refused before anything is trained)."""
        for d in dims:
            for v in d.extremes():
                try:
                    self.load({d.key: v})
                except ConfigError as e:
                    raise ConfigError(
                        f"sweep.space.{d.key}: the value {override_value(v)} is refused: {e.what}",
                        e.fix or "narrow the range",
                    ) from None


@contextmanager
def trial_configs(cfg: ExperimentConfig) -> Iterator[TrialConfigs]:
    with tempfile.TemporaryDirectory(prefix="obliviate-sweep-") as tmp:
        yield TrialConfigs(cfg, Path(tmp))


# --------------------------------------------------------------------------------------------
# running one trial (in this process or a worker)


@dataclasses.dataclass
class Plan:
    """What every trial is scored on: the evaluation options and roles, the reference, and the
    cross-split summary numbers that are whole under those options (``summary_keys``)."""

    options: Any
    roles: set[str]
    reference: Any
    summary_keys: frozenset[str]

    def scores(self, result: Any) -> dict[str, float]:
        """One model's numbers: every split aggregate, and the whole summary numbers (model
        utility over a subset of its terms, computed when ROUGE is not, is left out)."""
        from obliviate.eval.summary import summarize

        keys = {f"{r.name}_{k}" for r in result.splits for k in r.aggregates if k != "n"}
        keys |= self.summary_keys
        return {
            k: v
            for k, v in numbers(summarize(result, self.reference, intervals=False)).items()
            if k in keys
        }


def run_trial(exp: Experiment, cfg: ExperimentConfig, plan: Plan, label: str) -> dict[str, Any]:
    """Unlearn (cached) and score one trial: ``{state, metrics, model, seconds}``, or a failed
    trial's ``{state, error, exit_code, seconds}``. Bugs propagate."""
    from obliviate import api

    t0 = time.perf_counter()
    texp = exp.with_config(cfg)
    try:
        path = stages.unlearned_model(texp)
        res, _ = api.evaluate_results(
            texp, path, plan.options, plan.roles, reference_model=False, label=label
        )
    except ObliviateError as e:
        return failed(e.one_line(), e.exit_code, time.perf_counter() - t0)
    return {
        "state": COMPLETE,
        "metrics": plan.scores(res),
        "model": path,
        "seconds": round(time.perf_counter() - t0, 2),
        "pid": os.getpid(),
    }


def failed(error: str, exit_code: int, seconds: float = 0.0) -> dict[str, Any]:
    return {"state": FAIL, "error": error, "exit_code": exit_code, "seconds": round(seconds, 2)}


def numbers(summary: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


_WORKER: dict[str, Any] = {}


def _init_worker(cfg: ExperimentConfig, threads: int) -> None:
    """A worker process: its torch threads, no progress bars, the benchmark loaded once."""
    from obliviate.experiment import setup_runtime

    setup_runtime(dataclasses.replace(cfg, threads=threads))
    progress.set_enabled(False)
    _WORKER["exp"] = Experiment(cfg)


def _worker_trial(cfg: ExperimentConfig, plan: Plan, label: str) -> dict[str, Any]:
    return run_trial(_WORKER["exp"], cfg, plan, label)


class Runner:
    """Runs a batch of trials: in this process (``jobs=1``) or in ``jobs`` spawned workers."""

    def __init__(self, exp: Experiment, jobs: int) -> None:
        self.exp, self.pool = exp, None
        if jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            cores = exp.cfg.threads or os.cpu_count() or 1
            per = max(1, cores // jobs)
            log(f"running {jobs} trials at a time, {per} CPU thread(s) each")
            self.pool = ProcessPoolExecutor(
                max_workers=jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(exp.cfg, per),
            )

    def run(self, batch: list[tuple[ExperimentConfig, str]], plan: Plan) -> list[dict[str, Any]]:
        if self.pool is None:
            return [run_trial(self.exp, cfg, plan, label) for cfg, label in batch]
        futures = [self.pool.submit(_worker_trial, cfg, plan, label) for cfg, label in batch]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# the study


def run_sweep(cfg: ExperimentConfig, overwrite: bool = False) -> str:
    """Run the study ``cfg.sweep`` describes and write its outputs under ``cfg.run_dir``; the
    printed result (the trial table and where ``best.yaml`` is)."""
    optuna = import_optuna()
    sw = cfg.sweep
    dims = parse_space(sw.space, "sweep.space")
    if not dims:
        raise ConfigError(
            "sweep.space is empty: there is nothing to tune",
            "declare sweep.space (e.g. a shipped sweep: obliviate sweep demo sweeps/npo)",
        )
    score, objectives, needs = study_formulas(sw)
    if cfg.seeds:
        log(f"seeds={cfg.seeds} is not swept: each trial runs once (best.yaml keeps seeds)")
    exp = Experiment(cfg)
    stages.require_trainable(exp, "be tuned")
    run = Path(cfg.run_dir).expanduser()
    with trial_configs(cfg) as configs:
        configs.check_bounds(dims)
        with staged_run(run, "sweep", OWNS, FINISHED, overwrite) as st:
            from obliviate import api

            api.check_inputs(exp, [cfg.model.path, cfg.model.retain_path])
            plan, target = prepare(exp, needs, [score, *objectives])
            records = study(optuna, exp, configs, dims, score, objectives, plan, target)
            text = write_outputs(st.out, run, cfg, dims, score, objectives, records, target)
    return text


def prepare(exp: Experiment, needs: Needs, formulas: list[Formula]) -> tuple[Plan, dict[str, Any]]:
    """Build the target and retain models (before any trial or worker), the retain reference
    and the target's scores; every name a formula reads must come out of them."""
    from obliviate import api
    from obliviate.eval.suite import EvalOptions

    cfg = exp.cfg
    source = stages.target_model(exp)
    reference = None
    if needs.reference:
        reference = api.retain_reference(exp)
        if not reference.forget_ratios:
            raise ConfigError(
                f"the sweep's objective reads forget quality, and there is no reference: "
                f"{reference.source}",
                "set model.retain_path or eval.retain_eval, or score without forget_quality",
            )
    options = dataclasses.replace(
        EvalOptions.from_config(cfg.eval),
        metrics=sorted(needs.metrics),
        gradnorm=False,
        cosine=False,
        entailment=False,
    )
    whole = set()
    if needs.reference:
        whole |= {"forget_quality", "forget_quality_ks", "forget_quality_n_forget"}
        whole |= {"forget_quality_n_retain"}
    if DERIVED["model_utility"].metrics <= needs.metrics:
        whole.add("model_utility")
    plan = Plan(options, set(needs.roles), reference, frozenset(whole))
    result, _ = api.evaluate_results(
        exp, source, options, plan.roles, reference_model=False, label="the target model"
    )
    target = plan.scores(result)
    values = {**target, **derived_values(target, target)}
    for f in formulas:
        missing = [n for n in f.names if n not in values]
        if missing:
            raise ConfigError(
                f"sweep: {f.text!r} cannot be computed: {missing_reason(missing[0], values)}",
                "score with metrics this benchmark and model produce (obliviate eval shows them)",
            )
    return plan, target


def make_sampler(optuna: Any, cfg: ExperimentConfig) -> Any:
    """TPE (single- or multi-objective), or NSGA-II (``sweep.sampler=nsga2``), seeded."""
    sw = cfg.sweep
    if sw.sampler == "nsga2":
        population = max(4, min(50, sw.trials // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=sw.seed)
    if sw.sampler == "random":
        return optuna.samplers.RandomSampler(seed=sw.seed)
    return optuna.samplers.TPESampler(seed=sw.seed, constant_liar=sw.jobs > 1)


def distribution(optuna: Any, d: Dimension) -> Any:
    D = optuna.distributions
    if d.kind == "choice":
        return D.CategoricalDistribution(list(d.choices))
    if d.kind == "int":
        return D.IntDistribution(int(d.low), int(d.high), log=d.log, step=int(d.step or 1))
    return D.FloatDistribution(float(d.low), float(d.high), log=d.log, step=d.step)


def study(
    optuna: Any,
    exp: Experiment,
    configs: TrialConfigs,
    dims: list[Dimension],
    score: Formula,
    objectives: list[Formula],
    plan: Plan,
    target: dict[str, Any],
) -> list[dict[str, Any]]:
    """Ask, run and tell every trial, in batches of ``sweep.jobs``: the trial records."""
    sw = exp.cfg.sweep
    st = optuna.create_study(
        directions=["maximize"] * len(objectives),
        sampler=make_sampler(optuna, exp.cfg),
    )
    dists = {d.key: distribution(optuna, d) for d in dims}
    records: list[dict[str, Any]] = []
    runner = Runner(exp, sw.jobs)
    try:
        while len(records) < sw.trials:
            k = min(sw.jobs, sw.trials - len(records))
            trials = [st.ask(dists) for _ in range(k)]
            batch, slots, outcomes = [], {}, {}
            for t in trials:
                values = {d.key: t.params[d.key] for d in dims}
                label = f"trial {t.number + 1}/{sw.trials}"
                try:
                    tcfg = configs.load(values)
                except ConfigError as e:  # a combination the config refuses
                    outcomes[t.number] = failed(e.one_line(), e.exit_code)
                    continue
                key = tuple(configs.overrides(values))
                if key not in slots:  # one run per distinct setting in a batch
                    slots[key] = len(batch)
                    batch.append((tcfg, label))
                outcomes[t.number] = slots[key]
            ran = runner.run(batch, plan)
            for t in trials:
                out = outcomes[t.number]
                out = ran[out] if isinstance(out, int) else out
                values = {d.key: t.params[d.key] for d in dims}
                rec = finish(
                    t.number, values, configs.overrides(values), out, score, objectives, target
                )
                if rec["state"] == COMPLETE:
                    st.tell(t, rec["objectives"])
                else:
                    st.tell(t, state=optuna.trial.TrialState.FAIL)
                records.append(rec)
                log(trial_line(rec, sw.trials))
    finally:
        runner.close()
    done = [r for r in records if r["state"] == COMPLETE]
    if not done:
        first = records[0]
        cls = (
            DivergenceError if first.get("exit_code") == DivergenceError.exit_code else ConfigError
        )
        raise cls(
            f"every one of the {len(records)} trials failed; the first: {first['error']}",
            "narrow sweep.space (a lower unlearn.lr often stops divergence)",
        )
    return records


def finish(
    number: int,
    values: dict[str, Any],
    overrides: list[str],
    out: dict[str, Any],
    score: Formula,
    objectives: list[Formula],
    target: dict[str, Any],
) -> dict[str, Any]:
    """A trial's record: its values, metrics, score and objectives (a non-finite one fails it)."""
    rec: dict[str, Any] = {"number": number, "params": values, "overrides": overrides, **out}
    if out["state"] != COMPLETE:
        return rec
    env = {**out["metrics"], **derived_values(out["metrics"], target)}
    rec["metrics"] = {k: v for k, v in env.items() if not k.startswith(TARGET)}
    rec["score"] = score(env)
    rec["objectives"] = [f(env) for f in objectives]
    bad = [
        f.text for f, v in zip(objectives, rec["objectives"], strict=True) if not math.isfinite(v)
    ]
    if bad:
        rec.update(state=FAIL, exit_code=2, error=f"{bad[0]!r} is not a finite number")
        del rec["objectives"]
    return rec


def trial_line(rec: dict[str, Any], total: int) -> str:
    """The status line of a finished trial."""
    settings = ", ".join(f"{short(k)}={fmt(v)}" for k, v in rec["params"].items())
    head = f"trial {rec['number'] + 1}/{total} ({settings})"
    if rec["state"] != COMPLETE:
        return f"{head} failed: {rec['error']}"
    return f"{head}: score {fmt(rec['score'])} ({rec['seconds']:.0f}s)"


def short(key: str) -> str:
    return key.split(".")[-1]


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# --------------------------------------------------------------------------------------------
# results


def pareto_front(points: list[list[float]]) -> list[int]:
    """Indices of the points no other point dominates (every objective maximised: ``b``
    dominates ``a`` when ``b >= a`` everywhere and ``b > a`` somewhere)."""

    def dominates(b: list[float], a: list[float]) -> bool:
        return all(x >= y for x, y in zip(b, a, strict=True)) and any(
            x > y for x, y in zip(b, a, strict=True)
        )

    return [i for i, a in enumerate(points) if not any(dominates(b, a) for b in points)]


def choose(
    records: list[dict[str, Any]], pareto: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The Pareto set (``pareto``: non-dominated complete trials; else the complete trials by
    score) and the best trial: the highest score among them (ties: the earliest trial)."""
    done = [r for r in records if r["state"] == COMPLETE]
    if pareto:
        front = [done[i] for i in pareto_front([r["objectives"] for r in done])]
        front.sort(key=lambda r: (-r["objectives"][0], r["number"]))
    else:
        front = sorted(done, key=lambda r: (-r["score"], r["number"]))
    pool = front if pareto else done
    best = min(pool, key=lambda r: (-_finite(r["score"]), r["number"]))
    return front, best


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def write_outputs(
    out: Path,
    run: Path,
    cfg: ExperimentConfig,
    dims: list[Dimension],
    score: Formula,
    objectives: list[Formula],
    records: list[dict[str, Any]],
    target: dict[str, Any],
) -> str:
    """Every output file into ``out`` (the stage of ``run``); the printed result."""
    sw = cfg.sweep
    pareto = sw.objective == "pareto"
    front, best = choose(records, pareto)
    columns = metric_columns(score, objectives)
    study_info = {
        "objective": sw.objective,
        "score": score.text,
        "objectives": [f.text for f in objectives],
        "directions": ["maximize"] * len(objectives),
        "sampler": sw.sampler,
        "seed": sw.seed,
        "trials": sw.trials,
        "jobs": sw.jobs,
        "space": {d.key: d.to_spec() for d in dims},
        "best": best["number"],
        "complete": sum(r["state"] == COMPLETE for r in records),
        "failed": sum(r["state"] != COMPLETE for r in records),
    }
    target = {**target, **derived_values(target, None)}
    write_json(out / "trials.json", {"study": study_info, "target": target, "trials": records})
    write_text(out / "trials.csv", trials_csv(records, dims, columns, objectives, pareto))
    if pareto:
        chosen = {
            "objective": "pareto",
            "objectives": [f.text for f in objectives],
            "trials": front,
        }
    else:
        chosen = {"objective": "score", "score": score.text, "trials": front[: sw.top]}
    write_json(out / "pareto.json", {**chosen, "best": best["number"]})
    best_cfg = best_config(cfg, best, run)
    header = provenance(best, score, sw.trials, cfg)
    write_text(out / "best.yaml", header + dump_yaml(best_cfg))
    write_text(out / "tuned.yaml", header + tuned_layer(best_cfg, dims))
    table = trials_table(records, dims, columns, score, front, best, pareto, target)
    write_text(out / "table.txt", table + "\n")
    write_config(cfg, out)
    return (
        f"{table}\n"
        f"best: trial {best['number'] + 1} (score {fmt(best['score'])}), "
        f"{'P: Pareto set; ' if pareto else ''}all trials in {run / 'trials.csv'}\n"
        f"run it: obliviate run {run / 'best.yaml'}"
    )


def metric_columns(score: Formula, objectives: list[Formula]) -> list[str]:
    """Metrics shown per trial: what the formulas read, headline numbers first."""
    names = [n for f in [*objectives, score] for n in f.names if not n.startswith(TARGET)]
    return list(dict.fromkeys(names))


def best_config(cfg: ExperimentConfig, best: dict[str, Any], run: Path) -> ExperimentConfig:
    """The best trial's config, writing its runs to ``<run_dir>/best``."""
    with trial_configs(cfg) as configs:
        trial = configs.load(best["params"])
    return dataclasses.replace(trial, run_dir=str(Path(cfg.run_dir) / "best"))


def provenance(best: dict[str, Any], score: Formula, trials: int, cfg: ExperimentConfig) -> str:
    settings = " ".join(best["overrides"])
    return (
        f"# Tuned by `obliviate sweep` (sweep.seed={cfg.sweep.seed}, {trials} trials): trial "
        f"{best['number'] + 1}, score {fmt(best['score'])} ({score.text})\n"
        f"# Its settings: {settings}\n"
    )


def tuned_layer(best_cfg: ExperimentConfig, dims: list[Dimension]) -> str:
    """The best trial's ``unlearn`` section as a layer over the sweep's base config: the method,
    every setting off its default or swept, and the full ``params`` (a layer's params replace the
    base's whole). ``obliviate run <base config> tuned.yaml`` runs the best trial."""
    u = best_cfg.unlearn
    default = UnlearnConfig()
    swept = {d.key.split(".")[1] for d in dims}
    section: dict[str, Any] = {"method": u.method}
    for f in dataclasses.fields(u):
        if f.name in ("method", "per_method", "params"):
            continue
        v = getattr(u, f.name)
        if f.name in swept or v != getattr(default, f.name):
            section[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
    section["params"] = dict(u.params)
    return (
        "# A layer over the config the sweep started from: obliviate run <that config> tuned.yaml\n"
        + yaml.safe_dump({"unlearn": section}, sort_keys=False)
    )


def trials_csv(
    records: list[dict[str, Any]],
    dims: list[Dimension],
    columns: list[str],
    objectives: list[Formula],
    pareto: bool,
) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    objective_cols = [f"objective_{i}" for i in range(len(objectives))] if pareto else []
    w.writerow(
        [
            "trial",
            "state",
            *[d.key for d in dims],
            *columns,
            "score",
            *objective_cols,
            "seconds",
            "error",
        ]
    )
    for r in records:
        m = r.get("metrics", {})
        obj = r.get("objectives", [None] * len(objectives)) if pareto else []
        w.writerow(
            [
                r["number"] + 1,
                r["state"],
                *[r["params"][d.key] for d in dims],
                *[_cell(m.get(c)) for c in columns],
                _cell(r.get("score")),
                *[_cell(v) for v in obj],
                r["seconds"],
                r.get("error", ""),
            ]
        )
    return buf.getvalue()


def _cell(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def trials_table(
    records: list[dict[str, Any]],
    dims: list[Dimension],
    columns: list[str],
    score: Formula,
    front: list[dict[str, Any]],
    best: dict[str, Any],
    pareto: bool,
    target: dict[str, Any],
) -> str:
    """One row per trial (``*``: best; ``P``: in the Pareto set), under a row for the target
    model (no unlearning) as the baseline."""
    names = [short(d.key) for d in dims]
    if len(set(names)) < len(names):
        names = [d.key for d in dims]
    head = ["trial", *names, *columns, "score", "seconds", "note"]
    base = {**target, **derived_values(target, target)}
    body = [
        [
            "target",
            *["-" for _ in dims],
            *[fmt(base[c]) if c in base else "-" for c in columns],
            fmt(score(base)),
            "-",
            "no unlearning",
        ]
    ]
    in_front = {r["number"] for r in front}
    for r in records:
        m = r.get("metrics", {})
        mark = "*" if r["number"] == best["number"] else ""
        if pareto and r["number"] in in_front:
            mark += "P"
        if r["state"] != COMPLETE:
            mark = "failed"
        body.append(
            [
                str(r["number"] + 1),
                *[fmt(r["params"][d.key]) for d in dims],
                *[fmt(m[c]) if c in m else "-" for c in columns],
                fmt(r["score"]) if "score" in r else "-",
                f"{r['seconds']:.0f}",
                mark,
            ]
        )
    return aligned(head, body, left=(0, len(head) - 1))
