"""The cached pipeline stages: tiny model init, fine-tuning (target / retain), unlearning.

Each stage is keyed by the content it depends on (data, model shape, schedule, method), so the
same settings reuse the same model directory from the cache (see :mod:`obliviate.cache`).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from obliviate import distributed
from obliviate.errors import ConfigError
from obliviate.experiment import Experiment, log
from obliviate.runs import staged_run, write_config

#: Settings that change how a run is carried out but not its result: not part of cache keys.
RUN_ONLY = ("save_every", "abort_grad_norm")


#: Unlearn settings added after caches existed: left out of the key while unset, so a cached
#: model made before they existed is still found.
_KEY_WHEN_SET = ("lora", "select_best")


def result_settings(section: Any) -> dict[str, Any]:
    """A training section's settings that its result depends on (its cache key part)."""
    out = {k: v for k, v in asdict(section).items() if k not in RUN_ONLY}
    for k in _KEY_WHEN_SET:
        if k in out and out[k] is None:
            del out[k]
    if out.get("select_best") is None:  # evaluating during training leaves the weights alone
        out.pop("eval_every", None)
        out.pop("eval_metrics", None)
    return out


def require_trainable(exp: Experiment, what: str) -> None:
    if not exp.benchmark.trainable:
        raise ConfigError(
            f"benchmark.name={exp.cfg.benchmark.name} has no training data, so it cannot {what}",
            "use it with `obliviate eval` on a model trained elsewhere",
        )


def require_tiny_model(exp: Experiment, what: str) -> None:
    """``finetune`` and ``demo`` train the tiny model: a ``model.path`` would be ignored."""
    if exp.cfg.model.path or exp.cfg.model.retain_path:
        raise ConfigError(
            f"model.path / model.retain_path are set, but this command {what} the tiny model",
            "unset them (fine-tune real models elsewhere, then `obliviate unlearn` / `eval` them)",
        )


def _require_tiny_benchmark(exp: Experiment) -> None:
    if exp.cfg.benchmark.name != "synthetic" and exp.cfg.model.path is None:
        raise ConfigError(
            "model.path is unset but benchmark.name is not synthetic",
            "give model.path (an HF model dir or hub id) for a real benchmark",
        )


def _init_key(exp: Experiment) -> dict[str, Any]:
    return {"data": exp.data_key, "tiny": asdict(exp.cfg.model.tiny), "seed": exp.cfg.seed}


def tiny_init_model(exp: Experiment) -> str:
    """Tokenizer trained on the benchmark text + a randomly initialised tiny Llama (cached)."""
    _require_tiny_benchmark(exp)
    cfg, bench = exp.cfg, exp.benchmark

    def build(tmp: Path) -> None:
        from obliviate.data.refusals import load_refusals
        from obliviate.models.io import save_model_dir
        from obliviate.models.tiny import build_tiny_model
        from obliviate.models.tokenizer import train_bpe_tokenizer

        texts = [
            t for r in bench.full + bench.holdout + bench.extra_train for t in _record_texts(r)
        ]
        texts += load_refusals()
        tok = train_bpe_tokenizer(texts, cfg.model.tiny.vocab_size)
        model = build_tiny_model(cfg.model.tiny, tok, seed=cfg.seed)
        n = sum(p.numel() for p in model.parameters())
        log(f"built tiny Llama: {n / 1e6:.2f}M parameters, vocab {len(tok)}")
        save_model_dir(
            model, tok, tmp / "model", {"stage": "init", "parameters": n, **asdict(cfg.model.tiny)}
        )

    path, _ = exp.cache.get_or_build("init", _init_key(exp), build)
    return str(path / "model")


def _record_texts(r) -> list[str]:
    return [
        r.question,
        r.answer,
        r.paraphrased_answer or "",
        r.paraphrased_question or "",
        *r.perturbed_answer,
    ]


def _finetune_key(exp: Experiment, which: str) -> dict[str, Any]:
    split = "full" if which == "full" else f"retain-of-{exp.cfg.benchmark.forget_split}"
    return {"init": _init_key(exp), "finetune": result_settings(exp.cfg.finetune), "split": split}


def finetune(
    exp: Experiment,
    which: str = "full",
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> str:
    """Fine-tune the tiny model on ``full`` (the target) or ``retain`` (the retain model).

    Cached by content hash; with ``out_dir`` the model and the config are also written to
    ``<out_dir>/model`` and ``<out_dir>/config.yaml`` (all or nothing). ``resume`` continues an
    interrupted fine-tuning from its newest checkpoint (``finetune.save_every``).
    """
    if which not in ("full", "retain"):
        raise ConfigError(f"finetune split {which!r} is unknown", "use full or retain")
    if out_dir is None:
        return _finetune_cached(exp, which, resume)
    with staged_run(out_dir, "finetune", ("model", "config.yaml"), "model", overwrite) as st:
        model_dir = _finetune_cached(exp, which, resume)
        if distributed.is_main():
            shutil.copytree(model_dir, st.out / "model")
        write_config(exp.cfg, st.out)
    return str(Path(out_dir).expanduser() / "model")


def _finetune_cached(exp: Experiment, which: str, resume: bool = False) -> str:
    require_trainable(exp, "fine-tune")
    init = tiny_init_model(exp)
    cfg, bench = exp.cfg, exp.benchmark
    label = "target" if which == "full" else "retain"

    def build(tmp: Path) -> None:
        from obliviate.models.io import load_model, load_tokenizer, save_model_dir
        from obliviate.training.finetune import run_finetune

        records = bench.train_records(which)
        log(
            f"fine-tuning the {label} model on {len(records)} QA pairs ({cfg.finetune.epochs:g} epochs)"
        )
        tok = load_tokenizer(init)
        model = load_model(init, cfg.model.dtype, exp.device)
        info = run_finetune(
            model,
            tok,
            records,
            cfg.finetune,
            tmp / "trainer",
            exp.device,
            resume=resume,
            what=f"fine-tuning the {label} model",
        )
        distributed.barrier()  # every process is done with the trainer's folder
        if distributed.is_main():
            shutil.rmtree(tmp / "trainer", ignore_errors=True)
        card = {
            "stage": "finetune",
            "split": which,
            "forget_split": cfg.benchmark.forget_split,
            "benchmark": exp.data_key,
            **info,
        }
        if which == "full":
            card[TINY_TARGET] = tiny_target_id(exp)
        save_model_dir(model, tok, tmp / "model", card, distributed.gathered_weights(model))

    key = launch_key(_finetune_key(exp, which))
    path, hit = exp.cache.get_or_build("finetune", key, build, resume)
    if hit:
        log(f"reusing cached {label} model ({path.name})")
    return str(path / "model")


def target_model(exp: Experiment) -> str:
    """``model.path``, else the tiny target fine-tuned on the full set."""
    if exp.cfg.model.path:
        return exp.cfg.model.path
    if not exp.benchmark.trainable:
        raise ConfigError(
            f"no model given, and benchmark.name={exp.cfg.benchmark.name} has no data to train one",
            "give the model with --model DIR or model.path=DIR",
        )
    return _finetune_cached(exp, "full")


TINY_TARGET = "tiny_target"
"""Model-card key naming the tiny target a model is (or descends from, by unlearning)."""


def tiny_target_id(exp: Experiment) -> str:
    """The content hash of this experiment's tiny target model."""
    from obliviate.cache import content_hash

    return content_hash(_finetune_key(exp, "full"))


def retain_model(exp: Experiment) -> str | None:
    """``model.retain_path``, else (synthetic benchmark) the tiny retain model when the target is
    the tiny target or ``model.path`` descends from it (its model card says so)."""
    from obliviate.models.io import read_card

    cfg = exp.cfg
    if cfg.model.retain_path:
        return cfg.model.retain_path
    if cfg.benchmark.name != "synthetic":
        return None
    if cfg.model.path is None or read_card(cfg.model.path).get(TINY_TARGET) == tiny_target_id(exp):
        return _finetune_cached(exp, "retain")
    return None


def unlearn_key(exp: Experiment, source: str) -> dict[str, Any]:
    """What an unlearned model depends on: its source, the data, the forget split, the method."""
    from obliviate.methods import get_method
    from obliviate.models.card import WRAPPER
    from obliviate.runs import model_fingerprint

    cfg = exp.cfg
    src_key: Any = source if cfg.model.path else _finetune_key(exp, "full")
    if get_method(cfg.unlearn.method).cls.artefact == WRAPPER:
        # a wrapper is only valid over the exact base bytes it was made on (it refuses others)
        src_key = {"source": src_key, "base_fingerprint": model_fingerprint(source)}
    from obliviate.training.select import selection_key

    key = {
        "source": src_key,
        "data": exp.data_key,
        "forget": cfg.benchmark.forget_split,
        "unlearn": result_settings(cfg.unlearn),
    }
    selection = selection_key(exp)  # select_best: the choice depends on the eval settings too
    if selection is not None:
        key["selection"] = selection
    return launch_key(key)


def launch_key(key: dict[str, Any]) -> dict[str, Any]:
    """A trained model's cache key in a multi-process launch: the number of processes joins it
    (the global batch is ``batch_size × processes``, so the result differs from a one-process
    run's); a one-process run's key is unchanged."""
    world = distributed.world_size()
    return {**key, "processes": world} if world > 1 else key


def unlearn_to(
    exp: Experiment,
    out: Path,
    source: str | None = None,
    checkpoints: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run ``cfg.unlearn`` on the target model and save the result as an HF model dir at ``out``.

    ``checkpoints``: the trainer's folder (default: a sibling of ``out``), removed after success;
    ``resume`` continues from the newest complete checkpoint there."""
    from obliviate.methods import EditMethod, build_method
    from obliviate.models.card import SCHEDULE, WRAPPER
    from obliviate.models.io import load_model, load_tokenizer, read_card

    require_trainable(exp, "unlearn")
    cfg, bench = exp.cfg, exp.benchmark
    source = source or target_model(exp)
    method = build_method(cfg.unlearn.method, cfg.unlearn.params)
    if method.artefact == WRAPPER and not Path(source).expanduser().is_dir():
        raise ConfigError(
            f"{cfg.unlearn.method} saves a wrapper over its base model, and model.path={source} "
            "is not a local model dir (a wrapper references its base by path and fingerprint)",
            "download the model (e.g. huggingface-cli download) and give its dir as model.path",
        )
    tok = load_tokenizer(source)
    model = load_model(source, cfg.model.dtype, exp.device, allow_pickle=cfg.model.allow_pickle)
    log(
        f"unlearning with {cfg.unlearn.method}"
        + ("" if method.family == "gradient" else f" ({method.family})")
        + f" on {cfg.benchmark.forget_split} ({len(bench.forget)} QA)"
        + (
            ""
            if isinstance(method, EditMethod)
            else f", lr {cfg.unlearn.lr:g}, {cfg.unlearn.epochs:g} epochs"
        )
    )
    work = checkpoints or out.parent / (out.name + ".trainer")
    wrapper = None
    if isinstance(method, EditMethod):
        info, wrapper = _run_edit(exp, method, model, tok, source, work)
    else:
        from obliviate.training.select import make_monitor
        from obliviate.training.trainer import run_unlearning

        info = run_unlearning(
            model,
            tok,
            source,
            bench.forget,
            bench.retain,
            cfg.unlearn,
            work,
            exp.device,
            resume=resume,
            allow_pickle=cfg.model.allow_pickle,
            monitor=make_monitor(exp, source) if cfg.unlearn.eval_every else None,
        )
    full_weights = distributed.gathered_weights(model)  # ZeRO-3: gathered after training
    card = {
        "stage": "unlearn",
        TINY_TARGET: read_card(source).get(TINY_TARGET),
        "source_model": source,
        "forget_split": cfg.benchmark.forget_split,
        "forget_records": len(bench.forget),
        "benchmark": cfg.benchmark.name,
        "schedule": {k: getattr(cfg.unlearn, k) for k in SCHEDULE},
        "family": "masked" if "mask" in info else method.family,
        **info,
    }
    distributed.barrier()  # in a launch: every process is done with the trainer's folder
    if distributed.is_main():  # the result is written once
        _save_unlearned(exp, model, tok, source, out, card, info, wrapper, work, full_weights)
        shutil.rmtree(work, ignore_errors=True)
    return info


def _save_unlearned(
    exp: Experiment,
    model: Any,
    tok: Any,
    source: str,
    out: Path,
    card: dict[str, Any],
    info: dict[str, Any],
    wrapper: Any,
    work: Path,
    full_weights: dict[str, Any] | None,
) -> None:
    """Write an unlearning result at ``out``: a wrapper, a LoRA adapter (or merged model), or a
    full model dir (``full_weights``: the weights gathered from ZeRO-3 partitions)."""
    from obliviate.models.io import save_model_dir

    cfg = exp.cfg
    if wrapper is not None:
        from obliviate.artefacts import save_wrapper

        save_wrapper(wrapper, tok, source, out, card)
    elif cfg.unlearn.lora is not None:
        from obliviate.training.lora import save_lora

        save_lora(model, tok, source, out, card, cfg.unlearn.lora)
    else:
        save_model_dir(model, tok, out, card, state_dict=full_weights)
        if "mask" in info:  # unlearn.mask: the WAGLE mask trained with, beside the weights
            from obliviate.methods.mask import MASK_FILE

            shutil.copyfile(work / MASK_FILE, out / MASK_FILE)


def _run_edit(
    exp: Experiment, method: Any, model: Any, tok: Any, source: str, work: Path
) -> tuple[dict[str, Any], Any]:
    """Run a training-free or inference-time method: its log for the card, and its wrapper (None
    when it edited ``model`` in place)."""
    import time

    from obliviate.methods import EditJob

    cfg, bench = exp.cfg, exp.benchmark
    work.mkdir(parents=True, exist_ok=True)
    job = EditJob(
        model=model,
        tokenizer=tok,
        source=source,
        forget=bench.forget,
        retain=bench.retain,
        holdout=bench.holdout,
        cfg=cfg.unlearn,
        work_dir=work,
        device=exp.device,
        allow_pickle=cfg.model.allow_pickle,
    )
    t0 = time.perf_counter()
    result = method.run(job)
    model.eval()
    info = {
        "method": cfg.unlearn.method,
        "params": {k: getattr(method, k) for k in method.param_names()},
        "requirements": sorted(method.requirements()),
        "loaded_reference_model": False,
        "seconds": round(time.perf_counter() - t0, 2),
        **result.info,
    }
    return info, result.wrapper


def unlearned_model(exp: Experiment) -> str:
    """Cached unlearning (the demo uses this): same target + data + method config → same model dir."""
    source = target_model(exp)

    def build(tmp: Path) -> None:
        unlearn_to(exp, tmp / "model", source, checkpoints=tmp / "trainer")

    path, hit = exp.cache.get_or_build("unlearn", unlearn_key(exp, source), build)
    if hit:
        log(f"reusing cached {exp.cfg.unlearn.method} model ({path.name})")
    return str(path / "model")
