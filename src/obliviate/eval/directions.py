"""Which way is better for each summary number, and which numbers a report shows, in what order.

Directions: ``"up"`` (higher is better), ``"down"`` (lower is better), ``"ref"`` (closer to the
retain model's value is better), ``"zero"`` (closer to 0 is better), ``None`` (no preference).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class Run(Protocol):
    """What these helpers read of a run (:class:`obliviate.report.runs.Run` has it)."""

    role: str
    summary: dict[str, Any]

    @property
    def split_roles(self) -> dict[str, str]: ...


ARROWS = {"up": "↑", "down": "↓", "ref": "≈ retain", "zero": "→ 0"}
"""Short labels shown next to a metric name."""

EXPLAIN = {
    "up": "higher is better",
    "down": "lower is better",
    "ref": "closer to the retain model's value is better",
    "zero": "closer to 0 is better",
    None: "no preferred direction",
}
"""One phrase per direction, for tooltips and footers."""

HEADLINE = [
    "forget_quality",
    "model_utility",
    "forget_rouge",
    "forget_prob",
    "retain_rouge",
    "retain_prob",
]
MUSE_HEADLINE = ["verbmem_f", "knowmem_forget_f", "privleak", "knowmem_retain_f"]

BOOKKEEPING = {"eval_seconds", "eval_cache_hit", "seconds", "passes", "train_seconds", "steps"}
"""Numbers about the run, not about the model: never shown as metrics."""

MEMORY_AGGREGATES = {
    "rouge",
    "prob",
    "fact_recall",
    "exact_memorization",
    "extraction_strength",
    "qa_exact_match",
    "cosine_similarity",
    "entailment",
    "f",
}
"""Per-split aggregates that measure how much of the split's answers the model knows."""
KNOWN_AGGREGATES = MEMORY_AGGREGATES | {"truth_ratio", "token_entropy", "watermark_z"}

FORGET_ROLES = {"forget", "verbmem", "knowmem_forget"}
KEEP_ROLES = {"retain", "utility", "knowmem_retain"}
MUSE_SPLITS = {"verbmem", "knowmem_forget", "knowmem_retain"}

UP = {
    "forget_quality",
    "model_utility",
    "closer_look_model_utility",
    "forget_efficacy",
    "robust_forget_score",
}
CROSS_PREFIXES = ("mia_auc_", "privleak", "semeval_", "closer_look_")
"""Keys with these prefixes are cross-split numbers, never ``<split>_<aggregate>``."""


def guess_role(split: str) -> str:
    """The role of a split from its name, for runs whose summary has no ``split_roles``."""
    if split in MUSE_SPLITS:
        return split
    for role in ("forget", "retain", "holdout"):
        if split.startswith(role):
            return role
    return "utility"


def _known_aggregate(agg: str) -> bool:
    return agg in KNOWN_AGGREGATES or agg.startswith("paraphrased_")


def _cross_split(key: str) -> bool:
    return key in UP or key.startswith(CROSS_PREFIXES)


def split_of(key: str, split_roles: Mapping[str, str]) -> tuple[str, str, str] | None:
    """``(split, aggregate, role)`` when ``key`` is ``<split>_<aggregate>``, else None.

    Splits named in ``split_roles`` match first (longest name first); otherwise a key ending in a
    known aggregate is split there and its role guessed from the split name.
    """
    if _cross_split(key):
        return None
    for split in sorted(split_roles, key=len, reverse=True):
        if key.startswith(split + "_") and len(key) > len(split) + 1:
            return split, key[len(split) + 1 :], str(split_roles[split])
    cut = key.find("_paraphrased_")
    if cut > 0:
        return key[:cut], key[cut + 1 :], guess_role(key[:cut])
    for agg in sorted(KNOWN_AGGREGATES, key=len, reverse=True):
        if key.endswith("_" + agg) and len(key) > len(agg) + 1:
            split = key[: -len(agg) - 1]
            return split, agg, guess_role(split)
    return None


def direction(key: str, split_roles: Mapping[str, str]) -> str | None:
    """``"up"``, ``"down"``, ``"ref"``, ``"zero"`` or None for summary key ``key``."""
    if key in UP or key.startswith("semeval_") or key.startswith("knowmem_retain_"):
        return "up"
    if key.startswith("mia_auc_"):
        return "ref"
    if key.startswith("privleak"):
        return "zero"
    if key in ("verbmem_f", "knowmem_forget_f"):
        return "down"
    parsed = split_of(key, split_roles)
    if parsed is None:
        return None
    _, agg, role = parsed
    if agg == "watermark_z":  # WaterDrum: the retain model's level is the goal on both sides
        return "ref" if role in ("forget", "retain") else None
    if agg == "token_entropy" or not (_known_aggregate(agg)):
        return None
    if role in FORGET_ROLES:
        # forget truth ratio is mean min(R, 1/R): 1 = no preference for the true answer (TOFU)
        return "up" if agg.endswith("truth_ratio") else "down"
    if role in KEEP_ROLES:
        return "up"
    return None


def label(key: str, split_roles: Mapping[str, str]) -> str:
    """``key`` followed by its direction arrow, when it has one."""
    d = direction(key, split_roles)
    return f"{key} {ARROWS[d]}" if d else key


def is_number(v: Any) -> bool:
    """A real, finite number (bools, NaN and infinities are not)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def is_bookkeeping(key: str) -> bool:
    """Run bookkeeping (timings, cache hits), not a metric."""
    return key in BOOKKEEPING or key.endswith("_seconds")


def merged_roles(runs: Iterable[Run]) -> dict[str, str]:
    """Every run's split roles in one mapping (the first run naming a split wins)."""
    out: dict[str, str] = {}
    for r in runs:
        for split, role in r.split_roles.items():
            out.setdefault(split, role)
    return out


def _group(key: str, roles: Mapping[str, str]) -> int:
    if key in ("forget_quality", "model_utility"):
        return 0
    parsed = split_of(key, roles)
    if parsed is not None:
        role = parsed[2]
        return 1 if role in FORGET_ROLES else 2 if role == "retain" else 3
    if key.startswith(("mia_auc_", "privleak")):
        return 4
    return 5


def metric_keys(runs: Iterable[Run]) -> list[str]:
    """Keys holding a real number in at least one run's summary, bookkeeping left out.

    Order: forget quality and model utility, then forget-split numbers, retain-split numbers,
    other splits, membership inference / PrivLeak, the rest; first appearance within a group.
    """
    runs = list(runs)
    seen: dict[str, None] = {}
    for r in runs:
        for k, v in r.summary.items():
            if is_number(v) and not is_bookkeeping(k):
                seen.setdefault(k, None)
    roles = merged_roles(runs)
    keys = list(seen)
    first = {k: i for i, k in enumerate(keys)}
    top = {"forget_quality": -2, "model_utility": -1}
    return sorted(keys, key=lambda k: (_group(k, roles), top.get(k, first[k])))


def headline_keys(runs: Iterable[Run]) -> list[str]:
    """The headline metrics (TOFU's, plus MUSE's when a run has them) that some run reports."""
    runs = list(runs)
    have = set(metric_keys(runs))
    out = [k for k in HEADLINE if k in have]
    if have & {"verbmem_f", "knowmem_forget_f", "knowmem_retain_f"}:
        out += [k for k in MUSE_HEADLINE if k in have and k not in out]
    return out


def format_value(key: str, v: Any) -> str:
    """A number for display: forget quality (a p-value) and tiny values in scientific notation,
    integers as they are, others to 3 decimals (fewer from 10 up); ``"–"`` when not a number."""
    if not is_number(v):
        return "–"
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if key == "forget_quality" or (0 < a < 1e-3) or a >= 1e6:
        return f"{v:.2e}"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.2f}" if a >= 10 else f"{v:.3f}"


def reference_value(runs: Iterable[Run], key: str) -> float | None:
    """The first retain run's number for ``key`` (what ``"ref"`` metrics should be close to)."""
    for r in runs:
        if r.role == "retain" and is_number(r.summary.get(key)):
            return float(r.summary[key])
    return None


def badness(d: str | None, v: float, ref: float | None) -> float | None:
    """A sort key, smaller is better, for value ``v`` in direction ``d`` (None: cannot rank)."""
    if d == "up":
        return -v
    if d == "down":
        return v
    if d == "zero":
        return abs(v)
    if d == "ref" and ref is not None:
        return abs(v - ref)
    return None
