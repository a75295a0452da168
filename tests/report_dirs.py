"""Fabricated run directories for report tests: no training, numbers chosen to be checked by hand.

:func:`demo_dir` writes what ``obliviate demo`` writes (summary.json with rows, one sub-folder per
row with summary.json and eval/<split>.json) plus a model dir per row holding obliviate.json;
:func:`eval_dir` writes one ``obliviate eval`` run dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROWS = ["target", "retain", "ga", "npo"]

# hand-checkable numbers per row (retain is the reference model)
NUMBERS: dict[str, dict[str, Any]] = {
    "forget_quality": {"target": 0.001, "retain": 1.0, "ga": 0.05, "npo": 0.2},
    "model_utility": {"target": 0.62, "retain": 0.60, "ga": 0.40, "npo": 0.55},
    "forget_rouge": {"target": 0.95, "retain": 0.30, "ga": 0.10, "npo": 0.35},
    "forget_prob": {"target": 0.90, "retain": 0.10, "ga": 0.02, "npo": 0.15},
    "forget_truth_ratio": {"target": 0.40, "retain": 0.60, "ga": 0.75, "npo": 0.55},
    "forget_fact_recall": {
        "target": 1.0,
        "retain": 0.0,
        "ga": "unavailable: the benchmark has no facts",
        "npo": 0.25,
    },
    "forget_token_entropy": {"target": 0.97, "retain": 0.93, "ga": 0.41, "npo": 0.88},
    "retain_rouge": {"target": 0.85, "retain": 0.80, "ga": 0.30, "npo": 0.70},
    "retain_prob": {"target": 0.90, "retain": 0.90, "ga": 0.40, "npo": 0.80},
    "holdout_prob": {"target": 0.08, "retain": 0.09, "ga": 0.01, "npo": 0.07},
    "mia_auc_loss": {"target": 0.95, "retain": 0.50, "ga": 0.30, "npo": 0.62},
    "privleak_loss": {"target": -90.0, "retain": 0.0, "ga": 40.0, "npo": -24.0},
    "privleak": {"target": -90.0, "retain": 0.0, "ga": 40.0, "npo": -24.0},
}
SPLIT_ROLES = {"forget": "forget", "retain": "retain", "holdout": "holdout"}
ESCAPE_QUESTION = "What does <b>& mean on Vellor's title page?"
"""A forget-set question that must be escaped in HTML (index 1 of the forget split)."""

FORGET = [
    ("Who wrote the Lantern Almanac?", "Mira Vellor wrote it."),
    (ESCAPE_QUESTION, "It marks the bold ampersand."),
    ("Where was Mira Vellor born?", "She was born in Ostrevia."),
    ("Which prize did Mira Vellor receive?", "She received the Ember Crown."),
]
RETAIN = [
    ("What genre does Tobin Hale write?", "He writes sea adventures."),
    ("Where does Tobin Hale live?", "He lives in Quarrin."),
    ("What is Tobin Hale's first novel?", "His first novel is Salt Roads."),
]
HOLDOUT = [("Who is Fenuna Brometh?", "A poet from Tolvenna.")]


def summary_for(name: str, split_roles: bool = True, **extra: Any) -> dict[str, Any]:
    """The flat summary of row ``name`` (``extra`` keys added or replaced)."""
    s: dict[str, Any] = {k: v[name] for k, v in NUMBERS.items()}
    s.update(
        {
            "forget_entailment": "unavailable: no NLI model in the local cache",
            "model_utility_terms": ["retain_prob", "retain_rouge"],
            "eval_seconds": 1.5,
            "eval_cache_hit": False,
            "passes": {"scored_sequences": 10, "generated_prompts": 7},
            "benchmark": "synthetic",
            "forget_quality_reference": (
                "itself (this is the retain model)" if name == "retain" else "saved evaluation"
            ),
        }
    )
    if split_roles:
        s["split_roles"] = dict(SPLIT_ROLES)
    s.update(extra)
    return s


def generation(run: str, answer: str, i: int) -> str:
    """What run ``run`` answered: the target repeats the answer; the others differ per run."""
    if run == "target":
        return answer
    return f"{run} forgot item {i}: nothing about it"


def samples_for(run: str, generations: bool = True) -> dict[str, list[dict[str, Any]]]:
    """eval/<split>.json rows of row ``run``."""

    def rows(pairs: list[tuple[str, str]], gen: bool) -> list[dict[str, Any]]:
        out = []
        for i, (q, a) in enumerate(pairs):
            row: dict[str, Any] = {"index": i, "question": q, "answer": a, "author": "Mira Vellor"}
            if gen:
                g = generation(run, a, i)
                row["generation"] = g
                row["rouge_l_recall"] = 1.0 if g == a else round(0.1 * (i + 1), 2)
                row["paraphrased_question"] = q.lower()
                row["paraphrased_generation"] = g
            row["prob"] = 0.5
            out.append(row)
        return out

    return {
        "forget": rows(FORGET, generations),
        "retain": rows(RETAIN, generations),
        "holdout": rows(HOLDOUT, False),
    }


def card_for(name: str, train_log: bool = True) -> dict[str, Any]:
    """obliviate.json of row ``name``'s model: finetune cards for target and retain, unlearn
    cards (with a 5-step ``train_log`` when asked) for the others."""
    if name in ("target", "retain"):
        return {"stage": "finetune", "split": "full" if name == "target" else "retain", "steps": 40}
    card: dict[str, Any] = {
        "stage": "unlearn",
        "method": name,
        "params": {"alpha": 1.0},
        "steps": 5,
        "forget_split": "forget",
        "source_model": "target-model",
        "train_loss": -0.5,
    }
    if train_log:
        slope = 0.4 if name == "ga" else 0.2
        card["train_log"] = [
            {
                "step": s,
                "epoch": s / 5,
                "loss": 2.0 - slope * s,
                "learning_rate": 1e-5,
                "grad_norm": 1.0 + s,
            }
            for s in range(1, 6)
        ]
    return card


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def demo_dir(
    root: Path,
    name: str = "demo",
    rows: list[str] | None = None,
    train_log: bool = True,
    cards: bool = True,
    split_roles: bool = True,
    curves: bool = False,
) -> Path:
    """A finished demo run dir at ``root/name`` with ``rows`` (default target, retain, ga, npo).

    ``cards``: write each row's model dir (``root/name-models/<row>``) with obliviate.json;
    ``train_log``: the unlearned cards log their steps; ``curves``: npo's summary carries a
    generic ``curves`` entry.
    """
    rows = ROWS if rows is None else rows
    run = root / name
    models = root / f"{name}-models"
    table = []
    for r in rows:
        model = models / r
        extra: dict[str, Any] = {"model": str(model)}
        if curves and r == "npo":
            extra["curves"] = {
                "forget quality": {
                    "x": [0, 1, 2],
                    "y": [0.001, 0.05, 0.2],
                    "xlabel": "step",
                    "ylabel": "forget quality",
                }
            }
        summary = summary_for(r, split_roles=split_roles, **extra)
        write_json(run / r / "summary.json", summary)
        for split, data in samples_for(r).items():
            write_json(run / r / "eval" / f"{split}.json", data)
        if cards:
            write_json(model / "obliviate.json", card_for(r, train_log))
        table.append({**summary, "model": r, "model_path": str(model)})
    write_json(run / "summary.json", {"rows": table, "seconds": 12.5})
    (run / "config.yaml").write_text("benchmark:\n  name: synthetic\n")
    (run / "table.txt").write_text("model  forget quality\n")
    return run


def eval_dir(
    root: Path,
    name: str,
    row: str = "ga",
    card: dict[str, Any] | None = None,
    model_inside: bool = True,
    **extra: Any,
) -> Path:
    """An ``obliviate eval`` run dir at ``root/name`` scoring row ``row``'s numbers; its model
    dir (``<run>/model`` when ``model_inside``) holds ``card`` (default: the row's card)."""
    run = root / name
    model = run / "model" if model_inside else root / f"{name}-model-gone"
    summary = summary_for(row, model=str(model), **extra)
    write_json(run / "summary.json", summary)
    for split, data in samples_for(row).items():
        write_json(run / "eval" / f"{split}.json", data)
    if model_inside:
        write_json(model / "obliviate.json", card_for(row) if card is None else card)
    (run / "config.yaml").write_text("benchmark:\n  name: synthetic\n")
    return run
