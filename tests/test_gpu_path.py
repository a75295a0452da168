"""The GPU path, checked without a GPU: the dtype ``auto`` picks, SDPA attention (and that it
leaves CPU results unchanged), and generation with a KV cache over length-sorted batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.mark.parametrize(
    ("device", "bf16_ok", "want"),
    [
        ("cuda", True, torch.bfloat16),  # Ampere and newer
        ("cuda", False, torch.float32),  # e.g. V100 / T4: no bf16, and fp16 needs loss scaling
        ("cpu", True, torch.float32),  # bf16 on CPU measured ~20x slower
    ],
)
def test_dtype_auto(monkeypatch, device, bf16_ok, want):
    from obliviate.models.io import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert resolve_dtype("auto", torch.device(device)) == want
    assert resolve_dtype("float16", torch.device(device)) == torch.float16  # explicit wins


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from model_dirs import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("sdpa") / "m", num_hidden_layers=2)


def test_models_load_with_sdpa_and_identical_logits(tiny_dir):
    """transformers 5 already defaults to SDPA where an architecture supports it: obliviate
    names it explicitly, and the logits are bit-identical to a default load (and differ from
    eager attention only by float rounding)."""
    from transformers import AutoModelForCausalLM

    from obliviate.models.io import load_model

    ours = load_model(str(tiny_dir), "float32", "cpu")
    default = AutoModelForCausalLM.from_pretrained(tiny_dir)
    eager = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="eager")
    assert ours.config._attn_implementation == "sdpa"
    assert default.config._attn_implementation == "sdpa"
    ids = torch.tensor([[1, 5, 9, 13, 7, 3, 8], [1, 22, 3, 4, 5, 6, 9]])
    att = torch.ones_like(ids)
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=att).logits
        b = default(input_ids=ids, attention_mask=att).logits
        c = eager(input_ids=ids, attention_mask=att).logits
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-5)


def test_an_architecture_without_sdpa_falls_back_to_its_default(tiny_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from obliviate.models import io

    real = AutoModelForCausalLM.from_pretrained
    asked: list[object] = []

    def no_sdpa(src, *args, **kw):
        asked.append(kw.get("attn_implementation"))
        if kw.get("attn_implementation") == "sdpa":
            raise ValueError(
                "GPT2Model does not support an attention implementation through "
                "torch.nn.functional.scaled_dot_product_attention yet."
            )
        return real(src, *args, **kw)

    monkeypatch.setattr(io.AutoModelForCausalLM, "from_pretrained", no_sdpa)
    model = io.load_model(str(tiny_dir), "float32", "cpu")
    assert asked == ["sdpa", None] and model is not None


def test_generation_uses_a_kv_cache_over_length_sorted_batches():
    """After the prompt, each generation step feeds one new token per row (the keys and values
    of the earlier ones come from the cache), and prompts are batched shortest first."""
    from model_dirs import random_llama

    from obliviate.eval.scoring import generate_answers

    model = random_llama()

    class Tok:
        pad_token_id, eos_token_id = 0, 2

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    questions = {"long": [1, 5, 6, 7, 8, 9, 10], "short": [1, 5], "mid": [1, 5, 6, 7]}
    widths: list[int] = []
    real = model.forward

    def spy(*args, **kw):
        widths.append(kw["input_ids"].shape[1])
        return real(*args, **kw)

    model.forward = spy
    generate_answers(
        model,
        Tok(),
        list(questions),
        max_new_tokens=4,
        batch_size=2,
        encode=lambda tok, q: questions[q],
    )
    # batch 1: "short" and "mid" (width 4): one prompt pass, then 1 token a step; batch 2: "long"
    first, second = widths[: widths.index(7)], widths[widths.index(7) :]
    assert first[0] == 4 and set(first[1:]) == {1}
    assert second[0] == 7 and set(second[1:]) == {1}
