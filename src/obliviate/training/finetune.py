"""Supervised fine-tuning on QA pairs (loss on answer tokens only): the target and retain models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.config import FinetuneConfig
from obliviate.data.collate import QADataset, SFTCollator
from obliviate.data.schema import QARecord
from obliviate.training.args import training_arguments
from obliviate.training.guard import GuardedTrainer, train, train_log


def run_finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[QARecord],
    cfg: FinetuneConfig,
    work_dir: str | Path,
    device: torch.device,
    resume: bool = False,
    what: str = "fine-tuning",
    section: str = "finetune",
) -> dict[str, Any]:
    """Fine-tune ``model`` in place; checkpoints (``cfg.save_every``) go under ``work_dir``, and
    ``resume`` continues from the newest complete one there. ``section``: the config section
    a divergence message tells the user to change."""
    dataset = QADataset(records)
    args = training_arguments(cfg, len(dataset), work_dir, device)
    trainer = GuardedTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=SFTCollator(tokenizer, cfg.max_length),
        what=what,
        section=section,
        abort_grad_norm=cfg.abort_grad_norm,
    )
    out = train(trainer, resume)
    model.eval()
    return {
        "steps": out.global_step,
        "train_seconds": out.metrics.get("train_runtime"),
        "train_loss": out.training_loss,
        "max_grad_norm": trainer.max_grad_norm_seen,
        "train_log": train_log(trainer.state.log_history),
    }
