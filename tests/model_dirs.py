"""Tiny HF model directories for tests that check, corrupt and load them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEXTS = ["hello world", "the cat sat on the mat", "Question: who?\nAnswer: nobody"]


def tiny_model_dir(
    out: Path, save_kw: dict[str, Any] | None = None, nan: bool = False, **config: Any
) -> Path:
    """A valid tiny Llama + BPE tokenizer saved with ``save_pretrained`` at ``out`` (``config``
    overrides LlamaConfig fields; ``nan``: one NaN weight; ``save_kw`` go to save_pretrained)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from obliviate.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    cfg = LlamaConfig(
        **{
            "vocab_size": len(tok),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "tie_word_embeddings": False,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            **config,
        }
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    if nan:
        with torch.no_grad():
            model.model.norm.weight[0] = float("nan")
    model.save_pretrained(out, **(save_kw or {}))
    tok.save_pretrained(out)
    return out


def edit_json(path: Path, **changes: Any) -> None:
    """Set (or, with None, remove) top-level keys of a JSON file."""
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


def rewrite_tensors(model: Path, fn: Callable[[dict], dict]) -> None:
    """Replace ``model.safetensors``'s tensors with ``fn(tensors)``."""
    from safetensors.torch import load_file, save_file

    f = model / "model.safetensors"
    save_file(fn(load_file(f)), f, metadata={"format": "pt"})
