"""Does it really forget? Every attack on the demo's unlearned models, one table per metric.

    python benchmarks/robustness.py                         # demo methods, every attack
    python benchmarks/robustness.py ga npo --attacks relearn,quant4
    python benchmarks/robustness.py -- attack.relearn.lr=1e-3   # config overrides after --

Trains (or reuses from the cache) the demo's target, retain and unlearned models, then runs
:class:`obliviate.attacks.run.AttackRunner` in this process. Cells are the recovered fraction of
the forget-set gap, ``(m(attacked) − m(before)) / (m(target) − m(before))`` on the attack's measured
records: 0 = nothing came back, 1 = back at the target's level. The ``retain (control)`` row is
the same attack on the retain model, which never saw the forget set: whatever it gains is
learning, not relearning. The last table is each method's robust forget score (README,
"Robustness") and its worst attack.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import torch
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

from obliviate import api, load_config
from obliviate.attacks import ATTACKS, PROBE, resolve_attacks
from obliviate.attacks.run import AttackRunner, Subjects
from obliviate.demo import method_config
from obliviate.experiment import Experiment
from obliviate.tables import aligned


def _cell(attack: dict, part: str, key: str) -> str:
    got = attack.get(part)
    v = got.get(key) if isinstance(got, dict) else None
    return f"{v:+.2f}" if isinstance(v, int | float) else "-"


def main() -> None:
    argv = sys.argv[1:]
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("methods", nargs="*", help="methods (default: the demo's)")
    p.add_argument("--attacks", default="default", help="comma-separated (default: all)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    cfg = load_config("demo", overrides)
    api.setup_runtime(cfg)
    exp = Experiment(cfg)
    methods = args.methods or list(cfg.demo.methods)
    chosen = resolve_attacks(args.attacks.split(","))
    names = [a for a in chosen if ATTACKS[a].kind != PROBE]
    target, retain = api.target_model(exp), api.retain_model(exp)
    models = {m: api.unlearned_model(exp.with_config(method_config(cfg, m))) for m in methods}
    runner = AttackRunner(exp)
    results = {
        m: runner.robustness(Subjects(path, target, retain), chosen) for m, path in models.items()
    }
    wall = time.perf_counter() - t0

    print(
        f"# robustness of the demo's unlearned models — {datetime.date.today()}, "
        f"{cpu_model()} ({os.cpu_count()} cores), torch {torch.__version__}, "
        f"Python {platform.python_version()}; wall {wall:.0f} s"
    )
    print(
        f"# split {runner.split.name} ({len(runner.split.records)} records); relearning: "
        f"{cfg.attack.relearn.max_steps} steps at lr {cfg.attack.relearn.lr:g}, "
        f"batch {cfg.attack.relearn.batch_size}"
    )
    for key in runner.keys:
        print(f"\nrecovered fraction of forget {key} (0 = nothing came back, 1 = target level)")
        head = ["model", *names]
        body = []
        for m, res in results.items():
            body.append([m, *(_cell(res["attacks"][a], "recovered", key) for a in names)])
        first = next(iter(results.values()))
        ctrl = [_cell(first["attacks"][a], "retain_recovered", key) for a in names]
        body.append(["retain (control)", *ctrl])
        print(aligned(head, body))
    print("\nbefore any attack (whole split)")
    head = ["model", *(f"forget {k}" for k in runner.keys)]
    first = next(iter(results.values()))
    body = [
        [
            "target",
            *(f"{first['baseline']['target'].get(k, float('nan')):.3f}" for k in runner.keys),
        ]
    ]
    body.append(
        [
            "retain",
            *(f"{first['baseline']['retain'].get(k, float('nan')):.3f}" for k in runner.keys),
        ]
    )
    for m, res in results.items():
        body.append(
            [m, *(f"{res['baseline']['unlearned'].get(k, float('nan')):.3f}" for k in runner.keys)]
        )
    print(aligned(head, body))
    print("\nrobust forget score (1 − worst knowledge position over attacks and metrics)")
    body = []
    for m, res in results.items():
        score, w = res["robust_forget_score"], res.get("worst")
        worst = f"{w['attack']} / {w['metric']} ({w['knowledge']:.2f})" if w else "-"
        body.append([m, f"{score:.2f}" if isinstance(score, float) else str(score), worst])
    print(aligned(["model", "score", "worst attack / metric (knowledge)"], body))
    lens = {m: r["probes"].get("logit_lens", {}) for m, r in results.items()}
    if any("prob_by_layer" in v for v in lens.values()):
        print("\nlogit lens: forget answer probability decoded from each layer (0 = embeddings)")
        some = next(v for v in lens.values() if "prob_by_layer" in v)
        head = ["model", *(str(i) for i in range(some["layers"]))]
        curves = {"target": some["prob_by_layer"]["target"]}
        if "retain" in some["prob_by_layer"]:
            curves["retain"] = some["prob_by_layer"]["retain"]
        curves |= {
            m: v["prob_by_layer"]["unlearned"] for m, v in lens.items() if "prob_by_layer" in v
        }
        print(aligned(head, [[m, *(f"{x:.3f}" for x in ys)] for m, ys in curves.items()]))
    traces = {m: r["probes"].get("traces", {}) for m, r in results.items()}
    if any("mean_cosine" in v for v in traces.values()):
        print("\nknowledge traces: the target's top forget-concept value vectors")
        head = ["model", "cosine", "random cosine", "rel. change", "random rel. change"]
        body = [
            [
                m,
                f"{v['mean_cosine']:.4f}",
                f"{v['random_mean_cosine']:.4f}",
                f"{v['mean_relative_change']:.4f}",
                f"{v['random_mean_relative_change']:.4f}",
            ]
            for m, v in traces.items()
            if "mean_cosine" in v
        ]
        print(aligned(head, body))
        v = next(v for v in traces.values() if "prob_before" in v)
        print(
            f"target forget prob {v['prob_before']:.4f}; with the {v['top_k']} concept vectors "
            f"zeroed {v['prob_ablated']:.4f}; with {v['top_k']} random ones zeroed "
            f"{v['prob_random_ablated']:.4f}"
        )
    skipped = {a: r["unavailable"] for a, r in first["attacks"].items() if "unavailable" in r}
    for a, why in skipped.items():
        print(f"# {a}: {why}")


if __name__ == "__main__":
    main()
