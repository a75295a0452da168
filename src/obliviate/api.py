"""The Python API. The CLI is a thin layer over these functions.

from obliviate import load_config, api
cfg = load_config("demo", ["unlearn.method=npo"])
target = api.target_model(cfg)          # fine-tuned tiny model (cached by content hash)
model_dir = api.unlearn(cfg)            # writes <run_dir>/model
summary = api.evaluate(cfg, model_dir)  # writes <run_dir>/eval/*.json and summary.json
api.attack(cfg, cfg.run_dir)            # robustness attacks: <run_dir>/robustness.json

Every function takes an :class:`~obliviate.config.ExperimentConfig` or an
:class:`~obliviate.experiment.Experiment` (the context that loads the benchmark once). To evaluate
a model held in memory, use :func:`obliviate.eval.evaluate.evaluate_model`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from obliviate import distributed, stages
from obliviate.config import ExperimentConfig
from obliviate.data.benchmarks import Benchmark
from obliviate.errors import ConfigError
from obliviate.eval.evaluate import Evaluation, evaluate_model, reference_plan, score_reference  # noqa: F401
from obliviate.eval.reference import RetainReference, read_reference, reference_from_result
from obliviate.experiment import Experiment, log, setup_runtime  # noqa: F401
from obliviate.runs import model_fingerprint, staged_run, write_config, write_json

Config = ExperimentConfig | Experiment

EVAL_CODE_VERSION = "2"
"""Bump when a change to the evaluation code must invalidate cached evaluations."""


def load_benchmark(cfg: Config) -> Benchmark:
    return Experiment.of(cfg).benchmark


def generate(cfg: Config, out: str | Path) -> Path:
    """Write the synthetic benchmark's splits as TOFU-format JSON files under ``out``."""
    from obliviate.data.synthetic import generate_benchmark, write_benchmark

    b = Experiment.of(cfg).cfg.benchmark
    if b.name != "synthetic":
        raise ConfigError(
            f"generate writes the synthetic benchmark, not {b.name}", "set benchmark.name=synthetic"
        )
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} is not an empty directory", "give an empty or new directory")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise ConfigError(
            f"cannot write to {out.parent}: {e.strerror or e}", "choose a writable --out"
        ) from None
    splits = generate_benchmark(b.n_authors, b.qa_per_author, b.n_holdout, b.n_general, b.seed)
    if b.watermark:  # the same per-owner watermarks the in-memory benchmark carries
        from obliviate.data.watermark import watermark_benchmark

        splits = watermark_benchmark(splits, b.watermark_key, b.watermark_similar, b.seed)
    try:
        write_benchmark(splits, tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_inputs(exp: Experiment, models: list[str | None]) -> None:
    """Everything a command reads, checked before anything is trained or scored: the benchmark
    (files decode, fields present, forget and retain do not overlap), each local model dir or
    other artefact (weights readable and safetensors, shapes agree with config.json, tokenizer has
    EOS and fits the vocabulary; an adapter's or wrapper's base model likewise) and the lm-eval task names. NaN weights are refused when a model is loaded,
    before it is scored (reading every tensor here too would read the weights twice)."""
    from obliviate.artefacts import check_artefact

    exp.benchmark  # noqa: B018 - loads and checks the data
    for path in dict.fromkeys(m for m in models if m):
        check_artefact(path, exp.cfg.model.allow_pickle)
    e = exp.cfg.eval
    if e.lm_eval_tasks:
        from obliviate.eval.lm_harness import check_tasks

        check_tasks(e.lm_eval_tasks, e.lm_eval_include_path)


def check_selection_inputs(exp: Experiment) -> None:
    """``unlearn.eval_metrics`` resolved on the benchmark (a split it lacks is refused) before
    anything is trained; nothing without ``unlearn.eval_every``."""
    from obliviate.training.select import check_on_benchmark

    check_on_benchmark(exp)


# ---------------------------------------------------------------- models


def finetune(
    cfg: Config,
    which: str = "full",
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> str:
    """The tiny target (``full``) or retain model, cached; with ``out_dir`` also written to
    ``<out_dir>/model`` (see :func:`obliviate.stages.finetune`)."""
    exp = Experiment.of(cfg)
    stages.require_tiny_model(exp, "fine-tunes")
    stages.require_trainable(exp, "fine-tune")
    return stages.finetune(exp, which, out_dir, overwrite, resume)


def target_model(cfg: Config) -> str:
    return stages.target_model(Experiment.of(cfg))


def retain_model(cfg: Config) -> str | None:
    return stages.retain_model(Experiment.of(cfg))


def unlearned_model(cfg: Config) -> str:
    return stages.unlearned_model(Experiment.of(cfg))


def unlearn(cfg: Config, overwrite: bool = False, resume: bool = False) -> str:
    """Unlearn into ``<run_dir>/model`` (plus ``config.yaml``), all or nothing.

    Refuses a finished run unless ``overwrite`` (which keeps the old model until the new one is
    complete). ``resume`` continues an interrupted run from its newest checkpoint
    (``unlearn.save_every``), with the same settings.
    """
    exp = Experiment.of(cfg)
    stages.require_trainable(exp, "unlearn")
    distributed.check_zero3(exp.cfg.unlearn)
    run = Path(exp.cfg.run_dir)
    with staged_run(run, "unlearn", ("model", "config.yaml"), "model", overwrite, resume) as st:
        check_inputs(exp, [exp.cfg.model.path])
        check_selection_inputs(exp)
        source = stages.target_model(exp)
        st.check_resume_key(stages.unlearn_key(exp, source))
        write_config(exp.cfg, st.out)
        stages.unlearn_to(exp, st.out / "model", source, st.work / "checkpoints", st.resumed)
    log(f"unlearned model written to {run / 'model'}")
    return str(run / "model")


# ---------------------------------------------------------------- evaluation


def _options(exp: Experiment):
    from obliviate.eval.suite import EvalOptions

    return EvalOptions.from_config(exp.cfg.eval)


def eval_cache_key(
    exp: Experiment, path: str, options: Any, roles: Any = None, reference_model: bool = True
) -> dict[str, Any] | None:
    """What an evaluation's per-split results depend on; None when they cannot be cached."""
    from obliviate.artefacts import FULL_MODEL, artefact_kind, base_of

    fp = model_fingerprint(path)
    if fp is None or not exp.cfg.eval.cache:
        return None
    if artefact_kind(path) != FULL_MODEL:  # an adapter's or wrapper's result is its base's too
        base = base_of(path)
        fp = {"artefact": fp, "base": model_fingerprint(base) or base}
    e = exp.cfg.eval
    ref = None
    if reference_model and e.reference_model:
        ref = model_fingerprint(e.reference_model) or e.reference_model
    b = exp.cfg.benchmark
    return {
        "eval_code": EVAL_CODE_VERSION,
        "model": fp,
        "data": exp.data_key,
        "forget_split": b.forget_split,
        "retain_eval_size": b.retain_eval_size,
        "dtype": exp.cfg.model.dtype,
        "options": asdict(options),
        "roles": sorted(roles) if roles else None,
        "reference_model": ref,
    }


def evaluate_results(
    exp: Experiment,
    path: str,
    options: Any = None,
    roles: Any = None,
    reference_model: bool = True,
    label: str | None = None,
):
    """Per-split results for the model at ``path`` (cached under the cache's ``eval`` kind):
    ``(SuiteResult, cache_hit)``. ``label`` names the model on the progress display."""
    from obliviate import progress
    from obliviate.artefacts import load_artefact
    from obliviate.eval.suite import SuiteResult, evaluate_splits
    from obliviate.models.io import load_model, load_tokenizer

    options = options or _options(exp)
    e = exp.cfg.eval

    def compute() -> SuiteResult:
        pickle = exp.cfg.model.allow_pickle
        model, tok = load_artefact(path, exp.cfg.model.dtype, exp.device, allow_pickle=pickle)
        ref_model = ref_tok = None
        if reference_model and e.reference_model:
            ref_tok = load_tokenizer(e.reference_model)
            ref_model = load_model(
                e.reference_model, exp.cfg.model.dtype, exp.device, allow_pickle=pickle
            )
        t0 = time.perf_counter()
        with progress.stage(f"evaluating {label or Path(path).name}"):
            res = evaluate_splits(
                model,
                tok,
                exp.benchmark,
                options,
                roles=roles,
                ref_model=ref_model,
                ref_tokenizer=ref_tok,
            )
        res.passes["scoring_seconds"] = round(time.perf_counter() - t0, 2)
        return res

    key = eval_cache_key(exp, path, options, roles, reference_model)
    if key is None:
        return compute(), False
    holder: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        holder["res"] = compute()
        write_json(tmp / "results.json", holder["res"].to_json())

    entry, hit = exp.cache.get_or_build("eval", key, build)
    if not hit and "res" in holder:
        return holder["res"], False
    if not hit:  # a launch's other processes: the main process built it
        return SuiteResult.from_json(json.loads((entry / "results.json").read_text())), False
    log(f"reusing cached evaluation ({entry.name})")
    return SuiteResult.from_json(json.loads((entry / "results.json").read_text())), True


def retain_reference(cfg: Config) -> RetainReference:
    """Forget quality's and PrivLeak's reference: ``eval.retain_eval`` (a saved evaluation of the
    retain model) first, else the retain model scored now (teacher-forced passes only, cached)."""
    exp = Experiment.of(cfg)
    if exp.cfg.eval.retain_eval:
        return read_reference(exp.cfg.eval.retain_eval, exp.benchmark)
    path = stages.retain_model(exp)
    if path is None:
        return RetainReference(
            None, {}, "no retain model (set model.retain_path or eval.retain_eval)"
        )
    options, roles = reference_plan(_options(exp))
    res, _ = evaluate_results(exp, path, options, roles, False, "the retain model (reference)")
    return reference_from_result(res, f"retain model {path}")


def evaluate(
    cfg: Config,
    model_path: str | None = None,
    out_dir: str | Path | None = None,
    reference: Any = None,
    overwrite: bool = False,
    is_reference: bool = False,
    record_config: bool = True,
    record_card: bool = True,
) -> dict[str, Any]:
    """Evaluate one model with the selected metrics; writes ``eval/<split>.json``,
    ``summary.json`` and (``record_config``) ``config.yaml`` under ``out_dir``, all or nothing.

    Forget quality and PrivLeak compare against ``reference`` (a :class:`RetainReference`, or
    bare forget-set truth ratios), else ``eval.retain_eval``, else the retain model scored now.
    ``is_reference``: this model *is* the retain model (forget quality 1, PrivLeak 0). Every
    input is checked before anything is scored; a model with non-finite weights is refused.
    ``record_card``: add the headline metrics to the model's card (an obliviate model dir's
    README.md), once the results are in place.

    In a multi-process launch (:mod:`obliviate.distributed`) the main process evaluates while
    the others wait, and every process returns the same summary; models the evaluation needs
    trained first (the tiny target or retain model) are trained by all processes together.
    """
    exp = Experiment.of(cfg)
    if distributed.active():
        _train_dependencies(exp, model_path, reference, is_reference)
        return distributed.on_main(
            lambda: evaluate(
                exp,
                model_path,
                out_dir,
                reference,
                overwrite,
                is_reference,
                record_config,
                record_card,
            )
        )
    run = Path(out_dir or exp.cfg.run_dir)
    owns = ("eval", "summary.json") + (("config.yaml",) if record_config else ())
    with staged_run(run, "eval", owns, "summary.json", overwrite) as st:
        c = exp.cfg
        refs = [c.model.retain_path, c.eval.reference_model]
        check_inputs(exp, [model_path or c.model.path, *refs])
        path = model_path or stages.target_model(exp)
        summary, result = summarize_model(exp, path, reference, is_reference, label=run.name)
        write_results(st.out, result, c.eval.write_generations)
        write_json(st.out / "summary.json", summary)
        if record_config:
            write_config(c, st.out)
    if record_card:
        record_card_metrics(path, summary, run)
    return summary


def _train_dependencies(
    exp: Experiment, model_path: str | None, reference: Any, is_reference: bool
) -> None:
    """Before a launch's main process evaluates alone: train (all processes together, cached)
    the models it would otherwise train alone, the tiny target and the retain model."""
    c = exp.cfg
    if model_path is None and c.model.path is None and exp.benchmark.trainable:
        stages.target_model(exp)
    if reference is None and not is_reference and not c.eval.retain_eval:
        stages.retain_model(exp)


def record_card_metrics(
    path: str, summary: dict[str, Any], run: str | Path, quiet: bool = False
) -> None:
    """Add an evaluation's headline metrics (``run``: where it is saved) to the card of the
    obliviate model dir at ``path``; a hub id or a foreign or read-only dir is left alone.
    ``quiet``: say so in the log file only."""
    from obliviate import progress
    from obliviate.models.card import record_evaluation

    if record_evaluation(path, summary, run):
        say = progress.detail if quiet else log
        say(f"headline metrics added to the model card {Path(path) / 'README.md'}")


def summarize_model(
    exp: Experiment, path: str, reference: Any, is_reference: bool, label: str | None = None
) -> tuple[dict[str, Any], Any]:
    """The evaluation of the model at ``path`` without writing a run dir: ``(summary.json's
    content, the per-split results)``; :func:`evaluate` and ``obliviate run`` write them."""
    from obliviate.eval.summary import summarize

    e = exp.cfg.eval
    # a given or saved reference is read (and checked) now; a retain model to score is scored
    # after this model, whose loading refuses NaN weights before anything else is scored
    if is_reference:
        ref = RetainReference(None, {}, "itself (this is the retain model)")
    elif isinstance(reference, RetainReference):
        ref = reference
    elif reference is not None:
        ref = RetainReference(list(reference), {}, "given")
    else:
        ref = read_reference(e.retain_eval, exp.benchmark) if e.retain_eval else None
    if e.lm_eval_tasks:
        from obliviate.artefacts import FULL_MODEL, artefact_kind

        if artefact_kind(path) != FULL_MODEL:
            raise ConfigError(
                f"eval.lm_eval_tasks needs a full model dir, and {path} is a {artefact_kind(path)}",
                "drop eval.lm_eval_tasks for this model (lm-eval loads model dirs itself)",
            )
    t0 = time.perf_counter()
    result, hit = evaluate_results(exp, path, label=label)
    harness: dict[str, Any] = {}
    if e.lm_eval_tasks:
        from obliviate.eval.lm_harness import harness_summary, run_lm_eval

        harness = harness_summary(
            run_lm_eval(
                path,
                e.lm_eval_tasks,
                include_path=e.lm_eval_include_path,
                limit=e.lm_eval_limit,
                batch_size=e.batch_size,
                device=str(exp.device),
            )
        )
    seconds = round(time.perf_counter() - t0, 2)
    if ref is None:
        ref = retain_reference(exp)
    summary = summarize(
        result, ref, is_reference=is_reference, mmlu=harness.get("lm_eval_mmlu_acc")
    )
    summary.update(harness)
    summary["eval_seconds"] = seconds
    summary["eval_cache_hit"] = hit
    summary["passes"] = result.passes
    local = Path(path).expanduser()
    summary["model"] = str(local.resolve()) if local.is_dir() else path  # reports find its card
    summary["benchmark"] = exp.cfg.benchmark.name
    summary["split_roles"] = {r.name: r.role for r in result.splits}
    summary["forget_quality_reference"] = ref.source
    summary["privleak_reference_source"] = ref.source
    return summary, result


def write_results(run: Path, result: Any, generations: bool) -> None:
    """``<run>/eval/<split>.json``: the per-sample rows (without generations unless asked)."""
    drop = () if generations else ("generation", "paraphrased_generation")
    for r in result.splits:
        write_json(
            run / "eval" / f"{r.name}.json",
            [{k: v for k, v in s.items() if k not in drop} for s in r.samples],
        )


# ---------------------------------------------------------------- robustness


def attack(
    cfg: Config,
    run_dir: str | Path,
    attacks: list[str] | None = None,
    overwrite: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """Run robustness attacks and probes (``attacks``: names, default ``attack.attacks``) on the
    unlearned model(s) of ``run_dir`` (an unlearn, eval or demo run dir), with the target and
    retain model as anchors. Writes ``robustness.json`` beside each model's ``summary.json`` and
    joins it to that summary; returns ``[(name, robustness section)]``. See
    :mod:`obliviate.attacks`."""
    from obliviate.attacks.command import run_attacks

    return run_attacks(Experiment.of(cfg), run_dir, attacks, overwrite)
