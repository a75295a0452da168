"""The retain model's contribution to an evaluation: forget-set truth ratios (forget quality) and
membership-inference AUCs (PrivLeak), from a saved evaluation or from the retain model itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from obliviate.errors import DataError
from obliviate.eval import mia as MIA

if TYPE_CHECKING:
    from obliviate.data.benchmarks.base import Benchmark
    from obliviate.eval.suite import SuiteResult

REFERENCE_METRICS = ("truth_ratio", "mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_pp")
"""What a retain model is scored on when it serves as the reference (teacher-forced passes only)."""
REFERENCE_ROLES = {"forget", "holdout"}


@dataclass
class RetainReference:
    """What the retain model contributes: forget-set truth ratios (forget quality) and its MIA
    AUC per attack (PrivLeak), with where they came from."""

    forget_ratios: list[float] | None
    mia_auc: dict[str, float] = field(default_factory=dict)
    source: str = "given"


def mia_aucs(
    forget_rows: Sequence[dict[str, Any]], holdout_rows: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """AUC (forget = 0, holdout = 1) per attack present in every forget and holdout row."""
    out = {}
    for a in MIA.ATTACKS:
        key = f"mia_{a}"
        if forget_rows and holdout_rows and all(key in r for r in [*forget_rows, *holdout_rows]):
            out[a] = MIA.mia_auc([r[key] for r in forget_rows], [r[key] for r in holdout_rows])
    return out


def reference_from_result(result: SuiteResult, source: str) -> RetainReference:
    """The reference a retain model's evaluation provides."""
    forget, hold = result.by_role("forget"), result.by_role("holdout")
    ratios = forget.truth_ratios() if forget is not None else []
    aucs = mia_aucs(forget.samples, hold.samples) if forget is not None and hold is not None else {}
    return RetainReference(ratios or None, aucs, source)


def _saved_rows(eval_dir: Path, split: str) -> list[dict[str, Any]] | None:
    for cand in (eval_dir / "eval" / f"{split}.json", eval_dir / f"{split}.json"):
        if cand.is_file():
            try:
                rows = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise DataError(
                    f"{cand} is not a readable evaluation ({str(e).splitlines()[0][:120]})",
                    "re-run `obliviate eval` on the retain model to rewrite it",
                ) from None
            bad = (
                next(
                    (
                        i
                        for i, r in enumerate(rows)
                        if not isinstance(r, dict) or "question" not in r or "answer" not in r
                    ),
                    None,
                )
                if isinstance(rows, list)
                else 0
            )
            if bad is not None:
                raise DataError(
                    f"{cand} row {bad + 1} is not an evaluation row (question, answer, metrics)",
                    "point eval.retain_eval at a run dir written by `obliviate eval`",
                )
            return rows
    return None


def read_reference(eval_dir: str | Path, bench: Benchmark) -> RetainReference:
    """The reference from a saved evaluation of the retain model (``eval/<split>.json`` of its
    forget-role and holdout-role splits), checked against ``bench``'s records."""
    root = Path(eval_dir)
    rows: dict[str, list[dict[str, Any]]] = {}
    for role in sorted(REFERENCE_ROLES):
        split = next((s for s in bench.eval_splits if s.role == role), None)
        if split is None:
            continue
        saved = _saved_rows(root, split.name)
        if saved is None:
            if role == "forget":
                raise DataError(
                    f"no saved evaluation found at {eval_dir}",
                    "point eval.retain_eval at a run dir written by `obliviate eval`",
                )
            continue
        if [r["question"] for r in saved] != [r.question for r in split.records] or [
            r["answer"] for r in saved
        ] != [r.answer for r in split.records]:
            if role == "forget":
                raise DataError(
                    f"{root / 'eval' / (split.name + '.json')} was computed on a different forget set",
                    "evaluate the retain model on the same benchmark and forget split",
                )
            continue
        rows[role] = saved
    forget = rows.get("forget", [])
    ratios = [r["truth_ratio"] for r in forget if r.get("truth_ratio") is not None]
    aucs = mia_aucs(forget, rows["holdout"]) if "holdout" in rows else {}
    return RetainReference(ratios or None, aucs, f"saved evaluation {eval_dir}")
