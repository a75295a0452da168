"""Every registered unlearning method on the synthetic benchmark, one row each.

    python benchmarks/methods.py                       # all methods
    python benchmarks/methods.py ga npo me_gd          # a subset
    python benchmarks/methods.py --keep runs/methods   # keep models + per-sample eval JSON
    python benchmarks/methods.py --seeds 3             # each method over unlearn.seed 0, 1, 2
    python benchmarks/methods.py --seeds 2 ga          # the smallest seeded check

Each method runs as ``obliviate unlearn demo methods/<m>`` in its own subprocess (the shipped
per-method config over the demo's tiny-model schedule). Peak RSS is that subprocess's own
``ru_maxrss`` (``os.wait4``), so it includes the Python + torch baseline of one CLI process and
the reference model for methods that load one. Every model is then evaluated in this process with
the full eval (``obliviate.api.evaluate``), forget quality against the retain model's saved eval
as ``obliviate.demo.run_demo`` does. Token entropy (closer-look's TE, in [0, 1]; near 0 = "the the
the") is the mean over forget-set generations, re-tokenised with the model's tokenizer.
Seconds per step = ``train_seconds / steps`` from the model's run log (``obliviate.json``).
Compute s = the unlearning computation itself: the trainer's runtime for a gradient method (plus
WAGLE's attribution pass when masked), the method's whole run for the others (Fisher passes,
the task vector's fine-tune, ULD's assistant training, ECO's classifier and σ search). Stored M =
millions of numbers in the artefact's own weight files: the whole model for a full model dir,
only the extra tensors for a wrapper (marked ``[wrapper]``; its base is referenced, not copied).
Rows such as ``npo+wagle`` are a method plus overrides (:data:`VARIANTS`).

``--seeds N`` unlearns every method once per ``unlearn.seed`` in 0..N-1 (the same cached target
and retain models) and prints each method's row as mean ± sample sd over the seeds
(:func:`obliviate.repeat.aggregate_summaries`), the cost columns included; a cell that only some
seeds produced says ``(n=k)``. The retain and target rows are single.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

from obliviate import api, load_config
from obliviate.demo import format_table  # noqa: E402
from obliviate.eval.closer_look import token_entropy
from obliviate.experiment import Experiment
from obliviate.methods.base import method_names
from obliviate.methods.mask import MASK_FILE
from obliviate.models.io import load_tokenizer, read_card
from obliviate.repeat import aggregate_summaries, stats_table

COLUMNS: list[tuple[str, str, str]] = [
    ("model", "model", "{}"),
    ("forget_quality", "forget quality", "{:.2e}"),
    ("model_utility", "utility", "{:.3f}"),
    ("forget_rouge", "forget ROUGE", "{:.3f}"),
    ("forget_truth_ratio", "forget TR", "{:.3f}"),
    ("forget_prob", "forget prob", "{:.3f}"),
    ("forget_te", "forget TE", "{:.3f}"),
    ("retain_rouge", "retain ROUGE", "{:.3f}"),
    ("retain_prob", "retain prob", "{:.3f}"),
    ("s_per_step", "s/step", "{:.3f}"),
    ("compute_s", "compute s", "{:.1f}"),
    ("stored_params", "stored M", "{:.3f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
]

VARIANTS: dict[str, tuple[str, list[str]]] = {
    # WAGLE: the gradient method trained on the attributed weights only (unlearn.mask)
    "npo+wagle": ("npo", ["unlearn.mask.fraction=0.5"]),
    "graddiff+wagle": ("graddiff", ["unlearn.mask.fraction=0.5"]),
}
"""Rows that are a registered method plus overrides (``python benchmarks/methods.py npo+wagle``)."""


def stored_parameters(model_dir: str) -> tuple[str, int]:
    """The artefact kind and how many numbers its own weight files hold: the whole model for a
    full model dir, only the extra tensors for a wrapper (its base is referenced)."""
    from safetensors import safe_open

    from obliviate.artefacts import artefact_kind

    total = 0
    for f in Path(model_dir).glob("*.safetensors"):
        if f.name == MASK_FILE:  # WAGLE's mask: bits, not parameters
            continue
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                total += int(np.prod(fh.get_slice(k).get_shape()))
    return artefact_kind(model_dir), total


def run_unlearn(
    method: str, run_dir: Path, env: dict[str, str], overrides: tuple[str, ...] = ()
) -> tuple[float, float]:
    """``obliviate unlearn demo methods/<m>`` (plus a variant's and ``overrides``) in a
    subprocess; returns (wall s, peak RSS MiB)."""
    base, extra = VARIANTS.get(method, (method, []))
    cmd = [sys.executable, "-m", "obliviate", "unlearn", "demo", f"methods/{base}", *extra]
    cmd += [*overrides, f"run_dir={run_dir}"]
    t0 = time.perf_counter()
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed (exit {proc.returncode}); see {log.name}")
    # Linux reports ru_maxrss in KiB.
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def forget_token_entropy(eval_dir: Path, model_path: str) -> float | None:
    rows = json.loads((eval_dir / "eval" / "forget.json").read_text())
    gens = [r["generation"] for r in rows if "generation" in r]
    if not gens:
        return None
    tok = load_tokenizer(model_path)
    return float(
        np.mean([token_entropy(tok(g, add_special_tokens=False)["input_ids"]) for g in gens])
    )


def schedule_overrides(cfg: Any, methods: list[str]) -> list[str]:
    """Methods whose shipped file overrides the demo schedule (documented tiny-model values)."""
    out = []
    for m in methods:
        base, extra = VARIANTS.get(m, (m, []))
        u = load_config(["demo", f"methods/{base}"], extra).unlearn
        diff = [
            f"{k} {getattr(u, k):g}"
            for k in ("lr", "epochs", "batch_size")
            if getattr(u, k) != getattr(cfg.unlearn, k)
        ]
        if diff:
            out.append(f"{m}: {', '.join(diff)}")
    return out


def _option(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """``flag VALUE`` taken out of ``argv``: (VALUE or None, the rest)."""
    if flag not in argv:
        return None, argv
    i = argv.index(flag)
    if i + 1 >= len(argv):
        raise SystemExit(f"{flag} needs a value")
    return argv[i + 1], argv[:i] + argv[i + 2 :]


def evaluate_row(
    cfg: Experiment, name: str, path: str, out: Path, reference: Any, rss: float | None
) -> dict[str, Any]:
    """One model's row: its full evaluation (the retain model's is already in ``out``), token
    entropy, and for an unlearned model the cost columns from its card."""
    if name == "retain":
        summary = json.loads((out / "summary.json").read_text())
    else:
        summary = api.evaluate(cfg, path, out, reference=reference, overwrite=True)
    card = read_card(path)
    row: dict[str, Any] = {**summary, "model": name, "peak_rss_mb": rss}
    row["forget_te"] = forget_token_entropy(out, path)
    if card.get("stage") == "unlearn" and card.get("steps"):
        row["s_per_step"] = card["train_seconds"] / card["steps"]
        row["non_finite_steps"] = card.get("non_finite_steps")
    if card.get("stage") == "unlearn":
        # gradient methods: the trainer's runtime (+ WAGLE's attribution pass when
        # masked); the others: the method's whole run (Fisher passes, fine-tuning, ...)
        row["compute_s"] = card.get("seconds") or (
            (card.get("train_seconds") or 0) + (card.get("mask") or {}).get("seconds", 0)
        )
        kind, n = stored_parameters(path)
        row["stored_params"] = n / 1e6
        if kind != "full model":  # a wrapper stores only its extra tensors
            row["model"] = f"{name} [{kind}]"
    return row


def seeded_rows(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Retain and target as they are; one row per method whose cells are mean ± sd over its
    seeds' rows (named ``<m>/seed<s>``)."""
    out = [r for r in rows if r["seed"] is None]
    for m in methods:
        runs = [r for r in rows if r["method"] == m and r["seed"] is not None]
        label = runs[0]["model"].replace(f"{m}/seed{runs[0]['seed']}", m)
        out.append({**aggregate_summaries(runs), "model": label})
    return out


def main(argv: list[str]) -> None:
    keep_arg, argv = _option(argv, "--keep")
    seeds_arg, argv = _option(argv, "--seeds")
    keep = Path(keep_arg) if keep_arg is not None else None
    seeds: list[int] | None = None
    if seeds_arg is not None:
        if not seeds_arg.isdigit() or int(seeds_arg) < 1:
            raise SystemExit(f"--seeds {seeds_arg}: give a positive count, e.g. --seeds 3")
        seeds = list(range(int(seeds_arg)))
    methods = argv or [*method_names(), *VARIANTS]
    cfg = Experiment(load_config("demo", []))
    api.setup_runtime(cfg.cfg)
    started = datetime.datetime.now(datetime.UTC)
    t_all = time.perf_counter()
    target = api.finetune(cfg, "full")
    retain = api.finetune(cfg, "retain")
    env = {**os.environ}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="obliviate-methods-") as tmp:
        root = Path(tmp) if keep is None else keep
        if keep is not None and keep.exists() and any(keep.iterdir()):
            raise SystemExit(f"{keep} is not empty")
        evals = root / "eval"
        api.evaluate(cfg, retain, evals / "retain", overwrite=True, is_reference=True)
        reference = api.read_reference(evals / "retain", cfg.benchmark)
        # (row name, method, seed, model path, peak RSS)
        models: list[tuple[str, str, int | None, str, float | None]] = [
            ("retain", "retain", None, retain, None),
            ("target", "target", None, target, None),
        ]
        for m in methods:
            for s in seeds or [None]:
                name = m if s is None else f"{m}/seed{s}"
                api.log(f"unlearning: {m}" + ("" if s is None else f", seed {s}"))
                run_dir = root / "runs" / name
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                overrides = () if s is None else (f"unlearn.seed={s}",)
                _, rss = run_unlearn(m, run_dir, env, overrides)
                models.append((name, m, s, str(run_dir / "model"), rss))
        for name, method, seed, path, rss in models:
            api.log(f"evaluating {name}")
            row = evaluate_row(cfg, name, path, evals / name, reference, rss)
            rows.append({**row, "method": method, "seed": seed} if seeds else row)
    seconds = time.perf_counter() - t_all
    print(f"obliviate methods benchmark, {started:%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {cpu_model()} ({platform.machine()} {platform.system()}), "
        f"cpu_count={os.cpu_count()}, "
        f"torch threads={torch.get_num_threads()}, torch {torch.__version__}, device={cfg.device}"
    )
    print(
        f"command: python benchmarks/methods.py {' '.join(sys.argv[1:])}".rstrip()
        + "  (demo config + configs/methods/<m>.yaml; "
        f"forget split {cfg.cfg.benchmark.forget_split}; lr {cfg.cfg.unlearn.lr:g}, "
        f"{cfg.cfg.unlearn.epochs:g} epochs, batch {cfg.cfg.unlearn.batch_size}; "
        f"overridden by {'; '.join(schedule_overrides(cfg.cfg, methods)) or 'no method file'})"
    )
    print(
        "peak RSS: ru_maxrss of each method's own `obliviate unlearn` subprocess (os.wait4); "
        "TE: mean closer-look token entropy of forget-set generations"
    )
    if seeds is None:
        print(format_table(rows, COLUMNS))
    else:
        print(
            f"methods: mean ± sample sd over unlearn.seed {', '.join(map(str, seeds))} "
            "(same target and retain models); retain and target rows are single"
        )
        print(stats_table(seeded_rows(rows, methods), COLUMNS, total=len(seeds)))
    bad = [r["model"] for r in rows if r.get("non_finite_steps")]
    print(f"non-finite steps: {', '.join(bad) if bad else 'none'}; total {seconds:.0f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
