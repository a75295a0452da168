"""One experiment context per command: the config, its benchmark, the cache and the device,
resolved once and passed down to every pipeline stage."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from obliviate import progress
from obliviate.cache import Cache
from obliviate.config import ExperimentConfig
from obliviate.data.benchmarks import Benchmark, BenchmarkLoader, get_benchmark
from obliviate.errors import DataError

if TYPE_CHECKING:
    import torch


def log(msg: str) -> None:
    """A status line on stderr (stdout is kept for a command's result) and in the run's log."""
    progress.log(msg)


class Experiment:
    """``cfg`` plus what every stage needs from it, each computed once."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.cache = Cache(cfg.cache_dir)

    @classmethod
    def of(cls, x: ExperimentConfig | Experiment) -> Experiment:
        return x if isinstance(x, Experiment) else cls(x)

    @cached_property
    def loader(self) -> BenchmarkLoader:
        return get_benchmark(self.cfg.benchmark.name)

    @cached_property
    def benchmark(self) -> Benchmark:
        """The benchmark, loaded once for the whole command. Forget records that are also in
        the retain set are an error unless ``benchmark.allow_overlap`` (then a warning)."""
        with progress.stage(f"loading the {self.cfg.benchmark.name} benchmark"):
            bench = self.loader.load(self.cfg.benchmark)
        n = bench.overlap_count()
        if n:
            what = (
                f"forget and retain overlap: {n} of {len(bench.forget)} forget records are also"
                " in the retain set"
            )
            if not self.cfg.benchmark.allow_overlap:
                raise DataError(
                    what,
                    "remove them from one split, or set benchmark.allow_overlap=true to run anyway",
                )
            log(f"warning: {what} (benchmark.allow_overlap=true)")
        return bench

    @cached_property
    def data_key(self) -> dict[str, Any]:
        """What the benchmark's records depend on (not which split is forgotten, how much of
        the retain set is scored or whether overlap is allowed): part of every cached model's
        and evaluation's key."""
        key = self.loader.key(self.cfg.benchmark)
        for k in ("forget_split", "retain_eval_size", "allow_overlap"):
            key.pop(k, None)
        return key

    @cached_property
    def device(self) -> torch.device:
        from obliviate.models.io import resolve_device

        return resolve_device(self.cfg.device)

    def with_config(self, cfg: ExperimentConfig) -> Experiment:
        """A context for ``cfg`` (e.g. another method) sharing this one's loaded benchmark when
        the benchmark settings are the same."""
        other = Experiment(cfg)
        if cfg.benchmark == self.cfg.benchmark and "benchmark" in self.__dict__:
            other.__dict__["benchmark"] = self.benchmark
        return other


def setup_runtime(cfg: ExperimentConfig) -> None:
    """Torch threads and library verbosity, once per process.

    In a multi-process launch (``accelerate launch``, ``WORLD_SIZE`` > 1) this also starts the
    process group at once (gloo on CPU, NCCL on GPUs; :func:`obliviate.distributed.init`), before
    any cache or run-dir decision; an unset ``threads`` shares the machine's CPUs between the
    processes on it; and the processes other than the main one send their stdout (a command's
    result) to /dev/null, so the result is printed once."""
    import sys

    import torch

    from obliviate import distributed

    cpus = os.cpu_count() or 1
    if distributed.world_size() > 1:
        from obliviate.models.io import resolve_device

        distributed.init(cpu=resolve_device(cfg.device).type == "cpu")
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        cpus = distributed.threads_per_process(cpus)
    torch.set_num_threads(cfg.threads or cpus)
    progress.silence_libraries()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
