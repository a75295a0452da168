"""Relearning attacks: a few fine-tuning steps, then the held-out forget records are re-measured.

Three kinds, each a choice of training records and measured records:

- ``relearn`` (in-domain): a seeded half of the forget split is trained, the other half measured;
- ``relearn_related`` (same distribution, other facts; Deeb & Roger 2024): facts about the forget
  entities that are in no split (:attr:`Benchmark.related`) are trained, the whole split measured;
- ``relearn_ood`` (out of domain): as many retain records as the in-domain half are trained, the
  whole split measured.

The same steps are run on the target and on the retain model: the retain model never saw the
forget set, so what it gains is learning, not relearning (the control).
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from obliviate.data.schema import QARecord

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from obliviate.config import RelearnConfig
    from obliviate.data.benchmarks.base import Benchmark


@dataclass
class RelearnPlan:
    train: list[QARecord]
    measured: list[int]
    """Positions of the measured records in the attacked split."""


def relearn_plan(
    name: str, records: list[QARecord], bench: Benchmark, seed: int
) -> RelearnPlan | str:
    """The training records and measured positions of relearning attack ``name``, or why it
    cannot run on this benchmark."""
    if not bench.trainable:
        return "unavailable: the benchmark has no training data (evaluation only)"
    n = len(records)
    if name == "relearn":
        if n < 2:
            return "unavailable: the split has fewer than 2 records to halve"
        order = random.Random(seed).sample(range(n), n)
        half = math.ceil(n / 2)
        return RelearnPlan([records[i] for i in sorted(order[:half])], sorted(order[half:]))
    if name == "relearn_related":
        if not bench.related:
            return (
                "unavailable: the benchmark has no further facts about its forget entities "
                "(the synthetic benchmark has them)"
            )
        return RelearnPlan(list(bench.related), list(range(n)))
    if name == "relearn_ood":
        if not bench.retain:
            return "unavailable: the benchmark has no retain records"
        k = min(len(bench.retain), math.ceil(n / 2))
        return RelearnPlan(random.Random(seed).sample(bench.retain, k), list(range(n)))
    raise KeyError(name)


def relearn_(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[QARecord],
    cfg: RelearnConfig,
    device: torch.device,
    what: str,
) -> dict:
    """Fine-tune ``model`` in place on ``records`` with ``cfg`` (answer tokens only, as the
    target was trained); returns the training stats."""
    from obliviate.training.finetune import run_finetune

    with tempfile.TemporaryDirectory(prefix="obliviate-relearn-") as work:
        stats = run_finetune(
            model, tokenizer, records, cfg, work, device, what=what, section="attack.relearn"
        )
    stats.pop("train_log", None)
    return stats
