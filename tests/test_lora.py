"""LoRA for every gradient method (``unlearn.lora``, :mod:`obliviate.training.lora`): default
targets per architecture, a frozen base, a reference that *is* the base (the adapter disabled, no
second copy), the adapter / merged saves, resuming from checkpoints, and NPO and GradDiff under
LoRA end to end."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from model_dirs import random_llama, tiny_model_dir

from obliviate import load_config
from obliviate.config import LoraConfig
from obliviate.errors import ConfigError
from obliviate.training.lora import (
    adapter_parameters,
    adapters_disabled,
    attach_lora,
    base_reference,
    default_targets,
    disabled_adapter_reference,
    is_adapter_reference,
    keep_adapter_trainable,
    lora_layers,
    save_lora,
)


def _perturb(model: torch.nn.Module, seed: int = 1, std: float = 0.5) -> None:
    """Give the adapter non-zero B matrices (peft starts B at 0: the adapter would change
    nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in adapter_parameters(model).items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _ids(seed: int = 0, vocab: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (3, 9), generator=g)
    att = torch.ones_like(ids)
    att[1, :3] = 0  # a left-padded row
    return ids, att


# ------------------------------------------------------------------------- default targets


def _toy_model(arch: str) -> torch.nn.Module:
    """A small randomly initialised model of architecture ``arch`` (no hub)."""
    import transformers as T

    if arch == "llama":
        return random_llama()
    build = {
        "gpt2": lambda: T.GPT2LMHeadModel(
            T.GPT2Config(
                n_embd=16, n_layer=2, n_head=2, vocab_size=64, n_positions=32, bos_token_id=1,
                eos_token_id=2,
            )
        ),
        "gpt_neox": lambda: T.GPTNeoXForCausalLM(
            T.GPTNeoXConfig(
                hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=32, vocab_size=64,
            )
        ),
        "phi3": lambda: T.Phi3ForCausalLM(
            T.Phi3Config(
                hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, intermediate_size=32, vocab_size=64, pad_token_id=0,
                bos_token_id=1, eos_token_id=2,
            )
        ),
        "opt": lambda: T.OPTForCausalLM(
            T.OPTConfig(
                hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32,
                vocab_size=64, word_embed_proj_dim=16,
            )
        ),
    }  # fmt: skip
    return build[arch]()


class _Toy(torch.nn.Module):
    """No HF config, no decoder-layer list: the fallback adapts every linear layer but the head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(64, 16)
        self.fc_in = torch.nn.Linear(16, 32)
        self.fc_out = torch.nn.Linear(32, 16)
        self.lm_head = torch.nn.Linear(16, 64)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.lm_head

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed


@pytest.mark.parametrize(
    ("arch", "want"),
    [
        ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("gpt2", ["c_attn", "c_proj", "c_fc"]),
        ("gpt_neox", ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
        ("phi3", ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
        ("opt", ["q_proj", "k_proj", "v_proj", "fc1", "fc2", "out_proj"]),
    ],
)
def test_default_targets_per_architecture(arch, want):
    model = _toy_model(arch)
    assert default_targets(model) == want
    info = attach_lora(model, LoraConfig(r=2))
    # every adapted layer is one of the targets, and each target got an adapter
    leaves = {name.rsplit(".", 1)[-1] for name, _ in lora_layers(model)}
    assert leaves == set(want) and info["target_modules"] == want
    ids = torch.randint(3, 64, (2, 5))
    model(input_ids=ids).logits.sum().backward()  # adapters train (GPT-2: Conv1D, transposed)
    assert all(p.grad is not None for p in adapter_parameters(model).values())


def test_fallback_targets_are_every_linear_but_the_head():
    assert default_targets(_Toy()) == ["fc_in", "fc_out"]


@pytest.mark.parametrize(
    ("targets", "needle"),
    [
        (["q_prj"], "names q_prj, which LlamaForCausalLM does not have"),
        (["q_proj", "nope"], "names nope,"),
        (["mlp"], "peft cannot put LoRA on"),  # a module, but not a linear layer
    ],
)
def test_bad_target_modules_are_one_line_config_errors(targets, needle):
    model = random_llama()
    with pytest.raises(ConfigError, match=needle) as e:
        attach_lora(model, LoraConfig(target_modules=targets))
    assert "\n" not in str(e.value) and "q_proj" in str(e.value)  # lists what exists


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("unlearn.lora.target_modules=[q_proj,q_proj]", "names q_proj twice"),
        ('unlearn.lora.target_modules=[""]', "empty name"),
        ("unlearn.lora.alpha=0", "unlearn.lora.alpha=0"),
    ],
)
def test_lora_config_refuses_bad_fields(override, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        load_config("demo", [override])
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ attaching, freezing


def test_attach_freezes_the_base_and_counts_the_adapter_by_hand():
    model = random_llama()  # hidden 32, intermediate 64, 2 layers, 4 heads / 2 kv heads of 8
    total_before = sum(p.numel() for p in model.parameters())
    info = attach_lora(model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "down_proj"]))
    # q_proj 32→32, down_proj 64→32 per layer; a rank-4 adapter on in→out holds 4·(in + out)
    per_layer = 4 * (32 + 32) + 4 * (64 + 32)
    assert info["trainable_parameters"] == 2 * per_layer == 1280
    assert info["total_parameters"] == total_before + 1280
    assert info["adapted_layers"] == 4 and info["save"] == "adapter"
    assert (info["r"], info["alpha"], info["dropout"]) == (4, 8, 0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapter_parameters(model)) and len(trainable) == 8
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    json.dumps(info)  # the card must hold it
    with pytest.raises(ConfigError, match="already carries LoRA layers"):
        attach_lora(model, LoraConfig())


# ------------------------------------------------------------------ the reference


def test_reference_is_the_base_model_with_no_copy():
    """A zero adapter: reference = model. A perturbed adapter: the model moves, the reference
    still gives the original base's logits (to 1e-6), and RMU's layer hook through the reference
    sees the base's activations."""
    from obliviate.methods.rmu import decoder_layers, hidden_at

    model = random_llama()
    base = copy.deepcopy(model).eval()
    attach_lora(model, LoraConfig(r=4))
    ref = disabled_adapter_reference(model)
    assert is_adapter_reference(ref) and not is_adapter_reference(base)
    ids, att = _ids()
    with torch.no_grad():
        assert torch.allclose(ref(input_ids=ids, attention_mask=att).logits,
                              model(input_ids=ids, attention_mask=att).logits, atol=1e-6)  # fmt: skip
        _perturb(model)
        got = model(input_ids=ids, attention_mask=att).logits
        want = base(input_ids=ids, attention_mask=att).logits
        assert (got - want).abs().max() > 1e-2  # the adapter does move the model
        assert torch.allclose(ref(input_ids=ids, attention_mask=att).logits, want, atol=1e-6)
        sub = {"input_ids": ids, "attention_mask": att}
        assert decoder_layers(ref) is model.model.layers  # the shared layers, not a copy
        assert torch.allclose(hidden_at(ref, sub, 1), hidden_at(base, sub, 1), atol=1e-6)
        assert not torch.allclose(hidden_at(model, sub, 1), hidden_at(base, sub, 1), atol=1e-3)
    # no second copy: the reference's parameters are the model's own tensors
    assert {id(p) for p in ref.parameters()} == {id(p) for p in model.parameters()}
    assert ref.config is model.config and ref.device == model.device


def test_reference_pass_runs_in_eval_mode_and_restores_everything():
    """With dropout in the model, the trained model is stochastic in train mode; the reference is
    deterministic and equals the base in eval mode. Modes, adapter flags and requires_grad (RMU
    leaves some adapters frozen) are exactly as before afterwards."""
    model = random_llama(attention_dropout=0.5)
    base = copy.deepcopy(model).eval()
    attach_lora(model, LoraConfig(r=4, dropout=0.3))
    _perturb(model)
    model.train()
    model.model.layers[0].eval()  # a mixed state must come back as it was
    frozen = next(p for n, p in adapter_parameters(model).items() if "layers.1" in n)
    frozen.requires_grad_(False)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    ref = disabled_adapter_reference(model)
    ids, att = _ids()
    with torch.no_grad():
        a = ref(input_ids=ids, attention_mask=att).logits
        b = ref(input_ids=ids, attention_mask=att).logits
        want = base(input_ids=ids, attention_mask=att).logits
    assert torch.equal(a, b) and torch.allclose(a, want, atol=1e-6)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert not any(layer.disable_adapters for _, layer in lora_layers(model))
    # eval() / train() / requires_grad_() on the reference leave the trained model alone
    ref.eval().requires_grad_(False)
    assert model.training and {n: p.requires_grad for n, p in model.named_parameters()} == grads
    with pytest.raises(AttributeError, match="read-only"):
        ref.config = None
    # an exception inside the pass restores the adapters too
    with pytest.raises(RuntimeError), adapters_disabled(model):
        raise RuntimeError("boom")
    assert not any(layer.disable_adapters for _, layer in lora_layers(model)) and model.training


def _batch(vocab: int = 64) -> dict[str, dict[str, torch.Tensor]]:
    """Sub-batches with 4 prompt positions labelled -100 and a right-padded row."""

    def sub(seed: int) -> dict[str, torch.Tensor]:
        ids, _ = _ids(seed, vocab)
        att = torch.ones_like(ids)
        att[2, -2:] = 0
        labels = ids.clone()
        labels[:, :4] = -100
        labels[att == 0] = -100
        return {"input_ids": ids, "attention_mask": att, "labels": labels}

    return {"forget": sub(1), "retain": sub(2), "forget_idk": sub(3), "retain_idk": sub(4)}


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("npo", {}),
        ("dpo", {}),
        ("undial", {}),
        ("rmu", {"layer": 1, "alpha": 5.0}),
        ("graddiff", {"retain_loss": "kl"}),  # the kl retain term reads the reference
        ("simnpo", {"retain_loss": "kl"}),
    ],
)
def test_every_reference_method_gets_the_base_as_its_reference(method, params):
    """Each method needing ``"ref"``: its loss with the adapter-disabled reference equals its loss
    with a separately held copy of the base model (what a full-weight run loads), with the adapter
    moved away from zero."""
    from obliviate.methods import build_method

    m = build_method(method, params)
    assert "ref" in m.requirements()
    model = random_llama()
    base = copy.deepcopy(model).eval().requires_grad_(False)
    info = attach_lora(model, LoraConfig(r=4))
    _perturb(model, std=0.2)
    ref = disabled_adapter_reference(model)
    batch = _batch()
    m.prepare(model, ref, batch)
    keep_adapter_trainable(model, info)
    twin = copy.deepcopy(m)  # RMU's direction and coefficient, fixed by prepare
    got = m.loss(model, batch, ref)
    want = twin.loss(model, batch, base)
    assert torch.isfinite(got) and torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    got.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_rmu_trains_only_the_adapters_of_its_modules():
    from obliviate.methods import build_method

    model = random_llama(num_hidden_layers=4)
    info = attach_lora(model, LoraConfig(r=2))
    rmu = build_method("rmu", {"layer": 2, "trainable_layers": [1, 2]})
    rmu.prepare(model, disabled_adapter_reference(model), _batch())
    keep_adapter_trainable(model, info)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == [
        f"model.layers.{i}.mlp.down_proj.lora_{ab}.default.weight" for i in (1, 2) for ab in "AB"
    ]
    # down_proj 64 → 32 at rank 2: 2·(64 + 32) per layer
    assert info["trainable_parameters"] == 2 * 2 * (64 + 32)


def test_rmu_module_without_an_adapter_is_a_one_line_error():
    from obliviate.methods import build_method

    model = random_llama()
    info = attach_lora(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    build_method("rmu", {"layer": 1}).prepare(model, disabled_adapter_reference(model), _batch())
    with pytest.raises(ConfigError, match="add down_proj to unlearn.lora.target_modules") as e:
        keep_adapter_trainable(model, info)
    assert "\n" not in str(e.value) and "trains only down_proj" in str(e.value)


def test_lora_is_refused_for_non_gradient_methods_and_with_a_mask():
    with pytest.raises(ConfigError, match="is a training-free method"):
        load_config("demo", ["unlearn.method=ssd", "unlearn.lora.r=4"])
    with pytest.raises(ConfigError, match="lora and unlearn.mask are both set"):
        load_config("demo", ["unlearn.lora.r=4", "unlearn.mask.fraction=0.1"])


# ------------------------------------------------------------------------------ saving


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return tiny_model_dir(tmp_path / "base")


def _trained(base_dir: Path, lora: LoraConfig):
    from obliviate.models.io import load_model, load_tokenizer

    model = load_model(str(base_dir), "float32", "cpu")
    info = attach_lora(model, lora)
    _perturb(model)
    model.eval()
    return model, load_tokenizer(str(base_dir)), info


def test_adapter_save_loads_through_load_artefact(base_dir, tmp_path):
    from safetensors import safe_open

    from obliviate.artefacts import ADAPTER, artefact_kind, base_of, check_artefact, load_artefact
    from obliviate.models.io import read_card
    from obliviate.runs import model_fingerprint

    before = model_fingerprint(str(base_dir))
    model, tok, info = _trained(base_dir, LoraConfig(r=4))
    ids, att = _ids(vocab=len(tok))
    want = model(input_ids=ids, attention_mask=att).logits.detach()
    card = {"stage": "unlearn", "method": "npo", "lora": info}
    # a relative source path is recorded absolute
    rel = Path(shutil.os.path.relpath(base_dir))
    out = save_lora(model, tok, str(rel), tmp_path / "model", card, LoraConfig(r=4))
    names = sorted(p.name for p in out.iterdir())
    assert "adapter_model.safetensors" in names and "adapter_config.json" in names
    assert "config.json" not in names and "model.safetensors" not in names
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base_dir.resolve())
    assert cfg["r"] == 4 and cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert len(keys) == 2 * 7 and all(k.startswith("base_model.model.model.layers.") for k in keys)
    assert artefact_kind(str(out)) == ADAPTER and base_of(str(out)) == str(base_dir.resolve())
    check_artefact(str(out))
    loaded, _ = load_artefact(str(out), "float32", "cpu")
    got = loaded(input_ids=ids, attention_mask=att).logits
    assert torch.allclose(got, want, atol=1e-5)
    c = read_card(out)
    assert c["artefact"] == ADAPTER and c["lora"]["r"] == 4 and c["adapter_parameters"] > 0
    assert "LoRA adapter" in (out / "README.md").read_text()
    assert model_fingerprint(str(base_dir)) == before  # the base dir is untouched


def test_merged_save_is_a_plain_model_with_the_same_logits(base_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from obliviate.artefacts import FULL_MODEL, artefact_kind
    from obliviate.models.io import read_card

    model, tok, info = _trained(base_dir, LoraConfig(r=4, save="merged"))
    ids, att = _ids(vocab=len(tok))
    adapted = model(input_ids=ids, attention_mask=att).logits.detach()
    out = save_lora(
        model, tok, str(base_dir), tmp_path / "model", {"lora": info}, LoraConfig(save="merged")
    )
    # in memory: no peft layer or attribute left, the same function as the adapted model
    assert not list(lora_layers(model)) and not hasattr(model, "peft_config")
    assert not any("lora" in n or "base_layer" in n for n, _ in model.named_parameters())
    merged = model(input_ids=ids, attention_mask=att).logits.detach()
    assert torch.allclose(merged, adapted, atol=1e-5)
    assert artefact_kind(str(out)) == FULL_MODEL and read_card(out)["artefact"] == FULL_MODEL
    assert not (out / "adapter_config.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert torch.allclose(reloaded(input_ids=ids, attention_mask=att).logits, merged, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_merged_state_from_gathered_weights_equals_the_in_place_merge(arch):
    """Under ZeRO-3 the model's own tensors are placeholders and the full weights come gathered:
    the merge computed from those (GPT-2: Conv1D, transposed) equals peft's in-place merge."""
    from obliviate.training.lora import merge_lora, merged_state

    model = _toy_model(arch)
    attach_lora(model, LoraConfig(r=4))
    _perturb(model)
    gathered = {k: v.detach().clone() for k, v in model.state_dict().items()}
    want = merge_lora(copy.deepcopy(model)).state_dict()
    got = merged_state(model, gathered)
    assert got.keys() == want.keys()
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)


@pytest.mark.parametrize("save", ["adapter", "merged"])
def test_save_reads_gathered_weights_when_given(base_dir, tmp_path, save):
    """``save_lora(..., state_dict=gathered)`` writes the gathered weights, not the model's own
    (here zeroed, as ZeRO-3 placeholders would be): the result loads with the trained function."""
    from obliviate.artefacts import load_artefact

    model, tok, info = _trained(base_dir, LoraConfig(r=4, save=save))
    ids, att = _ids(vocab=len(tok))
    want = model(input_ids=ids, attention_mask=att).logits.detach()
    gathered = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    out = save_lora(
        model, tok, str(base_dir), tmp_path / "m", {"lora": info}, LoraConfig(save=save), gathered
    )
    loaded, _ = load_artefact(str(out), "float32", "cpu")
    assert torch.allclose(loaded(input_ids=ids, attention_mask=att).logits, want, atol=1e-5)


def test_hub_id_source_is_recorded_as_given(base_dir):
    assert base_reference("org/model-7b") == "org/model-7b"
    assert base_reference(str(base_dir)) == str(base_dir.resolve())


# ------------------------------------------------------------------- checkpoints, resume


def _records(n: int, prefix: str):
    from obliviate.data.schema import QARecord

    return [QARecord(f"{prefix} question {i}?", f"answer {prefix} {i * 7} blue") for i in range(n)]


def test_resume_from_a_checkpoint_reproduces_the_adapter(tmp_path):
    """NPO under LoRA with ``save_every=2``: a run resumed from its step-4 checkpoint (the step-6
    one removed, as a kill would leave it) ends with the uninterrupted run's adapter, bit for bit
    — so the checkpoint holds the adapter and ``--resume`` loads it back (a resume that started
    the adapter from zero again would differ)."""
    from safetensors.torch import load_file

    from obliviate.models.tokenizer import train_bpe_tokenizer
    from obliviate.training.trainer import run_unlearning

    forget, retain = _records(8, "forget"), _records(16, "retain")
    tok = train_bpe_tokenizer([t for r in forget + retain for t in (r.question, r.answer)], 300)
    cfg = load_config(
        "demo",
        [
            "unlearn.method=npo",
            "unlearn.lora.r=4",
            "unlearn.lr=1e-2",
            "unlearn.epochs=3",
            "unlearn.batch_size=4",
            "unlearn.max_length=32",
            "unlearn.save_every=2",
        ],
    ).unlearn

    def fresh():
        m = random_llama(vocab_size=len(tok), pad_token_id=tok.pad_token_id)
        return m.train()

    work = tmp_path / "work"
    first = fresh()
    info = run_unlearning(first, tok, "unused", forget, retain, cfg, work, torch.device("cpu"))
    assert info["steps"] == 6 and info["lora"]["r"] == 4
    ckpts = sorted(p.name for p in work.glob("checkpoint-*"))
    assert ckpts == ["checkpoint-4", "checkpoint-6"]
    saved = load_file(str(work / "checkpoint-4" / "model.safetensors"))
    assert any(".lora_B.default." in k for k in saved)  # the adapter is in the checkpoint
    shutil.rmtree(work / "checkpoint-6")
    second = fresh()
    again = run_unlearning(
        second, tok, "unused", forget, retain, cfg, work, torch.device("cpu"), resume=True
    )
    assert again["steps"] == 6
    a, b = adapter_parameters(first), adapter_parameters(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # it did train
    base = random_llama(vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    for n, p in base.named_parameters():  # and the base stayed as it was
        q = dict(second.named_parameters())[n.replace("proj.weight", "proj.base_layer.weight")]
        assert torch.equal(p, q), n


def test_adapter_init_follows_unlearn_seed_not_the_process_history(tmp_path):
    """The adapter's random init (peft's lora_A) comes from ``unlearn.seed`` alone: a run after
    other random draws in the same process (a target trained there, an earlier seed) gives the
    adapter a fresh process would, so a cached result and its key agree; another seed differs."""
    from obliviate.models.tokenizer import train_bpe_tokenizer
    from obliviate.training.trainer import run_unlearning

    forget = _records(4, "forget")
    tok = train_bpe_tokenizer([t for r in forget for t in (r.question, r.answer)], 300)

    def adapter(seed: int, noise: int) -> dict[str, torch.Tensor]:
        cfg = load_config(
            "demo",
            [
                "unlearn.method=ga",
                "unlearn.lora.r=4",
                "unlearn.max_steps=1",
                "unlearn.batch_size=4",
                "unlearn.max_length=32",
                f"unlearn.seed={seed}",
            ],
        ).unlearn
        model = random_llama(vocab_size=len(tok), pad_token_id=tok.pad_token_id).train()
        torch.rand(noise)  # what the process drew before
        work = tmp_path / f"w{seed}-{noise}"
        run_unlearning(model, tok, "unused", forget, [], cfg, work, torch.device("cpu"))
        return adapter_parameters(model)

    a, b, c = adapter(0, 3), adapter(0, 1000), adapter(1, 3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if "lora_A" in k)


# ------------------------------------------------------------------------------ end to end

E2E = [
    "benchmark.n_authors=10",
    "benchmark.n_general=5",
    "benchmark.n_holdout=1",
    "model.tiny.hidden_size=64",
    "model.tiny.num_layers=2",
    "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=128",
    "model.tiny.vocab_size=400",
    "finetune.epochs=60",
    "finetune.lr=5e-3",
    "unlearn.epochs=4",
    "unlearn.batch_size=4",
    "unlearn.lora.r=8",
    "threads=1",
    "eval.cosine=false",
    "eval.entailment=false",
    "eval.max_new_tokens=8",
]
"""A 10-author benchmark and a 2-layer, 64-wide Llama trained until it knows its data (forget and
retain probability 0.99); LoRA rank 8 on every projection, 12 unlearning steps."""

LR = {"npo": 3e-3, "graddiff": 4e-3}
"""Measured on this model (forget / retain probability, target 0.99 / 0.99): NPO lr 3e-3
0.74 / 0.95 (4e-3: 0.41 / 0.78), GradDiff lr 4e-3 0.60 / 0.94 (3e-3: 0.86 / 0.98)."""


def _probs(path: str, cfg) -> tuple[float, float]:
    """Mean exp(−S̄) over the forget split and the first 40 retain records."""
    from obliviate import api
    from obliviate.artefacts import load_artefact
    from obliviate.eval.scoring import score_pairs

    bench = api.load_benchmark(cfg)
    model, tok = load_artefact(path, "float32", "cpu")

    def mean(records) -> float:
        pairs = [(r.question, r.answer) for r in records]
        s = score_pairs(model, tok, pairs)
        return sum(math.exp(-s[p].mean_nll) for p in pairs) / len(pairs)

    return mean(bench.forget), mean(bench.retain[:40])


@pytest.fixture(scope="module")
def e2e_target(tmp_path_factory) -> tuple[str, str, tuple[float, float]]:
    from obliviate import api

    cache = str(tmp_path_factory.mktemp("lora_cache"))
    cfg = load_config("demo", [*E2E, f"cache_dir={cache}"])
    api.setup_runtime(cfg)
    target = api.target_model(cfg)
    return cache, target, _probs(target, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["npo", "graddiff"])
def test_lora_unlearning_end_to_end(method, e2e_target, tmp_path, monkeypatch):
    """``api.unlearn`` under LoRA: only the source model is loaded (no reference copy for NPO),
    the base dir is untouched, the adapter dir forgets while keeping retain close to the target,
    and it evaluates through ``api.evaluate``."""
    from obliviate import api
    from obliviate.artefacts import ADAPTER, artefact_kind, base_of
    from obliviate.models import io
    from obliviate.models.io import read_card
    from obliviate.runs import model_fingerprint
    from obliviate.training import trainer

    cache, target, (t_forget, t_retain) = e2e_target
    before = model_fingerprint(target)
    loads: list[str] = []
    real = io._load
    monkeypatch.setattr(
        io, "_load", lambda name, *a, **k: loads.append(name) or real(name, *a, **k)
    )

    def no_copy(*a, **k):
        raise AssertionError("a reference copy was loaded under LoRA")

    monkeypatch.setattr(trainer, "load_frozen", no_copy)
    over = [*E2E, f"cache_dir={cache}", f"unlearn.method={method}", f"unlearn.lr={LR[method]}"]
    cfg = load_config("demo", [*over, f"run_dir={tmp_path / 'run'}"])
    out = api.unlearn(cfg)
    assert loads == [target]  # the model itself, once: the reference is that model, adapter off
    monkeypatch.undo()
    assert model_fingerprint(target) == before  # base weights unchanged on disk
    assert artefact_kind(out) == ADAPTER and base_of(out) == str(Path(target).resolve())
    card = read_card(out)
    assert card["lora"]["target_modules"] == default_targets(
        io.load_model(target, "float32", "cpu")
    )
    assert card["lora"]["trainable_parameters"] < 0.2 * card["lora"]["total_parameters"]
    assert ("ref" in card["requirements"]) is (method == "npo")
    forget, retain = _probs(out, cfg)
    assert forget < 0.85 * t_forget, f"{method}: forget {forget:.3f} vs target {t_forget:.3f}"
    assert retain >= 0.9 * t_retain, f"{method}: retain {retain:.3f} vs target {t_retain:.3f}"
    summary = api.evaluate(cfg, out, tmp_path / "eval")
    assert summary["forget_prob"] == pytest.approx(forget, abs=0.02)
    assert read_card(out)["evaluation"]["metrics"]["forget_prob"] == summary["forget_prob"]
    if method != "npo":
        return
    # the same run saved merged: a full model dir giving the adapter's function
    merged_cfg = load_config(
        "demo", [*over, "unlearn.lora.save=merged", f"run_dir={tmp_path / 'm'}"]
    )
    merged = api.unlearn(merged_cfg)
    assert artefact_kind(merged) == "full model" and read_card(merged)["lora"]["save"] == "merged"
    from obliviate.artefacts import load_artefact

    a, tok = load_artefact(out, "float32", "cpu")
    b, _ = load_artefact(merged, "float32", "cpu")
    ids, att = _ids(vocab=len(tok))
    assert torch.allclose(a(input_ids=ids, attention_mask=att).logits,
                          b(input_ids=ids, attention_mask=att).logits, atol=1e-5)  # fmt: skip
