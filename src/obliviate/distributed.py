"""Multi-process runs (``accelerate launch``, DeepSpeed): which process does what.

Every process of a launch runs the same command. Training is collective (DDP / DeepSpeed average
the gradients of the processes' batches); everything that writes is done once, by the main
process (rank 0):

- **Run dirs** (:func:`obliviate.runs.staged_run`): the main process checks, claims and logs the
  run dir; every process works in the same stage (the trainer's checkpoints hold every rank's
  files); the main process swaps it in once every process has finished the command's body.
- **The cache** (:meth:`obliviate.cache.Cache.get_or_build`): every process sees the main
  process's hit / miss decision. A missing entry that trains (``finetune``, ``unlearn``) is built
  by all processes together in one temporary dir, and only the main process commits it; any other
  entry (``init``, ``eval``, data) is built by the main process alone while the others wait, and
  then read by all.
- **Saving** a model and writing files (:func:`obliviate.runs.write_text`) happen on the main
  process only; under DeepSpeed ZeRO-3 the partitioned weights are gathered by every process first
  (:func:`gather_weights`).
- **Evaluation** (:func:`obliviate.api.evaluate`) runs on the main process while the others wait
  (:func:`on_main`) and then return the same summary: generation is not sharded, so the others
  have nothing to add. Models it needs trained (the tiny target or retain model) are trained by
  all processes first.

When one process fails, the others learn it at the next point where they meet (:func:`all_ok`,
:func:`on_main`) and stop with :class:`PeerFailure`; a process blocked in a collective operation
of training waits for the launch's timeout (``OBLIVIATE_DIST_TIMEOUT`` seconds, default 6 hours,
generous because the others wait at a barrier while the main process evaluates).

Under DeepSpeed ZeRO-3 the frozen reference model gets its own DeepSpeed engine, partitioned like
the trained model and without an optimizer (:func:`prepare_reference`), as TRL does.

This module imports torch only inside a launch (``WORLD_SIZE`` > 1), so the torch-free parts of
obliviate (config checks, the cache's bookkeeping) stay torch-free.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from obliviate.errors import ObliviateError

T = TypeVar("T")

TIMEOUT_ENV = "OBLIVIATE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 6 * 3600

_local = threading.local()
"""``solo``: True while the main process runs something alone (:func:`on_main`): collective
helpers then act as in a one-process run (per thread, so tests can play processes as threads)."""

_gathered: dict[int, Any] = {}
"""Full state dicts gathered under ZeRO-3 (:func:`gather_weights`), by ``id`` of the model."""


class PeerFailure(ObliviateError):
    """Another process of the launch failed: its own error line says why."""

    exit_code = 1


# ------------------------------------------------------------------------------ who am I


def world_size() -> int:
    """Processes in the launch (1 outside one)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    """This process's global rank (0 outside a launch)."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def local_rank() -> int:
    """This process's rank on its machine (its GPU index)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0") or 0)
    except ValueError:
        return 0


def is_main() -> bool:
    """Whether this is the process that writes (rank 0, or the only one)."""
    return rank() == 0


def active() -> bool:
    """Whether the processes must coordinate now: a launch of several processes whose process
    group is up, outside a main-only section."""
    if _in_solo_section() or world_size() <= 1:
        return False
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def timeout_s() -> int:
    """The launch's collective-operation timeout in seconds (``OBLIVIATE_DIST_TIMEOUT``)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value <= 0:
        from obliviate.errors import ConfigError

        raise ConfigError(
            f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds",
            f"set {TIMEOUT_ENV} to e.g. 21600 (6 hours) or unset it",
        )
    return value


def init(cpu: bool) -> None:
    """Start the process group early (before any cache or run-dir decision) when launched with
    several processes: gloo on CPU, NCCL on GPUs (each process on GPU ``LOCAL_RANK``), DeepSpeed's
    when the launch uses it; with the generous timeout of :func:`timeout_s`. A one-process run is
    left alone."""
    if world_size() <= 1:
        return
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    if not cpu and torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    PartialState(cpu=cpu, timeout=timedelta(seconds=timeout_s()))


def threads_per_process(cpus: int) -> int:
    """Torch threads for one process when ``threads`` is unset: the machine's CPUs shared by the
    processes launched on it (``LOCAL_WORLD_SIZE``)."""
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, cpus // local)


# ------------------------------------------------------------------------------ meeting points


def barrier() -> None:
    """Wait until every process gets here (nothing in a one-process run)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any) -> Any:
    """The main process's ``obj`` on every process (picklable)."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_ok(ok: bool) -> bool:
    """Whether every process reports ``ok`` (each must call this once, at the same point)."""
    if not active():
        return ok
    import torch.distributed as dist

    votes: list[Any] = [None] * world_size()
    dist.all_gather_object(votes, bool(ok))
    return all(votes)


def any_flag(flag: bool, device: Any) -> bool:
    """Whether any process reports ``flag`` (each must call this at the same point), as one
    small all-reduce on ``device`` (cheap enough for every step)."""
    if not active():
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=device, dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def in_solo() -> bool:
    """Whether this is a main-process-only section of a multi-process launch (:func:`on_main`)."""
    return _in_solo_section() and world_size() > 1


def _in_solo_section() -> bool:
    return getattr(_local, "solo", False)


@contextmanager
def solo() -> Iterator[None]:
    """Run the block as a one-process run would (the main process, while the others wait)."""
    before = _in_solo_section()
    _local.solo = True
    try:
        yield
    finally:
        _local.solo = before


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` on the main process alone, as a one-process run; the others wait, then return its
    result (picklable) or raise its error (an :class:`~obliviate.errors.ObliviateError` as the
    same class and line, anything else as :class:`PeerFailure`)."""
    if not active():
        return fn()
    if is_main():
        with solo():
            try:
                result = fn()
            except BaseException as e:
                broadcast(("error", _portable(e)))
                raise
        broadcast(("ok", result))
        return result
    status, value = broadcast(None)
    if status == "ok":
        return value
    raise _rebuilt(value)


def _portable(e: BaseException) -> tuple[str, str, str | None, int]:
    if isinstance(e, ObliviateError):
        return type(e).__name__, e.what, e.fix, e.exit_code
    return "", f"the main process failed: {type(e).__name__}: {e}", None, 1


def _rebuilt(info: tuple[str, str, str | None, int]) -> ObliviateError:
    from obliviate import errors

    name, what, fix, code = info
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, ObliviateError):
        err = cls(what, fix)
        err.exit_code = code
        err.from_main = True  # type: ignore[attr-defined]  # the main process printed it
        return err
    return PeerFailure(what, fix)


def own_error(e: BaseException) -> bool:
    """Whether this process should print ``e``: the main process prints every error; another
    process only an error of its own (not one rebuilt from the main process's, nor a peer's)."""
    from obliviate.progress import main_process

    if main_process():
        return True
    return not isinstance(e, PeerFailure) and not getattr(e, "from_main", False)


def peer_failed(what: str) -> PeerFailure:
    return PeerFailure(f"another process of the launch failed while {what}", "see its error above")


# ------------------------------------------------------------------------------ DeepSpeed


def deepspeed_stage(trainer: Any) -> int | None:
    """The ZeRO stage a trainer runs under, or None without DeepSpeed."""
    plugin = getattr(
        getattr(getattr(trainer, "accelerator", None), "state", None), "deepspeed_plugin", None
    )
    if plugin is None:
        return None
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def launch_zero_stage() -> int | None:
    """The ZeRO stage ``accelerate launch`` asked for (its environment), before any trainer exists;
    None without DeepSpeed."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return None
    try:
        return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0"))
    except ValueError:
        return None


def check_zero3(unlearn: Any) -> None:
    """Refuse, before anything is loaded, what DeepSpeed ZeRO-3 cannot do here: with the weights
    partitioned across the processes, the LoRA adapter (saved from partitions), a WAGLE mask
    (which edits whole weights) and evaluation during training (in memory) would read or write
    partitions instead of weights. ``unlearn``: an :class:`~obliviate.config.UnlearnConfig`."""
    if launch_zero_stage() != 3:
        return
    refuse_under_zero3(unlearn)


def refuse_under_zero3(unlearn: Any) -> None:
    """The refusal of :func:`check_zero3`, for a stage known to be 3 (also from a trainer whose
    DeepSpeed JSON config says so, which the launch environment does not)."""
    used = [
        name for name in ("lora", "mask", "eval_every") if getattr(unlearn, name, None) is not None
    ]
    if used:
        from obliviate.errors import ConfigError

        raise ConfigError(
            f"{', '.join('unlearn.' + n for n in used)} cannot run under DeepSpeed ZeRO-3 (the "
            "weights are partitioned across the processes)",
            "launch with deepspeed_zero2.yaml or multi_gpu.yaml instead",
        )


def reference_ds_config(train_config: dict[str, Any], hidden_size: int | None) -> dict[str, Any]:
    """The DeepSpeed config of the frozen reference model's engine under ZeRO-3: the trained
    model's (same stage, precision, offload of parameters, batch sizes), without an optimizer or a
    scheduler, and with the buckets sized from the model's ``hidden_size`` (the trainer fills
    these ``auto`` values only when its own engine starts, after the reference is prepared)."""
    cfg = copy.deepcopy(train_config)
    for key in ("optimizer", "scheduler"):
        cfg.pop(key, None)
    zero = cfg.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)  # nothing to offload without an optimizer
    if hidden_size:
        zero["reduce_bucket_size"] = hidden_size * hidden_size
        zero["stage3_param_persistence_threshold"] = 10 * hidden_size
        zero["stage3_prefetch_bucket_size"] = int(0.9 * hidden_size * hidden_size)
    return cfg


def prepare_reference(ref: Any, trainer: Any) -> Any:
    """The frozen reference model as the launch needs it.

    - No reference, or the LoRA reference (the trained model with its adapter off): unchanged.
    - DeepSpeed ZeRO-3: the reference's weights are partitioned across the processes like the
      trained model's, in its own DeepSpeed engine built from the trainer's config
      (:func:`reference_ds_config`: stage 3, no optimizer), in eval mode; it is called like the
      model (``ref(input_ids=..., attention_mask=...)``).
    - Otherwise (one process, DDP, ZeRO-1/2): a full copy on this process's device, in eval mode,
      without gradients.
    """
    if ref is None:
        return None
    from obliviate.training.lora import is_adapter_reference

    if is_adapter_reference(ref):
        return ref
    stage = deepspeed_stage(trainer)
    if stage == 3:
        return _zero3_reference(ref, trainer)
    ref = ref.to(trainer.args.device)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def _zero3_reference(ref: Any, trainer: Any) -> Any:
    try:
        import deepspeed
    except ImportError:  # accelerate refuses a DeepSpeed launch without it: defensive only
        raise ObliviateError(
            "the launch uses DeepSpeed ZeRO-3 but deepspeed is not installed",
            "pip install deepspeed, or launch with multi_gpu.yaml",
        ) from None
    plugin = trainer.accelerator.state.deepspeed_plugin
    hidden = getattr(getattr(ref, "config", None), "hidden_size", None)
    config = reference_ds_config(plugin.deepspeed_config, hidden)
    ref.requires_grad_(False)
    engine, *_ = deepspeed.initialize(model=ref, config=config)
    engine.eval()
    return engine


def gather_weights(trainer: Any, model: Any) -> None:
    """Under ZeRO-3 (the weights partitioned across the processes): gather the full state dict
    (a collective operation: every process calls this after training) for the main process to
    save (:func:`gathered_weights`). Needs ``zero3_save_16bit_model: true`` in the accelerate
    config (the shipped ``deepspeed_zero3.yaml`` sets it). Nothing to do otherwise: DDP and
    ZeRO-1/2 keep the full weights in ``model`` on every process."""
    if deepspeed_stage(trainer) != 3:
        return
    try:
        state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    except ValueError as e:  # stage3_gather_16bit_weights_on_model_save is false
        raise ObliviateError(
            f"the ZeRO-3 weights cannot be gathered for saving: {str(e).splitlines()[0]}",
            "set zero3_save_16bit_model: true in the accelerate config (deepspeed_zero3.yaml)",
        ) from None
    if is_main():
        _gathered[id(model)] = state


def gathered_weights(model: Any) -> dict[str, Any] | None:
    """The full state dict :func:`gather_weights` gathered for ``model`` (removed here), or None
    (then ``model`` itself holds its full weights)."""
    return _gathered.pop(id(model), None)
