"""A corpus of bad inputs, one per distinct failure, over every command: each must end in ONE
``error: <what> (<fix>)`` line on stderr (exit 2, or 3 for a run that diverged), with no
traceback and nothing half-written (run dir, ``--out`` dir, cache).

A case is ``(id, category, command, build)``; ``build(tmp_path)`` makes whatever the case needs
(corrupt model dirs, TOFU-format data dirs, config files) and returns the argv, the phrase(s) the
error line must contain and the expected exit code. Cases whose check is missing in ``src`` are
kept here as strict xfails: fixing the check turns them into an XPASS, the cue to drop the mark.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import traceback
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mini import MINI
from model_dirs import edit_json, rewrite_tensors, tiny_model_dir
from report_dirs import demo_dir

from obliviate.cli import COMMANDS, main
from obliviate.config import ExperimentConfig

TOP = "obliviate"
"""``command`` of a top-level case (no command, or an unknown one)."""

CATEGORIES = {
    "nonfinite": "1. non-finite settings and diverging runs",
    "model": "2. models that cannot be evaluated / trained",
    "run-dir": "3. run dirs, output dirs and the cache",
    "preflight": "4. inputs validated before heavy work",
    "misread": "5. inputs that would be silently misread",
    "code": "6. pickle weights and custom code",
    "cli": "7. command line and config syntax",
}

TOFU_DIR = Path(__file__).parent / "data" / "tofu_mini"


# --------------------------------------------------------------------------------------------
# the corpus


@dataclass
class Built:
    """What a case runs and expects: every phrase in ``needles`` appears in the error line."""

    argv: list[str]
    needles: tuple[str, ...]
    code: int = 2
    run_dir: Path | None = None
    """The run dir the command writes to (default ``tmp_path/run``), for the leftover check."""


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    command: str
    build: Callable[[Path], Built]
    xfail: str | None = None
    """Why the case fails today and where the fix belongs (a strict xfail)."""
    shared_cache: bool = False
    """Trains the MINI target: use the module's cache so it is trained once for all such cases."""
    root_skip: bool = False
    """Relies on file permissions, which root ignores."""
    subprocess: bool = False
    """Run through ``python -m obliviate`` rather than in-process."""


CASES: list[Case] = []


def case(category: str, command: str, **kw):
    assert category in CATEGORIES and command in (*COMMANDS, TOP)

    def add(build: Callable[[Path], Built]) -> Callable[[Path], Built]:
        CASES.append(Case(build.__name__.replace("_", "-"), category, command, build, **kw))
        return build

    return add


def built(argv: list[str], *needles: str, code: int = 2, run_dir: Path | None = None) -> Built:
    return Built(argv, needles, code, run_dir)


def run_arg(tmp: Path) -> str:
    return f"run_dir={tmp / 'run'}"


# --- helpers that make bad files ------------------------------------------------------------


def tiny_model(tmp: Path, name: str = "model", **config) -> Path:
    """A valid tiny HF Llama + BPE tokenizer dir (save_pretrained output), free to corrupt."""
    return tiny_model_dir(tmp / name, **config)


def with_nan(tensors: dict) -> dict:
    t = tensors["model.norm.weight"].clone()
    t[0] = float("nan")
    return {**tensors, "model.norm.weight": t}


def qa(i: int, who: str = "author") -> dict[str, str]:
    return {
        "question": f"Which city is {who} {i} from?",
        "answer": f"{who.title()} {i} is from Oslo.",
    }


def tofu_dir(
    tmp: Path,
    forget: list | None = None,
    retain: list | None = None,
    name: str = "data",
    raw: dict[str, bytes] | None = None,
) -> Path:
    """A TOFU-format dir: forget10.json / retain90.json as JSON lines (``raw``: exact file bytes)."""
    d = tmp / name
    d.mkdir()
    forget = [qa(i) for i in range(3)] if forget is None else forget
    retain = [qa(i, "writer") for i in range(6)] if retain is None else retain
    for split, rows in (("forget10", forget), ("retain90", retain)):
        (d / f"{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for fname, data in (raw or {}).items():
        (d / fname).write_bytes(data)
    return d


def tofu_args(tmp: Path, data: Path, model: Path | None = None) -> list[str]:
    model = model or tiny_model(tmp)
    return [*MINI, "benchmark.name=tofu", f"benchmark.path={data}", f"model.path={model}"]


def write_file(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def eval_model(tmp: Path, model: Path) -> list[str]:
    """eval of ``model`` with the MINI settings (no cosine / entailment), so that a missing check
    costs seconds, not a full evaluation; ``model.path`` (not --model) so no retain model trains."""
    return ["eval", *MINI, f"model.path={model}", run_arg(tmp)]


# --- 1. non-finite settings and diverging runs ----------------------------------------------


@case("nonfinite", "unlearn")
def gamma_nan(tmp):
    return built(["unlearn", "unlearn.params.gamma=nan", run_arg(tmp)], "unlearn.params.gamma=nan")


@case("nonfinite", "demo")
def beta_inf(tmp):
    return built(["demo", "unlearn.params.beta=inf", run_arg(tmp)], "unlearn.params.beta=inf")


@case("nonfinite", "finetune")
def finetune_lr_nan(tmp):
    return built(["finetune", "finetune.lr=.nan", run_arg(tmp)], "finetune.lr=nan")


@case("nonfinite", "eval")
def mia_k_nan(tmp):
    return built(["eval", "eval.mia_k=nan", run_arg(tmp)], "eval.mia_k=nan")


@case("nonfinite", "unlearn", shared_cache=True)
def gamma_overflows_the_loss(tmp):
    argv = ["unlearn", *MINI, "unlearn.params.gamma=1e38", run_arg(tmp)]
    return built(argv, "unlearning (npo) diverged", "no model was written", code=3)


@case("nonfinite", "unlearn", shared_cache=True, subprocess=True)
def float16_lr_10(tmp):
    argv = ["unlearn", *MINI, "model.dtype=float16", "unlearn.lr=10", run_arg(tmp)]
    return built(argv, "diverged", "lower unlearn.lr", code=3)


@case("nonfinite", "unlearn", shared_cache=True)
def unlearn_grad_norm_bound(tmp):
    argv = ["unlearn", *MINI, "unlearn.abort_grad_norm=1e-6", run_arg(tmp)]
    return built(argv, "diverged", "gradient norm", "unlearn.abort_grad_norm=1e-06", code=3)


@case(
    "nonfinite",
    "finetune",
    shared_cache=True,
)
def finetune_diverges(tmp):
    argv = ["finetune", *MINI, "finetune.lr=10", "finetune.abort_grad_norm=1e-6", run_arg(tmp)]
    return built(argv, "fine-tuning the target model diverged", "gradient norm", code=3)


@case("nonfinite", "demo", shared_cache=True)
def demo_unlearning_diverges(tmp):
    argv = ["demo", *MINI, "demo.methods=[ga]", "unlearn.abort_grad_norm=1e-6", run_arg(tmp)]
    return built(argv, "unlearning (ga) diverged", "gradient norm", code=3)


# --- 2. models that cannot be evaluated / trained -------------------------------------------


@case("model", "eval")
def eval_nan_weights(tmp):
    model = tiny_model(tmp)
    rewrite_tensors(model, with_nan)
    return built(eval_model(tmp, model), "has non-finite weights", "model.norm.weight")


@case("model", "unlearn")
def unlearn_from_nan_weights(tmp):
    model = tiny_model(tmp)
    rewrite_tensors(model, with_nan)
    argv = ["unlearn", *MINI, f"model.path={model}", run_arg(tmp)]
    return built(argv, "has non-finite weights")


@case("model", "eval")
def reference_model_nan_weights(tmp):
    good, bad = tiny_model(tmp), tiny_model(tmp, "reference")
    rewrite_tensors(bad, with_nan)
    argv = [*eval_model(tmp, good), f"eval.reference_model={bad}"]
    return built(argv, "has non-finite weights", str(bad))


@case("model", "eval")
def missing_weight(tmp):
    model = tiny_model(tmp)
    rewrite_tensors(model, lambda t: {k: v for k, v in t.items() if "o_proj" not in k})
    return built(eval_model(tmp, model), "is missing 1 weight(s)", "o_proj")


@case("model", "eval")
def unknown_model_type(tmp):
    model = tiny_model(tmp)
    edit_json(model / "config.json", model_type="no_such_arch")
    return built(eval_model(tmp, model), "does not know its config.json model_type")


def wrapper_over(tmp: Path, base: Path) -> Path:
    """An ECO wrapper dir over ``base``, written the way ``obliviate unlearn`` writes one."""
    import torch

    from obliviate.artefacts import load_artefact, save_wrapper
    from obliviate.models.eco_wrapper import ECOWrapper

    model, tok = load_artefact(str(base), "float32", "cpu")
    h = model.config.hidden_size
    tensors = {
        "clf_weight": torch.zeros(h),
        "clf_bias": torch.zeros(1),
        "feat_mean": torch.zeros(h),
        "feat_scale": torch.ones(h),
    }
    settings = {
        "threshold": 0.5,
        "sigma": 1.0,
        "noise_seed": 0,
        "embed_std": 1.0,
        "feature_layer": None,
    }
    wrapper = ECOWrapper.restore(model, settings, tensors)
    return save_wrapper(wrapper, tok, str(base), tmp / "wrapped", {"method": "eco"})


@case("model", "eval")
def wrapper_base_deleted(tmp):
    base = tiny_model(tmp, "base")
    wrapped = wrapper_over(tmp, base)
    shutil.rmtree(base)
    return built(eval_model(tmp, wrapped), "base model of wrapper", "is gone")


@case("model", "eval")
def wrapper_base_changed(tmp):
    base = tiny_model(tmp, "base")
    wrapped = wrapper_over(tmp, base)
    rewrite_tensors(base, lambda t: {k: v * 2 for k, v in t.items()})
    return built(eval_model(tmp, wrapped), "has changed since the wrapper was made")


@case("preflight", "eval")
def wrapper_with_lm_eval_tasks(tmp):
    wrapped = wrapper_over(tmp, tiny_model(tmp, "base"))
    argv = [*eval_model(tmp, wrapped), "eval.lm_eval_tasks=[mmlu]"]
    return built(argv, "needs a full model dir", "wrapper")


@case("misread", "unlearn")
def mask_on_a_training_free_method(tmp):
    argv = ["unlearn", *MINI, "unlearn.method=ssd", "unlearn.mask.fraction=0.2", run_arg(tmp)]
    return built(argv, "unlearn.mask is set but unlearn.method=ssd is a training-free method")


@case("preflight", "unlearn")
def mask_path_missing(tmp):
    argv = ["unlearn", *MINI, f"unlearn.mask.path={tmp / 'nope.safetensors'}", run_arg(tmp)]
    return built(argv, "unlearn.mask.path")


@case("nonfinite", "unlearn")
def ssd_alpha_not_positive(tmp):
    argv = ["unlearn", *MINI, "unlearn.method=ssd", "unlearn.params.alpha=0", run_arg(tmp)]
    return built(argv, "unlearn.params.alpha=0", "out of range")


@case("model", "eval")
def not_a_causal_lm(tmp):
    from transformers import DistilBertConfig, DistilBertModel

    model = tiny_model(tmp)
    for f in ("config.json", "model.safetensors"):
        (model / f).unlink()
    cfg = DistilBertConfig(vocab_size=300, dim=16, hidden_dim=32, n_layers=1, n_heads=2)
    DistilBertModel(cfg).save_pretrained(model)
    return built(eval_model(tmp, model), str(model))


@case(
    "model",
    "eval",
)
def tokenizer_larger_than_vocab(tmp):
    model = tiny_model(tmp, vocab_size=64)
    return built(eval_model(tmp, model), "vocab")


@case("model", "eval")
def eval_device_cuda_without_gpu(tmp):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: device=cuda is valid here")
    argv = [*eval_model(tmp, tiny_model(tmp)), "device=cuda"]
    return built(argv, "device=cuda but no CUDA GPU is visible")


# --- 3. run dirs, output dirs and the cache -------------------------------------------------


@case("run-dir", "unlearn")
def run_dir_under_a_file(tmp):
    f = write_file(tmp / "afile", "x")
    return built(["unlearn", f"run_dir={f / 'run'}"], "cannot be created", run_dir=f / "run")


@case("run-dir", "eval")
def run_dir_is_a_file(tmp):
    f = write_file(tmp / "afile", "x")
    return built(["eval", f"run_dir={f}"], f"run_dir {f} is a file", run_dir=f)


@case("run-dir", "unlearn", root_skip=True)
def run_dir_parent_unwritable(tmp):
    parent = tmp / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    run = parent / "run"
    return built(["unlearn", f"run_dir={run}"], "cannot be created", run_dir=run)


@case("run-dir", "finetune", root_skip=True)
def run_dir_unwritable(tmp):
    run = tmp / "run"
    run.mkdir()
    run.chmod(0o500)
    return built(["finetune", run_arg(tmp)], "is not writable")


@case("run-dir", "unlearn")
def unlearn_finished_run(tmp):
    (tmp / "run" / "model").mkdir(parents=True)
    return built(["unlearn", run_arg(tmp)], "already holds results", "--overwrite")


@case("run-dir", "eval")
def eval_finished_run(tmp):
    write_file(tmp / "run" / "summary.json", "{}")
    return built(["eval", run_arg(tmp)], "already holds results", "--overwrite")


@case("run-dir", "generate")
def generate_out_under_a_file(tmp):
    f = write_file(tmp / "afile", "x")
    return built(["generate", "--out", str(f / "bench")], "cannot write to")


@case("run-dir", "unlearn")
def run_dir_held_by_a_live_process(tmp):
    stage = tmp / "run" / ".partial-unlearn"
    write_file(stage / "pid", f"{os.getppid()}\n")  # alive, and not this process
    return built(["unlearn", run_arg(tmp)], "another obliviate process", "is writing")


@case("run-dir", "unlearn", shared_cache=True)
def resume_with_other_settings(tmp):
    work = tmp / "run" / ".partial-unlearn" / "work"
    write_file(work / "checkpoints" / "checkpoint-2" / "COMPLETE", "ok\n")
    write_file(work / "key.json", json.dumps({"unlearn": {"lr": 1}}))
    argv = ["unlearn", *MINI, run_arg(tmp), "--resume"]
    return built(argv, "--resume: the settings differ", "drop --resume")


@case(
    "run-dir",
    "unlearn",
    subprocess=True,
)
def cache_dir_is_a_file(tmp):
    f = write_file(tmp / "afile", "x")
    return built(["unlearn", *MINI, f"cache_dir={f}", run_arg(tmp)], "cache_dir")


@case(
    "run-dir",
    "finetune",
    root_skip=True,
)
def cache_dir_unwritable(tmp):
    cache = tmp / "locked-cache"
    cache.mkdir()
    cache.chmod(0o500)
    return built(["finetune", *MINI, f"cache_dir={cache}", run_arg(tmp)], "cache_dir")


# --- 4. inputs validated before heavy work --------------------------------------------------


@case("preflight", "eval", subprocess=True)
def garbage_safetensors(tmp):
    model = tiny_model(tmp)
    f = model / "model.safetensors"
    f.write_bytes(b"\xff" * 8 + f.read_bytes()[8:])
    return built(eval_model(tmp, model), "garbage header", "model.safetensors")


@case("preflight", "unlearn")
def truncated_safetensors(tmp):
    model = tiny_model(tmp)
    f = model / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    argv = ["unlearn", *MINI, f"model.path={model}", run_arg(tmp)]
    return built(argv, "is truncated")


@case("preflight", "eval")
def size_mismatched_config(tmp):
    model = tiny_model(tmp)
    edit_json(model / "config.json", intermediate_size=48)
    return built(eval_model(tmp, model), "do not match config.json's shapes")


@case("preflight", "unlearn")
def tokenizer_without_eos_or_pad(tmp):
    model = tiny_model(tmp)
    edit_json(model / "tokenizer_config.json", eos_token=None, pad_token=None)
    argv = ["unlearn", *MINI, f"model.path={model}", run_arg(tmp)]
    return built(argv, "has neither an EOS nor a pad token", "eos_token")


@case("preflight", "eval")
def tokenizer_json_not_json(tmp):
    model = tiny_model(tmp)
    (model / "tokenizer.json").write_text("{ not json")
    return built(eval_model(tmp, model), "tokenizer.json is not valid JSON")


@case("preflight", "eval")
def sharded_model_missing_shard(tmp):
    import torch
    from safetensors.torch import load_file, save_file

    model = tiny_model(tmp)
    tensors = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half]}
    shards["model-00002-of-00002.safetensors"] = names[half:]
    for fname, keys in shards.items():
        save_file({k: torch.clone(tensors[k]) for k in keys}, model / fname, {"format": "pt"})
    weight_map = {k: f for f, keys in shards.items() for k in keys}
    write_file(model / "model.safetensors.index.json", json.dumps({"weight_map": weight_map}))
    (model / "model-00002-of-00002.safetensors").unlink()
    return built(eval_model(tmp, model), "names shard 'model-00002-of-00002.safetensors'")


@case("preflight", "eval")
def config_yaml_not_utf8(tmp):
    f = write_file(tmp / "exp.yaml", b"run_dir: r\nseed: 1 # caf\xe9\n")
    return built(["eval", str(f), run_arg(tmp)], "line 2 is not UTF-8", "save the file as UTF-8")


@case("preflight", "unlearn")
def config_yaml_invalid(tmp):
    f = write_file(tmp / "exp.yaml", "unlearn:\n  lr: [1e-4\n")
    return built(["unlearn", str(f), run_arg(tmp)], "is not valid YAML")


@case(
    "preflight",
    "finetune",
)
def config_is_a_directory(tmp):
    (tmp / "confdir").mkdir()
    return built(["finetune", str(tmp / "confdir"), run_arg(tmp)], "is a directory")


@case("preflight", "unlearn")
def data_file_not_utf8(tmp):
    row = '{"question": "Who is Ren\xe9e?", "answer": "A writer."}\n'.encode("latin-1")
    data = tofu_dir(tmp, raw={"retain90.json": row})
    argv = ["unlearn", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "retain90.json is not UTF-8")


@case("preflight", "eval")
def data_jsonl_malformed(tmp):
    good = json.dumps(qa(0)) + "\n"
    data = tofu_dir(tmp, raw={"forget10.json": (good + "{broken\n").encode()})
    argv = ["eval", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "forget10.json is not valid JSON lines (line 2")


@case("preflight", "unlearn")
def data_missing_answer(tmp):
    data = tofu_dir(tmp, forget=[qa(0), {"question": "Who?"}])
    argv = ["unlearn", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "forget10.json line 2 lacks", "'answer'")


@case("preflight", "eval")
def data_missing_split(tmp):
    data = tofu_dir(tmp)
    (data / "retain90.json").unlink()
    argv = ["eval", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "split 'retain90' not found")


@case("preflight", "unlearn")
def data_empty_split(tmp):
    data = tofu_dir(tmp, forget=[])
    argv = ["unlearn", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "split 'forget10'", "holds no records")


@case("preflight", "eval")
def data_parquet_corrupt(tmp):
    data = tofu_dir(tmp)
    (data / "forget10.json").unlink()
    write_file(data / "forget10.parquet", b"PAR1 this is not parquet")
    argv = ["eval", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "forget10.parquet is not a readable parquet file")


@case("preflight", "finetune")
def benchmark_path_missing(tmp):
    argv = ["finetune", "benchmark.name=tofu", f"benchmark.path={tmp / 'nope'}", run_arg(tmp)]
    return built(argv, "benchmark directory not found", "benchmark.path")


@case("preflight", "unlearn")
def benchmark_path_is_a_file(tmp):
    f = write_file(tmp / "forget10.json", json.dumps(qa(0)) + "\n")
    argv = ["unlearn", "benchmark.name=tofu", f"benchmark.path={f}", "model.path=org/m"]
    return built([*argv, run_arg(tmp)], "is not a directory")


@case("preflight", "eval")
def muse_dir_without_data(tmp):
    (tmp / "muse").mkdir()
    argv = ["eval", "benchmark.name=muse", f"benchmark.path={tmp / 'muse'}", run_arg(tmp)]
    return built(argv, "holds no MUSE data")


@case("preflight", "unlearn")
def unlearn_on_evaluation_only_benchmark(tmp):
    muse = Path(__file__).parent / "data" / "muse_mini"
    argv = ["unlearn", "benchmark.name=muse", f"benchmark.path={muse}", "model.path=org/m"]
    return built([*argv, run_arg(tmp)], "has no training data, so it cannot unlearn")


@case("preflight", "eval")
def model_dir_without_tokenizer(tmp):
    model = tiny_model(tmp)
    for f in model.glob("tokenizer*"):
        f.unlink()
    (model / "special_tokens_map.json").unlink(missing_ok=True)
    return built(eval_model(tmp, model), "could not load a tokenizer")


@case("preflight", "eval")
def model_config_json_invalid(tmp):
    model = tiny_model(tmp)
    (model / "config.json").write_text('{"model_type": ')
    return built(eval_model(tmp, model), "config.json is not valid JSON")


@case("preflight", "eval")
def model_path_is_a_file(tmp):
    f = write_file(tmp / "model.safetensors", b"x")
    return built(
        ["eval", *MINI, "--model", str(f), run_arg(tmp)], "is a file, not a model directory"
    )


@case("preflight", "unlearn")
def data_json_list_invalid(tmp):
    data = tofu_dir(tmp, raw={"retain90.json": b'[{"question": "q?", "answer": "a"},\n'})
    argv = ["unlearn", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "retain90.json is not valid JSON (line")


@case("preflight", "unlearn")
def data_row_not_an_object(tmp):
    data = tofu_dir(tmp, forget=[qa(0), ["Who?", "Nobody."]])
    argv = ["unlearn", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "forget10.json line 2 is not a JSON object")


@case("preflight", "eval", root_skip=True)
def data_file_unreadable(tmp):
    data = tofu_dir(tmp)
    (data / "retain90.json").chmod(0)
    argv = ["eval", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "retain90.json cannot be read")


@case("preflight", "eval")
def data_perturbed_answer_not_strings(tmp):
    data = tofu_dir(tmp, forget=[{**qa(0), "perturbed_answer": [1, 2]}])
    argv = ["eval", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "perturbed_answer must be a list of strings")


@case(
    "preflight",
    "eval",
)
def muse_row_without_field(tmp):
    muse = tmp / "muse"
    write_file(muse / "verbmem" / "forget.json", json.dumps([{"prompt": "Once upon"}]))
    argv = ["eval", "benchmark.name=muse", f"benchmark.path={muse}", run_arg(tmp)]
    return built(argv, "verbmem", "lacks a string field 'gt'")


@case(
    "preflight",
    "eval",
)
def eval_muse_without_model(tmp):
    muse = Path(__file__).parent / "data" / "muse_mini"
    argv = ["eval", "benchmark.name=muse", f"benchmark.path={muse}", run_arg(tmp)]
    return built(argv, "--model")


@case("preflight", "generate")
def generate_out_is_a_file(tmp):
    f = write_file(tmp / "afile", "x")
    return built(["generate", "--out", str(f)], "is not an empty directory")


@case("preflight", "generate")
def generate_out_not_empty(tmp):
    write_file(tmp / "bench" / "keep.txt", "mine")
    return built(["generate", "--out", str(tmp / "bench")], "is not an empty directory")


@case("preflight", "eval")
def retain_eval_missing(tmp):
    argv = [*eval_model(tmp, tiny_model(tmp)), f"eval.retain_eval={tmp / 'nothing'}"]
    return built(argv, "no saved evaluation found", "eval.retain_eval")


@case(
    "preflight",
    "eval",
)
def retain_eval_corrupt(tmp):
    ref = tmp / "retain-run"
    write_file(ref / "eval" / "forget.json", "[{not json")
    argv = [*eval_model(tmp, tiny_model(tmp)), f"eval.retain_eval={ref}"]
    return built(argv, "forget.json")


@case(
    "preflight",
    "eval",
)
def retain_eval_rows_without_question(tmp):
    ref = tmp / "retain-run"
    write_file(ref / "eval" / "forget.json", json.dumps([{"truth_ratio": 0.5}]))
    argv = [*eval_model(tmp, tiny_model(tmp)), f"eval.retain_eval={ref}"]
    return built(argv, "forget.json")


@case(
    "preflight",
    "eval",
)
def lm_eval_unknown_task(tmp):
    argv = [*eval_model(tmp, tiny_model(tmp)), "eval.lm_eval_tasks=[no_such_task_xyz]"]
    return built(argv, "no_such_task_xyz")


@case(
    "preflight",
    "demo",
)
def demo_method_config_conflict(tmp):
    argv = ["demo", *MINI, "demo.methods=[ga]", "unlearn.method=rmu", run_arg(tmp)]
    return built(argv, "cannot derive ga's config", "unlearn.method=rmu")


@case("preflight", "demo")
def demo_real_benchmark_without_model(tmp):
    argv = ["demo", *MINI, "benchmark.name=tofu", f"benchmark.path={TOFU_DIR}", run_arg(tmp)]
    return built(argv, "model.path is unset but benchmark.name is not synthetic")


# --- 5. inputs that would be silently misread -----------------------------------------------


@case("misread", "unlearn")
def duplicate_yaml_key(tmp):
    f = write_file(tmp / "exp.yaml", "unlearn:\n  lr: 1.0e-4\n  epochs: 2\n  lr: 1.0e-3\n")
    return built(["unlearn", str(f), run_arg(tmp)], "key 'lr' is given twice", "line 2")


@case("misread", "unlearn")
def duplicate_override_key(tmp):
    argv = ["unlearn", "unlearn.params={beta: 0.1, beta: 0.5}", run_arg(tmp)]
    return built(argv, "gives the key 'beta' twice")


@case("misread", "unlearn")
def forget_retain_overlap(tmp):
    forget = [qa(i) for i in range(3)]
    data = tofu_dir(tmp, forget=forget, retain=[qa(i, "writer") for i in range(4)] + forget[:1])
    argv = ["unlearn", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "forget and retain overlap: 1 of 3", "benchmark.allow_overlap=true")


@case("misread", "eval")
def retain_eval_of_another_forget_set(tmp):
    ref = tmp / "retain-run"
    write_file(ref / "eval" / "forget.json", json.dumps([{**qa(0), "truth_ratio": 0.5}]))
    argv = [*eval_model(tmp, tiny_model(tmp)), f"eval.retain_eval={ref}"]
    return built(argv, "was computed on a different forget set")


@case("misread", "unlearn")
def retain_params_without_retain_loss(tmp):
    argv = ["unlearn", "unlearn.method=ga", "unlearn.params.retain_params={beta: 1}"]
    return built([*argv, run_arg(tmp)], "retain_params is set but", "retain_loss is null")


@case(
    "misread",
    "unlearn",
)
def retain_params_for_a_term_without_params(tmp):
    argv = ["unlearn", "unlearn.method=npo", "unlearn.params.retain_params={beta: 1}"]
    return built([*argv, run_arg(tmp)], "unlearn.params.retain_params.beta")


@case(
    "misread",
    "finetune",
    shared_cache=True,
)
def finetune_ignores_model_path(tmp):
    argv = ["finetune", *MINI, f"model.path={tiny_model(tmp)}", run_arg(tmp)]
    return built(argv, "model.path")


@case(
    "misread",
    "unlearn",
    shared_cache=True,
)
def empty_run_dir(tmp):
    return built(["unlearn", *MINI, "run_dir="], "run_dir")


@case(
    "misread",
    "eval",
)
def perturbed_split_of_other_questions(tmp):
    other = [{**qa(i, "poet"), "perturbed_answer": ["No.", "Yes."]} for i in range(3)]
    data = tofu_dir(tmp, raw={"forget10_perturbed.json": json.dumps(other).encode()})
    argv = ["eval", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "forget10_perturbed")


@case("misread", "unlearn")
def param_of_another_method(tmp):
    argv = ["unlearn", "unlearn.method=ga", "unlearn.params.beta=0.5", run_arg(tmp)]
    return built(argv, "unlearn.params.beta")


@case("misread", "unlearn")
def per_method_selects_method(tmp):
    argv = ["unlearn", "unlearn.per_method.npo.method=ga", run_arg(tmp)]
    return built(argv, "unlearn.per_method.npo.method cannot be set per method")


@case("misread", "eval")
def config_top_level_not_mapping(tmp):
    f = write_file(tmp / "exp.yaml", "- unlearn.lr=1e-4\n")
    return built(["eval", str(f), run_arg(tmp)], "must hold a mapping at the top level")


@case("misread", "finetune")
def section_given_a_scalar(tmp):
    return built(["finetune", "finetune=5", run_arg(tmp)], "finetune must be a mapping")


@case("misread", "generate")
def benchmark_path_ignored_by_synthetic(tmp):
    argv = ["generate", f"benchmark.path={TOFU_DIR}", "--out", str(tmp / "bench")]
    return built(argv, "benchmark.path", "benchmark.name")


@case("misread", "unlearn")
def split_in_two_formats(tmp):
    data = tofu_dir(tmp)
    write_file(data / "forget10.jsonl", json.dumps(qa(9, "poet")) + "\n")
    argv = ["unlearn", *tofu_args(tmp, data), run_arg(tmp)]
    return built(argv, "forget10.json", "forget10.jsonl")


# --- 6. pickle weights and custom code ------------------------------------------------------


@case("code", "eval")
def pickle_only_weights(tmp):
    import torch
    from safetensors.torch import load_file

    model = tiny_model(tmp)
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    return built(eval_model(tmp, model), "only pickle weights", "model.allow_pickle=true")


@case("code", "eval")
def pt_file_even_with_allow_pickle(tmp):
    model = tiny_model(tmp)
    (model / "model.safetensors").rename(model / "weights.pt")
    argv = [*eval_model(tmp, model), "model.allow_pickle=true"]
    return built(argv, "no pytorch_model.bin")


@case("code", "unlearn")
def auto_map_custom_code(tmp):
    model = tiny_model(tmp)
    auto_map = {"AutoConfig": "modeling.MyConfig", "AutoModelForCausalLM": "modeling.MyLM"}
    edit_json(model / "config.json", model_type="my_custom_lm", auto_map=auto_map)
    write_file(model / "modeling.py", "raise SystemExit('remote code ran')\n")
    argv = ["unlearn", *MINI, f"model.path={model}", run_arg(tmp)]
    return built(argv, "needs custom code", "trust_remote_code")


@case("code", "eval")
def tokenizer_custom_code(tmp):
    model = tiny_model(tmp)
    edit_json(model / "config.json", model_type="my_custom_lm")
    edit_json(
        model / "tokenizer_config.json",
        tokenizer_class="MyTokenizer",
        auto_map={"AutoTokenizer": ["tok.MyTokenizer", None]},
    )
    return built(eval_model(tmp, model), "tokenizer that needs custom code", "trust_remote_code")


@case("code", "eval")
def weights_file_outside_model_dir(tmp):
    model = tiny_model(tmp)
    shutil.copy(model / "model.safetensors", tmp / "elsewhere.safetensors")
    edit_json(model / "config.json", transformers_weights="../elsewhere.safetensors")
    return built(eval_model(tmp, model), "transformers_weights", "which is not in")


# --- 7. command line and config syntax ------------------------------------------------------


@case("cli", TOP, subprocess=True)
def unknown_command(tmp):
    return built(["frobnicate"], "unknown command 'frobnicate'", "choose one of demo")


@case("cli", TOP)
def top_level_unknown_flag(tmp):
    return built(["--bogus"], "'--bogus'")


@case("cli", TOP)
def no_command(tmp):
    return built([], "no command")


@case("cli", "methods")
def methods_unknown_flag(tmp):
    return built(["methods", "--bogus"], "unrecognized arguments: --bogus", "obliviate methods")


@case("cli", "metrics")
def metrics_positional(tmp):
    return built(["metrics", "rouge"], "unrecognized arguments: rouge", "obliviate metrics")


@case("cli", "benchmarks")
def benchmarks_flag_of_another_command(tmp):
    return built(["benchmarks", "--overwrite"], "unrecognized arguments: --overwrite")


@case("cli", "configs")
def configs_override(tmp):
    return built(["configs", run_arg(tmp)], "unrecognized arguments: run_dir=")


@case("cli", "eval")
def eval_resume(tmp):
    return built(["eval", "--resume", run_arg(tmp)], "unrecognized arguments: --resume")


@case("cli", "eval")
def eval_model_flag_without_value(tmp):
    return built(["eval", "--model"], "argument --model: expected one argument")


@case("cli", "finetune")
def finetune_bad_split(tmp):
    return built(["finetune", "--split", "forget", run_arg(tmp)], "invalid choice: 'forget'")


@case("cli", "generate")
def generate_without_out(tmp):
    return built(["generate", run_arg(tmp)], "the following arguments are required: --out")


@case("cli", "unlearn")
def override_without_key(tmp):
    return built(["unlearn", "=x", run_arg(tmp)], "override '=x' is not key=value")


@case("cli", "unlearn")
def config_file_not_found(tmp):
    return built(["unlearn", "no_such_config", run_arg(tmp)], "config file not found")


@case("cli", "unlearn")
def unknown_key_did_you_mean(tmp):
    argv = ["unlearn", "unlearn.lrr=1e-4", run_arg(tmp)]
    return built(argv, "unknown config field unlearn.lrr", "did you mean unlearn.lr?")


@case("cli", "finetune")
def wrong_type_integer(tmp):
    argv = ["finetune", "finetune.batch_size=abc", run_arg(tmp)]
    return built(argv, "finetune.batch_size must be an integer")


@case("cli", "eval")
def wrong_type_boolean(tmp):
    return built(["eval", "eval.cosine=maybe", run_arg(tmp)], "eval.cosine must be true or false")


@case("cli", "unlearn")
def negative_lr(tmp):
    return built(["unlearn", "unlearn.lr=-1", run_arg(tmp)], "unlearn.lr=-1", "out of range")


@case("cli", "unlearn")
def zero_epochs(tmp):
    argv = ["unlearn", "unlearn.epochs=0", run_arg(tmp)]
    return built(argv, "unlearn.epochs is 0 and unlearn.max_steps unset")


@case("cli", "eval")
def empty_metric_list(tmp):
    return built(["eval", "eval.metrics=[]", run_arg(tmp)], "eval.metrics is empty")


@case("cli", "unlearn")
def unknown_retain_loss(tmp):
    argv = ["unlearn", "unlearn.params.retain_loss=l2", run_arg(tmp)]
    return built(argv, "unlearn.params.retain_loss='l2' is unknown")


@case("cli", "unlearn")
def override_mapping_unclosed(tmp):
    argv = ["unlearn", "unlearn.params={beta: 0.5", run_arg(tmp)]
    return built(argv, "unlearn.params must be a mapping")


@case("cli", "finetune")
def unknown_forget_split(tmp):
    argv = ["finetune", "benchmark.forget_split=forget20", run_arg(tmp)]
    return built(argv, "benchmark.forget_split='forget20' is not one of")


@case(
    "cli",
    "finetune",
)
def negative_training_seed(tmp):
    argv = ["finetune", *MINI, "finetune.seed=-1", run_arg(tmp)]
    return built(argv, "finetune.seed=-1")


@case(
    "cli",
    "demo",
)
def negative_tiny_width(tmp):
    argv = ["demo", *MINI, "model.tiny.intermediate_size=-1", run_arg(tmp)]
    return built(argv, "model.tiny.intermediate_size=-1")


@case("cli", "finetune")
def zero_batch_size(tmp):
    argv = ["finetune", "finetune.batch_size=0", run_arg(tmp)]
    return built(argv, "finetune.batch_size=0 is out of range")


@case("cli", "unlearn")
def unknown_method(tmp):
    return built(["unlearn", "unlearn.method=forgetall", run_arg(tmp)], "forgetall")


@case("cli", "demo")
def demo_unknown_method(tmp):
    argv = ["demo", "demo.methods=[npo, forgetall]", run_arg(tmp)]
    return built(argv, "demo.methods[1]", "forgetall")


@case("cli", "eval")
def unknown_metric(tmp):
    argv = ["eval", "eval.metrics=[rouge_l_recal]", run_arg(tmp)]
    return built(argv, "unknown metric 'rouge_l_recal'")


@case("cli", "generate")
def unknown_benchmark(tmp):
    argv = ["generate", "benchmark.name=tofuu", "--out", str(tmp / "bench")]
    return built(argv, "benchmark.name='tofuu' is not a known benchmark")


@case("cli", "unlearn")
def unknown_device(tmp):
    return built(["unlearn", "device=tpu", run_arg(tmp)], "device='tpu' is not one of")


@case("cli", "generate")
def generate_too_few_authors(tmp):
    argv = ["generate", "benchmark.n_authors=3", "--out", str(tmp / "bench")]
    return built(argv, "benchmark.n_authors=3 is out of range")


@case("cli", "demo")
def demo_heads_do_not_divide_width(tmp):
    argv = ["demo", "model.tiny.hidden_size=30", "model.tiny.num_heads=4", run_arg(tmp)]
    return built(argv, "is not divisible by model.tiny.num_heads=4")


# --- scale and reproducibility: LoRA, evaluation during training, seeds, sweeps ---------------


@case("misread", "unlearn")
def lora_on_a_training_free_method(tmp):
    argv = ["unlearn", *MINI, "unlearn.method=ssd", "unlearn.lora.r=4", run_arg(tmp)]
    return built(argv, "unlearn.lora is set", "is a training-free method")


@case("nonfinite", "unlearn")
def lora_rank_zero(tmp):
    return built(["unlearn", *MINI, "unlearn.lora.r=0", run_arg(tmp)], "unlearn.lora.r=0")


@case("cli", "unlearn")
def lora_save_unknown(tmp):
    argv = ["unlearn", *MINI, "unlearn.lora.save=both", run_arg(tmp)]
    return built(argv, "unlearn.lora.save", "adapter, merged")


@case("misread", "unlearn")
def lora_with_a_mask(tmp):
    argv = ["unlearn", *MINI, "unlearn.lora.r=4", "unlearn.mask.fraction=0.1", run_arg(tmp)]
    return built(argv, "unlearn.lora and unlearn.mask are both set")


@case("preflight", "unlearn", shared_cache=True)
def lora_target_module_missing(tmp):
    argv = ["unlearn", *MINI, "unlearn.lora.target_modules=[q_prj]", run_arg(tmp)]
    return built(argv, "q_prj", "LlamaForCausalLM does not have")


@case("preflight", "unlearn", shared_cache=True)
def lora_rmu_module_without_adapter(tmp):
    argv = [
        "unlearn",
        *MINI,
        "unlearn.method=rmu",
        "unlearn.lora.target_modules=[q_proj]",
        run_arg(tmp),
    ]
    return built(argv, "add down_proj to unlearn.lora.target_modules")


@case("misread", "unlearn")
def select_best_without_eval_every(tmp):
    argv = ["unlearn", *MINI, "unlearn.select_best=max forget_quality", run_arg(tmp)]
    return built(argv, "unlearn.select_best is set but unlearn.eval_every is not")


@case("cli", "unlearn")
def eval_every_fractional_steps(tmp):
    argv = ["unlearn", *MINI, "unlearn.eval_every=1.5 steps", run_arg(tmp)]
    return built(argv, "is not a whole number of steps")


@case("cli", "unlearn")
def select_best_without_direction(tmp):
    crit = "unlearn.select_best=forget_quality subject to model_utility >= 0.9*target"
    return built(
        ["unlearn", *MINI, "unlearn.eval_every=1", crit, run_arg(tmp)],
        "does not start with max or min",
    )


@case("misread", "unlearn")
def select_best_metric_not_evaluated(tmp):
    argv = [
        "unlearn",
        *MINI,
        "unlearn.eval_every=1",
        "unlearn.select_best=max forget_rouge",
        run_arg(tmp),
    ]
    return built(argv, "'forget_rouge', which is not in unlearn.eval_metrics")


@case("cli", "unlearn")
def eval_metrics_unknown(tmp):
    argv = ["unlearn", *MINI, "unlearn.eval_every=1", "unlearn.eval_metrics=[bogus]", run_arg(tmp)]
    return built(argv, "unknown metric 'bogus'")


@case("cli", "run")
def run_seeds_zero(tmp):
    return built(["run", *MINI, "--seeds", "0", run_arg(tmp)], "--seeds 0 is not a positive count")


@case("cli", "demo")
def demo_seeds_repeated(tmp):
    return built(["demo", *MINI, "seeds=[1,1]", run_arg(tmp)], "repeats a seed")


@case("misread", "run")
def run_seeds_a_number(tmp):
    return built(["run", *MINI, "seeds=3", run_arg(tmp)], "seeds=3 is not a list of seeds")


@case("misread", "sweep")
def sweep_formula_nested_too_deep(tmp):
    score = "sweep.score=" + "(" * 3000 + "1" + ")" * 3000
    return built(["sweep", "demo", "sweeps/npo", score, run_arg(tmp)], "nests parentheses")


@case("cli", "run")
def run_seeds_empty(tmp):
    return built(["run", *MINI, "seeds=[]", run_arg(tmp)], "seeds is empty")


@case("run-dir", "run")
def run_into_an_unlearn_run_dir(tmp):
    (tmp / "run" / "model").mkdir(parents=True)
    (tmp / "run" / "model" / "config.json").write_text("{}")
    return built(["run", *MINI, run_arg(tmp)], "already holds results")


@case("cli", "sweep")
def sweep_no_trials(tmp):
    argv = ["sweep", "demo", "sweeps/npo", "sweep.trials=0", run_arg(tmp)]
    return built(argv, "sweep.trials=0 is out of range")


@case("cli", "sweep")
def sweep_unknown_objective(tmp):
    argv = ["sweep", "demo", "sweeps/npo", "sweep.objective=best", run_arg(tmp)]
    return built(argv, "sweep.objective='best' is not one of score, pareto")


@case("cli", "sweep")
def sweep_unknown_setting(tmp):
    argv = [
        "sweep",
        "demo",
        "sweeps/npo",
        "sweep.space.unlearn.lrr={low: 1, high: 2}",
        run_arg(tmp),
    ]
    return built(argv, "unlearn has no setting 'lrr'")


@case("nonfinite", "sweep")
def sweep_range_reversed(tmp):
    space = "sweep.space.unlearn.lr={low: 1e-2, high: 1e-3}"
    return built(["sweep", "demo", "sweeps/npo", space, run_arg(tmp)], "is not below high")


@case("nonfinite", "sweep")
def sweep_log_range_from_zero(tmp):
    space = "sweep.space.unlearn.lr={low: 0, high: 1e-3, log: true}"
    return built(["sweep", "demo", "sweeps/npo", space, run_arg(tmp)], "log scale needs low > 0")


@case("misread", "sweep")
def sweep_formula_unknown_metric(tmp):
    argv = ["sweep", "demo", "sweeps/npo", "sweep.score=forget_qualty + 1", run_arg(tmp)]
    return built(argv, "unknown metric 'forget_qualty'")


@case("misread", "sweep")
def sweep_over_the_method(tmp):
    space = "sweep.space.unlearn.method={choices: [ga, npo]}"
    return built(
        ["sweep", "demo", "sweeps/npo", space, run_arg(tmp)], "unlearn.method cannot be swept"
    )


@case("preflight", "sweep")
def sweep_bound_refused_by_the_method(tmp):
    space = "sweep.space.unlearn.params.beta={low: 0, high: 1}"
    return built(["sweep", "demo", "sweeps/npo", space, run_arg(tmp)], "the value 0.0 is refused")


@case("cli", "sweep")
def sweep_without_a_space(tmp):
    return built(["sweep", "demo", run_arg(tmp)], "sweep.space is empty")


# --- report and compare: run dirs they read -------------------------------------------------


@case("run-dir", "report")
def report_missing_run_dir(tmp):
    return built(["report", str(tmp / "nowhere")], "run directory", "does not exist")


@case("run-dir", "compare")
def compare_folder_without_runs(tmp):
    (tmp / "empty").mkdir()
    return built(["compare", str(tmp / "empty")], "no summary.json in")


@case("misread", "report")
def report_truncated_summary(tmp):
    run = demo_dir(tmp)
    (run / "summary.json").write_text('{"rows": [{"model": "ret')
    return built(["report", str(run)], "summary.json is not valid JSON")


@case("run-dir", "report")
def report_out_under_a_file(tmp):
    run = demo_dir(tmp)
    (tmp / "file").write_text("x")
    return built(["report", str(run), "--out", str(tmp / "file" / "r.html")], "cannot create")


# --- attack: the run dirs it reads and its settings ---------------------------------------------


def _attack_run(tmp: Path, summary: str | None = None) -> Path:
    """A run dir with the demo's config.yaml (and ``summary``, raw text, when given)."""
    from obliviate.config import dump_yaml, load_config

    run = tmp / "attacked"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(load_config("demo")))
    if summary is not None:
        (run / "summary.json").write_text(summary)
    return run


@case("run-dir", "attack")
def attack_missing_run_dir(tmp):
    return built(["attack", str(tmp / "nowhere")], "has no config.yaml")


@case("run-dir", "attack")
def attack_run_dir_without_a_model(tmp):
    return built(["attack", str(_attack_run(tmp))], "holds no model/ and no summary.json")


@case("misread", "attack")
def attack_truncated_summary(tmp):
    run = _attack_run(tmp, '{"rows": [{"model": "ret')
    return built(["attack", str(run)], "summary.json is not readable JSON")


@case("misread", "attack")
def attack_demo_dir_without_target(tmp):
    run = _attack_run(tmp, '{"rows": [{"model": "npo", "model_path": "/x"}]}')
    return built(["attack", str(run)], "has no target row")


@case("misread", "attack")
def attack_eval_dir_of_its_own_target(tmp):
    """An eval run of model X has model.path=X: X would be its own target."""
    from obliviate.config import dump_yaml, load_config

    run = tmp / "evaluated"
    run.mkdir()
    model = str(tmp / "somewhere" / "model")
    (run / "config.yaml").write_text(dump_yaml(load_config("demo", [f"model.path={model}"])))
    (run / "summary.json").write_text(json.dumps({"model": model}))
    return built(["attack", str(run)], "its target", "is unknown", "model.path=")


@case("cli", "attack")
def attack_unknown_attack(tmp):
    run = _attack_run(tmp, "{}")
    return built(["attack", str(run), "--attacks", "quant3"], "unknown attack 'quant3'")


@case("preflight", "attack")
def attack_negative_relearn_lr(tmp):
    run = _attack_run(tmp, "{}")
    return built(["attack", str(run), "attack.relearn.lr=-1"], "attack.relearn.lr")


@case("nonfinite", "attack")
def attack_nan_relearn_lr(tmp):
    run = _attack_run(tmp, "{}")
    return built(["attack", str(run), "attack.relearn.lr=nan"], "attack.relearn.lr")


@case("cli", "compare")
def compare_unknown_metric(tmp):
    run = demo_dir(tmp)
    return built(["compare", str(run), "--by", "forget_qualty"], "no run has a number for metric")


@case("cli", "compare")
def compare_metric_without_direction(tmp):
    run = demo_dir(tmp)
    argv = ["compare", str(run), "--by", "forget_token_entropy"]
    return built(argv, "has no better direction")


@case("cli", "compare")
def compare_unknown_format(tmp):
    run = demo_dir(tmp)
    return built(["compare", str(run), "--format", "xml"], "invalid choice: 'xml'")


# --------------------------------------------------------------------------------------------
# the test


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The divergence cases' cache: the MINI target model is trained once for all of them."""
    return tmp_path_factory.mktemp("shared-cache")


def _params():
    out = []
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        out.append(pytest.param(c, id=f"{c.category}:{c.id}", marks=marks))
    return out


def _tree(root: Path, skip: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p != skip and skip not in p.parents}


def _resumable(stage: Path) -> bool:
    return stage.name.startswith(".partial-") and any(
        stage.glob("work/checkpoints/checkpoint-*/COMPLETE")
    )


def _unlock(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IRWXU)


def _fix_of(line: str) -> str:
    """The text of the final parenthesised group (the fix), nested parentheses included."""
    depth = 0
    for i in range(len(line) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(line[i], 0)
        if depth == 0:
            return line[i + 1 : -1]
    return ""


CONFIG_KEY = re.compile(r"(?<![\w./-])((?:benchmark|model|finetune|unlearn|eval|demo)(?:\.\w+)+)")
FILE_SUFFIXES = {"json", "jsonl", "yaml", "safetensors", "bin", "parquet", "py", "txt"}


def _is_config_key(dotted: str) -> bool:
    """Whether ``dotted`` names an ExperimentConfig field (anything under a free mapping such as
    ``unlearn.params`` counts)."""
    node: typing.Any = ExperimentConfig
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node):
            return True
        hints = typing.get_type_hints(node)
        if part not in hints:
            return False
        node = hints[part]
    return True


def _run_in_process(argv: list[str], capsys) -> tuple[int | None, str, str]:
    capsys.readouterr()
    code: int | None = None
    extra = ""
    try:
        main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else None
    except Exception:  # a bug: the CLI would show this traceback
        extra = traceback.format_exc()
    out = capsys.readouterr()
    return code, out.out, out.err + extra


def _run_subprocess(argv: list[str], cwd: Path) -> tuple[int | None, str, str]:
    p = subprocess.run(
        [sys.executable, "-m", "obliviate", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ),
        timeout=300,
    )
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, tmp_path: Path, monkeypatch, capsys, request) -> None:
    if case.root_skip and os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    cache = request.getfixturevalue("shared_cache") if case.shared_cache else tmp_path / "cache"
    monkeypatch.setenv("OBLIVIATE_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # a relative path (the default run_dir) lands in tmp_path
    spec = case.build(tmp_path)
    assert case.command == TOP or spec.argv[0] == case.command
    run_dir = spec.run_dir or tmp_path / "run"
    cache_before = set(cache.rglob("*")) if cache.exists() else set()
    before = _tree(tmp_path, cache)
    try:
        if case.subprocess:
            code, out, err = _run_subprocess(spec.argv, tmp_path)
        else:
            code, out, err = _run_in_process(spec.argv, capsys)
    finally:
        _unlock(tmp_path)

    # one error line, last, naming the problem and a fix in parentheses; no traceback
    assert "Traceback" not in err, err[-1500:]
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip()]
    assert lines, f"nothing on stderr (exit {code}); stdout: {out[-500:]}"
    last = lines[-1]
    assert last.startswith("error: "), f"last stderr line is not the error: {last!r}\n{err[-2000:]}"
    assert sum(line.startswith("error:") for line in lines) == 1, err[-1500:]
    assert re.search(r" \(.+\)$", last), f"no fix in parentheses at the end: {last!r}"
    assert not re.search(r":\s*\)$", last), f"the fix is an empty list: {last!r}"
    named = [
        k for k in CONFIG_KEY.findall(_fix_of(last)) if k.rsplit(".", 1)[-1] not in FILE_SUFFIXES
    ]
    assert all(map(_is_config_key, named)), (
        f"the fix names a config key that does not exist: {last!r}"
    )
    for needle in spec.needles:
        assert needle in last, f"{needle!r} not in {last!r}"
    assert code == spec.code, f"exit {code}, expected {spec.code}: {last}"
    assert out.strip() == "", f"a failed command printed a result: {out[-500:]!r}"

    # nothing half-written: no new path under tmp_path but a resumable stage, and (a run that
    # diverged, exit 3) the run's log, which records the steps that led there
    new = _tree(tmp_path, cache) - before
    log = run_dir / "obliviate.log"
    if spec.code == 3:
        assert not (run_dir / "model").exists(), "a diverged run wrote a model"
        assert "diverged" in log.read_text(), "the diverged run's log does not say so"
        new -= {log, run_dir}
    leftover = sorted(
        str(p.relative_to(tmp_path)) for p in new if not any(map(_resumable, [p, *p.parents]))
    )
    assert not leftover, f"left behind: {leftover}"
    # the cache: no half-built entries, and (bad input) no model trained or scored before the
    # check; the divergence cases share a cache whose target model is trained on purpose
    assert not [p for p in cache.rglob("*.tmp*")], list(cache.rglob("*.tmp*"))
    if not case.shared_cache:
        built_entries = [p.parent for p in cache.glob("*/*/.complete") if p not in cache_before]
        assert not built_entries, f"heavy work before the error: {built_entries}"


def test_corpus_covers_every_category_and_command() -> None:
    assert {c.category for c in CASES} == set(CATEGORIES)
    assert {c.command for c in CASES} == {*COMMANDS, TOP}
    assert len({c.id for c in CASES}) == len(CASES) >= 45
    assert 3 <= sum(c.subprocess for c in CASES) <= 4
