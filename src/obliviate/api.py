"""The Python API. The CLI is a thin layer over these functions.

from obliviate import load_config, api
cfg = load_config("demo", ["unlearn.method=npo"])
target = api.target_model(cfg)          # fine-tuned tiny model (cached by content hash)
model_dir = api.unlearn(cfg)            # writes <run_dir>/model
summary = api.evaluate(cfg, model_dir)  # writes <run_dir>/eval/*.json and summary.json

Every function takes an :class:`~obliviate.config.ExperimentConfig` or an
:class:`~obliviate.experiment.Experiment` (the context that loads the benchmark once). To evaluate
a model held in memory, use :func:`obliviate.eval.evaluate.evaluate_model`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from obliviate import stages
from obliviate.config import ExperimentConfig
from obliviate.data.benchmarks import Benchmark
from obliviate.errors import ConfigError
from obliviate.eval.evaluate import Evaluation, evaluate_model, reference_plan, score_reference  # noqa: F401
from obliviate.eval.reference import RetainReference, read_reference, reference_from_result
from obliviate.experiment import Experiment, log, setup_runtime  # noqa: F401
from obliviate.runs import fresh_dir, guard_evaluation, model_fingerprint, write_config, write_json

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
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty", "give an empty or new directory")
    write_benchmark(
        generate_benchmark(b.n_authors, b.qa_per_author, b.n_holdout, b.n_general, b.seed), out
    )
    return out


# ---------------------------------------------------------------- models


def finetune(
    cfg: Config, which: str = "full", out_dir: str | Path | None = None, overwrite: bool = False
) -> str:
    return stages.finetune(Experiment.of(cfg), which, out_dir, overwrite)


def target_model(cfg: Config) -> str:
    return stages.target_model(Experiment.of(cfg))


def retain_model(cfg: Config) -> str | None:
    return stages.retain_model(Experiment.of(cfg))


def unlearned_model(cfg: Config) -> str:
    return stages.unlearned_model(Experiment.of(cfg))


def unlearn(cfg: Config, overwrite: bool = False) -> str:
    """Unlearn into ``<run_dir>/model`` (plus ``config.yaml``); refuses to overwrite a finished run."""
    exp = Experiment.of(cfg)
    stages.require_trainable(exp, "unlearn")
    run = Path(exp.cfg.run_dir)
    out = fresh_dir(run / "model", overwrite)
    write_config(exp.cfg, run)
    stages.unlearn_to(exp, out)
    log(f"unlearned model written to {out}")
    return str(out)


# ---------------------------------------------------------------- evaluation


def _options(exp: Experiment):
    from obliviate.eval.suite import EvalOptions

    return EvalOptions.from_config(exp.cfg.eval)


def eval_cache_key(
    exp: Experiment, path: str, options: Any, roles: Any = None, reference_model: bool = True
) -> dict[str, Any] | None:
    """What an evaluation's per-split results depend on; None when they cannot be cached."""
    fp = model_fingerprint(path)
    if fp is None or not exp.cfg.eval.cache:
        return None
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
    exp: Experiment, path: str, options: Any = None, roles: Any = None, reference_model: bool = True
):
    """Per-split results for the model at ``path`` (cached under the cache's ``eval`` kind):
    ``(SuiteResult, cache_hit)``."""
    from obliviate.eval.suite import SuiteResult, evaluate_splits
    from obliviate.models.io import load_model, load_tokenizer

    options = options or _options(exp)
    e = exp.cfg.eval

    def compute() -> SuiteResult:
        tok = load_tokenizer(path)
        model = load_model(path, exp.cfg.model.dtype, exp.device)
        ref_model = ref_tok = None
        if reference_model and e.reference_model:
            ref_tok = load_tokenizer(e.reference_model)
            ref_model = load_model(e.reference_model, exp.cfg.model.dtype, exp.device)
        t0 = time.perf_counter()
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
    if not hit:
        return holder["res"], False
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
    res, _ = evaluate_results(exp, path, options, roles, reference_model=False)
    return reference_from_result(res, f"retain model {path}")


def evaluate(
    cfg: Config,
    model_path: str | None = None,
    out_dir: str | Path | None = None,
    reference: Any = None,
    overwrite: bool = False,
    is_reference: bool = False,
) -> dict[str, Any]:
    """Evaluate one model with the selected metrics; writes ``eval/<split>.json`` and ``summary.json``.

    Forget quality and PrivLeak compare against ``reference`` (a :class:`RetainReference`, or
    bare forget-set truth ratios), else ``eval.retain_eval``, else the retain model scored now.
    ``is_reference``: this model *is* the retain model (forget quality 1, PrivLeak 0).
    """
    from obliviate.eval.summary import summarize
    from obliviate.models.io import load_tokenizer

    exp = Experiment.of(cfg)
    e = exp.cfg.eval
    path = model_path or stages.target_model(exp)
    run = Path(out_dir or exp.cfg.run_dir)
    guard_evaluation(run, overwrite)
    load_tokenizer(path)  # fails fast on a bad model path, before any heavy work
    exp.benchmark  # noqa: B018 - and on bad data
    if is_reference:
        ref = RetainReference(None, {}, "itself (this is the retain model)")
    elif isinstance(reference, RetainReference):
        ref = reference
    elif reference is not None:
        ref = RetainReference(list(reference), {}, "given")
    else:
        ref = retain_reference(exp)
    t0 = time.perf_counter()
    result, hit = evaluate_results(exp, path)
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
    summary = summarize(
        result, ref, is_reference=is_reference, mmlu=harness.get("lm_eval_mmlu_acc")
    )
    summary.update(harness)
    summary["eval_seconds"] = round(time.perf_counter() - t0, 2)
    summary["eval_cache_hit"] = hit
    summary["passes"] = result.passes
    summary["model"] = path
    summary["benchmark"] = exp.cfg.benchmark.name
    summary["forget_quality_reference"] = ref.source
    summary["privleak_reference_source"] = ref.source
    _write_results(run, result, e.write_generations)
    write_json(run / "summary.json", summary)
    return summary


def _write_results(run: Path, result: Any, generations: bool) -> None:
    for old in (run / "eval").glob("*.json") if (run / "eval").is_dir() else []:
        old.unlink()
    drop = () if generations else ("generation", "paraphrased_generation")
    for r in result.splits:
        write_json(
            run / "eval" / f"{r.name}.json",
            [{k: v for k, v in s.items() if k not in drop} for s in r.samples],
        )
