"""Cross-split numbers derived from the per-split results: one flat summary per model.

The summary holds ``<split>_<aggregate>`` for every split aggregate, then what each registered
summary adds, in registration order (a later one may read an earlier one's keys): TOFU's forget
quality and model utility, membership-inference AUCs and PrivLeak, closer-look's utility and
forget efficacy, the SemEval-2025 aggregate. A number that cannot be computed is reported as an
``"unavailable: …"`` line saying why, never as a placeholder value.

Last comes ``ci95``: a 95 % percentile-bootstrap interval over samples for every split aggregate
that is a mean over per-sample values, and for the composites built from such means (model
utility, closer-look utility, forget efficacy, the SemEval task aggregate); see
:func:`bootstrap_intervals`. Forget quality (a KS p-value), MIA AUCs and PrivLeak get none: they
are not means over samples. Forget quality is reported with its KS statistic and sample sizes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from obliviate.eval import closer_look as CL
from obliviate.eval import metrics as M
from obliviate.eval import mia as MIA
from obliviate.eval.reference import RetainReference, mia_aucs
from obliviate.eval.semeval import semeval_final_score, task_aggregate
from obliviate.eval.suite import SplitResult, SuiteResult

PRIVLEAK_ATTACK = "min_k"
"""PrivLeak's headline attack (MUSE uses Min-K%); ``privleak_<attack>`` is reported for all."""
SEMEVAL_MIA_ATTACK = "loss"
"""The SemEval-2025 Task 4 MIA score uses the LOSS attack's AUC."""
UTILITY_ROLES = ("retain", "utility")
NO_HOLDOUT = "unavailable: the benchmark has no holdout split"

BOOTSTRAP_RESAMPLES = 1000
"""B: resamples of each split's samples behind every ``ci95`` interval."""
BOOTSTRAP_SEED = 0
"""Seed of the resampling (with each split's name, so a split's intervals do not depend on which
other splits were evaluated): the same results give the same intervals."""
CI_LEVEL = 0.95


@dataclass
class SummaryInput:
    result: SuiteResult
    reference: RetainReference | None
    is_reference: bool = False
    mmlu: float | None = None

    def role(self, role: str) -> SplitResult | None:
        return self.result.by_role(role)


SummaryFn = Callable[[SummaryInput, dict[str, Any]], dict[str, Any]]
_SUMMARIES: dict[str, SummaryFn] = {}


def register_summary(name: str) -> Callable[[SummaryFn], SummaryFn]:
    """Function decorator: ``fn(inputs, summary_so_far) -> new keys`` joins every summary."""

    def wrap(fn: SummaryFn) -> SummaryFn:
        if name in _SUMMARIES:
            raise ValueError(f"summary {name!r} registered twice")
        _SUMMARIES[name] = fn
        return fn

    return wrap


def summarize(
    result: SuiteResult,
    reference: RetainReference | None,
    is_reference: bool = False,
    mmlu: float | None = None,
    intervals: bool = True,
) -> dict[str, Any]:
    """The flat summary of one model's results (see the module docstring).

    ``is_reference``: this model is the retain model (forget quality 1, PrivLeak 0 by definition).
    ``mmlu``: MMLU accuracy for the SemEval utility (else model utility stands in, and says so).
    ``intervals``: add the bootstrap ``ci95`` (off where only point values are read: the
    evaluations during training and a sweep's trials).
    """
    out: dict[str, Any] = {}
    for r in result.splits:
        for k, v in r.aggregates.items():
            if k != "n":
                out[f"{r.name}_{k}"] = v
    inputs = SummaryInput(result, reference, is_reference, mmlu)
    for fn in _SUMMARIES.values():
        out.update(fn(inputs, out))
    if not intervals:
        return out
    out["ci95"] = bootstrap_intervals(result, out)
    out["ci95_method"] = (
        f"percentile bootstrap over samples: B={BOOTSTRAP_RESAMPLES} resamples of each split, "
        f"seed {BOOTSTRAP_SEED}"
    )
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


@register_summary("tofu")
def tofu_summary(inp: SummaryInput, out: dict[str, Any]) -> dict[str, Any]:
    """Model utility (harmonic mean of ROUGE, Prob, TR over retain-type splits) and forget quality
    (KS-test p-value of forget-set truth ratios against the retain model's).

    Beside the p-value: ``forget_quality_ks``, the KS statistic D = sup |F_model − F_retain| of
    the two empirical CDFs, and the sample sizes ``forget_quality_n_forget`` and
    ``forget_quality_n_retain``. On a small forget set forget quality moves in coarse steps: with
    n truth ratios on each side, D is a multiple of 1/n and the p-value takes at most n + 1
    values. The demo's forget10 has n = 30: D = 8/30, 9/30, 10/30, 11/30, 12/30 give p = 0.239,
    0.135, 0.0709, 0.0346, 0.0156, so one sample crossing the retain model's distribution moves
    forget quality by a factor of about 2, and unrelated methods tie on the same value. Compare
    models by D and n with the p-value, and over seeds (``obliviate run --seeds``).
    """
    terms = {
        f"{r.name}_{k}": r.aggregates[k]
        for r in inp.result.splits
        if r.role in UTILITY_ROLES
        for k in ("rouge", "prob", "truth_ratio")
        if _number(r.aggregates.get(k))
    }
    new: dict[str, Any] = {
        "model_utility": M.harmonic_mean(list(terms.values())) if terms else None,
        "model_utility_terms": sorted(terms),
        "forget_quality": None,
        "forget_quality_ks": None,
        "forget_quality_n_forget": None,
        "forget_quality_n_retain": None,
    }
    forget = inp.role("forget")
    own = forget.truth_ratios() if forget is not None else []
    other = None
    if own and inp.is_reference:
        other = own
    elif own and inp.reference is not None and inp.reference.forget_ratios:
        other = inp.reference.forget_ratios
    if other is not None:
        new["forget_quality"] = M.forget_quality(own, other)
        new["forget_quality_ks"] = ks_statistic(own, other)
        new["forget_quality_n_forget"] = len(own)
        new["forget_quality_n_retain"] = len(other)
    return new


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sample KS statistic D = sup_x |F_a(x) − F_b(x)| over the empirical CDFs (the
    statistic of the test whose p-value is forget quality)."""
    from scipy import stats

    return float(stats.ks_2samp(np.asarray(a, float), np.asarray(b, float)).statistic)


@register_summary("mia")
def mia_summary(inp: SummaryInput, out: dict[str, Any]) -> dict[str, Any]:
    """AUC of forget (members) vs holdout per attack, and PrivLeak against the retain model's AUC."""
    forget, hold = inp.role("forget"), inp.role("holdout")
    if forget is None:
        return {}
    aucs = mia_aucs(forget.samples, hold.samples if hold else [])
    new: dict[str, Any] = {}
    for a in MIA.ATTACKS:
        reason = inp.result.unavailable.get(f"mia_{a}", "unavailable: not selected (eval.metrics)")
        new[f"mia_auc_{a}"] = aucs.get(a, reason if hold else NO_HOLDOUT)
        new[f"privleak_{a}"] = _privleak(inp, a, aucs, new[f"mia_auc_{a}"])
    new["privleak"] = new[f"privleak_{PRIVLEAK_ATTACK}"]
    return new


def _privleak(inp: SummaryInput, attack: str, aucs: dict[str, float], auc_entry: Any) -> Any:
    if attack not in aucs:
        return auc_entry
    if inp.is_reference:
        return 0.0
    ref = inp.reference
    if ref is None or attack not in ref.mia_auc:
        return "unavailable: no retain-model AUC for this attack"
    try:
        return MIA.privleak(aucs[attack], ref.mia_auc[attack])
    except ValueError as e:
        return f"unavailable: {e}"


@register_summary("closer_look")
def closer_look_summary(inp: SummaryInput, out: dict[str, Any]) -> dict[str, Any]:
    """Closer look's model utility (hmean of every non-forget ROUGE, Prob, TR, TE, CS, ES) and
    forget efficacy (1 − mean of the forget ROUGE, Prob, 1 − TR, CS, ES)."""
    qa = [r for r in inp.result.splits if r.role in UTILITY_ROLES]
    forget = inp.role("forget")
    if not qa and forget is None:
        return {}
    terms = {
        f"{r.name}/{k}": r.aggregates.get(k)
        for r in qa
        for k in CL.CLOSER_LOOK_METRICS
        if _number(r.aggregates.get(k))
    }
    new: dict[str, Any] = {
        "closer_look_model_utility": M.harmonic_mean(list(terms.values())) if terms else None,
        "closer_look_model_utility_terms": list(terms),
    }
    if forget is not None and "rouge" in forget.aggregates:
        fa = {k: v if _number(v) else None for k, v in forget.aggregates.items()}
        if fa.get("truth_ratio") is not None:
            fa["truth_ratio"] = 1.0 - fa["truth_ratio"]  # closer-look's forget TR grows with memory
        fe = CL.forget_efficacy(fa)
        new["forget_efficacy"] = fe.value
        new["forget_efficacy_terms"] = list(fe.used)
    return new


@register_summary("semeval")
def semeval_summary(inp: SummaryInput, out: dict[str, Any]) -> dict[str, Any]:
    """SemEval-2025 Task 4: task aggregate, MIA score from the LOSS AUC, and the final score."""
    forget, retain = inp.role("forget"), inp.role("retain")
    need = ("rouge", "qa_exact_match")
    if (
        forget is None
        or retain is None
        or not all(_number(x.aggregates.get(k)) for x in (forget, retain) for k in need)
    ):
        return {}
    ta = task_aggregate(
        forget_regurgitation=forget.aggregates["rouge"],
        forget_qa_exact_match=forget.aggregates["qa_exact_match"],
        retain_regurgitation=retain.aggregates["rouge"],
        retain_qa_exact_match=retain.aggregates["qa_exact_match"],
    )
    new: dict[str, Any] = {"semeval_task_aggregate": ta}
    util = inp.mmlu if inp.mmlu is not None else out.get("model_utility")
    source = (
        "mmlu (lm-evaluation-harness)" if inp.mmlu is not None else "model_utility (no MMLU run)"
    )
    auc = out.get(f"mia_auc_{SEMEVAL_MIA_ATTACK}")
    if _number(auc) and _number(util):
        sv = semeval_final_score(ta, auc, min(1.0, max(0.0, util)), utility_source=source)
        new.update(
            semeval_mia_score=sv.mia_score,
            semeval_final=sv.final,
            semeval_utility_source=sv.utility_source,
        )
    else:
        new["semeval_final"] = "unavailable: needs a holdout split and a model utility"
    return new


# --------------------------------------------------------------------------------------------
# bootstrap intervals


def percentile_interval(replicates: np.ndarray, level: float = CI_LEVEL) -> list[float] | None:
    """The central ``level`` percentile interval of bootstrap replicates (NaN ones left out);
    None when there are none."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[~np.isnan(r)]
    if r.size == 0:
        return None
    lo, hi = np.percentile(r, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return [float(lo), float(hi)]


def resample_indices(n: int, key: str = "", resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """``(resamples, n)`` sample indices drawn with replacement, seeded by
    :data:`BOOTSTRAP_SEED` and ``key`` (a split's name)."""
    seq = np.random.SeedSequence([BOOTSTRAP_SEED, zlib.crc32(key.encode())])
    return np.random.default_rng(seq).integers(0, n, size=(resamples, n))


def mean_replicates(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The mean of ``values`` (NaN: the metric is missing for that sample) over each resample of
    ``idx``; NaN for a resample that drew no sample with a value."""
    t = values[idx]
    have = ~np.isnan(t)
    count = have.sum(axis=1)
    total = np.where(have, t, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def bootstrap_mean_interval(
    values: Sequence[float], key: str = "", resamples: int = BOOTSTRAP_RESAMPLES
) -> list[float] | None:
    """95 % percentile-bootstrap interval of the mean of ``values``; None for fewer than two."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return None
    return percentile_interval(mean_replicates(v, resample_indices(v.size, key, resamples)))


def _per_sample_terms(split: SplitResult) -> dict[str, np.ndarray]:
    """For each of ``split``'s aggregates that is a mean over per-sample values: those values
    (NaN where a sample has none), under the aggregate's key.

    A metric's aggregate counts as a mean when it equals the mean of the metric's aggregate of
    each sample alone (``mean`` itself, or a mean of a per-sample transform such as the truth
    ratio's min(R, 1/R)); that is checked against the split's reported number, so an aggregate
    of another kind (or one not computed from these rows) gets no interval."""
    from obliviate.eval.registry import metrics

    out: dict[str, np.ndarray] = {}
    for m in metrics().values():
        if m.aggregate is None or split.role not in m.roles:
            continue
        raw = [row.get(m.name) for row in split.samples]
        if not any(_number(v) for v in raw):
            continue
        key = m.aggregate_key
        try:
            t = np.array(
                [float(m.aggregate([v], split.role)) if _number(v) else np.nan for v in raw]
            )
        except (TypeError, ValueError, ZeroDivisionError):
            out.pop(key, None)
            continue
        reported = split.aggregates.get(key)
        have = t[~np.isnan(t)]
        if (
            have.size >= 2
            and _number(reported)
            and math.isclose(float(have.mean()), reported, rel_tol=1e-9, abs_tol=1e-12)
        ):
            out[key] = t  # a later metric with the same key replaces it, as in the suite
        else:
            out.pop(key, None)
    return out


def _hmean_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise :func:`~obliviate.eval.metrics.harmonic_mean` (0 where a term is ≤ 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = x.shape[1] / np.sum(1.0 / x, axis=1)
    return np.where((x <= 0).any(axis=1), 0.0, h)


def bootstrap_intervals(result: SuiteResult, summary: dict[str, Any]) -> dict[str, list[float]]:
    """``{summary key: [lo, hi]}``: 95 % percentile-bootstrap intervals over samples.

    Each split's samples are resampled with replacement (B = :data:`BOOTSTRAP_RESAMPLES`, seeded
    by :data:`BOOTSTRAP_SEED` and the split's name); the same resampled rows serve every metric of
    that split, so a composite keeps the pairing of its terms. Intervals are given for every
    ``<split>_<key>`` that is a mean over at least two per-sample values, and for the composites
    of such means, recomputed on each resample: model utility and closer-look utility (harmonic
    means), forget efficacy and the SemEval task aggregate. A composite one of whose terms is not
    such a mean gets no interval; nor do forget quality, MIA AUCs and PrivLeak."""
    reps: dict[str, np.ndarray] = {}  # "<split>_<key>" -> (B,) replicate aggregates
    out: dict[str, list[float]] = {}
    for split in result.splits:
        terms = _per_sample_terms(split)
        if not terms:
            continue
        idx = resample_indices(len(split.samples), split.name)
        for key, values in terms.items():
            reps[f"{split.name}_{key}"] = mean_replicates(values, idx)
    for name, r in reps.items():
        if summary.get(name) is not None:
            ci = percentile_interval(r)
            if ci is not None:
                out[name] = ci
    for name, fn in _composites(result, summary, reps).items():
        ci = percentile_interval(fn)
        if ci is not None:
            out[name] = ci
    return out


def _composites(
    result: SuiteResult, summary: dict[str, Any], reps: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Replicates of the composite summary numbers whose every term has replicates."""
    names = {r.name for r in result.splits}
    out: dict[str, np.ndarray] = {}

    def stack(keys: list[str]) -> np.ndarray | None:
        if not keys or any(k not in reps for k in keys):
            return None
        return np.stack([reps[k] for k in keys], axis=1)

    if _number(summary.get("model_utility")):
        x = stack(list(summary.get("model_utility_terms") or []))
        if x is not None:
            out["model_utility"] = _hmean_rows(x)
    if _number(summary.get("closer_look_model_utility")):
        keys = [t.replace("/", "_", 1) for t in summary.get("closer_look_model_utility_terms", [])]
        x = stack(keys)
        if x is not None:
            out["closer_look_model_utility"] = _hmean_rows(x)
    forget = next((r.name for r in result.splits if r.role == "forget"), None)
    used = summary.get("forget_efficacy_terms") or []
    if _number(summary.get("forget_efficacy")) and forget is not None:
        keys = [f"{forget}_{t.split('/', 1)[1]}" for t in used]
        x = stack(keys)
        if x is not None:
            flip = np.array([k.endswith("_truth_ratio") for k in keys])
            x = np.where(flip, 1.0 - x, x)  # closer-look's forget TR: 1 − TOFU's forget TR
            out["forget_efficacy"] = 1.0 - x.mean(axis=1)
    retain = next((r.name for r in result.splits if r.role == "retain"), None)
    if _number(summary.get("semeval_task_aggregate")) and forget in names and retain in names:
        keys = [f"{s}_{k}" for s in (forget, retain) for k in ("rouge", "qa_exact_match")]
        x = stack(keys)
        if x is not None:
            x = np.concatenate([1.0 - x[:, :2], x[:, 2:]], axis=1)
            out["semeval_task_aggregate"] = _hmean_rows(x)
    return out
