"""The trainer base every obliviate run goes through: a divergence guard, resumable checkpoints
and logs on stderr.

- **Divergence.** A non-finite loss, a non-finite gradient norm or one above ``abort_grad_norm``
  (measured before clipping, so before the optimiser step that would apply it), or non-finite
  weights after the last step raise :class:`~obliviate.errors.DivergenceError` (the CLI exits 3).
  The weights are then those of the last good step, and nothing is saved as a result.
- **Checkpoints.** With ``save_every`` > 0 the HF trainer writes ``checkpoint-<step>`` folders
  under its work directory; a checkpoint counts only once its ``COMPLETE`` marker is written
  (after every file of it), so a kill while saving never leaves a checkpoint that poses as good.
  :func:`train` resumes from the newest complete one when asked.
- **Output.** HF's progress bar and printed loss dicts are replaced by one stage display
  (:mod:`obliviate.progress`: steps, ETA, loss and learning rate in the bar, on stderr); every
  logged step goes to the run's log file and to ``log_history`` (the model card's ``train_log``).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from obliviate import distributed, progress
from obliviate.cache import CHECKPOINT_PREFIX, COMPLETE
from obliviate.errors import DivergenceError

PREFIX = CHECKPOINT_PREFIX
KILL_AT_STEP = "OBLIVIATE_TEST_KILL_AT_STEP"
"""Fault injection for the kill-and-resume tests: SIGKILL this process at the end of that step."""


class GuardedTrainer(Trainer):
    """``transformers.Trainer`` with the divergence guard; ``what`` names the run in messages
    (``"unlearning (npo)"``), ``section`` the config section (``"unlearn"``)."""

    def __init__(
        self,
        *args: Any,
        what: str,
        section: str,
        abort_grad_norm: float | None,
        **kwargs: Any,
    ) -> None:
        if distributed.in_solo():
            raise RuntimeError(
                f"{what}: training inside a main-process-only section of a multi-process launch "
                "(the other processes would never join it); train before distributed.on_main"
            )
        super().__init__(*args, **kwargs)
        self.what = what
        self.section = section
        self.abort_grad_norm = abort_grad_norm
        self.max_grad_norm_seen = 0.0
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        self.progress = StageProgress(what)
        self.add_callback(self.progress)
        self.add_callback(CheckpointMarker())
        if os.environ.get(KILL_AT_STEP):
            self.add_callback(KillAtStep(int(os.environ[KILL_AT_STEP])))

    def step_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """The training loss of one batch (subclasses: a method's loss)."""
        return super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        loss = self.step_loss(model, inputs, num_items_in_batch)
        value = float(loss.detach())
        bad = not math.isfinite(value)
        # in a launch every process stops together (one waiting in backward would hang)
        if distributed.any_flag(bad, loss.device):
            self.diverged(f"the loss is {value}" if bad else "another process's loss is not finite")
        return (loss, None) if return_outputs else loss

    def _get_grad_norm(self, model, grad_norm=None):  # noqa: D102 - HF's pre-clip gradient norm
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        value = float(norm) if norm is not None else 0.0
        if not math.isfinite(value):
            self.diverged(f"the gradient norm is {value}")
        if self.abort_grad_norm is not None and value > self.abort_grad_norm:
            self.diverged(
                f"the gradient norm {value:.3g} exceeds "
                f"{self.section}.abort_grad_norm={self.abort_grad_norm:g}"
            )
        self.max_grad_norm_seen = max(self.max_grad_norm_seen, value)
        return norm

    def check_weights(self) -> None:
        """After training: every trainable weight must be finite."""
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            self.diverged(f"{len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]})", after=True)

    def diverged(self, why: str, after: bool = False) -> None:
        step = self.state.global_step if after else self.state.global_step + 1
        total = self.state.max_steps or "?"
        last = latest_checkpoint(Path(self.args.output_dir))
        where = f"last good checkpoint: {last}" if last else "no checkpoint was saved"
        params = f", check {self.section}.params" if self.section == "unlearn" else ""
        raise DivergenceError(
            f"{self.what} diverged at step {step} of {total}: {why}; {where}; no model was written",
            f"lower {self.section}.lr{params} or use model.dtype=float32",
        )


def train(trainer: GuardedTrainer, resume: bool) -> Any:
    """``trainer.train()``, from the newest complete checkpoint when ``resume`` and one exists;
    then the final-weights check (and, under DeepSpeed ZeRO-3, the gathering of the full weights
    for the main process to save: :func:`obliviate.distributed.gather_weights`). Returns HF's
    ``TrainOutput``."""
    work = Path(trainer.args.output_dir)
    ckpt = latest_checkpoint(work) if resume else None
    ok = False
    try:
        out = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        ok = True
    finally:  # a bar left open would print after the command's error line
        trainer.progress.close(ok)
    trainer.check_weights()
    distributed.gather_weights(trainer, trainer.model)  # ZeRO-3: full weights for the main's save
    return out


def resume_step(work_dir: Path, resume: bool) -> int:
    """The optimiser step a resumed run starts after (0 for a fresh run)."""
    ckpt = latest_checkpoint(work_dir) if resume else None
    return int(ckpt.name[len(PREFIX) :]) if ckpt else 0


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The newest ``checkpoint-<step>`` under ``work_dir`` whose save completed; incomplete
    ones (a kill while saving) are removed."""
    if not work_dir.is_dir():
        return None
    found = []
    for d in work_dir.glob(f"{PREFIX}*"):
        if not d.name[len(PREFIX) :].isdigit():
            continue
        if (d / COMPLETE).is_file():
            found.append((int(d.name[len(PREFIX) :]), d))
        elif distributed.is_main():  # in a launch the main process tidies
            shutil.rmtree(d, ignore_errors=True)
    return max(found)[1] if found else None


def items_consumed(
    steps: int, n_items: int, batch_size: int, grad_accum: int, world: int = 1
) -> int:
    """Training items fed in the first ``steps`` optimiser steps: each epoch feeds every item
    once, in ``ceil(n / batch)`` batches, ``grad_accum`` batches a step (an epoch's last step
    takes what is left). With ``world`` > 1 processes: the items one process was fed, its
    ``ceil(ceil(n / batch) / world)`` full batches an epoch (accelerate repeats items to fill an
    epoch's last batches)."""
    batches = math.ceil(n_items / batch_size)
    if world > 1:
        batches = math.ceil(batches / world)
    per_epoch = math.ceil(batches / grad_accum)
    epochs, rest = divmod(steps, per_epoch)
    if world > 1:
        return (epochs * batches + min(rest * grad_accum, batches)) * batch_size
    return epochs * n_items + min(rest * grad_accum * batch_size, n_items)


LOGGED = ("loss", "learning_rate", "grad_norm", "epoch")


def train_log(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step training curve from HF's ``state.log_history`` (the model card's
    ``train_log``): step, epoch, loss, learning rate and gradient norm of each logged step."""
    rows = []
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue  # the end-of-training summary entry
        row: dict[str, Any] = {"step": int(entry["step"])}
        for k in LOGGED:
            v = entry.get(k)
            if isinstance(v, int | float) and math.isfinite(float(v)):
                row[k] = round(float(v), 6)
        rows.append(row)
    return rows


class StageProgress(TrainerCallback):
    """The run's progress display: one bar (steps, ETA, loss, learning rate); each logged step
    also goes to the log file."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.stage: progress.Stage | None = None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102
        if state.is_world_process_zero and self.stage is None:
            self.stage = progress.Stage(self.what)
            self.stage.begin("", state.max_steps, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        if self.stage is not None:
            self.stage.update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        shown = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in logs.items()
            if k != "total_flos"
        )
        progress.detail(f"{self.what} step {state.global_step}/{state.max_steps}: {shown}")
        if self.stage is not None:
            self.stage.update(
                state.global_step,
                info=f"loss {float(logs['loss']):.4g}  lr {float(logs.get('learning_rate', 0)):.2g}",
            )

    def close(self, ok: bool = True) -> None:
        if self.stage is not None:
            self.stage.close(ok)
            self.stage = None


class CheckpointMarker(TrainerCallback):
    """Marks a checkpoint complete once HF has written all of it."""

    def on_save(self, args, state, control, **kwargs):  # noqa: D102
        distributed.barrier()  # in a launch: once every process has written its part
        d = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
        if d.is_dir() and distributed.is_main():
            (d / COMPLETE).write_text("ok\n")


class KillAtStep(TrainerCallback):
    """SIGKILL at the end of step ``step`` (tests only, via ``OBLIVIATE_TEST_KILL_AT_STEP``)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
