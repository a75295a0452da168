"""Loading and saving HF-format model directories (local paths or hub ids)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from obliviate import distributed
from obliviate.errors import ModelError
from obliviate.models.card import CARD_FILE, FULL_MODEL, read_card, write_card  # noqa: F401
from obliviate.models.checks import (
    check_finite_model,
    check_model_dir,
    check_tokenizer_dir,
    config_error,
)
from obliviate.models.tokenizer import ensure_pad_token

ATTN = "sdpa"
"""Attention implementation requested for every model loaded: PyTorch's scaled-dot-product
attention (fused kernels on GPUs, no flash-attn build). transformers 5 already defaults to it
where an architecture supports it (identical logits); it is named here so that the choice does
not depend on that default. An architecture without SDPA support falls back to its default."""
NO_SDPA = ("scaled_dot_product_attention", "sdpa")
"""transformers' message for an architecture that does not support SDPA."""

# transformers' messages when use_safetensors=True finds no safetensors (local dir / hub repo)
NO_SAFETENSORS = ("no file named model.safetensors", "cannot be loaded with `safetensors`")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when a GPU is visible, else CPU. In a multi-process launch a CUDA device
    without an index is this process's GPU (``cuda:<LOCAL_RANK>``)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device=cuda but no CUDA GPU is visible", "set device=cpu or device=auto")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and distributed.world_size() > 1:
        return torch.device("cuda", distributed.local_rank())
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA GPU that supports it (Ampere and newer), else float32 (CPUs,
    and GPUs without bf16, where float16 training would need loss scaling)."""
    if dtype == "auto":
        # bf16 autocast on CPU measured ~20x slower than fp32: fp32 on CPU, bf16 on capable GPUs.
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _check_source(name: str, need_config: bool = True) -> str:
    """The path to load from (``~`` expanded) for a local directory, else the hub id as given.
    ``need_config``: a model dir must hold config.json (a tokenizer can live without one, as in
    an adapter or wrapper dir)."""
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(
                f"model path {name} is a file, not a model directory",
                "point at the directory holding config.json",
            )
        if need_config and not (p / "config.json").is_file():
            raise ModelError(
                f"{name} has no config.json",
                "point at an HF model directory (save_pretrained output)",
            )
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(
            f"model directory not found: {name}", "check the path (or give a hub id like org/name)"
        )
    return name


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` with remote code off; it must have an EOS token."""
    src = _check_source(name, need_config=False)
    local = Path(src).is_dir()
    if local:
        check_tokenizer_dir(src)
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=False, **_local_kw(local))
    except (OSError, ValueError) as e:
        if "trust_remote_code" in str(e):
            raise config_error(name, e) from None
        raise ModelError(
            f"could not load a tokenizer from {name!r}: {_first_line(e)}",
            "check the path (tokenizer.json / tokenizer_config.json), or the hub id and your network",
        ) from None
    check_special_tokens(tok, name)
    ensure_pad_token(tok)
    return tok


def check_special_tokens(tok: PreTrainedTokenizerBase, name: str) -> None:
    """Refuse a tokenizer without an EOS token: obliviate appends EOS to every answer."""
    if tok.eos_token_id is not None:
        return
    fix = 'set "eos_token" in tokenizer_config.json (or special_tokens_map.json)'
    if tok.pad_token_id is None:
        raise ModelError(f"the tokenizer of {name} has neither an EOS nor a pad token", fix)
    raise ModelError(
        f"the tokenizer of {name} has a pad token but no EOS token "
        "(obliviate appends EOS to every answer)",
        fix,
    )


def load_model(
    name: str,
    dtype: str = "auto",
    device: str | torch.device = "auto",
    allow_pickle: bool = False,
) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` on a local directory or hub id, with one-line errors.

    Local directories are checked first (:func:`check_model_dir`); pickle weights load only with
    ``allow_pickle``; remote code never runs; NaN/inf weights are refused.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return _load(name, resolve_dtype(dtype, dev), dev, allow_pickle)


def load_frozen(name: str, like: PreTrainedModel, allow_pickle: bool = False) -> PreTrainedModel:
    """A frozen eval-mode copy loaded from ``name`` with ``like``'s dtype and device (a reference model)."""
    ref = _load(name, like.dtype, like.device, allow_pickle)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def _load(name: str, dtype: torch.dtype, dev: torch.device, allow_pickle: bool) -> PreTrainedModel:
    src = _check_source(name)
    local = Path(src).is_dir()
    if local:
        check_model_dir(src, allow_pickle=allow_pickle)
    kw = {
        "dtype": dtype,
        "use_safetensors": None if allow_pickle else True,  # None: safetensors first, then .bin
        "weights_only": True,
        "trust_remote_code": False,
        "output_loading_info": True,
        **_local_kw(local),
    }
    try:
        try:
            model, info = AutoModelForCausalLM.from_pretrained(src, attn_implementation=ATTN, **kw)
        except ValueError as e:  # an architecture without SDPA: transformers' default (eager)
            if not any(m in str(e) for m in NO_SDPA):
                raise
            model, info = AutoModelForCausalLM.from_pretrained(src, **kw)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise _load_error(name, e, allow_pickle) from None
    _refuse_missing(name, model, info.get("missing_keys", ()))
    model = model.to(dev)
    check_finite_model(model, name)
    return model


def _local_kw(local: bool) -> dict[str, Any]:
    return {"local_files_only": True} if local else {}


def _load_error(name: str, e: BaseException, allow_pickle: bool) -> ModelError:
    msg = str(e)
    if "trust_remote_code" in msg:
        return config_error(name, e)
    if "ignore_mismatched_sizes" in msg or "size mismatch" in msg:
        return ModelError(
            f"the weights of {name} do not match the shapes its config.json describes",
            "use the config.json these weights were saved with",
        )
    if not allow_pickle and any(m in msg for m in NO_SAFETENSORS):
        return ModelError(
            f"{name} has no safetensors weights ({_first_line(e)})",
            "pickle weights are refused since they can run arbitrary code when loaded; "
            "set model.allow_pickle=true only if you trust the source",
        )
    local = Path(name).expanduser().is_dir()
    return ModelError(
        f"could not load a model from {name!r}: {_first_line(e)}",
        "re-save the model directory with save_pretrained"
        if local
        else "check the hub id and your network (hub ids need network access)",
    )


def _refuse_missing(name: str, model: PreTrainedModel, missing: Any) -> None:
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    lost = sorted(k for k in missing if k in params)
    if lost:
        raise ModelError(
            f"{name} is missing {len(lost)} weight(s) that config.json needs, e.g. {lost[0]}",
            "the checkpoint is incomplete; re-save it with save_pretrained",
        )


def save_model_dir(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: str | Path,
    card: dict[str, Any],
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write safetensors + tokenizer + a model card atomically: build in ``<out>.tmp``, then rename.

    ``state_dict``: the weights to write instead of ``model``'s own (the full weights gathered
    from DeepSpeed ZeRO-3 partitions). In a multi-process launch only the main process writes."""
    out = Path(out)
    if distributed.active() and not distributed.is_main():
        return out
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    extra = {} if state_dict is None else {"state_dict": state_dict}
    model.save_pretrained(tmp, safe_serialization=True, **extra)
    tokenizer.save_pretrained(tmp)
    write_card(tmp, {"artefact": FULL_MODEL, **card})
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
