"""When to evaluate during training and which checkpoint to keep: ``unlearn.eval_every``,
``unlearn.eval_metrics`` and ``unlearn.select_best`` parsed and checked, and the choice among
evaluated checkpoints (:func:`choose`). Torch-free: the config check (:func:`check_selection`)
runs when a config is loaded. The training callback that uses them is
:mod:`obliviate.training.select`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from obliviate.errors import ConfigError
from obliviate.eval.directions import is_number

EXAMPLE = "max forget_quality subject to model_utility >= 0.9*target"
"""The criterion the error messages show."""


def _fmt(x: float) -> str:
    """A number written so that ``float`` reads it back exactly (``1``, ``0.5``, ``1e-05``)."""
    short = format(x, "g")
    return short if float(short) == x else repr(float(x))


# --------------------------------------------------------------------------------------------
# eval_every


@dataclass(frozen=True)
class Every:
    """``eval_every``: ``value`` epochs or steps."""

    value: float
    unit: str
    """``epochs`` or ``steps``."""

    def __str__(self) -> str:
        return f"{_fmt(self.value)} {self.unit}"


_EVERY = re.compile(r"^\s*([0-9.eE+-]+)\s*(epochs?|steps?)?\s*$", re.IGNORECASE)


def parse_every(text: Any, at: str) -> Every:
    """``N epochs`` / ``N steps`` / a bare number (epochs), N > 0; steps a whole number."""
    fix = "write e.g. `1 epochs`, `0.5 epochs`, `20 steps` or 1 (epochs)"
    m = _EVERY.match(str(text))
    try:
        value = float(m.group(1)) if m else math.nan
    except ValueError:
        value = math.nan
    if m is None or math.isnan(value):
        raise ConfigError(f"{at}={text!r} is not a number of epochs or steps", fix)
    unit = "steps" if (m.group(2) or "epochs").lower().startswith("step") else "epochs"
    if not (0 < value < math.inf):
        raise ConfigError(f"{at}={text!r} is out of range", "use a positive, finite number")
    if unit == "steps" and not value.is_integer():
        raise ConfigError(f"{at}={text!r} is not a whole number of steps", "write e.g. `20 steps`")
    return Every(value, unit)


def eval_steps(every: Every, steps_per_epoch: int, max_steps: int) -> list[int]:
    """The optimiser steps evaluated: 0, the first step at or after each multiple of ``every``
    (``steps_per_epoch`` update steps an epoch), and ``max_steps``."""
    interval = every.value * (steps_per_epoch if every.unit == "epochs" else 1)
    steps = {0, max_steps}
    k = 1
    while True:
        s = math.ceil(k * interval - 1e-9)  # float noise must not push 3.0000001 to 4
        if s >= max_steps:
            break
        steps.add(max(s, 1))
        k += 1
    return sorted(steps)


# --------------------------------------------------------------------------------------------
# metric names

UTILITY_ROLES = ("retain", "utility")
UTILITY_KEYS = ("rouge", "prob", "truth_ratio")
"""What TOFU's model utility reads: these aggregates of every retain-type split."""
LIGHT_ATTACKS = ("loss", "zlib", "min_k", "min_k_pp")
"""MIA attacks computable from the scoring pass alone (not GradNorm, not Reference)."""
HEAVY_READS = frozenset({"text_models", "gradients", "reference"})
"""Inputs not available during training: the embedder / NLI model, backward passes, a second
model."""


def derived_names() -> dict[str, str]:
    """Summary metrics computed across splits that ``eval_metrics`` may name, with what they
    need."""
    out = {
        "forget_quality": "forget truth ratios against the retain model's",
        "model_utility": "ROUGE, probability and truth ratio of the retain-type splits",
        "privleak": "the Min-K% AUC against the retain model's",
    }
    for a in LIGHT_ATTACKS:
        out[f"mia_auc_{a}"] = f"the {a} attack's AUC, forget vs holdout"
        out[f"privleak_{a}"] = f"the {a} attack's AUC against the retain model's"
    return out


def _light_metrics() -> list[Any]:
    """Registered metrics with a split aggregate that need no heavy input."""
    from obliviate.eval.registry import metrics

    return [m for m in metrics().values() if m.aggregate is not None and not m.reads & HEAVY_READS]


def _split_keys() -> set[str]:
    return {m.aggregate_key for m in _light_metrics()}


def _names_hint() -> str:
    keys = ", ".join(sorted(_split_keys()))
    return (
        "use forget_quality, model_utility, privleak, mia_auc_<attack> or privleak_<attack> "
        f"(attacks: {', '.join(LIGHT_ATTACKS)}), or <split>_<key> such as forget_prob or "
        f"retain_rouge (keys: {keys})"
    )


def check_metric_name(name: str, at: str) -> None:
    """``name`` has the shape of a metric evaluation during training can compute (a cross-split
    summary, or ``<split>_<key>`` for a registered light aggregate; the split itself is checked
    against the benchmark before training)."""
    if name in derived_names():
        return
    if any(name.endswith(f"_{k}") and len(name) > len(k) + 1 for k in _split_keys()):
        return
    from obliviate.eval.mia import ATTACKS
    from obliviate.eval.registry import metrics

    heavy = {m.aggregate_key for m in metrics().values() if m.reads & HEAVY_READS}
    heavy |= {f"{p}{a}" for p in ("mia_auc_", "privleak_") for a in ATTACKS}
    if name in heavy or any(name.endswith(f"_{k}") for k in heavy):
        raise ConfigError(
            f"{at} names {name!r}, which needs a model or pass not available during training",
            _names_hint(),
        )
    raise ConfigError(f"{at} names an unknown metric {name!r}", _names_hint())


@dataclass
class MetricPlan:
    """What evaluating ``names`` takes: per split role, the registered metrics to run; and the
    retain reference's parts needed (``forget_ratios``, ``mia:<attack>``) by name."""

    names: list[str]
    by_role: dict[str, list[str]]
    reference: dict[str, str]


def plan_metrics(
    names: Sequence[str], bench: Any, allowed: set[str] | None = None, at: str = "eval_metrics"
) -> MetricPlan:
    """The per-role metric sets ``names`` need on ``bench``; ``allowed``: the registered metrics
    ``eval.metrics`` selects (None: all), so a number in the curve is the number ``obliviate eval``
    reports for that checkpoint. Unknown splits or metrics that cannot be computed here are a
    :class:`ConfigError`."""
    light = _light_metrics()
    roles_present = {s.role for s in bench.eval_splits}
    by_role: dict[str, list[str]] = {}
    reference: dict[str, str] = {}

    def need(name: str, role: str, metric_names: Sequence[str]) -> None:
        usable = [m for m in metric_names if allowed is None or m in allowed]
        if not usable:
            raise ConfigError(
                f"{at} names {name}, which needs {' or '.join(metric_names)}, but eval.metrics "
                "leaves it out",
                f"add it to eval.metrics or remove {name} from {at}",
            )
        got = by_role.setdefault(role, [])
        got += [m for m in usable if m not in got]

    for name in names:
        check_metric_name(name, at)
        if name == "forget_quality":
            _require_role(name, "forget", roles_present, bench, at)
            need(name, "forget", ["truth_ratio"])
            reference[name] = "forget_ratios"
        elif name == "model_utility":
            roles = [r for r in UTILITY_ROLES if r in roles_present]
            if not roles:
                _require_role(name, "retain", roles_present, bench, at)
            for role in roles:
                ms = [m.name for m in light if m.aggregate_key in UTILITY_KEYS and role in m.roles]
                need(name, role, ms)
        elif name == "privleak" or name.startswith(("mia_auc_", "privleak_")):
            attack = "min_k" if name == "privleak" else name.split("_", 2)[-1]
            if name.startswith("privleak_"):
                attack = name.removeprefix("privleak_")
            for role in ("forget", "holdout"):
                _require_role(name, role, roles_present, bench, at)
                need(name, role, [f"mia_{attack}"])
            if name.startswith("privleak"):
                reference[name] = f"mia:{attack}"
        else:
            split, metric_names = _split_metric(name, bench, light, at)
            need(name, split.role, metric_names)
    return MetricPlan(list(names), by_role, reference)


def _require_role(name: str, role: str, present: set[str], bench: Any, at: str) -> None:
    if role not in present:
        raise ConfigError(
            f"{at} names {name}, which needs a {role} split, and the {bench.name} benchmark has "
            "none",
            f"remove {name} from {at}",
        )


def _split_metric(name: str, bench: Any, light: list[Any], at: str) -> tuple[Any, list[str]]:
    """``<split>_<key>``: the benchmark's split and the registered metrics aggregating to
    ``key`` there."""
    for split in bench.eval_splits:
        if not name.startswith(f"{split.name}_"):
            continue
        key = name[len(split.name) + 1 :]
        ms = [m.name for m in light if m.aggregate_key == key and m.applies_to(split)]
        if ms:
            return split, ms
    splits = ", ".join(s.name for s in bench.eval_splits)
    raise ConfigError(
        f"{at} names {name!r}, which is no split's metric on the {bench.name} benchmark "
        f"(splits: {splits})",
        _names_hint(),
    )


# --------------------------------------------------------------------------------------------
# select_best

OPS = (">=", "<=", ">", "<")


@dataclass(frozen=True)
class Bound:
    """One constraint: ``metric op value`` (``relative``: ``value`` times the target's)."""

    metric: str
    op: str
    value: float
    relative: bool = False

    def __str__(self) -> str:
        rhs = f"{_fmt(self.value)}*target" if self.relative else _fmt(self.value)
        return f"{self.metric} {self.op} {rhs}"

    def threshold(self, target: Mapping[str, Any]) -> float:
        """The number compared with (``value × target[metric]`` when relative)."""
        if not self.relative:
            return self.value
        base = target.get(self.metric)
        return self.value * base if is_number(base) else math.nan

    def shortfall(self, row: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[bool, float]:
        """``(satisfied, how far short relative to the threshold)``; a missing value is
        unsatisfied by an infinite amount."""
        v, t = row.get(self.metric), self.threshold(target)
        if not is_number(v) or math.isnan(t):
            return False, math.inf
        ok = {">=": v >= t, "<=": v <= t, ">": v > t, "<": v < t}[self.op]
        gap = max(0.0, t - v) if self.op in (">=", ">") else max(0.0, v - t)
        return ok, gap / (abs(t) if t != 0 else 1.0)


@dataclass(frozen=True)
class Criterion:
    """``max|min metric [subject to bound and bound …]``."""

    direction: str
    metric: str
    bounds: tuple[Bound, ...] = ()

    def __str__(self) -> str:
        head = f"{self.direction} {self.metric}"
        return head + (" subject to " + " and ".join(map(str, self.bounds)) if self.bounds else "")

    @property
    def metrics(self) -> list[str]:
        """Every metric the criterion reads, objective first."""
        return list(dict.fromkeys([self.metric, *(b.metric for b in self.bounds)]))

    def rank(self, row: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[Any, ...]:
        """Sort key of a candidate (smaller is better): constraint-satisfying first, by the
        objective; then by the smallest total relative shortfall; ties to the earliest step.
        A candidate whose objective is not a number comes last."""
        obj = row.get(self.metric)
        if not is_number(obj):
            return (2, 0.0, 0.0, row["step"])
        results = [b.shortfall(row, target) for b in self.bounds]
        sat = all(ok for ok, _ in results)
        score = -obj if self.direction == "max" else obj
        return (0 if sat else 1, 0.0 if sat else sum(g for _, g in results), score, row["step"])

    def satisfied(self, row: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
        return is_number(row.get(self.metric)) and all(
            b.shortfall(row, target)[0] for b in self.bounds
        )


def _clean(v: Any) -> Any:
    """A metric value as the card stores it: a float, or a string saying why there is none."""
    if v is None or isinstance(v, str | bool):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return f"unavailable: {v!r}"
    return f if math.isfinite(f) else f"unavailable: {f}"


_DIRECTIONS = {
    "max": "max",
    "maximize": "max",
    "maximise": "max",
    "min": "min",
    "minimize": "min",
    "minimise": "min",
}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_HEAD = re.compile(rf"^({_NAME})\s+({_NAME})$")
_BOUND = re.compile(rf"^({_NAME})\s*(>=|<=|>|<)\s*(.+?)$")
_ABS = re.compile(rf"^({_NUM})$")
_REL = re.compile(rf"^(?:({_NUM})\s*\*?\s*)?target$|^target\s*\*\s*({_NUM})$", re.IGNORECASE)
_SUBJECT = re.compile(r"\s+(?:subject\s+to|s\.t\.|such\s+that)\s+", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+|\s*,\s*|\s*&&?\s*", re.IGNORECASE)


def parse_criterion(text: Any, at: str) -> Criterion:
    """``max|min METRIC [subject to|s.t. METRIC OP RHS [and …]]``; OP is ``>= <= > <`` (or
    ≥ ≤), RHS a number or ``K*target`` / ``K × target`` (K times the target model's value, the
    step-0 evaluation) or ``target``."""
    s = str(text).replace("≥", ">=").replace("≤", "<=").replace("×", "*").replace("·", "*")
    s = " ".join(s.split())
    if not s:
        raise ConfigError(f"{at} is empty", f"write e.g. `{EXAMPLE}`, or leave it unset")
    head, *rest = _SUBJECT.split(s, maxsplit=1)
    m = _HEAD.match(head.strip())
    if m is None or m.group(1).lower() not in _DIRECTIONS:
        what = "does not start with max or min" if m is None else f"starts with {m.group(1)!r}"
        raise ConfigError(
            f"{at}={text!r} {what}", f"write max or min, then one metric, e.g. `{EXAMPLE}`"
        )
    bounds = []
    if rest:
        for part in _AND.split(rest[0].strip()):
            bounds.append(_parse_bound(part.strip(), text, at))
        if not bounds:
            raise ConfigError(f"{at}={text!r} has no constraint after `subject to`", "add one")
    return Criterion(_DIRECTIONS[m.group(1).lower()], m.group(2), tuple(bounds))


def _parse_bound(part: str, text: Any, at: str) -> Bound:
    fix = "write METRIC >= NUMBER or METRIC >= K*target (K times the target's value), joined by and"
    m = _BOUND.match(part)
    if m is None:
        raise ConfigError(f"{at}={text!r}: cannot read the constraint {part!r}", fix)
    metric, op, rhs = m.group(1), m.group(2), m.group(3).strip()
    if (a := _ABS.match(rhs)) is not None:
        value, relative = float(a.group(1)), False
    elif (r := _REL.match(rhs)) is not None:
        k = r.group(1) or r.group(2)
        value, relative = (float(k) if k else 1.0), True
    else:
        raise ConfigError(f"{at}={text!r}: cannot read {rhs!r} in {part!r}", fix)
    if not math.isfinite(value):
        raise ConfigError(f"{at}={text!r}: {rhs!r} is not finite", "use a finite number")
    return Bound(metric, op, value, relative)


def choose(
    curve: Sequence[Mapping[str, Any]], criterion: Criterion
) -> tuple[Mapping[str, Any], bool]:
    """The evaluation ``criterion`` keeps from ``curve`` (its first row is the target at step 0,
    the baseline, never a candidate) and whether it satisfies every constraint."""
    target, candidates = curve[0], [r for r in curve if r["step"] > 0]
    if not candidates:
        raise ValueError("no evaluation after step 0")
    best = min(candidates, key=lambda r: criterion.rank(r, target))
    return best, criterion.satisfied(best, target)


# --------------------------------------------------------------------------------------------
# config check


def check_selection(cfg: Any, at: str) -> None:
    """Check ``eval_every``, ``eval_metrics`` and ``select_best`` of an unlearn section (torch-
    free) and write them in canonical form (``1 epochs``; the criterion re-spelled), so equal
    settings give equal cache keys."""
    names = list(dict.fromkeys(cfg.eval_metrics))
    if not names:
        raise ConfigError(
            f"{at}.eval_metrics is empty", "name metrics to evaluate, e.g. [forget_quality]"
        )
    for i, n in enumerate(names):
        check_metric_name(n, f"{at}.eval_metrics[{i}]")
    cfg.eval_metrics = names
    if cfg.eval_every is not None:
        cfg.eval_every = str(parse_every(cfg.eval_every, f"{at}.eval_every"))
        from obliviate.config import require_gradient_method

        require_gradient_method(
            f"{at}.eval_every", cfg.method, "evaluating during training needs a gradient method"
        )
    if cfg.select_best is None:
        return
    crit = parse_criterion(cfg.select_best, f"{at}.select_best")
    if cfg.eval_every is None:
        raise ConfigError(
            f"{at}.select_best is set but {at}.eval_every is not",
            f"set {at}.eval_every (e.g. 1: every epoch) so there are checkpoints to choose from",
        )
    for n in crit.metrics:
        if n not in names:
            raise ConfigError(
                f"{at}.select_best reads {n!r}, which is not in {at}.eval_metrics "
                f"({', '.join(names)})",
                f"add {n} to {at}.eval_metrics or select by one of those",
            )
    cfg.select_best = str(crit)
