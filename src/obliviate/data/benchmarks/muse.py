"""``benchmark.name=muse``: MUSE (Shi et al., 2025, "MUSE: Machine Unlearning Six-Way Evaluation
for Language Models") from a local directory in its layout or a hub id (``muse-bench/MUSE-News``,
``muse-bench/MUSE-Books``). Evaluation only: unlearning on MUSE's raw corpora is not wired yet.

Layout (``<root>/<subset>/<split>.json``, ``.jsonl`` or ``.parquet``)::

    verbmem/forget          [{"prompt": ..., "gt": ...}]          VerbMem (C1)
    knowmem/forget_qa       [{"question": ..., "answer": ...}]    KnowMem on the forget set (C2)
    knowmem/forget_qa_icl   in-context examples for forget_qa
    knowmem/retain_qa       KnowMem on the retain set (C4); the GitHub repo calls it retain2_qa
    knowmem/retain_qa_icl   in-context examples for retain_qa (optional)
    privleak/forget         [{"text": ...}] or ["..."]            PrivLeak members (C3)
    privleak/holdout        non-members
    privleak/retain         (optional; retain2 in the GitHub repo)

Each part becomes an evaluation split scored by the shared passes, in MUSE's protocol: raw text
(no chat template); VerbMem continues each prompt for 128 greedy tokens; KnowMem prefixes the
in-context examples as ``Question: q\\nAnswer: a\\n\\n`` and generates 32 tokens, cut before the
first ``\\n\\n``, ``\\nQuestion`` or ``Question:``; PrivLeak scores each text (up to 2048 tokens)
with the membership-inference attacks, forget (members) against holdout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from obliviate.data.benchmarks.base import RAW, Benchmark, EvalSplit, register_benchmark
from obliviate.data.schema import QARecord
from obliviate.data.sources import Source
from obliviate.errors import DataError

if TYPE_CHECKING:
    from obliviate.config import BenchmarkConfig

MUSE_HUB_ID = "muse-bench/MUSE-News"
ALIASES = {"retain_qa": ("retain_qa", "retain2_qa"), "retain": ("retain", "retain2")}
VERBMEM_MAX_NEW_TOKENS = 128
KNOWMEM_MAX_NEW_TOKENS = 32
PRIVLEAK_MAX_LENGTH = 2048
STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")
PRIVLEAK_METRICS = (
    "mia_loss",
    "mia_zlib",
    "mia_min_k",
    "mia_min_k_pp",
    "mia_gradnorm",
    "mia_reference",
)


def knowmem_prompt(icl: Sequence[tuple[str, str]], question: str) -> str:
    """In-context examples then the question, in MUSE's ``Question: …\\nAnswer: `` format."""
    from obliviate.models.tokenizer import plain_prompt

    return plain_prompt(question, icl)


def cut_at_stop(text: str, stops: Sequence[str] = STOP_STRINGS) -> str:
    """The prefix of ``text`` before the first occurrence of any stop string."""
    for s in stops:
        text = text.split(s)[0]
    return text


def _rows(src: Source, subset: str, split: str) -> list[tuple[str, Any]]:
    for name in ALIASES.get(split, (split,)):
        if src.has(name, subset):
            return src.rows(name, subset)
    return []


def _field(row: Any, key: str, where: str) -> str:
    if not isinstance(row, dict) or not isinstance(row.get(key), str):
        raise DataError(f"{where} lacks a string field {key!r}", "fix that row")
    return row[key]


def _qa(rows: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(_field(r, "question", w), _field(r, "answer", w)) for w, r in rows]


def _texts(rows: list[tuple[str, Any]]) -> list[str]:
    return [r if isinstance(r, str) else _field(r, "text", w) for w, r in rows]


@register_benchmark(
    "muse",
    "MUSE VerbMem / KnowMem / PrivLeak: a local MUSE-format directory or a hub id (evaluation only)",
    needs_path=True,
    hub_id=MUSE_HUB_ID,
)
def load_muse(cfg: BenchmarkConfig) -> Benchmark:
    return load_muse_dir(str(cfg.path))


def load_muse_dir(location: str) -> Benchmark:
    """MUSE's evaluation splits from a directory or hub id."""
    src = Source(
        location, what="MUSE", fix="pass a MUSE-format directory or hub id as benchmark.path"
    )
    splits: list[EvalSplit] = []
    verb = [
        QARecord(_field(r, "prompt", w), _field(r, "gt", w))
        for w, r in _rows(src, "verbmem", "forget")
    ]
    if verb:
        splits.append(
            EvalSplit("verbmem", "verbmem", verb, RAW, max_new_tokens=VERBMEM_MAX_NEW_TOKENS)
        )
    for side in ("forget", "retain"):
        qa = _qa(_rows(src, "knowmem", f"{side}_qa"))
        icl = _qa(_rows(src, "knowmem", f"{side}_qa_icl"))
        if qa:
            recs = [QARecord(knowmem_prompt(icl, q), a) for q, a in qa]
            splits.append(
                EvalSplit(
                    f"knowmem_{side}",
                    f"knowmem_{side}",
                    recs,
                    RAW,
                    max_new_tokens=KNOWMEM_MAX_NEW_TOKENS,
                    stop=STOP_STRINGS,
                )
            )
    privleak = {side: _texts(_rows(src, "privleak", side)) for side in ("forget", "holdout")}
    for side, role in (("forget", "forget"), ("holdout", "holdout")):
        if privleak[side]:
            recs = [QARecord("", t) for t in privleak[side]]
            splits.append(
                EvalSplit(
                    f"privleak_{side}",
                    role,
                    recs,
                    RAW,
                    max_length=PRIVLEAK_MAX_LENGTH,
                    metrics=PRIVLEAK_METRICS,
                )
            )
    if not splits:
        raise DataError(
            f"{location} holds no MUSE data",
            "expected verbmem/forget.json, knowmem/forget_qa.json or privleak/forget.json",
        )
    return Benchmark(
        name="muse",
        source=location,
        forget_split="muse",
        forget=[],
        retain=[],
        full=[],
        eval_splits=splits,
        max_new_tokens=KNOWMEM_MAX_NEW_TOKENS,
        trainable=False,
    )
