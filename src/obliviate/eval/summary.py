"""Cross-split numbers derived from the per-split results: one flat summary per model.

The summary holds ``<split>_<aggregate>`` for every split aggregate, then what each registered
summary adds, in registration order (a later one may read an earlier one's keys): TOFU's forget
quality and model utility, membership-inference AUCs and PrivLeak, closer-look's utility and
forget efficacy, the SemEval-2025 aggregate. A number that cannot be computed is reported as an
``"unavailable: …"`` line saying why, never as a placeholder value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
) -> dict[str, Any]:
    """The flat summary of one model's results (see the module docstring).

    ``is_reference``: this model is the retain model (forget quality 1, PrivLeak 0 by definition).
    ``mmlu``: MMLU accuracy for the SemEval utility (else model utility stands in, and says so).
    """
    out: dict[str, Any] = {}
    for r in result.splits:
        for k, v in r.aggregates.items():
            if k != "n":
                out[f"{r.name}_{k}"] = v
    inputs = SummaryInput(result, reference, is_reference, mmlu)
    for fn in _SUMMARIES.values():
        out.update(fn(inputs, out))
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


@register_summary("tofu")
def tofu_summary(inp: SummaryInput, out: dict[str, Any]) -> dict[str, Any]:
    """Model utility (harmonic mean of ROUGE, Prob, TR over retain-type splits) and forget quality
    (KS-test p-value of forget-set truth ratios against the retain model's)."""
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
    }
    forget = inp.role("forget")
    own = forget.truth_ratios() if forget is not None else []
    if own and inp.is_reference:
        new["forget_quality"] = M.forget_quality(own, own)
    elif own and inp.reference is not None and inp.reference.forget_ratios:
        new["forget_quality"] = M.forget_quality(own, inp.reference.forget_ratios)
    return new


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
