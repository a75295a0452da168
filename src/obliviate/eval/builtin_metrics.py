"""The built-in per-sample metrics, one registry entry each over the pure functions in
:mod:`~obliviate.eval.metrics` (TOFU), :mod:`~obliviate.eval.memorization`,
:mod:`~obliviate.eval.mia`, :mod:`~obliviate.eval.closer_look` and :mod:`~obliviate.eval.semeval`.

Role sets: ``QA_ROLES`` are the splits the model answers (forget, retain, utility); ``MIA_ROLES``
the two sides of membership inference (forget = members, holdout = non-members).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from obliviate.eval import closer_look as CL
from obliviate.eval import metrics as M
from obliviate.eval import mia as MIA
from obliviate.eval.memorization import exact_memorization, extraction_strength
from obliviate.eval.registry import Read, Sample, register_metric, register_read
from obliviate.eval.semeval import qa_exact_match

QA_ROLES = ("forget", "retain", "utility")
MIA_ROLES = ("forget", "holdout")
MUSE_ROLES = ("verbmem", "knowmem_forget", "knowmem_retain")


def truth_ratio_aggregate(ratios: Sequence[float], role: str) -> float:
    """Forget: mean min(R, 1/R); retain-type splits: mean max(0, 1 − 1/R) (TOFU)."""
    return M.truth_ratio_forget(ratios) if role == "forget" else M.truth_ratio_retain(ratios)


# ------------------------------------------------------------------------------ TOFU


@register_metric("rouge_l_recall", reads=["generation"], roles=QA_ROLES, key="rouge")
def rouge_l_recall(s: Sample) -> float:
    """ROUGE-L recall of the greedy answer against the gold answer (TOFU)."""
    return M.rouge_l_recall(s.record.answer, s.generation)


@register_metric("prob", reads=["answer"], roles=(*QA_ROLES, "holdout"))
def prob(s: Sample) -> float:
    """exp(−S̄): per-token geometric-mean probability of the gold answer."""
    return M.probability(s.answer.mean_nll)


@register_metric("prob_normalized", reads=["answer", "perturbed"], roles=["utility"], key="prob")
def prob_normalized(s: Sample) -> float | None:
    """p(a) / (p(a) + Σ p(pert)), length-normalised (TOFU's utility-set probability)."""
    pert = [s.scored(s.record.question, p).mean_nll for p in s.record.perturbed_answer]
    return M.normalized_probability(s.answer.mean_nll, pert) if pert else None


@register_metric(
    "truth_ratio",
    reads=["answer", "paraphrased", "perturbed"],
    roles=QA_ROLES,
    aggregate=truth_ratio_aggregate,
)
def truth_ratio(s: Sample) -> float | None:
    """R = exp(mean_j S̄(pert_j) − S̄(para)); the answer stands in for para on utility sets."""
    r = s.record
    if not r.perturbed_answer:
        return None
    para = r.paraphrased_answer if (r.paraphrased_answer and s.role != "utility") else r.answer
    pert = [s.scored(r.question, p).mean_nll for p in r.perturbed_answer]
    return M.truth_ratio(s.scored(r.question, para).mean_nll, pert)


@register_metric("fact_recalled", reads=["generation"], roles=QA_ROLES, key="fact_recall")
def fact_recalled(s: Sample) -> float | None:
    """1 if every fact string of the record appears in the generation (synthetic benchmark)."""
    if not s.record.fact:
        return None
    parts = [p.strip().lower() for p in s.record.fact.split("|") if p.strip()]
    text = s.generation.lower()
    return float(all(p in text for p in parts))


# ------------------------------------------------------------------------------ memorisation


@register_metric("exact_memorization", reads=["answer"], roles=(*QA_ROLES, "holdout"))
def exact_memorization_metric(s: Sample) -> float:
    """Share of answer tokens that are the teacher-forced argmax."""
    return exact_memorization(s.answer)


@register_metric("extraction_strength", reads=["answer"], roles=(*QA_ROLES, "holdout"))
def extraction_strength_metric(s: Sample) -> float:
    """1 − k*/|y|, k* the shortest prefix after which the argmax reproduces the rest."""
    return extraction_strength(s.answer)


# ------------------------------------------------------------------------------ closer look, SemEval


@register_metric("token_entropy", reads=["generation"], roles=QA_ROLES)
def token_entropy(s: Sample) -> float:
    """Normalised entropy of the generation's token ids (closer look)."""
    return CL.token_entropy(s.generation_ids)


@register_metric("qa_exact_match", reads=["generation"], roles=QA_ROLES)
def qa_exact_match_metric(s: Sample) -> float:
    """1 if the generation equals the answer (case- and space-insensitive; SemEval-2025 Task 4)."""
    return float(qa_exact_match(s.record.answer, s.generation))


@register_metric(
    "cosine_similarity", reads=["generation", "text_models"], roles=QA_ROLES, batched=True
)
def cosine_similarity(samples: list[Sample], rows: list[dict[str, Any]], text_models: Any):
    """max(0, cos) of sentence embeddings of generation and answer (one embedder call)."""
    emb = text_models.embedder()
    if isinstance(emb, str):
        return emb
    return CL.cosine_similarity_scores(
        emb, [s.generation for s in samples], [s.record.answer for s in samples]
    )


@register_metric("entailment", reads=["generation", "text_models"], roles=QA_ROLES, batched=True)
def entailment(samples: list[Sample], rows: list[dict[str, Any]], text_models: Any):
    """NLI entailment between generation and answer, gated by ROUGE-L recall ≥ 0.1 (closer look).

    Forget samples take the generation as premise, the others the answer."""
    nli = text_models.nli()
    if isinstance(nli, str):
        return nli
    out: list[float | None] = [None] * len(samples)
    for side in ("forget", "retain"):
        idx = [i for i, s in enumerate(samples) if (s.role == "forget") == (side == "forget")]
        if not idx:
            continue
        labels = CL.gated_entailment_scores(
            nli,
            side,
            [samples[i].generation for i in idx],
            [samples[i].record.answer for i in idx],
            rouge_recalls=[_rouge_recall(samples[i], rows[i]) for i in idx],
        )
        for i, lab in zip(idx, labels, strict=True):
            out[i] = float(lab)
    return out


def _rouge_recall(s: Sample, row: dict[str, Any]) -> float:
    """The row's ROUGE-L recall when ``rouge_l_recall`` ran (the usual case), else computed."""
    v = row.get("rouge_l_recall")
    return v if v is not None else M.rouge_l_recall(s.record.answer, s.generation)


# ------------------------------------------------------------------------------ paraphrased questions


@register_metric("paraphrased_rouge_l_recall", reads=["paraphrased_generation"], roles=QA_ROLES)
def paraphrased_rouge_l_recall(s: Sample) -> float | None:
    """ROUGE-L recall of the answer to the paraphrased question."""
    pq = s.record.paraphrased_question
    return M.rouge_l_recall(s.record.answer, s.generated(pq)[0]) if pq else None


@register_metric("paraphrased_prob", reads=["paraphrased_question"], roles=QA_ROLES)
def paraphrased_prob(s: Sample) -> float | None:
    """exp(−S̄(answer | paraphrased question)): the gold answer behind a rephrased question."""
    pq = s.record.paraphrased_question
    return M.probability(s.scored(pq, s.record.answer).mean_nll) if pq else None


# ------------------------------------------------------------------------------ membership inference


@register_metric("mia_loss", reads=["answer"], roles=MIA_ROLES, aggregate=None)
def mia_loss(s: Sample) -> float:
    """LOSS attack score S̄ over the answer without its closing EOS (higher = non-member)."""
    return MIA.loss_score(s.answer)


@register_metric("mia_zlib", reads=["answer"], roles=MIA_ROLES, aggregate=None)
def mia_zlib(s: Sample) -> float:
    """ZLib attack score: answer NLL over the text's zlib length."""
    return MIA.zlib_score(s.answer, s.record.answer)


@register_metric("mia_min_k", reads=["answer"], roles=MIA_ROLES, aggregate=None)
def mia_min_k(s: Sample) -> float:
    """Min-K% attack score: −mean of the lowest k share of token log-probs."""
    return MIA.mink_score(s.answer, s.mia_k)


@register_metric("mia_min_k_pp", reads=["answer"], roles=MIA_ROLES, aggregate=None)
def mia_min_k_pp(s: Sample) -> float:
    """Min-K%++ attack score: Min-K% on vocabulary-standardised log-probs."""
    return MIA.minkpp_score(s.answer, s.mia_k)


@register_metric(
    "mia_gradnorm", reads=["gradients"], roles=MIA_ROLES, aggregate=None, default=False
)
def mia_gradnorm(s: Sample) -> float:
    """GradNorm attack score: the answer loss's gradient norm (opt-in: one backward per sample)."""
    return MIA.gradnorm_score(s.grad_norm)


@register_metric("mia_reference", reads=["answer", "reference"], roles=MIA_ROLES, aggregate=None)
def mia_reference(s: Sample) -> float:
    """Reference attack score S̄_θ − S̄_ref (needs eval.reference_model)."""
    return MIA.reference_score(s.answer, s.reference)


# ------------------------------------------------------------------------------ MUSE


@register_metric("rouge_l_f1", reads=["generation"], roles=MUSE_ROLES, key="f")
def rouge_l_f1(s: Sample) -> float:
    """ROUGE-L F1 of the (stop-cut) generation against the gold text (MUSE VerbMem / KnowMem)."""
    return M.rouge_l_f1(s.record.answer, s.generation)


# ------------------------------------------------------------------------------ opt-in

register_read(
    Read(
        "paraphrased_question_options",
        "(paraphrased question, paraphrased answer | perturbed answer) scored",
        pairs=lambda r: (
            [(r.paraphrased_question, r.paraphrased_answer or r.answer)]
            + [(r.paraphrased_question, p) for p in r.perturbed_answer]
            if r.paraphrased_question
            else []
        ),
    )
)


@register_metric(
    "paraphrased_truth_ratio",
    reads=["paraphrased_question_options"],
    roles=QA_ROLES,
    aggregate=truth_ratio_aggregate,
    default=False,
)
def paraphrased_truth_ratio(s: Sample) -> float | None:
    """Truth ratio behind the paraphrased question: R = exp(mean_j S̄(q', pert_j) − S̄(q', para)).

    The same preference test as ``truth_ratio`` with the question rephrased, so a model that only
    unlearned the surface form of the forget questions keeps a high R here (opt-in: it scores
    1 + #perturbed more sequences per record)."""
    r = s.record
    if not (r.paraphrased_question and r.perturbed_answer):
        return None
    pq = r.paraphrased_question
    pert = [s.scored(pq, p).mean_nll for p in r.perturbed_answer]
    return M.truth_ratio(s.scored(pq, r.paraphrased_answer or r.answer).mean_nll, pert)


# WaterDrum (opt-in), in its own module
import obliviate.eval.watermark_metric  # noqa: E402,F401  (registers watermark_z)
