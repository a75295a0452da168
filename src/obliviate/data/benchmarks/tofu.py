"""``benchmark.name=tofu``: TOFU (Maini et al., 2024, "TOFU: A Task of Fictitious Unlearning for
LLMs") from a local directory in its split layout or the hub id ``locuslab/TOFU``.

TOFU's protocol: the whole retain set is scored (``benchmark.retain_eval_size`` unset) and greedy
answers run up to 200 new tokens (``eval.max_new_tokens`` unset).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from obliviate.data.benchmarks.base import Benchmark, register_benchmark
from obliviate.data.benchmarks.qa import FileSplits, assemble_qa
from obliviate.data.sources import Source

if TYPE_CHECKING:
    from obliviate.config import BenchmarkConfig

TOFU_HUB_ID = "locuslab/TOFU"
TOFU_MAX_NEW_TOKENS = 200


@register_benchmark(
    "tofu",
    "TOFU: a local directory of <split>.json/.jsonl/.parquet files, or the hub id locuslab/TOFU",
    needs_path=True,
    hub_id=TOFU_HUB_ID,
)
def load_tofu(cfg: BenchmarkConfig) -> Benchmark:
    return load_tofu_dir(str(cfg.path), cfg.forget_split, cfg.retain_eval_size, cfg.seed)


def load_tofu_dir(
    location: str,
    forget_split: str = "forget10",
    retain_eval_size: int | None = None,
    seed: int = 0,
) -> Benchmark:
    """TOFU's layout from a directory or hub id (also any user data laid out the same way)."""
    return assemble_qa(
        FileSplits(Source(location)),
        name="tofu",
        source=location,
        forget_split=forget_split,
        retain_eval_size=retain_eval_size,
        seed=seed,
        max_new_tokens=TOFU_MAX_NEW_TOKENS,
    )
