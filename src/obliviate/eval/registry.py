"""The metric registry: each metric declares what it reads, where it applies and how it aggregates.

A **per-sample metric** is a pure function of a :class:`Sample` (one record's scored sequences and
generations) returning a float, or None where it does not apply to that record. Its
:class:`Metric` entry declares:

- ``reads``: which model outputs it needs, by :data:`READS` name (``answer``, ``paraphrased``,
  ``perturbed``, ``paraphrased_question``, ``generation``, ``paraphrased_generation``, …) or one of
  the special inputs ``reference`` (a reference model's scoring of the answer), ``gradients`` (one
  backward pass per sample) and the text models used by batched metrics;
- ``roles``: the split roles it applies to (``forget``, ``retain``, ``utility``, ``holdout``, or a
  benchmark's own such as MUSE's ``verbmem``);
- ``aggregate``: how a split's per-sample values become the split's number (``key`` in the split's
  aggregates, so ``<split>_<key>`` in the summary), or None when only cross-split summaries use it.

The suite (:mod:`obliviate.eval.suite`) plans its passes from the union of what the selected
metrics read, so every distinct sequence is scored once and every distinct prompt generated once
however many metrics use it. ``eval.metrics`` selects a subset by name.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from obliviate.data.schema import QARecord
from obliviate.errors import ConfigError

Pair = tuple[str, str]


# --------------------------------------------------------------------------------------------
# what a metric can read


@dataclass(frozen=True)
class Read:
    """A model output a metric can read: sequences to score and / or prompts to generate."""

    name: str
    doc: str
    pairs: Callable[[QARecord], list[Pair]] | None = None
    prompts: Callable[[QARecord], list[str]] | None = None


READS: dict[str, Read] = {}
SPECIAL_READS = {
    "reference": "the reference model's teacher-forced pass over (question, answer)",
    "gradients": "one forward + backward pass per (question, answer)",
    "text_models": "the sentence embedder / NLI model over every generation (batched)",
}


def register_read(read: Read) -> Read:
    if read.name in READS or read.name in SPECIAL_READS:
        raise ValueError(f"read {read.name!r} registered twice")
    READS[read.name] = read
    return read


register_read(Read("answer", "(question, answer) scored", pairs=lambda r: [(r.question, r.answer)]))
register_read(
    Read(
        "paraphrased",
        "(question, paraphrased answer) scored",
        pairs=lambda r: [(r.question, r.paraphrased_answer)] if r.paraphrased_answer else [],
    )
)
register_read(
    Read(
        "perturbed",
        "(question, perturbed answer) scored, each option",
        pairs=lambda r: [(r.question, p) for p in r.perturbed_answer],
    )
)
register_read(
    Read(
        "paraphrased_question",
        "(paraphrased question, answer) scored",
        pairs=lambda r: [(r.paraphrased_question, r.answer)] if r.paraphrased_question else [],
    )
)
register_read(Read("generation", "greedy answer to the question", prompts=lambda r: [r.question]))
register_read(
    Read(
        "paraphrased_generation",
        "greedy answer to the paraphrased question",
        prompts=lambda r: [r.paraphrased_question] if r.paraphrased_question else [],
    )
)


# --------------------------------------------------------------------------------------------
# what a metric sees


@dataclass
class Sample:
    """One record with everything the planned passes produced for it.

    Lookups of sequences or prompts a metric did not declare in ``reads`` raise KeyError, so an
    undeclared read fails in tests instead of silently costing an extra pass.
    """

    record: QARecord
    role: str
    index: int
    scored_map: Mapping[Any, Any]
    generated_map: Mapping[Any, tuple[str, list[int]]]
    score_key: Callable[[str, str], Any]
    gen_key: Callable[[str], Any]
    stop: tuple[str, ...] = ()
    reference_map: Mapping[Any, Any] | None = None
    grad_norm: float | None = None
    mia_k: float = 0.4
    watermark_key: str | None = None
    """The benchmark's watermark secret (:attr:`Benchmark.watermark_key`); None: no watermarks."""

    def scored(self, prompt: str, answer: str):
        """The :class:`~obliviate.eval.scored.ScoredSequence` of ``(prompt, answer)``."""
        return self.scored_map[self.score_key(prompt, answer)]

    @property
    def answer(self):
        return self.scored(self.record.question, self.record.answer)

    def generated(self, prompt: str) -> tuple[str, list[int]]:
        """``(text, token ids)`` of the greedy answer to ``prompt``, cut at the split's stops."""
        text, ids = self.generated_map[self.gen_key(prompt)]
        for s in self.stop:
            text = text.split(s)[0]
        return (text.strip() if self.stop else text), ids

    @property
    def generation(self) -> str:
        return self.generated(self.record.question)[0]

    @property
    def generation_ids(self) -> list[int]:
        return self.generated(self.record.question)[1]

    @property
    def reference(self):
        """The reference model's scoring of (question, answer); None without a reference model."""
        if self.reference_map is None:
            return None
        return self.reference_map[self.score_key(self.record.question, self.record.answer)]


# --------------------------------------------------------------------------------------------
# metrics


def mean(values: Sequence[float], role: str) -> float:
    """The default aggregation: the mean over the samples the metric applied to."""
    return float(statistics.fmean(values))


BatchFn = Callable[[list[Sample], list[dict[str, Any]], Any], "list[float | None] | str"]
"""``(samples, rows, text_models) -> values`` (one per sample), or an ``"unavailable: …"`` reason."""


@dataclass(frozen=True)
class Metric:
    """A registered per-sample metric (see the module docstring)."""

    name: str
    reads: frozenset[str]
    roles: frozenset[str]
    fn: Callable[[Sample], float | None] | None = None
    batch_fn: BatchFn | None = None
    aggregate: Callable[[Sequence[float], str], float] | None = mean
    key: str | None = None
    """Name in the split's aggregates (default: ``name``)."""
    default: bool = True
    """Part of the default suite. An opt-in metric runs when named in ``eval.metrics``."""
    doc: str = ""

    @property
    def aggregate_key(self) -> str:
        return self.key or self.name

    def applies_to(self, split) -> bool:
        return split.role in self.roles and (split.metrics is None or self.name in split.metrics)


_METRICS: dict[str, Metric] = {}


def register_metric(
    name: str,
    *,
    reads: Sequence[str],
    roles: Sequence[str],
    aggregate: Callable[[Sequence[float], str], float] | None = mean,
    key: str | None = None,
    default: bool = True,
    batched: bool = False,
) -> Callable[[Callable], Callable]:
    """Function decorator registering a per-sample metric (``batched``: a :data:`BatchFn`)."""

    def wrap(fn: Callable) -> Callable:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        unknown = set(reads) - set(READS) - set(SPECIAL_READS)
        if unknown:
            raise ValueError(f"metric {name!r} reads unknown inputs {sorted(unknown)}")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _METRICS[name] = Metric(
            name,
            frozenset(reads),
            frozenset(roles),
            fn=None if batched else fn,
            batch_fn=fn if batched else None,
            aggregate=aggregate,
            key=key,
            default=default,
            doc=doc,
        )
        return fn

    return wrap


def metrics() -> dict[str, Metric]:
    """Every registered metric by name, in registration order (built-ins first)."""
    import obliviate.eval.builtin_metrics  # noqa: F401  (registers the built-in metrics)

    return dict(_METRICS)


DEFAULT = "default"
"""In ``eval.metrics``: every default metric (``[default, paraphrased_truth_ratio]`` adds one)."""


@dataclass
class Selection:
    """The metrics an evaluation runs, and why the others it would report are missing."""

    active: list[Metric]
    disabled: dict[str, str] = field(default_factory=dict)
    """``{metric name: "unavailable: reason"}`` for metrics switched off or lacking an input."""


def select_metrics(
    names: Sequence[str] | None,
    off: Mapping[str, str] | None = None,
    at: str = "eval.metrics",
) -> Selection:
    """Resolve ``eval.metrics`` (None: the default suite) minus metrics switched ``off``
    (``{name: reason}``, e.g. GradNorm without ``eval.gradnorm``)."""
    registry = metrics()
    names = list(names) if names is not None else [DEFAULT]
    chosen: list[str] = []
    for n in names:
        if n == DEFAULT:
            chosen += [m.name for m in registry.values() if m.default]
        elif n in registry:
            chosen.append(n)
        else:
            raise ConfigError(
                f"{at} names an unknown metric {n!r}",
                f"choose from {DEFAULT}, {', '.join(registry)}",
            )
    chosen_set = set(chosen)
    off = dict(off or {})
    active = [m for m in registry.values() if m.name in chosen_set and m.name not in off]
    # a switched-off metric is reported (with its reason) when it was asked for, or when the
    # default suite is asked for (GradNorm's "off by default" line then says how to turn it on)
    disabled = {n: r for n, r in off.items() if n in chosen_set or DEFAULT in names}
    return Selection(active, disabled)
