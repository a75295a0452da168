"""The one trainer every gradient-based method runs through.

``UnlearnTrainer`` is a thin ``transformers.Trainer`` whose ``compute_loss`` asks the method for
its loss, so accelerate / DeepSpeed / multi-process launches work unchanged. The reference model is
loaded only when the method's requirements include ``"ref"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.config import UnlearnConfig
from obliviate.data.collate import UnlearnCollator, UnlearnDataset
from obliviate.data.schema import QARecord
from obliviate.methods import UnlearnMethod, build_method
from obliviate.models.io import load_frozen
from obliviate.training.args import training_arguments
from obliviate.training.guard import (
    GuardedTrainer,
    items_consumed,
    resume_step,
    train,
    train_log,
)


class UnlearnTrainer(GuardedTrainer):
    def __init__(
        self,
        *args: Any,
        method: UnlearnMethod,
        ref_model: PreTrainedModel | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.method = method
        self.ref_model = ref_model

    def step_loss(self, model, inputs, num_items_in_batch=None):  # noqa: D102
        return self.method.loss(model, inputs, self.ref_model)


def run_unlearning(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_source: str,
    forget: list[QARecord],
    retain: list[QARecord],
    cfg: UnlearnConfig,
    work_dir: str | Path,
    device: torch.device,
    resume: bool = False,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """Unlearn in place on ``model``; returns a small log (steps, seconds, final loss).

    Checkpoints (``cfg.save_every``) go under ``work_dir``; ``resume`` continues from the newest
    complete one there, with the same data order and retain pairing as an uninterrupted run.
    """
    method = build_method(cfg.method, cfg.params)
    req = method.requirements()
    refusals: list[str] = []
    if {"forget_idk", "retain_idk"} & req:
        from obliviate.data.refusals import load_refusals

        refusals = load_refusals()
    ref = load_frozen(model_source, like=model, allow_pickle=allow_pickle) if "ref" in req else None
    dataset = UnlearnDataset(
        forget, retain if ({"retain", "retain_idk"} & req) else [], refusals, seed=cfg.seed
    )
    collator = UnlearnCollator(tokenizer, req, cfg.max_length)
    args = training_arguments(cfg, len(dataset), work_dir, device)
    sample = _to_device(
        collator([dataset[i] for i in range(min(len(dataset), cfg.batch_size))]), model.device
    )
    method.prepare(model, ref, sample)
    done = resume_step(Path(work_dir), resume)
    # the retain / refusal draws an uninterrupted run made for the items already trained on
    dataset.advance(items_consumed(done, len(dataset), cfg.batch_size, cfg.grad_accum))
    trainer = UnlearnTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        method=method,
        ref_model=ref,
        what=f"unlearning ({cfg.method})",
        section="unlearn",
        abort_grad_norm=cfg.abort_grad_norm,
    )
    out = train(trainer, resume)
    model.eval()
    return {
        "method": cfg.method,
        "params": {k: getattr(method, k) for k in method.param_names()},
        "requirements": sorted(req),
        "loaded_reference_model": ref is not None,
        "steps": out.global_step,
        "train_seconds": out.metrics.get("train_runtime"),
        "train_loss": out.training_loss,
        "max_grad_norm": trainer.max_grad_norm_seen,
        "train_log": train_log(trainer.state.log_history),
    }


def _to_device(
    batch: dict[str, dict[str, torch.Tensor]], device: torch.device
) -> dict[str, dict[str, torch.Tensor]]:
    return {k: {n: t.to(device) for n, t in v.items()} for k, v in batch.items()}
