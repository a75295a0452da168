"""Mapping our optimisation config onto HF ``TrainingArguments``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from transformers import TrainingArguments

from obliviate.config import OptimConfig


def training_arguments(
    opt: OptimConfig,
    n_examples: int,
    output_dir: str | Path,
    device: torch.device,
    bf16: bool = False,
) -> TrainingArguments:
    """HF TrainingArguments for ``opt``; warm-up is given in epochs and converted to steps.

    In a multi-process launch the global batch is ``batch_size × grad_accum × processes`` (each
    process takes ``batch_size`` items per micro-batch), so an epoch has that many fewer steps.
    Under DeepSpeed with ``mixed_precision: bf16`` (the shipped DeepSpeed configs) the trainer's
    bf16 flag follows the launch, as DeepSpeed's config and HF's must agree."""
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    bf16 = bf16 or deepspeed_bf16()
    steps_per_epoch = max(1, math.ceil(n_examples / (opt.batch_size * opt.grad_accum * world)))
    warmup_steps = int(round(opt.warmup_epochs * steps_per_epoch))
    sched = {"linear": "linear", "constant": "constant_with_warmup", "cosine": "cosine"}[
        opt.scheduler
    ]
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=opt.epochs,
        max_steps=opt.max_steps,
        per_device_train_batch_size=opt.batch_size,
        gradient_accumulation_steps=opt.grad_accum,
        learning_rate=opt.lr,
        weight_decay=opt.weight_decay,
        warmup_steps=warmup_steps,
        lr_scheduler_type=sched,
        logging_steps=1,  # every step: the bar's loss, the log file and the card's train_log
        save_strategy="steps" if opt.save_every else "no",
        save_steps=opt.save_every or 500,
        save_total_limit=2,
        report_to=[],
        seed=opt.seed,
        data_seed=opt.seed,
        use_cpu=device.type == "cpu",
        bf16=bf16,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,  # obliviate.progress draws the bar
    )


def deepspeed_bf16() -> bool:
    """Whether ``accelerate launch`` runs DeepSpeed in bf16 (its environment says so)."""
    ds = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return ds and os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower() == "bf16"
