"""``benchmark.name=synthetic``: the embedded fictitious-author benchmark, generated in memory.

The generator (:mod:`obliviate.data.synthetic`) is deterministic from ``benchmark.seed`` and
takes milliseconds, so nothing is read from or written to disk; ``obliviate generate --out DIR``
writes the same splits as TOFU-format JSON files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from obliviate.data.benchmarks.base import Benchmark, register_benchmark
from obliviate.data.benchmarks.qa import MemorySplits, assemble_qa

if TYPE_CHECKING:
    from obliviate.config import BenchmarkConfig

SYNTHETIC_MAX_NEW_TOKENS = 48
"""The synthetic answers are one short sentence (at most ~30 tokens), so 48 new tokens suffice."""


@register_benchmark(
    "synthetic",
    "fictitious authors in TOFU's schema, generated offline from benchmark.seed",
)
def load_synthetic(cfg: BenchmarkConfig) -> Benchmark:
    from obliviate.data.synthetic import generate_benchmark, related_facts

    splits = generate_benchmark(
        cfg.n_authors, cfg.qa_per_author, cfg.n_holdout, cfg.n_general, cfg.seed
    )
    marks = ""
    if cfg.watermark:  # WaterDrum: each author's text in their own watermark (off: untouched)
        from obliviate.data.watermark import watermark_benchmark

        splits = watermark_benchmark(
            splits, cfg.watermark_key, similar=cfg.watermark_similar, seed=cfg.seed
        )
        marks = ", watermarked" + (", similar-data twins" if cfg.watermark_similar else "")
    source = f"synthetic(seed={cfg.seed}, authors={cfg.n_authors}{marks})"
    bench = assemble_qa(
        MemorySplits(splits),
        name="synthetic",
        source=source,
        forget_split=cfg.forget_split,
        retain_eval_size=cfg.retain_eval_size,
        seed=cfg.seed,
        max_new_tokens=SYNTHETIC_MAX_NEW_TOKENS,
    )
    bench.related = related_facts(
        cfg.n_authors, cfg.qa_per_author, cfg.n_holdout, cfg.seed, cfg.forget_split
    )
    bench.watermark_key = cfg.watermark_key if cfg.watermark else None
    return bench
