"""What a benchmark is, and the registry that maps ``benchmark.name`` to its loader.

A benchmark gives the unlearning data (``forget``, ``retain``, what the target and retain models
train on) and the evaluation splits. Each :class:`EvalSplit` carries a ``role`` (which metrics
apply: ``forget``, ``retain``, ``utility``, ``holdout``, or a benchmark's own such as MUSE's
``verbmem``) and how its records are turned into model inputs (``template``: the QA prompt
template, or ``raw`` text), so the evaluation suite needs no benchmark-specific code.

Adding a benchmark is one function decorated with :func:`register_benchmark`, in a module that
``obliviate.data.benchmarks`` imports (see the README's "Adding a benchmark").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from obliviate.data.schema import QARecord
from obliviate.errors import ConfigError

if TYPE_CHECKING:
    from obliviate.config import BenchmarkConfig

QA = "qa"
"""Records are (question, answer) pairs put through the model's chat template or the plain QA one."""
RAW = "raw"
"""Records are raw text: ``question`` is a prefix (possibly empty), ``answer`` the continuation."""


@dataclass
class EvalSplit:
    """A split the evaluation scores.

    ``role`` selects the metrics (each metric declares the roles it applies to); ``template``,
    ``max_length`` and ``max_new_tokens`` say how records become model inputs; ``stop`` cuts
    generations at the first stop string; ``metrics`` (optional) restricts the split to a subset
    of the registered metrics, for benchmarks whose protocol scores a split only one way.
    """

    name: str
    role: str
    records: list[QARecord]
    template: str = QA
    max_length: int = 512
    max_new_tokens: int | None = None
    """None: ``eval.max_new_tokens``, else the benchmark's :attr:`Benchmark.max_new_tokens`."""
    stop: tuple[str, ...] = ()
    metrics: tuple[str, ...] | None = None


@dataclass
class Benchmark:
    name: str
    source: str
    forget_split: str
    forget: list[QARecord]
    retain: list[QARecord]
    full: list[QARecord]
    holdout: list[QARecord] = field(default_factory=list)
    extra_train: list[QARecord] = field(default_factory=list)
    """Trained by both the target and the retain model (the synthetic general-knowledge set)."""
    eval_splits: list[EvalSplit] = field(default_factory=list)
    max_new_tokens: int = 200
    """The benchmark's generation budget when ``eval.max_new_tokens`` is unset (TOFU: 200)."""
    trainable: bool = True
    """False for evaluation-only data (no forget / retain training records)."""
    related: list[QARecord] = field(default_factory=list)
    """Facts about the forget set's entities that are in no split (the synthetic benchmark: the
    forget authors' attributes beyond ``qa_per_author``). The ``relearn_related`` attack trains on
    them and measures the forget set."""
    watermark_key: str | None = None
    """The secret each data owner's watermark key derives from, when the training text carries
    per-owner watermarks (:mod:`obliviate.data.watermark`); None: no watermarks."""
    templates: dict[str, tuple[Callable, Callable]] = field(default_factory=dict)
    """Input formats of this benchmark's own: ``{template: (pair_encoder, prompt_encoder)}`` for an
    :attr:`EvalSplit.template` that is neither ``qa`` nor ``raw`` (the prompt attacks' few-shot
    and in-context splits). ``pair_encoder(tokenizer, prompt, answer, max_length) -> (ids,
    n_prompt)``; ``prompt_encoder(tokenizer, prompt) -> ids``."""

    def split(self, name: str) -> EvalSplit:
        for s in self.eval_splits:
            if s.name == name:
                return s
        raise KeyError(name)

    def splits_with_role(self, role: str) -> list[EvalSplit]:
        return [s for s in self.eval_splits if s.role == role]

    def overlap_count(self) -> int:
        """How many forget records also appear in the retain set: the same question and the same
        answer, each compared with surrounding whitespace stripped. Such a record is both
        forgotten and retained, so the retain model has seen it too and forget quality means
        little (:attr:`BenchmarkConfig.allow_overlap <obliviate.config.BenchmarkConfig>`)."""
        retained = {(r.question.strip(), r.answer.strip()) for r in self.retain}
        return sum((r.question.strip(), r.answer.strip()) in retained for r in self.forget)

    def train_records(self, which: str) -> list[QARecord]:
        """``full`` (the target model's data) or ``retain`` (the retain model's), plus extra_train."""
        base = {"full": self.full, "retain": self.retain}[which]
        return base + self.extra_train


@dataclass(frozen=True)
class BenchmarkLoader:
    """A registry entry: how to check, identify and load one benchmark."""

    name: str
    load: Callable[[BenchmarkConfig], Benchmark]
    summary: str
    needs_path: bool = False
    """``benchmark.path`` (a local directory or hub id) is required."""
    hub_id: str | None = None
    """The public hub dataset, named in the error when ``benchmark.path`` is missing."""

    def check(self, cfg: BenchmarkConfig, at: str = "benchmark") -> None:
        """Config-time checks (no file access beyond existence)."""
        if self.needs_path and not cfg.path:
            example = f" or the hub id {self.hub_id}" if self.hub_id else ""
            raise ConfigError(
                f"{at}.path is required when {at}.name={self.name}",
                f"set it to a local {self.name}-format directory{example}",
            )
        if cfg.path and not self.needs_path:  # it would be ignored: the user's files unread
            readers = ", ".join(n for n, b in sorted(_REGISTRY.items()) if b.needs_path)
            raise ConfigError(
                f"{at}.path is set but {at}.name={self.name} reads no files",
                f"set {at}.name to your files' format ({readers}), or drop {at}.path",
            )

    def key(self, cfg: BenchmarkConfig) -> dict[str, Any]:
        """What the loaded benchmark depends on (for content-hash caches): the config fields
        plus, for a local directory, a hash of its files' bytes."""
        from dataclasses import asdict

        key: dict[str, Any] = {"name": self.name, **asdict(cfg)}
        if cfg.path:
            key["files"] = directory_fingerprint(cfg.path)
        return key


_REGISTRY: dict[str, BenchmarkLoader] = {}


def register_benchmark(
    name: str, summary: str, needs_path: bool = False, hub_id: str | None = None
) -> Callable[[Callable[[BenchmarkConfig], Benchmark]], Callable[[BenchmarkConfig], Benchmark]]:
    """Function decorator: make ``load(cfg) -> Benchmark`` available as ``benchmark.name=<name>``."""

    def wrap(
        load: Callable[[BenchmarkConfig], Benchmark],
    ) -> Callable[[BenchmarkConfig], Benchmark]:
        if name in _REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        _REGISTRY[name] = BenchmarkLoader(name, load, summary, needs_path, hub_id)
        return load

    return wrap


def benchmark_names() -> list[str]:
    return sorted(_REGISTRY)


def get_benchmark(name: str, at: str = "benchmark.name") -> BenchmarkLoader:
    if name not in _REGISTRY:
        raise ConfigError(
            f"{at}={name!r} is not a known benchmark",
            f"choose one of {', '.join(benchmark_names())}",
        )
    return _REGISTRY[name]


def directory_fingerprint(location: str) -> str | None:
    """SHA-256 over a local directory's data files (relative names + bytes); None for a hub id."""
    root = Path(location).expanduser()
    if not root.exists():
        return None
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        if f.suffix not in (".json", ".jsonl", ".parquet"):
            continue
        h.update(str(f.relative_to(root) if f != root else f.name).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
