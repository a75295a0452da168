"""The one trainer every gradient-based method runs through.

``UnlearnTrainer`` is a thin ``transformers.Trainer`` whose ``compute_loss`` asks the method for
its loss, so accelerate / DeepSpeed / multi-process launches work unchanged. The reference model is
loaded only when the method's requirements include ``"ref"``. With ``unlearn.mask`` set, training
updates only the WAGLE-attributed weights (:mod:`obliviate.methods.mask`).

Multi-process launches (:mod:`obliviate.distributed`): each process trains on its
``batch_size`` slice of every global batch (``batch_size × grad_accum × processes``) with the
retain / refusal pairing a one-process run with that global batch would draw; the reference model
is prepared for the launch (its own engine under ZeRO-3); under ZeRO-3 the full weights are
gathered after training for the main process to save.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from obliviate import distributed
from obliviate.config import UnlearnConfig
from obliviate.data.collate import UnlearnCollator, UnlearnDataset, qa_batches
from obliviate.data.schema import QARecord
from obliviate.methods import UnlearnMethod, build_method
from obliviate.methods.mask import (
    MASK_FILE,
    MaskGuard,
    batches,
    compute_mask,
    file_sha256,
    load_mask,
    mask_stats,
    save_mask,
    trainable,
)
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
    method: UnlearnMethod | None = None,
    monitor: Any = None,
) -> dict[str, Any]:
    """Unlearn in place on ``model``; returns a small log (steps, seconds, final loss).

    ``method``: the loss to train with instead of ``cfg.method`` (ULD trains its assistant so).
    ``monitor``: a :class:`~obliviate.training.select.Monitor` (``unlearn.eval_every``) that
    evaluates during training and, with ``select_best``, leaves the best checkpoint's weights in
    ``model`` at the end. With ``cfg.lora`` LoRA layers are injected into ``model`` (base frozen)
    and the reference is ``model`` with its adapter disabled (:mod:`obliviate.training.lora`).

    Checkpoints (``cfg.save_every``) go under ``work_dir``; ``resume`` continues from the newest
    complete one there, with the same data order and retain pairing as an uninterrupted run.
    """
    method = method if method is not None else build_method(cfg.method, cfg.params)
    distributed.check_zero3(cfg)
    req = method.requirements()
    refusals: list[str] = []
    if {"forget_idk", "retain_idk"} & req:
        from obliviate.data.refusals import load_refusals

        refusals = load_refusals()
    lora_info = None
    if cfg.lora is not None:
        from obliviate.training.lora import attach_lora, disabled_adapter_reference

        with torch.random.fork_rng(devices=[]):  # the adapter's init follows unlearn.seed alone
            torch.manual_seed(cfg.seed)
            lora_info = attach_lora(model, cfg.lora)
        ref = disabled_adapter_reference(model) if "ref" in req else None
    else:
        ref = (
            load_frozen(model_source, like=model, allow_pickle=allow_pickle)
            if "ref" in req
            else None
        )
    dataset = UnlearnDataset(
        forget, retain if ({"retain", "retain_idk"} & req) else [], refusals, seed=cfg.seed
    )
    world = distributed.world_size()
    if world > 1:  # each process draws its slice of the one-process run's global batches
        dataset.shard(distributed.rank(), world, cfg.batch_size)
    collator = UnlearnCollator(tokenizer, req, cfg.max_length)
    args = training_arguments(cfg, len(dataset), work_dir, device)
    sample = _to_device(collator(dataset.first_batch(cfg.batch_size)), model.device)
    method.prepare(model, ref, sample)
    if lora_info is not None:  # a method's own freezing (RMU) applies to the adapter only
        from obliviate.training.lora import keep_adapter_trainable

        keep_adapter_trainable(model, lora_info)
    guard, mask_info = None, None
    if cfg.mask is not None:  # after prepare: rank what stays trainable
        guard, mask_info = _weight_mask(
            model, method, ref, tokenizer, collator, forget, retain, refusals, cfg, work_dir, resume
        )
    done = resume_step(Path(work_dir), resume)
    # the retain / refusal draws an uninterrupted run made for the items already trained on
    dataset.advance(items_consumed(done, len(dataset), cfg.batch_size, cfg.grad_accum, world))
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
    if distributed.deepspeed_stage(trainer) == 3:  # a DeepSpeed JSON config sets no env var
        distributed.refuse_under_zero3(cfg)
    trainer.ref_model = distributed.prepare_reference(trainer.ref_model, trainer)
    if guard is not None:
        trainer.add_callback(KeepUnselected(guard))
    if monitor is not None:
        monitor.bind(model, tokenizer, trainer)
        trainer.add_callback(monitor)
    try:
        out = train(trainer, resume)
    finally:
        if guard is not None:
            guard.detach()
    selection = monitor.finish(model) if monitor is not None else None
    model.eval()
    return {
        "method": cfg.method,
        "params": {k: getattr(method, k) for k in method.param_names()},
        "requirements": sorted(req),
        "loaded_reference_model": ref is not None and lora_info is None,
        "reference": None if ref is None else ("adapter disabled" if lora_info else "frozen copy"),
        "steps": out.global_step,
        "train_seconds": out.metrics.get("train_runtime"),
        "train_loss": out.training_loss,
        "max_grad_norm": trainer.max_grad_norm_seen,
        "train_log": train_log(trainer.state.log_history),
        **({"mask": mask_info} if mask_info is not None else {}),
        **({"lora": lora_info} if lora_info is not None else {}),
        **({"selection": selection} if selection is not None else {}),
    }


class KeepUnselected(TrainerCallback):
    """After every optimiser step, the weights outside the WAGLE mask get their values back
    (decoupled weight decay moves weights whose gradient is 0)."""

    def __init__(self, guard: MaskGuard) -> None:
        self.guard = guard

    def on_optimizer_step(self, args, state, control, **kwargs):  # noqa: D102
        self.guard.restore()


def _weight_mask(
    model: PreTrainedModel,
    method: UnlearnMethod,
    ref: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    collator: UnlearnCollator,
    forget: list[QARecord],
    retain: list[QARecord],
    refusals: list[str],
    cfg: UnlearnConfig,
    work_dir: str | Path,
    resume: bool,
) -> tuple[MaskGuard, dict[str, Any]]:
    """``cfg.mask`` attached to ``model``: loaded from ``mask.path`` (or, when resuming, the
    interrupted run's), else computed on the forget set and an equal-size retain sample. The
    mask is written to ``<work_dir>/mask.safetensors``; returns the guard and the card's log."""
    mcfg = cfg.mask
    t0 = time.perf_counter()
    saved = Path(work_dir) / MASK_FILE
    if mcfg.path is not None:
        masks, made = load_mask(mcfg.path, model)
        info: dict[str, Any] = {"source": "file", "path": mcfg.path, "made_with": made}
        if distributed.is_main():  # in a launch every process has the same mask: one writes
            saved.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mcfg.path, saved)
    elif resume and saved.is_file():
        masks, made = load_mask(saved, model, at="the interrupted run's mask")
        info = {"source": "computed", **made}
    else:
        req = method.requirements()
        items = UnlearnDataset(
            forget, retain if ({"retain", "retain_idk"} & req) else [], refusals, seed=cfg.seed
        )
        device = model.device
        forget_batches = [
            _to_device(collator([items[i] for i in chunk]), device)
            for chunk in batches(list(range(len(items))), cfg.batch_size)
        ]
        sample = random.Random(cfg.seed).sample(retain, min(len(forget), len(retain)))
        pairs = [(r.question, r.answer) for r in sample]
        retain_batches = [
            {k: t.to(device) for k, t in b.items()}
            for b in qa_batches(tokenizer, pairs, cfg.max_length, cfg.batch_size)
        ]
        masks, log = compute_mask(
            model, method, ref, forget_batches, retain_batches, mcfg.fraction, mcfg.mu, mcfg.scope
        )
        info = {
            "source": "computed",
            "fraction": mcfg.fraction,
            "scope": mcfg.scope,
            "mu": mcfg.mu,
            "method": cfg.method,
            "forget_records": len(forget),
            "retain_records": len(sample),
            **log,
        }
        if distributed.is_main():
            save_mask(masks, saved, info)
    distributed.barrier()  # the file is written before any process reads it
    info.update(mask_stats(masks, trainable(model)))
    info["file"] = MASK_FILE
    info["sha256"] = file_sha256(saved)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return MaskGuard(model, masks).attach(), info


def _to_device(
    batch: dict[str, dict[str, torch.Tensor]], device: torch.device
) -> dict[str, dict[str, torch.Tensor]]:
    return {k: {n: t.to(device) for n, t in v.items()} for k, v in batch.items()}
