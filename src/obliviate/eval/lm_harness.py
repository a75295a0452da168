"""General capabilities through lm-evaluation-harness (optional extra: ``pip install lm_eval``).

:func:`run_lm_eval` runs harness tasks (``mmlu``, ``hellaswag``, …, or task YAMLs under
``include_path``) on a model directory with the harness's ``hf`` backend and returns
``{task: {metric: value}}``. Hub tasks download their data sets, so offline only local tasks
(``dataset_path: json`` with local ``data_files``) and data sets already in the Hugging Face cache
work; the error then says so. The MMLU accuracy it returns is what the SemEval-2025 Task 4 final
score expects as utility (:func:`obliviate.eval.semeval.semeval_final_score`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obliviate.errors import ObliviateError


def lm_eval_available() -> bool:
    """Whether the ``lm_eval`` package is importable."""
    import importlib.util

    return importlib.util.find_spec("lm_eval") is not None


def check_tasks(tasks: Sequence[str], include_path: str | Path | None = None) -> None:
    """Every task name resolves (before any scoring), or one line naming the unknown ones."""
    if not lm_eval_available():
        raise ObliviateError(
            "eval.lm_eval_tasks is set but lm-evaluation-harness is not installed",
            "pip install lm_eval (or obliviate[lm-eval])",
        )
    from lm_eval.tasks import TaskManager

    known = set(TaskManager(include_path=str(include_path) if include_path else None).all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "check the task names"
        raise ObliviateError(
            f"unknown lm-evaluation-harness task(s) in eval.lm_eval_tasks: {', '.join(unknown)}",
            hint + " (local task YAMLs go in eval.lm_eval_include_path)",
        )


def run_lm_eval(
    model_path: str | Path,
    tasks: Sequence[str],
    *,
    include_path: str | Path | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "float32",
) -> dict[str, dict[str, float]]:
    """Accuracy-style metrics per task: ``{task: {"acc": …, "acc_stderr": …, …}}``.

    Raises :class:`~obliviate.errors.ObliviateError` (one actionable line) when the harness is not
    installed or a task cannot be loaded (e.g. a hub data set while offline).
    """
    if not lm_eval_available():
        raise ObliviateError(
            "lm-evaluation-harness is not installed", "pip install lm_eval (or obliviate[lm-eval])"
        )
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path) if include_path else None)
    try:
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={model_path},dtype={dtype}",
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            device=device,
            limit=limit,
            task_manager=manager,
            log_samples=False,
        )
    except Exception as e:  # noqa: BLE001 - harness / hub failures become one actionable line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ObliviateError(
            f"lm-evaluation-harness failed on {', '.join(tasks)}: {first[:200]}",
            "offline, use local task YAMLs (include_path) or data sets already in the HF cache",
        ) from None
    results: dict[str, dict[str, float]] = {}
    for task, metrics in (out or {}).get("results", {}).items():
        clean = {}
        for k, v in metrics.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                name = k.split(",")[0]  # "acc,none" -> "acc"
                clean[name] = float(v) if not math.isnan(float(v)) else float("nan")
        results[task] = clean
    return results


def harness_summary(results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Flat ``lm_eval_<task>_<metric>`` keys for ``summary.json``."""
    return {f"lm_eval_{t}_{m}": v for t, ms in results.items() for m, v in ms.items()}
