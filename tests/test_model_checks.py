"""Pre-flight checks and safe loading of HF model directories (obliviate.models.checks / io)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from model_dirs import edit_json, rewrite_tensors, tiny_model_dir
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from obliviate.errors import ModelError
from obliviate.models.checks import check_model_dir, read_safetensors_header
from obliviate.models.io import load_frozen, load_model, load_tokenizer


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("base") / "good")


@pytest.fixture
def good(base: Path, tmp_path: Path) -> Path:
    """A fresh copy of a valid untied tiny Llama directory, free to corrupt."""
    return Path(shutil.copytree(base, tmp_path / "m"))


def _raises(phrase: str, fn, *args, **kwargs) -> str:
    with pytest.raises(ModelError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert phrase in msg, msg
    assert "\n" not in msg
    return msg


# --- positive ---------------------------------------------------------------------------------


def test_good_dir_passes_and_loads(good: Path) -> None:
    check_model_dir(str(good))
    model = load_model(str(good), "float32", "cpu")
    tok = load_tokenizer(str(good))
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert model.lm_head.weight.shape[0] == len(tok)
    ref = load_frozen(str(good), like=model)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    assert torch.equal(ref.lm_head.weight, model.lm_head.weight)


def test_tied_embeddings_pass(tmp_path: Path) -> None:
    d = tiny_model_dir(tmp_path / "tied", tie_word_embeddings=True)
    assert "lm_head.weight" not in read_safetensors_header(d / "model.safetensors")
    check_model_dir(str(d))
    model = load_model(str(d), "float32", "cpu")
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_checkpoint_without_base_model_prefix_passes(good: Path) -> None:
    rewrite_tensors(good, lambda t: {k.removeprefix("model."): v for k, v in t.items()})
    assert "embed_tokens.weight" in read_safetensors_header(good / "model.safetensors")
    check_model_dir(str(good))
    load_model(str(good), "float32", "cpu")


def test_moe_checkpoint_in_saved_layout_passes(tmp_path: Path) -> None:
    """Mixtral saves per-expert tensors that transformers fuses on load: matched via its renames."""
    cfg = AutoConfig.for_model(
        "mixtral", vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, num_local_experts=2, num_experts_per_tok=1,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "moe")
    header = read_safetensors_header(tmp_path / "moe" / "model.safetensors")
    assert any(".experts.0.w1." in k for k in header)
    check_model_dir(str(tmp_path / "moe"))


def test_hub_id_is_skipped() -> None:
    check_model_dir("some-org/some-model")  # nothing checkable offline


# --- safetensors files ------------------------------------------------------------------------


def test_truncated_safetensors(good: Path) -> None:
    f = good / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    msg = _raises("is truncated: header says", check_model_dir, str(good))
    assert "model.safetensors" in msg
    _raises("is truncated", load_model, str(good), "float32", "cpu")


def test_garbage_header(good: Path) -> None:
    f = good / "model.safetensors"
    f.write_bytes(b"\xff" * 8 + f.read_bytes()[8:])
    _raises("garbage header", check_model_dir, str(good))


def test_header_json_invalid(good: Path) -> None:
    f = good / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[8] = ord("[")  # first byte of the JSON header
    raw[9] = ord("}")
    f.write_bytes(bytes(raw))
    _raises("not valid JSON", check_model_dir, str(good))


def test_header_unknown_dtype(good: Path) -> None:
    f = good / "model.safetensors"
    f.write_bytes(f.read_bytes().replace(b'"F32"', b'"Q32"', 1))
    _raises("unknown dtype 'Q32'", check_model_dir, str(good))


def test_header_shape_disagrees_with_offsets(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}).encode()
    f = tmp_path / "x.safetensors"
    f.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    _raises("data_offsets span 16 bytes", read_safetensors_header, f)


def test_no_weights(good: Path) -> None:
    (good / "model.safetensors").unlink()
    _raises("has no weights", check_model_dir, str(good))


def test_sharded_missing_shard(tmp_path: Path) -> None:
    d = tiny_model_dir(tmp_path / "sharded", {"max_shard_size": "20KB"})
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    check_model_dir(str(d))
    (d / shards[-1]).unlink()
    _raises(f"names shard '{shards[-1]}', which is missing", check_model_dir, str(d))


# --- shapes against config.json ---------------------------------------------------------------


def test_size_mismatched_config(good: Path) -> None:
    edit_json(good / "config.json", intermediate_size=48)
    msg = _raises("3 tensor(s) do not match config.json's shapes", check_model_dir, str(good))
    assert "file [" in msg and "vs config [" in msg
    _raises("do not match config.json's shapes", load_model, str(good), "float32", "cpu")


def test_missing_tensor(good: Path) -> None:
    rewrite_tensors(good, lambda t: {k: v for k, v in t.items() if "o_proj" not in k})
    msg = _raises("is missing 1 weight(s)", check_model_dir, str(good))
    assert "o_proj" in msg


def test_untied_model_missing_lm_head(good: Path) -> None:
    rewrite_tensors(good, lambda t: {k: v for k, v in t.items() if k != "lm_head.weight"})
    _raises(
        "missing 1 weight(s) that config.json needs, e.g. lm_head.weight",
        check_model_dir,
        str(good),
    )


def test_no_tensor_matches(good: Path) -> None:
    rewrite_tensors(good, lambda t: {"foo." + k: v for k, v in t.items()})
    _raises("none of the 12 tensors", check_model_dir, str(good))


# --- config.json ------------------------------------------------------------------------------


def test_non_utf8_config(good: Path) -> None:
    (good / "config.json").write_bytes(b'{"model_type": "llama\xff"}')
    _raises("config.json is not UTF-8", check_model_dir, str(good))
    _raises("config.json is not UTF-8", load_model, str(good), "float32", "cpu")


def test_config_not_json(good: Path) -> None:
    (good / "config.json").write_text('{"model_type": ')
    _raises("config.json is not valid JSON", check_model_dir, str(good))


def test_unknown_model_type(good: Path) -> None:
    edit_json(good / "config.json", model_type="no_such_arch")
    _raises("does not know its config.json model_type", check_model_dir, str(good))


def test_auto_map_custom_code_refused(good: Path) -> None:
    edit_json(
        good / "config.json",
        model_type="my_custom_lm",
        auto_map={"AutoConfig": "modeling.MyConfig", "AutoModelForCausalLM": "modeling.MyLM"},
    )
    (good / "modeling.py").write_text("raise SystemExit('remote code ran')\n")
    _raises("needs trust_remote_code", check_model_dir, str(good))
    _raises("trust_remote_code", load_model, str(good), "float32", "cpu")


def test_auto_map_with_known_model_type_passes(good: Path) -> None:
    edit_json(good / "config.json", auto_map={"AutoModelForCausalLM": "modeling.MyLM"})
    check_model_dir(str(good))  # transformers uses its own llama code: nothing remote runs


def test_tokenizer_auto_map_custom_code_refused(good: Path) -> None:
    edit_json(good / "config.json", model_type="my_custom_lm")
    edit_json(
        good / "tokenizer_config.json",
        tokenizer_class="MyTokenizer",
        auto_map={"AutoTokenizer": ["tok.MyTokenizer", None]},
    )
    _raises("tokenizer that needs custom code", check_model_dir, str(good))
    _raises("trust_remote_code", load_tokenizer, str(good))


# --- pickle -----------------------------------------------------------------------------------


def test_pickle_only_refused_then_allowed(good: Path) -> None:
    torch.save(load_file(good / "model.safetensors"), good / "pytorch_model.bin")
    (good / "model.safetensors").unlink()
    phrase = "pickle files can run arbitrary code when loaded"
    msg = _raises(phrase, check_model_dir, str(good))
    assert "model.allow_pickle=true" in msg and "safetensors" in msg
    _raises(phrase, load_model, str(good), "float32", "cpu")
    check_model_dir(str(good), allow_pickle=True)
    model = load_model(str(good), "float32", "cpu", allow_pickle=True)
    assert model.lm_head.weight.shape[1] == 16


def test_pt_file_only_is_refused_even_when_allowed(good: Path) -> None:
    (good / "model.safetensors").rename(good / "weights.pt")
    _raises("pickle files can run arbitrary code", check_model_dir, str(good))
    _raises("no pytorch_model.bin", check_model_dir, str(good), allow_pickle=True)


def test_safetensors_preferred_over_pickle(good: Path) -> None:
    (good / "pytorch_model.bin").write_bytes(b"not even a pickle")
    check_model_dir(str(good))
    load_model(str(good), "float32", "cpu")  # the .bin is never opened


# --- non-finite weights -----------------------------------------------------------------------


def test_nan_weights(tmp_path: Path) -> None:
    d = tiny_model_dir(tmp_path / "nan", nan=True)
    check_model_dir(str(d))  # headers alone cannot tell
    phrase = "has non-finite weights (1 of 12 tensors hold NaN or inf, e.g. model.norm.weight)"
    msg = _raises(phrase, load_model, str(d), "float32", "cpu")
    assert "lower learning rate" in msg


# --- tokenizer --------------------------------------------------------------------------------


def test_tokenizer_without_eos_or_pad(good: Path) -> None:
    edit_json(good / "tokenizer_config.json", eos_token=None, pad_token=None)
    msg = _raises("has neither an EOS nor a pad token", load_tokenizer, str(good))
    assert "eos_token" in msg


def test_tokenizer_with_pad_but_no_eos(good: Path) -> None:
    edit_json(good / "tokenizer_config.json", eos_token=None)
    _raises("appends EOS to every answer", load_tokenizer, str(good))


def test_tokenizer_file_not_utf8_or_json(good: Path) -> None:
    tok_json = good / "tokenizer.json"
    tok_json.write_bytes(b"\xff\xfe" + tok_json.read_bytes())
    _raises("tokenizer.json is not UTF-8", load_tokenizer, str(good))
    tok_json.write_text("{ not json")
    _raises("tokenizer.json is not valid JSON", load_tokenizer, str(good))
