"""Score once, derive many: plan the passes the selected metrics need, run them, fill the rows.

For the splits being evaluated, the union of what the selected metrics read (see
:mod:`obliviate.eval.registry`) decides which sequences the teacher-forced pass scores and which
prompts are generated. Every distinct sequence is forwarded once and every distinct prompt
generated once per input format, however many metrics and splits use it; every per-sample number
is then a pure function of those arrays and strings, and each split's aggregates follow from its
rows. Nothing here knows a metric or a benchmark by name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from obliviate.data.benchmarks.base import RAW, Benchmark, EvalSplit
from obliviate.eval import closer_look as CL
from obliviate.eval.registry import Metric, Sample, Selection, select_metrics
from obliviate.eval.scoring import (
    PassCounter,
    encode_raw_pair,
    encode_raw_prompt,
    generate_answers,
    score_pairs,
)
from obliviate.models.tokenizer import encode_pair, encode_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from obliviate.config import EvalConfig

PAIR_ENCODERS = {RAW: encode_raw_pair}
PROMPT_ENCODERS = {RAW: encode_raw_prompt}

OFF_REASONS = {
    "mia_gradnorm": "unavailable: off by default (eval.gradnorm=true: one backward per sample)",
    "mia_reference": "unavailable: needs eval.reference_model (the model before unlearning)",
    "cosine_similarity": "unavailable: disabled (eval.cosine=false)",
    "entailment": "unavailable: disabled (eval.entailment=false)",
}


@dataclass
class EvalOptions:
    """How to evaluate (mirrors :class:`obliviate.config.EvalConfig`)."""

    max_new_tokens: int | None = None
    """None: each split's own budget, else the benchmark's (TOFU 200, synthetic 48)."""
    batch_size: int = 32
    metrics: list[str] | None = None
    """Metric names (None: the default suite; ``default`` inside the list stands for it)."""
    gradnorm: bool = False
    cosine: bool = True
    entailment: bool = True
    nli_model: str = CL.DEFAULT_NLI_MODEL
    mia_k: float = 0.4

    @classmethod
    def from_config(cls, e: EvalConfig) -> EvalOptions:
        return cls(
            max_new_tokens=e.max_new_tokens,
            batch_size=e.batch_size,
            metrics=list(e.metrics) if e.metrics is not None else None,
            gradnorm=e.gradnorm,
            cosine=e.cosine,
            entailment=e.entailment,
            nli_model=e.nli_model,
            mia_k=e.mia_k,
        )

    def selection(self, has_reference_model: bool) -> Selection:
        names = list(self.metrics) if self.metrics is not None else ["default"]
        if self.gradnorm and "mia_gradnorm" not in names:
            names.append("mia_gradnorm")
        off = {}
        if not self.gradnorm and "mia_gradnorm" not in (self.metrics or []):
            off["mia_gradnorm"] = OFF_REASONS["mia_gradnorm"]
        if not has_reference_model:
            off["mia_reference"] = OFF_REASONS["mia_reference"]
        if not self.cosine:
            off["cosine_similarity"] = OFF_REASONS["cosine_similarity"]
        if not self.entailment:
            off["entailment"] = OFF_REASONS["entailment"]
        return select_metrics(names, off)


@dataclass
class SplitResult:
    name: str
    role: str
    samples: list[dict[str, Any]]
    aggregates: dict[str, Any] = field(default_factory=dict)

    def truth_ratios(self) -> list[float]:
        return [s["truth_ratio"] for s in self.samples if s.get("truth_ratio") is not None]


@dataclass
class SuiteResult:
    """Per-split rows and aggregates, the metrics that could not run (with why), pass counts."""

    splits: list[SplitResult]
    unavailable: dict[str, str] = field(default_factory=dict)
    passes: dict[str, Any] = field(default_factory=dict)

    def by_role(self, role: str) -> SplitResult | None:
        return next((r for r in self.splits if r.role == role), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "splits": [asdict(r) for r in self.splits],
            "unavailable": self.unavailable,
            "passes": self.passes,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SuiteResult:
        return cls([SplitResult(**r) for r in d["splits"]], d["unavailable"], d["passes"])


# --------------------------------------------------------------------------------------------
# optional text models, loaded once per process


@lru_cache(maxsize=2)
def load_embedder() -> CL.MeanPoolingEmbedder | CL.Unavailable:
    """The offline MiniLM embedder, or why it is unavailable (cached per process)."""
    return CL.load_default_embedder()


@lru_cache(maxsize=4)
def load_nli(name: str) -> CL.EntailmentScorer | CL.Unavailable:
    """An NLI scorer for ``name`` (dir or hub id), or why it is unavailable (cached per process).

    A hub id is first looked up in the local cache; only when it is not there and the hub answers
    within 3 s is it downloaded, so an offline machine learns "unavailable" at once instead of
    after a minute of HTTP retries.
    """
    import os

    from obliviate.eval.closer_look import _looks_like_local_path

    if _looks_like_local_path(name):
        return CL.load_entailment_scorer(name)
    cached = CL.load_entailment_scorer(name, local_files_only=True)
    if not isinstance(cached, CL.Unavailable):
        return cached
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or not _hub_reachable():
        return CL.Unavailable(
            f"entailment model {name!r}",
            "not in the local Hugging Face cache and the hub is unreachable "
            "(set eval.nli_model to a local NLI model directory)",
        )
    return CL.load_entailment_scorer(name)


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


_DEFAULT = object()


class TextModels:
    """The embedder and NLI model for batched metrics, loaded on first use (a given object, None
    for "disabled", or the default loaders). Each returns the model or an ``unavailable`` line."""

    def __init__(self, options: EvalOptions, embedder: Any = _DEFAULT, nli: Any = _DEFAULT) -> None:
        self.options = options
        self._embedder = embedder
        self._nli = nli

    def embedder(self) -> Any:
        if self._embedder is _DEFAULT:
            self._embedder = load_embedder()
        return _usable(self._embedder, OFF_REASONS["cosine_similarity"])

    def nli(self) -> Any:
        if self._nli is _DEFAULT:
            self._nli = load_nli(self.options.nli_model)
        return _usable(self._nli, OFF_REASONS["entailment"])


def _usable(model: Any, none_reason: str) -> Any:
    if model is None:
        return none_reason
    if isinstance(model, CL.Unavailable):
        return str(model)
    return model


# --------------------------------------------------------------------------------------------
# the passes


@dataclass
class _Plan:
    """What one evaluation forwards and generates, grouped by input format."""

    score: dict[tuple[str, int], list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    generate: dict[tuple[str, int], list[str]] = field(default_factory=lambda: defaultdict(list))
    reference: dict[tuple[str, int], list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    gradients: list[tuple[EvalSplit, int]] = field(default_factory=list)


def _budget(split: EvalSplit, bench: Benchmark, options: EvalOptions) -> int:
    if split.max_new_tokens is not None:
        return split.max_new_tokens
    return options.max_new_tokens if options.max_new_tokens is not None else bench.max_new_tokens


def _reads(active: list[Metric]) -> set[str]:
    return set().union(*(m.reads for m in active)) if active else set()


def plan_passes(
    bench: Benchmark,
    options: EvalOptions,
    *,
    roles: set[str] | None = None,
    has_reference_model: bool = False,
) -> tuple[_Plan, list[EvalSplit], dict[str, list[Metric]], Selection]:
    """The metrics each split runs and the passes they need: ``(plan, splits, per_split,
    selection)``. ``plan.score`` / ``plan.generate`` list the requests (with repeats, which the
    passes de-duplicate)."""
    selection = options.selection(has_reference_model)
    splits = [s for s in bench.eval_splits if roles is None or s.role in roles]
    per_split = {s.name: [m for m in selection.active if m.applies_to(s)] for s in splits}
    return _plan(bench, splits, per_split, options), splits, per_split, selection


def _plan(
    bench: Benchmark,
    splits: list[EvalSplit],
    per_split: dict[str, list[Metric]],
    options: EvalOptions,
) -> _Plan:
    from obliviate.eval.registry import READS

    plan = _Plan()
    for split in splits:
        reads = _reads(per_split[split.name])
        fmt = (split.template, split.max_length)
        gen = (split.template, _budget(split, bench, options))
        for r in split.records:
            for name in sorted(reads & set(READS)):
                read = READS[name]
                if read.pairs is not None:
                    plan.score[fmt].extend(read.pairs(r))
                if read.prompts is not None:
                    plan.generate[gen].extend(read.prompts(r))
            if "reference" in reads:
                plan.reference[fmt].append((r.question, r.answer))
        if "gradients" in reads:
            plan.gradients.extend((split, i) for i in range(len(split.records)))
    return plan


def pair_encoder(bench: Benchmark, template: str) -> Callable:
    """How ``template``'s (prompt, answer) pairs become ids: the benchmark's own format, raw text,
    or the QA template."""
    if template in bench.templates:
        return bench.templates[template][0]
    return PAIR_ENCODERS.get(template, encode_pair)


def prompt_encoder(bench: Benchmark, template: str) -> Callable:
    if template in bench.templates:
        return bench.templates[template][1]
    return PROMPT_ENCODERS.get(template, encode_prompt)


def _gradnorms(model, tokenizer, plan: _Plan, bench: Benchmark) -> dict[tuple[str, int], float]:
    import torch

    from obliviate.data.collate import pad_pairs
    from obliviate.eval.mia import gradient_norm

    out = {}
    for split, i in plan.gradients:
        r = split.records[i]
        encode = pair_encoder(bench, split.template)
        b = pad_pairs(
            [encode(tokenizer, r.question, r.answer, split.max_length)], tokenizer.pad_token_id
        )
        with torch.enable_grad():
            out[(split.name, i)] = gradient_norm(
                model,
                b["input_ids"],
                b["attention_mask"],
                b["labels"],
                drop_eos=split.template != RAW,
            )
    return out


def evaluate_splits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    bench: Benchmark,
    options: EvalOptions | None = None,
    *,
    roles: set[str] | None = None,
    counter: PassCounter | None = None,
    ref_model: PreTrainedModel | None = None,
    ref_tokenizer: PreTrainedTokenizerBase | None = None,
    embedder: Any = _DEFAULT,
    nli: Any = _DEFAULT,
) -> SuiteResult:
    """Every selected metric on every split of ``bench`` (or those whose role is in ``roles``).

    ``embedder`` / ``nli``: a model, None (disabled) or, by default, the offline MiniLM and
    ``options.nli_model`` loaded on first use.
    """
    options = options or EvalOptions()
    counter = counter if counter is not None else PassCounter()
    plan, splits, per_split, selection = plan_passes(
        bench, options, roles=roles, has_reference_model=ref_model is not None
    )
    bs = options.batch_size

    scored: dict[Any, Any] = {}
    for (tmpl, max_len), pairs in plan.score.items():
        enc = pair_encoder(bench, tmpl)
        got = score_pairs(
            model, tokenizer, pairs, bs, max_len, counter, f"score ({tmpl})", encode=enc
        )
        scored.update({(tmpl, max_len, *k): v for k, v in got.items()})
    generated: dict[Any, tuple[str, list[int]]] = {}
    for (tmpl, budget), prompts in plan.generate.items():
        enc = prompt_encoder(bench, tmpl)
        got = generate_answers(
            model, tokenizer, prompts, budget, bs, counter, f"generate ({tmpl})", encode=enc
        )
        generated.update({(tmpl, budget, k): v for k, v in got.items()})
    ref_scored: dict[Any, Any] = {}
    for (tmpl, max_len), pairs in plan.reference.items():
        enc = pair_encoder(bench, tmpl)
        got = score_pairs(
            ref_model, ref_tokenizer or tokenizer, pairs, bs, max_len, desc="reference", encode=enc
        )
        ref_scored.update({(tmpl, max_len, *k): v for k, v in got.items()})
    grads = _gradnorms(model, tokenizer, plan, bench) if plan.gradients else {}

    results: list[SplitResult] = []
    batched: dict[str, list[tuple[Sample, dict[str, Any]]]] = defaultdict(list)
    for split in splits:
        active = per_split[split.name]
        reads = _reads(active)
        fmt, budget = (
            (split.template, split.max_length),
            (split.template, _budget(split, bench, options)),
        )
        rows = []
        for i, r in enumerate(split.records):
            s = Sample(
                record=r,
                role=split.role,
                index=i,
                scored_map=scored,
                generated_map=generated,
                score_key=lambda p, a, fmt=fmt: (*fmt, p, a),
                gen_key=lambda p, budget=budget: (*budget, p),
                stop=split.stop,
                reference_map=ref_scored if "reference" in reads else None,
                grad_norm=grads.get((split.name, i)),
                mia_k=options.mia_k,
                watermark_key=bench.watermark_key,
            )
            row = _base_row(s, reads)
            for m in active:
                if m.fn is not None:
                    v = m.fn(s)
                    if v is not None:
                        row[m.name] = v
                else:
                    batched[m.name].append((s, row))
            rows.append(row)
        results.append(SplitResult(split.name, split.role, rows))

    unavailable = dict(selection.disabled)
    registry = {m.name: m for m in selection.active}
    text_models = TextModels(options, embedder, nli)
    for name, items in batched.items():
        values = registry[name].batch_fn(
            [s for s, _ in items], [row for _, row in items], text_models
        )
        if isinstance(values, str):
            unavailable[name] = values
            continue
        for (_, row), v in zip(items, values, strict=True):
            if v is not None:
                row[name] = v

    for res, split in zip(results, splits, strict=True):
        res.aggregates = _aggregate(res, per_split[split.name], selection, unavailable, split)
    passes = {
        "scored_sequences": counter.scored_sequences,
        "distinct_sequences": len(counter.distinct_pairs),
        "scored_tokens": counter.scored_tokens,
        "generated_prompts": counter.generated_prompts,
    }
    return SuiteResult(results, unavailable, passes)


def _base_row(s: Sample, reads: set[str]) -> dict[str, Any]:
    r = s.record
    row: dict[str, Any] = {"index": s.index, "question": r.question, "answer": r.answer}
    if "generation" in reads:
        text, ids = s.generated(r.question)
        row["generation"] = text
        row["generated_tokens"] = len(ids)
    if "answer" in reads:
        row["answer_mean_nll"] = s.answer.mean_nll
        row["answer_tokens"] = s.answer.n_tokens
    if "paraphrased_generation" in reads and r.paraphrased_question:
        row["paraphrased_question"] = r.paraphrased_question
        row["paraphrased_generation"] = s.generated(r.paraphrased_question)[0]
    if r.author:
        row["author"] = r.author
    return row


def _aggregate(
    res: SplitResult,
    active: list[Metric],
    selection: Selection,
    unavailable: dict[str, str],
    split: EvalSplit,
) -> dict[str, Any]:
    from obliviate.eval.registry import metrics

    agg: dict[str, Any] = {"n": float(len(res.samples))}
    for m in active:
        if m.aggregate is None:
            continue
        values = [row[m.name] for row in res.samples if m.name in row]
        if values:
            agg[m.aggregate_key] = m.aggregate(values, res.role)
        elif m.name in unavailable:
            agg.setdefault(m.aggregate_key, unavailable[m.name])
    registry = metrics()
    for name, reason in selection.disabled.items():
        m = registry[name]
        if m.aggregate is not None and m.applies_to(split):
            agg.setdefault(m.aggregate_key, reason)
    return agg
