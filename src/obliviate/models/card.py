"""Model cards: ``obliviate.json`` (machine-readable) and ``README.md`` (for people) in every model
dir obliviate writes.

The README names what a reader of a model dir needs: the artefact kind, the model it was unlearned
from, the method and its hyperparameters, the forget set, the training run and, once the model has
been evaluated (:func:`record_evaluation`), the headline metrics. Neither file is part of a model's
fingerprint (:func:`obliviate.runs.model_fingerprint`), so updating a card never invalidates a
cached evaluation.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from obliviate.eval.directions import ARROWS, direction, is_number

CARD_FILE = "obliviate.json"
README = "README.md"
CARD_FILES = (CARD_FILE, README)
FULL_MODEL = "full model"
"""The artefact kind of a complete HF model dir (safetensors weights + config + tokenizer)."""
ADAPTER = "LoRA adapter"
"""The artefact kind of a peft adapter dir over a base model (:mod:`obliviate.artefacts`)."""
WRAPPER = "wrapper"
"""The artefact kind of an inference-time method's dir: extra weights over an untouched base."""

HEADLINE = (
    ("forget_quality", "forget quality", "{:.3g}"),
    ("model_utility", "model utility", "{:.3f}"),
    ("forget_rouge", "forget ROUGE", "{:.3f}"),
    ("forget_prob", "forget prob", "{:.3f}"),
    ("retain_rouge", "retain ROUGE", "{:.3f}"),
    ("retain_prob", "retain prob", "{:.3f}"),
    ("privleak", "PrivLeak", "{:.1f}"),
    ("verbmem_f", "VerbMem (forget)", "{:.3f}"),
    ("knowmem_forget_f", "KnowMem (forget)", "{:.3f}"),
    ("knowmem_retain_f", "KnowMem (retain)", "{:.3f}"),
)
"""(summary key, label, format) of the metrics a card shows when present; the better direction
comes from :mod:`obliviate.eval.directions`."""
SCHEDULE = ("lr", "epochs", "max_steps", "batch_size", "grad_accum", "max_length", "seed")


def read_card(path: str | Path) -> dict[str, Any]:
    """A model dir's ``obliviate.json`` ({} when it has none or it is unreadable)."""
    try:
        card = json.loads((Path(path) / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def write_card(model_dir: str | Path, card: dict[str, Any]) -> None:
    """Write both card files into ``model_dir`` (each atomically)."""
    from obliviate.runs import write_text

    d = Path(model_dir)
    write_text(d / CARD_FILE, json.dumps(card, indent=2, default=str) + "\n")
    write_text(d / README, card_markdown(card))


def record_evaluation(model_dir: str | Path, summary: dict[str, Any], run_dir: str | Path) -> bool:
    """Add an evaluation's headline metrics to the card of an obliviate model dir; False (and
    nothing written) for a dir without an obliviate card, a hub id or a read-only dir."""
    d = Path(model_dir)
    card = read_card(d)
    if not card or not os.access(d, os.W_OK):
        return False
    headline = {k: summary[k] for k, *_ in HEADLINE if is_number(summary.get(k))}
    card["evaluation"] = {
        "benchmark": summary.get("benchmark"),
        "run_dir": str(Path(run_dir).resolve()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "forget_quality_reference": summary.get("forget_quality_reference"),
        "metrics": headline,
    }
    try:
        write_card(d, card)
    except OSError:
        return False
    return True


def card_markdown(card: dict[str, Any]) -> str:
    """The README of a model dir, from its ``obliviate.json``."""
    stage = card.get("stage", "")
    lines = [f"# {_title(card)}", ""]
    facts = [("Artefact", f"{card.get('artefact', FULL_MODEL)} (HF format, safetensors)")]
    if stage == "unlearn":
        facts += [
            ("Unlearned from", f"`{card.get('source_model', '?')}`"),
            ("Method", f"`{card.get('method', '?')}`"),
            ("Forget set", _forget_set(card)),
        ]
    elif stage == "finetune":
        split = card.get("split")
        what = "all training data (target model)" if split == "full" else "the retain set only"
        facts += [
            ("Fine-tuned on", f"{what}; forget split `{card.get('forget_split', '?')}`"),
            ("Base", "obliviate's tiny Llama, trained from scratch"),
        ]
    elif stage == "init":
        facts += [("Parameters", f"{card.get('parameters', '?'):,}")]
    lora = card.get("lora")
    if isinstance(lora, dict):
        share = lora.get("trainable_share")
        share_s = f", {share:.2%} of the weights trained" if is_number(share) else ""
        targets = ", ".join(lora.get("target_modules") or [])
        facts.append(
            ("LoRA", f"rank {lora.get('r')}, alpha {lora.get('alpha')} on {targets}{share_s}")
        )
    selection = card.get("selection")
    if isinstance(selection, dict) and "chosen_step" in selection:
        met = "" if selection.get("satisfied", True) else " (constraints not met)"
        facts.append(
            (
                "Checkpoint",
                f"step {selection['chosen_step']}, chosen by `{selection.get('criterion')}`{met}",
            )
        )
    if "steps" in card:
        loss = card.get("train_loss")
        loss_s = f", mean training loss {loss:.4g}" if is_number(loss) else ""
        secs = card.get("train_seconds")
        secs_s = f" in {secs:.1f} s" if is_number(secs) else ""
        facts.append(("Training", f"{card['steps']} optimiser steps{secs_s}{loss_s}"))
    lines += [f"- **{k}**: {v}" for k, v in facts]
    if stage == "unlearn":
        lines += ["", "## Hyperparameters", "", "| parameter | value |", "| --- | --- |"]
        params = card.get("params") or {}
        lines += [f"| `{k}` | {_value(v)} |" for k, v in params.items()]
        lines += [
            f"| `unlearn.{k}` | {_value(v)} |" for k, v in (card.get("schedule") or {}).items()
        ]
    lines += ["", "## Headline metrics", ""]
    lines += _metrics_lines(card.get("evaluation"))
    lines += ["", "## Loading", "", *_loading(card.get("artefact", FULL_MODEL)), ""]
    lines += [
        f"Written by obliviate. `{CARD_FILE}` holds the same facts, the per-step training log "
        "(`train_log`) and the full settings.",
        "",
    ]
    return "\n".join(lines)


def _loading(artefact: str) -> list[str]:
    """How to load this kind of artefact, in a code block."""
    if artefact == ADAPTER:
        code = [
            "from peft import AutoPeftModelForCausalLM  # the base named in adapter_config.json",
            "from transformers import AutoTokenizer",
            'model = AutoPeftModelForCausalLM.from_pretrained("<this directory>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this directory>")',
        ]
    elif artefact == FULL_MODEL:
        code = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("<this directory>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this directory>")',
        ]
    else:
        code = [
            "from obliviate.artefacts import load_artefact",
            'model, tokenizer = load_artefact("<this directory>")',
        ]
    return ["```python", *code, "```"]


def _title(card: dict[str, Any]) -> str:
    stage = card.get("stage")
    if stage == "unlearn":
        return f"Unlearned model ({card.get('method', '?')})"
    if stage == "finetune":
        return "target model" if card.get("split") == "full" else "retain model"
    return "obliviate model"


def _forget_set(card: dict[str, Any]) -> str:
    n = card.get("forget_records")
    size = f", {n} records" if isinstance(n, int) else ""
    return (
        f"`{card.get('forget_split', '?')}` of the `{card.get('benchmark', '?')}` benchmark{size}"
    )


def _metrics_lines(ev: Any) -> list[str]:
    if not isinstance(ev, dict) or not ev.get("metrics"):
        return ["Not evaluated yet: `obliviate eval model.path=<this directory>` fills this in."]
    metrics = ev["metrics"]
    out = [
        f"From the evaluation in `{ev.get('run_dir')}` ({ev.get('date')}, benchmark "
        f"`{ev.get('benchmark')}`). Arrows say which direction is better.",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for key, label, fmt in HEADLINE:
        if is_number(metrics.get(key)):
            arrow = ARROWS.get(direction(key, {}), "")
            out.append(f"| {label} {arrow} | {fmt.format(metrics[key])} |")
    if ev.get("forget_quality_reference"):
        out += ["", f"Forget quality is measured against: {ev['forget_quality_reference']}."]
    return out


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items()) or "{}"
    return f"`{v}`"
