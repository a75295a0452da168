"""``evaluate_model``: the whole evaluation of a model held in memory, with no path, cache or run dir.

Attacks (a quantised or relearned copy), continual unlearning, sweeps and the report call this;
:func:`obliviate.api.evaluate` only adds loading, caching and writing around the same two steps
(:func:`~obliviate.eval.suite.evaluate_splits`, then :func:`~obliviate.eval.summary.summarize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from obliviate.eval.reference import RetainReference
from obliviate.eval.suite import EvalOptions, SuiteResult, evaluate_splits
from obliviate.eval.summary import summarize

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from obliviate.data.benchmarks.base import Benchmark


@dataclass
class Evaluation:
    """Per-split rows and aggregates (``result``) and the flat ``summary``."""

    result: SuiteResult
    summary: dict[str, Any]


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    benchmark: Benchmark,
    reference: RetainReference | None = None,
    options: EvalOptions | None = None,
    *,
    ref_model: PreTrainedModel | None = None,
    ref_tokenizer: PreTrainedTokenizerBase | None = None,
    is_reference: bool = False,
    mmlu: float | None = None,
    **text_models: Any,
) -> Evaluation:
    """Evaluate ``model`` on ``benchmark`` in memory.

    ``reference``: the retain model's :class:`RetainReference` (forget quality, PrivLeak); see
    :func:`score_reference` to compute one from a model. ``ref_model``: the model before
    unlearning, for the Reference MIA. ``text_models``: ``embedder=`` / ``nli=`` overrides.
    """
    result = evaluate_splits(
        model,
        tokenizer,
        benchmark,
        options,
        ref_model=ref_model,
        ref_tokenizer=ref_tokenizer,
        **text_models,
    )
    summary = summarize(result, reference, is_reference=is_reference, mmlu=mmlu)
    summary["passes"] = result.passes
    return Evaluation(result, summary)


def score_reference(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    benchmark: Benchmark,
    options: EvalOptions | None = None,
    source: str = "retain model",
) -> RetainReference:
    """A retain model's reference: teacher-forced passes over the forget and holdout splits only."""
    from obliviate.eval.reference import reference_from_result

    opts, roles = reference_plan(options)
    return reference_from_result(
        evaluate_splits(model, tokenizer, benchmark, opts, roles=roles), source
    )


def reference_plan(options: EvalOptions | None) -> tuple[EvalOptions, Any]:
    """The options and roles a reference evaluation runs with (no generation, no text models)."""
    from dataclasses import replace

    from obliviate.eval.reference import REFERENCE_METRICS, REFERENCE_ROLES

    opts = replace(
        options or EvalOptions(),
        metrics=list(REFERENCE_METRICS),
        gradnorm=False,
        cosine=False,
        entailment=False,
    )
    return opts, REFERENCE_ROLES
