"""Assembling a QA benchmark in TOFU's split layout, from files or from splits held in memory.

TOFU's names: ``full``, ``forget01/05/10``, ``retain99/95/90``, optional ``*_perturbed`` variants
(which carry the paraphrased and perturbed answers the truth ratio needs), ``retain_perturbed``,
``holdout01/05/10`` (never trained on: the non-member side of membership inference), and the
model-utility sets: ``real_authors_perturbed`` and ``world_facts_perturbed`` for TOFU, ``general``
for the synthetic benchmark (which both the target and the retain model train on).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Protocol

from obliviate.data.benchmarks.base import Benchmark, EvalSplit
from obliviate.data.schema import QARecord
from obliviate.data.sources import Source
from obliviate.errors import DataError

RETAIN_OF = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
HOLDOUT_OF = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}
UTILITY_SPLITS = ("general", "real_authors_perturbed", "world_facts_perturbed")
SHORT_UTILITY_NAMES = {
    "real_authors_perturbed": "real_authors",
    "world_facts_perturbed": "world_facts",
}
TRAINED_UTILITY = ("general",)
"""Utility splits that the target and the retain model are fine-tuned on too."""


class SplitReader(Protocol):
    def has(self, name: str) -> bool: ...
    def read(self, name: str) -> list[QARecord]: ...


class FileSplits:
    """QA records from a :class:`~obliviate.data.sources.Source` (directory or hub id)."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def has(self, name: str) -> bool:
        return self.source.has(name)

    def read(self, name: str) -> list[QARecord]:
        rows = self.source.rows(name)
        if not rows:
            raise DataError(
                f"split {name!r} of {self.source.location} holds no records",
                "add QA rows or pick another split",
            )
        return [QARecord.from_dict(r, where=where) for where, r in rows]


class MemorySplits:
    """QA records already in memory (the synthetic generator's output)."""

    def __init__(self, splits: Mapping[str, list[QARecord]]) -> None:
        self.splits = splits

    def has(self, name: str) -> bool:
        return name in self.splits

    def read(self, name: str) -> list[QARecord]:
        return list(self.splits[name])


def assemble_qa(
    reader: SplitReader,
    *,
    name: str,
    source: str,
    forget_split: str = "forget10",
    retain_eval_size: int | None = None,
    seed: int = 0,
    max_new_tokens: int = 200,
) -> Benchmark:
    """A :class:`Benchmark` from splits in TOFU's layout.

    ``retain_eval_size`` scores a seeded sample of the retain set (None: all of it, TOFU's
    protocol); the evaluation splits are ``forget``, ``retain``, then each utility set present.
    """
    forget = reader.read(forget_split)
    retain = reader.read(RETAIN_OF[forget_split])
    full = reader.read("full") if reader.has("full") else forget + retain
    holdout_name = HOLDOUT_OF[forget_split]
    holdout = reader.read(holdout_name) if reader.has(holdout_name) else []

    pert = f"{forget_split}_perturbed"
    forget_eval = reader.read(pert) if reader.has(pert) else forget
    _same_questions(forget_eval, forget, pert, forget_split)
    retain_eval = (
        reader.read("retain_perturbed") if reader.has("retain_perturbed") else list(retain)
    )
    if retain_eval_size is not None and len(retain_eval) > retain_eval_size:
        rng = random.Random(seed)
        idx = sorted(rng.sample(range(len(retain_eval)), retain_eval_size))
        retain_eval = [retain_eval[i] for i in idx]

    splits = [
        EvalSplit("forget", "forget", forget_eval),
        EvalSplit("retain", "retain", retain_eval),
    ]
    extra: list[QARecord] = []
    for u in UTILITY_SPLITS:
        if not reader.has(u):
            continue
        recs = reader.read(u)
        splits.append(EvalSplit(SHORT_UTILITY_NAMES.get(u, u), "utility", recs))
        if u in TRAINED_UTILITY:
            extra = recs
    if holdout:
        splits.append(EvalSplit("holdout", "holdout", holdout))
    return Benchmark(
        name=name,
        source=source,
        forget_split=forget_split,
        forget=forget,
        retain=retain,
        full=full,
        holdout=holdout,
        extra_train=extra,
        eval_splits=splits,
        max_new_tokens=max_new_tokens,
    )


def _same_questions(scored: list[QARecord], unlearned: list[QARecord], a: str, b: str) -> None:
    """The forget set scored (``a``) must be the one unlearned (``b``), as TOFU's splits are."""
    have = {r.question.strip() for r in scored}
    want = {r.question.strip() for r in unlearned}
    if have != want:
        n = len(have ^ want)
        raise DataError(
            f"split {a!r} does not hold the questions of {b!r} ({n} differ)",
            f"regenerate {a} from {b}, or remove it to score {b} itself",
        )
