"""LoRA through peft for every gradient method (``unlearn.lora``).

The adapter is injected in place into the HF model (:func:`attach_lora`, peft's
``inject_adapter_in_model``), so the trainer, the methods and their hooks keep seeing the same
``LlamaForCausalLM`` (``model.config``, ``model.model.layers``, parameter names with
``.base_layer`` / ``.lora_A`` parts). Every base weight is frozen; only the adapter trains.

A method that needs a reference model gets :func:`disabled_adapter_reference`: the same model
object run with its adapters switched off, i.e. the base before unlearning, with no second copy of
the weights in memory (``benchmarks/memory.py`` measures the saving).

The model stays a plain HF model rather than a ``PeftModel`` or one flagged with transformers' own
adapter integration: HF ``Trainer`` checkpoints (``unlearn.save_every``) then hold the full state
dict, adapter included, which ``--resume`` loads back by name. With the transformers integration
they would hold the adapter alone, which this transformers version's ``Trainer`` cannot resume
into a non-``PeftModel``.

:func:`save_lora` writes the result as a peft adapter dir over the source model
(``unlearn.lora.save: adapter``; :func:`obliviate.artefacts.load_artefact` merges it on load) or
merges it into a full HF model dir (``save: merged``).
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from obliviate.config import LoraConfig
from obliviate.errors import ConfigError

ADAPTER_NAME = "default"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
"""Key prefix of a ``PeftModel``'s saved adapter weights (what ``PeftModel.from_pretrained``
expects); the injected model's own keys lack it."""

#: The usual names of a decoder layer's projections, per architecture family, in the order the
#: card lists them: Llama / Mistral / Qwen2 / Gemma (separate q,k,v and gate,up), Phi-3 (fused
#: qkv_proj and gate_up_proj); GPT-2 (Conv1D c_attn, c_proj, c_fc); GPT-NeoX / Falcon.
DEFAULT_TARGETS = (
    (
        "q_proj",
        "k_proj",
        "v_proj",
        "qkv_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "gate_up_proj",
        "down_proj",
    ),
    ("c_attn", "c_proj", "c_fc"),
    ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
)
ROUTERS = ("gate", "router", "shared_expert_gate")
"""Mixture-of-experts routers (Mixtral, Qwen2-MoE): linear layers inside a decoder layer that
LoRA leaves alone by default."""


def _adaptable_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D

    return (torch.nn.Linear, Conv1D)


def _head_modules(model: torch.nn.Module) -> set[int]:
    """ids of the input / output embedding modules (never adapted by default)."""
    out = set()
    for get in ("get_output_embeddings", "get_input_embeddings"):
        fn = getattr(model, get, None)
        mod = fn() if callable(fn) else None
        if mod is not None:
            out.add(id(mod))
    return out


def adaptable_names(model: torch.nn.Module, heads: set[int] | None = None) -> list[str]:
    """Leaf names of the model's linear (or GPT-2 Conv1D) layers other than the LM head, sorted:
    what ``target_modules`` can name (``heads``: ids of modules to leave out, default the
    model's own embeddings)."""
    heads = _head_modules(model) if heads is None else heads
    types = _adaptable_types()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, mod in model.named_modules()
            if name and isinstance(mod, types) and id(mod) not in heads
        }
    )


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's list of ``num_hidden_layers`` decoder layers (``model.layers``, GPT-2's
    ``transformer.h``, …), or None."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and n and len(mod) == n:
            return mod
    return None


def default_targets(model: torch.nn.Module) -> list[str]:
    """The projections of ``model``'s decoder layers that LoRA adapts by default: every linear
    (or GPT-2 Conv1D) layer inside them but MoE routers, known names first in
    :data:`DEFAULT_TARGETS` order (Llama-style: q,k,v,o,gate,up,down_proj; GPT-2: c_attn, c_proj,
    c_fc; GPT-NeoX: query_key_value, dense, dense_h_to_4h, dense_4h_to_h). A model without a
    recognisable list of decoder layers: every linear layer but the LM head and the embeddings."""
    layers = _decoder_layers(model)
    present = adaptable_names(layers if layers is not None else model, heads=_head_modules(model))
    present = [n for n in present if n not in ROUTERS] if layers is not None else present
    if not present:
        raise ConfigError(
            f"{type(model).__name__} has no linear layers outside its LM head for LoRA",
            "unlearn.lora supports transformer models built from nn.Linear projections",
        )
    known = [n for family in DEFAULT_TARGETS for n in family if n in present]
    return known + sorted(set(present) - set(known))


def _module_names(model: torch.nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def check_targets(model: torch.nn.Module, targets: list[str]) -> None:
    """Every name in ``targets`` must be a module of ``model`` (peft matches a name against the
    end of a module's dotted path, e.g. ``down_proj`` or ``mlp.down_proj``)."""
    names = _module_names(model)
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError(
            f"unlearn.lora.target_modules names {', '.join(missing)}, which "
            f"{type(model).__name__} does not have",
            f"use some of: {', '.join(adaptable_names(model)) or 'none found'}",
        )


def _peft_config(model: torch.nn.Module, cfg: LoraConfig, targets: list[str]) -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from transformers.pytorch_utils import Conv1D

    conv = any(
        isinstance(m, Conv1D) and any(n == t or n.endswith("." + t) for t in targets)
        for n, m in model.named_modules()
    )
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(targets),
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=conv,  # GPT-2's Conv1D stores its weight transposed
    )


def attach_lora(model: torch.nn.Module, lora_cfg: LoraConfig) -> dict[str, Any]:
    """Inject LoRA layers into ``model`` in place (adapter ``default``), freeze every base weight
    and leave only the adapter trainable. Returns the model card's ``lora`` entry: r, alpha,
    dropout, target_modules, trainable / total parameter counts and the save mode."""
    from peft.functional import cast_adapter_dtype, inject_adapter_in_model

    if any(True for _ in lora_layers(model)):
        raise ConfigError(
            f"{type(model).__name__} already carries LoRA layers",
            "unlearn.lora trains a fresh adapter on a plain model: give the merged model dir",
        )
    targets = list(lora_cfg.target_modules or default_targets(model))
    check_targets(model, targets)
    config = _peft_config(model, lora_cfg, targets)
    model.requires_grad_(False)
    try:
        with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 deprecated alias
            warnings.simplefilter("ignore", FutureWarning)
            inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    except ValueError as e:  # e.g. a named module peft cannot adapt (not a Linear / Conv1D)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"peft cannot put LoRA on unlearn.lora.target_modules={targets}: {first}",
            f"name linear layers, e.g. some of: {', '.join(adaptable_names(model))}",
        ) from None
    # half-precision bases get float32 adapters (peft's default for PeftModel): small and stable
    cast_adapter_dtype(model, ADAPTER_NAME, autocast_adapter_dtype=True)
    adapter = adapter_parameters(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in adapter)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in adapter.values())
    return {
        "r": lora_cfg.r,
        "alpha": lora_cfg.alpha,
        "dropout": lora_cfg.dropout,
        "target_modules": targets,
        "adapted_layers": sum(1 for _ in lora_layers(model)),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": round(trainable / max(total, 1), 6),
        "save": lora_cfg.save,
    }


def lora_layers(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """``(name, layer)`` of every peft tuner layer injected into ``model``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, mod in model.named_modules():
        if isinstance(mod, BaseTunerLayer):
            yield name, mod


def adapter_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The adapter's parameters by their names in ``model`` (lora_A / lora_B, …), not the base's."""
    out: dict[str, torch.nn.Parameter] = {}
    for name, layer in lora_layers(model):
        for part in layer.adapter_layer_names:
            for sub, p in getattr(layer, part).named_parameters():
                out[f"{name}.{part}.{sub}"] = p
    return out


def keep_adapter_trainable(model: torch.nn.Module, info: dict[str, Any]) -> None:
    """After a method's ``prepare`` (RMU freezes all but a few modules): only the adapter weights
    it left trainable keep training, never a base weight. Updates ``info``'s trainable count; a
    one-line :class:`ConfigError` when no adapter weight is left trainable."""
    adapter = adapter_parameters(model)
    wanted = [n for n, p in model.named_parameters() if p.requires_grad and n not in adapter]
    trainable = 0
    for name, p in model.named_parameters():
        keep = name in adapter and p.requires_grad
        p.requires_grad_(keep)
        trainable += p.numel() if keep else 0
    if trainable == 0:
        targets = ", ".join(info.get("target_modules") or [])
        if wanted:
            leaves = sorted({_leaf_module(n) for n in wanted})
            raise ConfigError(
                f"the method trains only {', '.join(leaves)} weights (e.g. {wanted[0]}), and "
                f"unlearn.lora.target_modules=[{targets}] puts no adapter there",
                f"add {', '.join(leaves)} to unlearn.lora.target_modules",
            )
        raise ConfigError(
            "the method left no weight trainable, so the LoRA adapter cannot train",
            "check unlearn.params (which modules the method trains) and unlearn.lora.target_modules",
        )
    info["trainable_parameters"] = trainable
    info["trainable_share"] = round(trainable / max(info.get("total_parameters") or 1, 1), 6)


def _leaf_module(param_name: str) -> str:
    """``model.layers.2.mlp.down_proj.base_layer.weight`` → ``down_proj``."""
    parts = [p for p in param_name.split(".")[:-1] if p != "base_layer"]
    return parts[-1] if parts else param_name


# ------------------------------------------------------------------------------ the reference


@contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` as its base: every LoRA layer bypassed, and every module in eval mode (as a
    loaded frozen reference is); both restored afterwards, exactly as they were.

    peft's own ``enable_adapters(True)`` marks every adapter weight trainable again, which would
    undo a method's selection (:func:`keep_adapter_trainable`); the flag is set directly here and
    no ``requires_grad`` changes."""
    layers = [layer for _, layer in lora_layers(model)]
    was = [layer._disable_adapters for layer in layers]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for layer in layers:
            layer._disable_adapters = True
        model.eval()
        yield
    finally:
        for layer, flag in zip(layers, was, strict=True):
            layer._disable_adapters = flag
        for m, mode in modes:
            m.training = mode


class AdapterDisabledReference:
    """The reference model of a LoRA run: ``model`` itself, called with its adapters disabled.

    It shares every weight with the model being trained (no second copy) and otherwise looks like
    that model: attributes (``config``, ``device``, ``named_modules``, ``model.layers``) are the
    model's, so hooks a method registers through it (RMU's :func:`~obliviate.methods.rmu.hidden_at`)
    sit on the shared layers and capture the adapter-disabled pass. ``eval()``, ``train()`` and
    ``requires_grad_()`` are no-ops: the base is frozen already and every reference pass runs in
    eval mode; changing them would change the model being trained. Call it under ``no_grad``."""

    #: Distributed wrappers must leave this object alone: it is the trained model, not a copy.
    shares_trained_weights = True

    def __init__(self, model: torch.nn.Module) -> None:
        object.__setattr__(self, "_model", model)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with adapters_disabled(self._model):
            return self._model(*args, **kwargs)

    forward = __call__

    def eval(self) -> AdapterDisabledReference:
        return self

    def train(self, mode: bool = True) -> AdapterDisabledReference:
        return self

    def requires_grad_(self, requires_grad: bool = True) -> AdapterDisabledReference:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_model"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the adapter-disabled reference is read-only (set {name!r})")

    def __repr__(self) -> str:
        return f"AdapterDisabledReference({type(self._model).__name__})"


def disabled_adapter_reference(model: torch.nn.Module) -> AdapterDisabledReference:
    """The reference of a LoRA run: ``model`` with its adapters disabled, i.e. the base weights
    as they were before unlearning (they are frozen), with no copy in memory."""
    if not any(True for _ in lora_layers(model)):
        raise ValueError("disabled_adapter_reference needs a model with LoRA layers (attach_lora)")
    return AdapterDisabledReference(model)


def is_adapter_reference(ref: Any) -> bool:
    """Whether ``ref`` is the trained model itself with its adapters off (nothing to prepare or
    shard separately)."""
    return bool(getattr(type(ref), "shares_trained_weights", False))


# ------------------------------------------------------------------------------------ saving


def adapter_state(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The adapter's weights under the key names a ``PeftModel`` saves (``base_model.model.`` +
    the module path, no adapter name), detached contiguous CPU copies. ``state_dict``: take them
    from these full weights (gathered from ZeRO-3 partitions) instead of ``model``'s own."""
    from peft.functional import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, state_dict=state_dict, adapter_name=ADAPTER_NAME)
    return {PEFT_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def base_reference(source: str) -> str:
    """How an adapter names its base: the absolute path of a local dir, else the hub id as given
    (:func:`obliviate.artefacts.load_artefact` loads either)."""
    p = Path(source).expanduser()
    return str(p.resolve()) if p.is_dir() else source


def unwrap_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Put every LoRA layer's plain base layer back in its place, *without* merging (the adapter
    is dropped): ``model`` is a plain HF model afterwards (no peft module or attribute). In
    place."""
    for name, layer in list(lora_layers(model)):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if "peft_config" in model.__dict__:
        del model.peft_config
    model.requires_grad_(False)
    return model


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Merge every LoRA layer into its base weight (W + (alpha / r)·BA) and unwrap it
    (:func:`unwrap_lora`): a plain HF model with the adapted function. In place."""
    for _, layer in lora_layers(model):
        layer.merge(safe_merge=True)  # refuses (ValueError) to write NaN/inf into a weight
    return unwrap_lora(model)


def merged_state(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The merged model's full weights computed from ``state_dict``, the LoRA-injected model's
    full weights (gathered from ZeRO-3 partitions, where ``model``'s own tensors are empty
    placeholders): each adapted weight W + (alpha / r)·BA (transposed for GPT-2's Conv1D), under
    the plain model's key names."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model):
        w = state_dict[f"{name}.base_layer.weight"]
        a = state_dict[f"{name}.lora_A.{ADAPTER_NAME}.weight"].float()
        b = state_dict[f"{name}.lora_B.{ADAPTER_NAME}.weight"].float()
        delta = (b @ a) * layer.scaling[ADAPTER_NAME]
        if getattr(layer, "fan_in_fan_out", False):
            delta = delta.T
        out[f"{name}.weight"] = (w.float() + delta).to(w.dtype)
    adapter_parts = {
        part for _, layer in lora_layers(model) for part in layer.adapter_layer_names
    } | {"lora_dropout"}
    for key, value in state_dict.items():
        parts = key.split(".")
        if any(p in adapter_parts for p in parts):
            continue
        out.setdefault(".".join(p for p in parts if p != "base_layer"), value)
    return out


def save_lora(
    model: torch.nn.Module,
    tok: Any,
    source: str,
    out: str | Path,
    card: dict[str, Any],
    lora_cfg: LoraConfig,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save a LoRA run's result at ``out``, all or nothing (built in ``<out>.tmp``, then renamed).

    ``save: adapter``: a peft adapter dir (``adapter_config.json`` naming ``source`` as
    ``base_model_name_or_path``, absolute for a local dir; ``adapter_model.safetensors``), the
    tokenizer and the model card. ``save: merged``: the adapter merged into the base weights (in
    place: ``model`` is a plain HF model afterwards), saved as a full model dir.

    ``state_dict``: ``model``'s full weights gathered from DeepSpeed ZeRO-3 partitions
    (:func:`obliviate.distributed.gathered_weights`), read instead of ``model``'s own tensors."""
    from obliviate.models.card import ADAPTER
    from obliviate.models.io import save_model_dir

    out = Path(out)
    if lora_cfg.save == "merged":
        if state_dict is None:
            merge_lora(model)
            return save_model_dir(model, tok, out, card)
        merged = merged_state(model, state_dict)
        unwrap_lora(model)
        return save_model_dir(model, tok, out, card, state_dict=merged)
    from safetensors.torch import save_file

    from obliviate.models.card import write_card

    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = adapter_state(model, state_dict)
    save_file(state, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    os.chmod(tmp / ADAPTER_WEIGHTS, 0o644)  # safetensors writes 0600; model files are 0644
    config = model.peft_config[ADAPTER_NAME]
    base = base_reference(source)
    saved = copy.deepcopy(config)
    saved.target_modules = sorted(config.target_modules)
    saved.base_model_name_or_path = base
    saved.inference_mode = True
    saved.save_pretrained(str(tmp))
    tok.save_pretrained(tmp)
    write_card(
        tmp,
        {
            "artefact": ADAPTER,
            "base_model": base,
            "adapter_parameters": sum(t.numel() for t in state.values()),
            **card,
        },
    )
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
