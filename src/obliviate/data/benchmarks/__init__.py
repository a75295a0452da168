"""Registered benchmarks: importing this package registers every built-in one.

``benchmark.name`` picks a loader from the registry; each reads its files through
:mod:`obliviate.data.sources` (one local-versus-hub rule, one error line).
"""

from obliviate.data.benchmarks import muse, synthetic, tofu  # noqa: F401  (registration)
from obliviate.data.benchmarks.base import (
    QA,
    RAW,
    Benchmark,
    BenchmarkLoader,
    EvalSplit,
    benchmark_names,
    get_benchmark,
    register_benchmark,
)

__all__ = [
    "QA",
    "RAW",
    "Benchmark",
    "BenchmarkLoader",
    "EvalSplit",
    "benchmark_names",
    "get_benchmark",
    "register_benchmark",
]
