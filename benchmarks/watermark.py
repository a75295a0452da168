"""WaterDrum's watermark metric on the demo: does unlearning remove the forget owners' watermark?

    OBLIVIATE_CACHE=/tmp/wmcache python benchmarks/watermark.py

Two settings of the demo experiment with ``benchmark.watermark=true`` (every author's training
text in their own watermark, :mod:`obliviate.data.watermark`): the plain one, and WaterDrum's
similar-data setting (``benchmark.watermark_similar=true``: each forget author has a retain-side
twin owner with the same facts under another key). In each, the tiny target model, the retain
model (retrained without the forget set) and NPO / GradDiff unlearned from the target are
evaluated with ``eval.metrics=[prob, rouge_l_recall, watermark_z]`` on every retain record
(``benchmark.retain_eval_size=null``, so each owner has its 10 answers in every split).

Reading the table: ``holdout z`` is the level of owners never trained on (3 owners, so noisy);
``never-trained z`` is the same level measured on the model's own forget answers, as mean ± sd
over 200 random owner keys standing in for the forget owners'. A model that no longer carries the
forget owners' data should show ``forget z`` at that level, as the retain model does.
In the similar setting the retain model still knows the forget facts (from the twins), so forget
ROUGE cannot tell it from the target, while forget z still can.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from typing import Any

import torch
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

from obliviate import api, load_config
from obliviate.data.synthetic import FACT_SEP
from obliviate.data.watermark import detect
from obliviate.eval.evaluate import evaluate_model
from obliviate.eval.suite import EvalOptions
from obliviate.experiment import Experiment
from obliviate.models.io import load_model, load_tokenizer

SETTINGS = {
    "watermark": ["benchmark.watermark=true"],
    "similar": ["benchmark.watermark=true", "benchmark.watermark_similar=true"],
}
COMMON = [
    "benchmark.retain_eval_size=null",
    "eval.metrics=[prob, rouge_l_recall, watermark_z]",
    "eval.cosine=false",
    "eval.entailment=false",
]
METHODS = ("npo", "graddiff")
NULL_KEYS = 200
COLUMNS = [
    ("forget_rouge", "forget ROUGE"),
    ("forget_prob", "forget prob"),
    ("forget_watermark_z", "forget z"),
    ("retain_rouge", "retain ROUGE"),
    ("retain_watermark_z", "retain z"),
    ("holdout_watermark_z", "holdout z"),
    ("null_z", "never-trained z"),
    ("forget_owner_z", "forget z per owner"),
]


def evaluate(exp: Experiment, path: str) -> dict[str, Any]:
    """The model's summary, plus ``forget_owner_z``: each forget owner's z, in split order."""
    model = load_model(path, exp.cfg.model.dtype, exp.device)
    tok = load_tokenizer(path)
    options = EvalOptions.from_config(exp.cfg.eval)
    ev = evaluate_model(model, tok, exp.benchmark, options=options)
    forget = ev.result.by_role("forget")
    owners = {r["author"]: r.get("watermark_z") for r in forget.samples if "author" in r}
    null = null_z(exp, forget.samples)
    return {
        **ev.summary,
        "forget_owner_z": " ".join(fmt(z) for z in owners.values()),
        "null_z": f"{statistics.fmean(null):+.2f} ± {statistics.pstdev(null):.2f}",
    }


def null_z(exp: Experiment, rows: list[dict[str, Any]], keys: int = NULL_KEYS) -> list[float]:
    """The forget z that owners whose data the model never saw would get on these answers: the
    metric's owner-averaged z with each forget owner's key replaced by a random one, per draw."""
    secret = exp.benchmark.watermark_key or ""
    records = {r.question: r for r in exp.benchmark.split("forget").records}
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["author"], []).append(row)
    out = []
    for k in range(keys):
        zs = []
        for author, group in groups.items():
            protect = [(records[g["question"]].fact or "").split(FACT_SEP) for g in group]
            gens = [g["generation"] for g in group]
            zs.append(detect(gens, f"{author} (null {k})", secret, protect).z)
        out.append(statistics.fmean(zs))
    return out


def run_setting(name: str, overrides: list[str]) -> list[tuple[str, dict[str, Any]]]:
    cfg = load_config("demo", overrides + COMMON)
    api.setup_runtime(cfg)
    exp = Experiment(cfg)
    models = [("target", api.target_model(exp)), ("retain", api.retain_model(exp))]
    for m in METHODS:
        mexp = exp.with_config(load_config("demo", overrides + COMMON + [f"unlearn.method={m}"]))
        models.append((m, api.unlearned_model(mexp)))
    return [(label, evaluate(exp, path)) for label, path in models if path]


def fmt(v: Any, key: str = "_z") -> str:
    if not isinstance(v, float):
        return str(v)
    return f"{v:+.2f}" if key.endswith("_z") else f"{v:.3f}"


def main() -> None:
    t0 = time.perf_counter()
    results = {name: run_setting(name, ov) for name, ov in SETTINGS.items()}
    wall = time.perf_counter() - t0
    print(
        f"# python benchmarks/watermark.py — {datetime.date.today()}, {cpu_model()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.system()}"
    )
    print(f"# wall time {wall:.0f} s (training included unless cached)")
    head = ["setting", "model"] + [c for _, c in COLUMNS]
    widths = [max(10, len(h)) for h in head]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for name, rows in results.items():
        for label, s in rows:
            cells = [name, label] + [fmt(s.get(k, "–"), k) for k, _ in COLUMNS]
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    main()
