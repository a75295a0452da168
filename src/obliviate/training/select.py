"""Evaluate during training and keep the best checkpoint (``unlearn.eval_every`` /
``unlearn.select_best``).

- **When.** ``eval_every`` is ``N epochs`` or ``N steps`` (a bare number is epochs; fractions of
  an epoch are allowed). It becomes optimiser steps from the trainer's own count of update steps
  per epoch: the first step at or after each multiple of N epochs (or each multiple of N steps),
  plus step 0 (the target, before any update: the baseline ``k*target`` compares with) and the
  final step.
- **What.** Each evaluation is in memory (no files) and computes only ``eval_metrics``, summary
  names such as ``forget_quality``, ``model_utility``, ``forget_prob`` or ``retain_rouge``; only
  the passes those need run, split by split (:func:`plan_metrics`), with the run's ``eval``
  options. Teacher-forced metrics cost one forward pass; ``model_utility`` and ``*_rouge`` also
  generate. Forget quality and PrivLeak compare with the retain model's reference, computed once
  before training. The model is evaluated in eval mode without gradients and every module's mode
  and every random generator's state are put back afterwards, so the weights trained with
  ``eval_every`` (and no ``select_best``) are bit-identical to those trained without it.
- **The curve.** Every evaluation is a row ``{step, epoch, <metric>: value}``: a line in the
  run's log and, at the end, the model card's ``selection.curve``.
- **Keeping the best.** ``select_best`` is a criterion such as ``max forget_quality subject to
  model_utility >= 0.9*target`` (:func:`parse_criterion`). The candidates are the evaluations
  after step 0; the saved model is the one that satisfies every constraint with the best value
  (ties: the earliest). When none satisfies them, the candidate with the smallest total relative
  shortfall is kept, ``satisfied`` is false in the card and the log says so (the run is not
  thrown away: its card shows how far the constraint was missed). A CPU copy of the best
  candidate's trainable weights (the parameters with ``requires_grad``: the adapter under LoRA,
  every weight otherwise) is kept while training and loaded back at the end.
- **Resume, processes.** With ``save_every`` the curve and the best copy are written beside each
  checkpoint (``selection-<step>``), so ``--resume`` chooses among the same evaluations as an
  uninterrupted run. Under a multi-process launch every process evaluates the whole model (their
  weights are identical), so all choose alike; DeepSpeed ZeRO-3 is refused by the trainer.

Torch-free at import: the config check (:func:`check_selection`) runs when a config is loaded.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from obliviate.errors import ConfigError
from obliviate.eval.directions import is_number
from obliviate.training.criteria import (
    Criterion,
    Every,
    MetricPlan,
    _clean,
    choose,
    eval_steps,
    parse_criterion,
    parse_every,
    plan_metrics,
)

STATE_PREFIX = "selection-"
"""``<trainer dir>/selection-<step>``: the monitor's state written with each checkpoint, so a
resumed run chooses among the same evaluations as an uninterrupted one."""


# --------------------------------------------------------------------------------------------
# the training callback

Measure = Callable[[Any, Any], Mapping[str, Any]]
"""``(model, tokenizer) -> {metric name: value}``: one in-memory evaluation."""


class Monitor:
    """Evaluates at :func:`eval_steps` and keeps the best candidate's trainable weights.

    A ``transformers.TrainerCallback`` once :func:`make_monitor` (or :func:`as_callback`) mixes
    it in. ``run_unlearning`` calls :meth:`bind` before training and :meth:`finish` after it.
    """

    def __init__(
        self,
        every: Every,
        names: Sequence[str],
        measure: Measure,
        criterion: Criterion | None = None,
        what: str = "unlearning",
    ) -> None:
        self.every = every
        self.names = list(names)
        self.measure = measure
        self.criterion = criterion
        self.what = what
        self.curve: list[dict[str, Any]] = []
        self.steps: list[int] = []
        self.best: dict[str, Any] | None = None
        self.best_weights: dict[str, Any] | None = None
        self.seconds = 0.0
        self.resumed_at: int | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.trainer: Any = None

    # -- wiring

    def bind(self, model: Any, tokenizer: Any, trainer: Any) -> None:
        """The model being trained (its trainable parameters are what the best copy holds),
        its tokenizer and the trainer (its progress bar is put back after each evaluation).
        DeepSpeed ZeRO-3, whose partitioned weights cannot be evaluated here, is refused before
        this by ``run_unlearning``."""
        self.model, self.tokenizer, self.trainer = model, tokenizer, trainer

    # -- TrainerCallback events

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        loader = kwargs.get("train_dataloader")
        accum = max(1, int(getattr(args, "gradient_accumulation_steps", 1)))
        n_batches = len(loader) if loader is not None else state.max_steps * accum
        per_epoch = max(1, math.ceil(n_batches / accum))
        self.steps = eval_steps(self.every, per_epoch, state.max_steps)
        if state.global_step == 0:
            self._evaluate(state)
        else:
            self._restore(Path(args.output_dir), state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step in self.steps and not self._done(state.global_step):
            self._evaluate(state)
        if getattr(control, "should_save", False) and getattr(state, "is_world_process_zero", True):
            self._save(Path(args.output_dir), state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._done(state.global_step):  # training stopped early: the last weights too
            self._evaluate(state)

    def _done(self, step: int) -> bool:
        return bool(self.curve) and self.curve[-1]["step"] == step

    # -- evaluation

    def _evaluate(self, state: Any) -> None:
        step = int(state.global_step)
        epoch = 0.0 if step == 0 else float(state.epoch or 0.0)
        t0 = time.perf_counter()
        with _undisturbed(self.model):
            values = self.measure(self.model, self.tokenizer)
        self.seconds += time.perf_counter() - t0
        row: dict[str, Any] = {"step": step, "epoch": round(epoch, 6)}
        for n in self.names:
            row[n] = _clean(values.get(n, "unavailable: not computed"))
        self.curve.append(row)
        self._report(row, state)
        if self.criterion is not None:
            self._consider(row)

    def _report(self, row: dict[str, Any], state: Any) -> None:
        from obliviate import progress

        progress.detail(f"{self.what} evaluation: {json.dumps(row)}")
        shown = ", ".join(
            f"{n} {row[n]:.4g}" if is_number(row[n]) else f"{n} n/a" for n in self.names
        )
        progress.log(
            f"evaluated step {row['step']}/{state.max_steps} (epoch {row['epoch']:.3g}): {shown}"
        )
        bar = getattr(getattr(self.trainer, "progress", None), "stage", None)
        if bar is not None:  # the scoring passes drew on the training bar: give it back
            bar.begin("", state.max_steps, completed=state.global_step)

    def _consider(self, row: dict[str, Any]) -> None:
        crit = self.criterion
        assert crit is not None
        if row["step"] == 0:
            self._check_target(row)
            return
        target = self.curve[0]
        if self.best is None or crit.rank(row, target) < crit.rank(self.best, target):
            self.best = row
            self.best_weights = _trainable_copy(self.model)

    def _check_target(self, row: dict[str, Any]) -> None:
        """The target must give the criterion numbers: a missing one would only be found after
        training."""
        crit = self.criterion
        assert crit is not None
        for n in crit.metrics:
            if not is_number(row.get(n)):
                raise ConfigError(
                    f"unlearn.select_best reads {n}, which is {row.get(n)!r} for the target "
                    "model (step 0)",
                    "select by a metric the benchmark and reference provide",
                )

    # -- the result

    def finish(self, model: Any) -> dict[str, Any]:
        """Load the chosen candidate's weights into ``model`` (with ``select_best``) and return
        the card's ``selection``: criterion, chosen step, epoch and metrics, whether every
        constraint held, and the curve."""
        from obliviate import progress

        out: dict[str, Any] = {
            "criterion": str(self.criterion) if self.criterion else None,
            "eval_every": str(self.every),
            "eval_steps": self.steps,
        }
        last = self.curve[-1]
        if self.criterion is None:
            chosen, satisfied = last, None
        else:
            chosen, satisfied = choose(self.curve, self.criterion)
            assert self.best is not None and chosen["step"] == self.best["step"]
            _load_trainable(model, self.best_weights or {})
            rule = "satisfies every constraint" if satisfied else "smallest constraint shortfall"
            out["rule"] = rule
            msg = (
                f"kept step {chosen['step']} (epoch {chosen['epoch']:.3g}) of {last['step']} by "
                f"`{self.criterion}`"
            )
            if satisfied:
                progress.log(msg)
            else:
                progress.log(
                    f"warning: no evaluation satisfies `{self.criterion}`; {msg}, the one that "
                    "misses the constraints by the least (card: selection.satisfied=false)"
                )
        out.update(
            chosen_step=chosen["step"],
            chosen_epoch=chosen["epoch"],
            chosen_metrics={n: chosen[n] for n in self.names},
            satisfied=satisfied,
            seconds=round(self.seconds, 2),
            curve=self.curve,
        )
        if self.resumed_at is not None:
            out["resumed_at"] = self.resumed_at
        return out

    # -- checkpoints (resume)

    def _save(self, work: Path, step: int) -> None:
        """Write the monitor's state for the checkpoint of ``step`` (before HF writes the
        checkpoint, so a complete checkpoint always has it) and drop states whose checkpoint is
        gone."""
        from obliviate.cache import CHECKPOINT_PREFIX

        d = work / f"{STATE_PREFIX}{step}"
        tmp = work / f".{STATE_PREFIX}{step}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        state = {
            "curve": self.curve,
            "best_step": self.best["step"] if self.best else None,
            "seconds": self.seconds,
        }
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        if self.best_weights:
            from safetensors.torch import save_file

            save_file(self.best_weights, tmp / "best.safetensors")
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        for old in work.glob(f"{STATE_PREFIX}*"):
            s = old.name[len(STATE_PREFIX) :]
            if s.isdigit() and int(s) != step and not (work / f"{CHECKPOINT_PREFIX}{s}").is_dir():
                shutil.rmtree(old, ignore_errors=True)

    def _restore(self, work: Path, step: int) -> None:
        """A resumed run: the curve and best weights as they were at checkpoint ``step``."""
        d = work / f"{STATE_PREFIX}{step}"
        self.resumed_at = step
        if not (d / "state.json").is_file():
            if self.criterion is not None:
                raise ConfigError(
                    f"the checkpoint at step {step} has no evaluation state for "
                    "unlearn.select_best (it was written without unlearn.eval_every)",
                    "run again without --resume",
                )
            from obliviate import progress

            progress.log(f"resumed at step {step}: the evaluation curve starts there")
            return
        state = json.loads((d / "state.json").read_text(encoding="utf-8"))
        self.curve = state["curve"]
        self.seconds = float(state["seconds"])
        if state["best_step"] is not None:
            from safetensors.torch import load_file

            self.best = next(r for r in self.curve if r["step"] == state["best_step"])
            self.best_weights = load_file(d / "best.safetensors")


def _trainable_copy(model: Any) -> dict[str, Any]:
    """CPU copies of the parameters training changes (``requires_grad``)."""
    return {
        n: p.detach().to("cpu", copy=True).contiguous()
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def _load_trainable(model: Any, weights: Mapping[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].device))


@contextmanager
def _undisturbed(model: Any) -> Iterator[None]:
    """Evaluate ``model`` without gradients, in eval mode, and leave no trace: every module's
    train/eval mode and every random generator (torch CPU and CUDA, Python, NumPy) are put back,
    so training continues exactly as it would have."""
    import random

    import numpy as np
    import torch

    modes = [(m, m.training) for m in model.modules()]
    cpu, py, npy = torch.get_rng_state(), random.getstate(), np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        torch.set_rng_state(cpu)
        random.setstate(py)
        np.random.set_state(npy)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def as_callback(monitor_cls: type = Monitor) -> type:
    """``monitor_cls`` with ``transformers.TrainerCallback`` mixed in (imported here, not at
    module import, to keep the config check torch-free)."""
    from transformers import TrainerCallback

    return type(monitor_cls.__name__, (monitor_cls, TrainerCallback), {})


# --------------------------------------------------------------------------------------------
# building one for an experiment


def suite_measure(bench: Any, plan: MetricPlan, options: Any, reference: Any = None) -> Measure:
    """The in-memory evaluation of ``plan``: one suite call per split role with only that
    role's metrics (so each split scores and generates only what its names need), then the
    summary against the retain ``reference``."""
    from dataclasses import replace

    from obliviate.eval.suite import SuiteResult, evaluate_splits
    from obliviate.eval.summary import summarize

    def measure(model: Any, tokenizer: Any) -> dict[str, Any]:
        splits, unavailable = [], {}
        for role, metric_names in plan.by_role.items():
            opts = replace(options, metrics=metric_names)
            res = evaluate_splits(
                model, tokenizer, bench, opts, roles={role}, embedder=None, nli=None
            )
            splits += res.splits
            unavailable.update(res.unavailable)
        order = {s.name: i for i, s in enumerate(bench.eval_splits)}
        splits.sort(key=lambda r: order[r.name])
        summary = summarize(SuiteResult(splits, unavailable), reference, intervals=False)
        return {n: summary.get(n, "unavailable: not computed") for n in plan.names}

    return measure


def selection_key(exp: Any) -> dict[str, Any] | None:
    """What a ``select_best`` run's choice depends on beyond the unlearn section: the
    evaluation settings and the retain reference the curve is measured with (for the unlearn
    cache key); None without ``select_best``."""
    cfg = exp.cfg
    if cfg.unlearn.select_best is None:
        return None
    from obliviate.runs import model_fingerprint

    e, retain = cfg.eval, cfg.model.retain_path
    tiny_retain = None
    if retain is None and e.retain_eval is None and cfg.benchmark.name == "synthetic":
        from obliviate.stages import _finetune_key  # the tiny retain model is the reference

        tiny_retain = _finetune_key(exp, "retain")
    return {
        "tiny_retain": tiny_retain,
        "eval": {
            "max_new_tokens": e.max_new_tokens,
            "batch_size": e.batch_size,
            "metrics": e.metrics,
            "mia_k": e.mia_k,
        },
        "retain_eval_size": cfg.benchmark.retain_eval_size,
        "retain_eval": e.retain_eval,
        "retain_path": (model_fingerprint(retain) or retain) if retain else None,
    }


def check_on_benchmark(exp: Any) -> MetricPlan | None:
    """``unlearn.eval_metrics`` resolved on the experiment's benchmark and ``eval.metrics``
    (a one-line :class:`ConfigError` for a split the benchmark lacks), cheaply, so a command
    can refuse before it trains anything; None without ``eval_every``."""
    from obliviate.eval.registry import select_metrics

    cfg = exp.cfg.unlearn
    if not cfg.eval_every:
        return None
    user = exp.cfg.eval.metrics
    allowed = {m.name for m in select_metrics(user).active} if user is not None else None
    return plan_metrics(cfg.eval_metrics, exp.benchmark, allowed, "unlearn.eval_metrics")


def make_monitor(exp: Any, source: str) -> Monitor:
    """The training callback for ``exp.cfg.unlearn.eval_every`` / ``select_best``, checked
    against the benchmark (and the retain reference computed) before training starts.
    ``source``: the model being unlearned; its step-0 evaluation in memory is the baseline."""
    from dataclasses import replace

    from obliviate.eval.suite import EvalOptions

    cfg = exp.cfg.unlearn
    every = parse_every(cfg.eval_every, "unlearn.eval_every")
    crit = parse_criterion(cfg.select_best, "unlearn.select_best") if cfg.select_best else None
    plan = check_on_benchmark(exp)
    assert plan is not None
    reference = None
    if plan.reference:
        from obliviate import api

        reference = api.retain_reference(exp)
        for name, part in plan.reference.items():
            ok = (
                reference.forget_ratios is not None
                if part == "forget_ratios"
                else part.split(":")[1] in reference.mia_auc
            )
            if not ok and crit is not None and name in crit.metrics:
                raise ConfigError(
                    f"unlearn.select_best reads {name}, which needs the retain model's "
                    f"reference, and there is none ({reference.source})",
                    "set model.retain_path or eval.retain_eval, or select by another metric",
                )
    options = replace(
        EvalOptions.from_config(exp.cfg.eval), gradnorm=False, cosine=False, entailment=False
    )
    measure = suite_measure(exp.benchmark, plan, options, reference)
    return as_callback()(every, plan.names, measure, crit, what=f"unlearning ({cfg.method})")
