"""Cheap pre-flight checks of HF model directories, run before any weights are loaded.

:func:`check_model_dir` reads config.json and the safetensors headers (never the tensor data)
and compares the header shapes with a model built on the meta device.
Every problem is raised as a one-line :class:`~obliviate.errors.ModelError`.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel

from obliviate.errors import ModelError

SAFE_FILE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_LOADABLE = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_JSON = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "chat_template.json",
)
MAX_HEADER = 100_000_000  # the safetensors format's own limit on the header size
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2": 8, "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
FINITE_FIX = "this model diverged; retrain with a lower learning rate"
PICKLE_FIX = (
    "set model.allow_pickle=true only if you trust its source, or convert it to safetensors "
    "(load it once and save_pretrained(..., safe_serialization=True))"
)
CUSTOM_CODE_FIX = (
    "obliviate keeps trust_remote_code off and never runs a model's own Python code; "
    "use a model whose architecture transformers ships"
)


@dataclass(frozen=True)
class Weights:
    """The safetensors files a directory's weights live in, and the index naming them if sharded."""

    files: list[Path]
    index: Path | None = None


@dataclass(frozen=True)
class TensorInfo:
    """One tensor entry of a safetensors header."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def check_model_dir(name: str, allow_pickle: bool = False) -> None:
    """Validate a local HF model directory without loading weights; hub ids are skipped.

    Checks config.json, custom code, the safetensors headers, their shapes against the config and
    pickle-only weights (refused unless ``allow_pickle``). NaN/inf weights are refused at load
    (:func:`check_finite_model`).
    """
    d = Path(name).expanduser()
    if not d.is_dir():
        return
    cfg_dict = read_json_file(d / "config.json", must_exist=True)
    check_custom_code(d, cfg_dict)
    cfg = load_config(d)
    weights = weight_files(d, cfg_dict, allow_pickle)
    if weights is None:  # pickle weights, opted in: nothing readable without unpickling
        return
    check_shapes(str(d), cfg, read_all_headers(weights))


def check_tokenizer_dir(name: str) -> None:
    """Validate a local directory's tokenizer JSON files (UTF-8, JSON) and custom code; hub ids skipped."""
    d = Path(name).expanduser()
    if not d.is_dir():
        return
    for fname in TOKENIZER_JSON:
        if (d / fname).is_file():
            read_json_file(d / fname)
    cfg_dict = read_json_file(d / "config.json") if (d / "config.json").is_file() else {}
    _check_tokenizer_code(d, cfg_dict)


# --- JSON and config -------------------------------------------------------------------------


def read_json_file(path: Path, must_exist: bool = False) -> dict[str, Any]:
    """A JSON object from ``path``, or a one-line ModelError saying what is wrong with the file."""
    if not path.is_file():
        if must_exist:
            raise ModelError(
                f"{path.parent} has no {path.name}",
                "point at an HF model directory (save_pretrained output)",
            )
        return {}
    fix = f"restore {path.name} (re-save the model with save_pretrained)"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelError(f"{path} is not UTF-8 text (bad byte at offset {e.start})", fix) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}", fix) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} holds a JSON {type(data).__name__}, not an object", fix)
    return data


def check_custom_code(d: Path, cfg_dict: dict[str, Any]) -> None:
    """Refuse a model (or its tokenizer) that needs ``trust_remote_code`` to load."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = cfg_dict.get("model_type")
    auto_map = cfg_dict.get("auto_map")
    if auto_map and model_type not in CONFIG_MAPPING:
        ref = next(iter(auto_map.values()), "?") if isinstance(auto_map, dict) else auto_map
        raise ModelError(
            f"{d} needs custom code to load (config.json auto_map -> {ref}; model_type "
            f"{model_type!r} is unknown to transformers), which needs trust_remote_code",
            CUSTOM_CODE_FIX,
        )
    _check_tokenizer_code(d, cfg_dict)


def _check_tokenizer_code(d: Path, cfg_dict: dict[str, Any]) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    tok_cfg = read_json_file(d / "tokenizer_config.json")
    auto_map = tok_cfg.get("auto_map")
    if isinstance(auto_map, dict):
        auto_map = auto_map.get("AutoTokenizer")
    if not auto_map:
        return
    cls = str(tok_cfg.get("tokenizer_class") or "").removesuffix("Fast")
    if cls and (tokenizer_class_from_name(cls) or tokenizer_class_from_name(cls + "Fast")):
        return
    if cfg_dict.get("model_type") in CONFIG_MAPPING:
        return  # transformers falls back to the built-in tokenizer of the model type
    ref = next((r for r in auto_map if r), "?") if isinstance(auto_map, list) else auto_map
    raise ModelError(
        f"{d} has a tokenizer that needs custom code (tokenizer_config.json auto_map -> {ref}), "
        "which needs trust_remote_code",
        CUSTOM_CODE_FIX,
    )


def load_config(d: Path) -> PreTrainedConfig:
    """``AutoConfig`` of a local directory with remote code off; failures become one line."""
    try:
        return AutoConfig.from_pretrained(str(d), trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise config_error(str(d), e) from None


def config_error(name: str, e: BaseException) -> ModelError:
    """One-line ModelError for an exception from AutoConfig / from_pretrained."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "trust_remote_code" in str(e):
        return ModelError(
            f"{name} needs custom code to load, which needs trust_remote_code", CUSTOM_CODE_FIX
        )
    if "does not recognize this architecture" in msg or "Unrecognized model" in msg:
        return ModelError(
            f"{name}: transformers does not know its config.json model_type ({msg})",
            "check model_type in config.json, or upgrade transformers",
        )
    return ModelError(f"could not read the config of {name}: {msg}", "check config.json")


# --- weight files and safetensors headers ----------------------------------------------------


def weight_files(d: Path, cfg_dict: dict[str, Any], allow_pickle: bool) -> Weights | None:
    """The safetensors files transformers will load from ``d``; ``None`` for opted-in pickles."""
    explicit = cfg_dict.get("transformers_weights")
    if isinstance(explicit, str) and explicit:
        return _explicit_weights(d, explicit, allow_pickle)
    if (d / SAFE_FILE).is_file():
        return Weights([d / SAFE_FILE])
    if (d / SAFE_INDEX).is_file():
        return Weights(index_shards(d / SAFE_INDEX), d / SAFE_INDEX)
    pickles = sorted(p.name for p in d.iterdir() if p.is_file() and _is_pickle(p.name))
    if pickles:
        _pickle_gate(d, pickles, allow_pickle)
        return None
    others = sorted(p.name for p in d.glob("*.safetensors"))
    extra = f" (found {', '.join(others[:3])}, not model.safetensors)" if others else ""
    raise ModelError(
        f"{d} has no weights: no {SAFE_FILE} or {SAFE_INDEX}{extra}",
        "point at a directory written by save_pretrained",
    )


def _is_pickle(fname: str) -> bool:
    return (fname.startswith("pytorch_model") and fname.endswith(".bin")) or fname.endswith(
        (".pt", ".pth", ".ckpt")
    )


def _pickle_gate(d: Path, pickles: list[str], allow_pickle: bool) -> None:
    shown = ", ".join(pickles[:3]) + (", ..." if len(pickles) > 3 else "")
    if not allow_pickle:
        raise ModelError(
            f"{d} has only pickle weights ({shown}) and no safetensors; "
            "pickle files can run arbitrary code when loaded, so they are refused",
            PICKLE_FIX,
        )
    if not any((d / f).is_file() for f in PICKLE_LOADABLE):
        raise ModelError(
            f"{d} has pickle weights ({shown}) but no pytorch_model.bin, so transformers cannot load them",
            "convert them to safetensors with save_pretrained",
        )


def _explicit_weights(d: Path, fname: str, allow_pickle: bool) -> Weights | None:
    path = (d / fname).resolve()
    if not path.is_relative_to(d.resolve()) or not path.is_file():
        raise ModelError(
            f"{d}/config.json names weights file {fname!r} (transformers_weights), which is not in {d}",
            "fix transformers_weights in config.json or remove it",
        )
    if fname.endswith(".safetensors.index.json"):
        return Weights(index_shards(path), path)
    if fname.endswith(".safetensors"):
        return Weights([path])
    _pickle_gate(d, [fname], allow_pickle)
    return None


def index_shards(index: Path) -> list[Path]:
    """The shard files a ``model.safetensors.index.json`` names; each must exist in its folder."""
    weight_map = read_json_file(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelError(f"{index} has no weight_map", "re-save the model with save_pretrained")
    shards: list[Path] = []
    for fname in dict.fromkeys(weight_map.values()):
        path = (index.parent / str(fname)).resolve()
        if not path.is_relative_to(index.parent.resolve()) or not path.is_file():
            raise ModelError(
                f"{index} names shard {fname!r}, which is missing from {index.parent}",
                "copy every shard listed in the index (an interrupted download?)",
            )
        shards.append(path)
    return shards


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate a safetensors header: length, JSON, dtypes, sizes and the file size."""
    size = path.stat().st_size
    fix = "re-download or re-save the model"
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise ModelError(f"{path} is not a safetensors file: only {size} bytes", fix)
        (n,) = struct.unpack("<Q", raw_len)
        if n < 2 or n > MAX_HEADER or n > size - 8:
            raise ModelError(
                f"{path} is not a safetensors file (garbage header): header length {n} "
                f"is impossible for a {size}-byte file",
                fix,
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} has a corrupt header: not valid JSON ({e})", fix) from None
    if not isinstance(header, dict):
        raise ModelError(f"{path} has a corrupt header: not a JSON object", fix)
    header.pop("__metadata__", None)
    tensors = {k: _tensor_info(path, k, v) for k, v in header.items()}
    _check_layout(path, tensors, size - 8 - n)
    return tensors


def _tensor_info(path: Path, name: str, entry: Any) -> TensorInfo:
    fix = "re-download or re-save the model"
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        shape = tuple(int(s) for s in shape)
        begin, end = int(begin), int(end)
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{path} has a corrupt header entry for tensor {name}", fix) from None
    if dtype not in DTYPE_BITS:
        raise ModelError(f"{path}: tensor {name} has unknown dtype {dtype!r}", fix)
    if min(shape, default=0) < 0 or not 0 <= begin <= end:
        raise ModelError(f"{path}: tensor {name} has a negative shape or offsets", fix)
    numel = 1
    for s in shape:
        numel *= s
    if numel * DTYPE_BITS[dtype] != (end - begin) * 8:
        raise ModelError(
            f"{path}: tensor {name} is {dtype}{list(shape)} but its data_offsets span {end - begin} bytes",
            fix,
        )
    return TensorInfo(dtype, shape, begin, end)


def _check_layout(path: Path, tensors: dict[str, TensorInfo], data_bytes: int) -> None:
    fix = "re-download or re-save the model; an interrupted copy leaves a short file"
    expected = max((t.end for t in tensors.values()), default=0)
    if expected > data_bytes:
        raise ModelError(
            f"{path} is truncated: header says {expected} bytes of data, file has {data_bytes}", fix
        )
    if expected < data_bytes:
        raise ModelError(
            f"{path} is corrupt: header says {expected} bytes of data, file has {data_bytes}", fix
        )
    pos = 0
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if t.begin != pos:
            raise ModelError(f"{path} is corrupt: tensor {name} overlaps or leaves a gap", fix)
        pos = t.end


def read_all_headers(weights: Weights) -> dict[str, TensorInfo]:
    """Every tensor in the weight files by name; an index's weight_map must agree with the shards."""
    tensors: dict[str, TensorInfo] = {}
    for path in weights.files:
        tensors.update(read_safetensors_header(path))
    if weights.index is not None:
        weight_map = read_json_file(weights.index)["weight_map"]
        lost = [k for k in weight_map if k not in tensors]
        if lost:
            raise ModelError(
                f"{weights.index} lists {len(lost)} tensor(s) no shard holds, "
                f"e.g. {lost[0]} in {weight_map[lost[0]]}",
                "re-download the shards or re-save the model",
            )
    return tensors


# --- shapes against the config ---------------------------------------------------------------


def meta_model(name: str, cfg: PreTrainedConfig) -> PreTrainedModel:
    """The causal LM ``cfg`` describes, built on the meta device (no memory, no init)."""
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(cfg, trust_remote_code=False)
    except ValueError as e:
        if "Unrecognized configuration class" not in str(e):
            raise config_error(name, e) from None
        raise ModelError(
            f"{name} is not a causal language model ({type(cfg).__name__} has no ...ForCausalLM class)",
            "point at a decoder-only (causal LM) model",
        ) from None


def check_shapes(name: str, cfg: PreTrainedConfig, tensors: dict[str, TensorInfo]) -> None:
    """Refuse header shapes that differ from the config's parameters, and missing parameters."""
    if getattr(cfg, "quantization_config", None):
        return  # quantized checkpoints store packed tensors whose shapes differ by design
    model = meta_model(name, cfg)
    params = {n: tuple(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
    found = match_keys(model, tensors)
    if not found:
        raise ModelError(
            f"{name}: none of the {len(tensors)} tensors in its weights matches a parameter of "
            f"{type(model).__name__} (file has {next(iter(tensors), 'nothing')}, model needs "
            f"{next(iter(params))})",
            "the weights belong to a different architecture than config.json describes",
        )
    bad = [(p, k) for p, k in found.items() if k and tensors[k].shape != params[p]]
    if bad:
        p, k = bad[0]
        raise ModelError(
            f"{name}: {len(bad)} tensor(s) do not match config.json's shapes, first {k}: "
            f"file {list(tensors[k].shape)} vs config {list(params[p])}",
            "use the config.json these weights were saved with",
        )
    missing = missing_params(model, set(found))
    if missing:
        raise ModelError(
            f"{name} is missing {len(missing)} weight(s) that config.json needs, e.g. {missing[0]}",
            "the checkpoint is incomplete; re-save it with save_pretrained",
        )


def match_keys(model: PreTrainedModel, tensors: Iterable[str]) -> dict[str, str | None]:
    """Model parameter name -> checkpoint key (``None`` when a converter fuses several keys)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    rename = _key_renamer(model)
    found: dict[str, str | None] = {}
    for key in tensors:
        target, converted = rename(key)
        if target in params and target not in found:
            found[target] = None if converted else key
    return found


def _key_renamer(model: PreTrainedModel) -> Callable[[str], tuple[str, bool]]:
    """Checkpoint key -> (model key, fused by a converter?), as transformers renames on load."""
    meta = dict.fromkeys(model.state_dict(), True)
    prefix = model.base_model_prefix or None
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            WeightConverter,
            WeightRenaming,
            rename_source_key,
        )

        mapping = get_model_conversion_mapping(model)
        renames = [m for m in mapping if isinstance(m, WeightRenaming)]
        converters = [m for m in mapping if isinstance(m, WeightConverter)]
    except (ImportError, AttributeError, TypeError):  # transformers moved its internals
        return lambda key: (_with_prefix(key, prefix, meta), False)

    def rename(key: str) -> tuple[str, bool]:
        new, pattern = rename_source_key(key, renames, converters, prefix, meta)
        if new not in meta and key in meta:
            new, pattern = rename_source_key(key, [], [], prefix, meta)
        return new, pattern is not None

    return rename


def _with_prefix(key: str, prefix: str | None, meta: dict[str, bool]) -> str:
    if prefix and key.startswith(prefix + ".") and key[len(prefix) + 1 :] in meta:
        return key[len(prefix) + 1 :]
    if prefix and f"{prefix}.{key}" in meta:
        return f"{prefix}.{key}"
    return key


def missing_params(model: PreTrainedModel, have: set[str]) -> list[str]:
    """Parameters no checkpoint key provides; tied names count as one group."""
    groups: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(n)
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    have = (
        have | {a for a, b in tied.items() if b in have} | {b for a, b in tied.items() if a in have}
    )
    ignore = [
        re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or [])
    ]
    return [
        names[0]
        for names in groups.values()
        if not any(n in have or any(r.search(n) for r in ignore) for n in names)
    ]


# --- finiteness ------------------------------------------------------------------------------


def all_finite(t: torch.Tensor, chunk: int = 1 << 24) -> bool:
    """No NaN/inf in ``t`` (checked in chunks so a huge tensor needs no huge mask)."""
    if not t.is_floating_point():
        return True
    flat = t.detach().reshape(-1)
    for part in flat.split(chunk):
        if part.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            part = part.float()
        if not bool(torch.isfinite(part).all()):
            return False
    return True


def non_finite_error(name: str, bad: list[str], total: int) -> ModelError:
    return ModelError(
        f"{name} has non-finite weights ({len(bad)} of {total} tensors hold NaN or inf, e.g. {bad[0]})",
        FINITE_FIX,
    )


def check_finite_model(model: torch.nn.Module, name: str) -> None:
    """Refuse a loaded model whose parameters hold NaN or inf."""
    params = list(model.named_parameters())
    bad = [n for n, p in params if not all_finite(p)]
    if bad:
        raise non_finite_error(name, bad, len(params))


def check_vocabulary(name: str, tokenizer: Any) -> None:
    """A local model's tokenizer must not produce ids past its embedding (``vocab_size``)."""
    d = Path(name).expanduser()
    if not d.is_dir():
        return
    vocab = getattr(load_config(d).get_text_config(), "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise ModelError(
            f"{name}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{vocab}, so some token ids would index past the embedding",
            "use the tokenizer the model was trained with, or fix vocab_size in config.json",
        )
