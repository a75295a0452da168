"""``obliviate attack RUN_DIR``: find the models a run dir holds, attack them, write the results.

A run dir is an ``unlearn`` run (``model/``), an ``eval`` run (its ``summary.json`` names the
model) or a ``demo`` dir (every unlearned row). The target and retain model are the demo's rows,
else the run config's (``model.path`` / ``model.retain_path``, or the tiny models). Each attacked
model gets ``robustness.json`` beside its ``summary.json``, and the same section joins that
summary as ``robustness``, with ``robust_forget_score`` at the top level for ``compare``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate import stages
from obliviate.attacks import resolve_attacks
from obliviate.attacks.run import AttackRunner, Subjects
from obliviate.errors import ConfigError
from obliviate.experiment import Experiment, log
from obliviate.runs import write_json
from obliviate.tables import aligned, number

RESULT = "robustness.json"
FIX = "give a run dir that obliviate unlearn, eval or demo wrote"


@dataclass
class Target:
    """One unlearned model to attack and where its results go."""

    name: str
    out: Path
    subjects: Subjects


def find_targets(
    exp: Experiment, run: Path, overwrite: bool = False
) -> tuple[list[Target], dict[str, Any] | None]:
    """The unlearned models in ``run`` (and the demo summary, when ``run`` is a demo dir).

    Results already in place are refused (unless ``overwrite``) before a target or retain model
    is looked up, since the tiny ones may have to be trained."""
    summary = _read(run / "summary.json")
    demo = isinstance(summary.get("rows"), list)
    if demo:
        targets = _demo_targets(run, summary)
        outs = [t.out for t in targets]
    else:
        model, outs = _evaluated_model(run, summary), [run]
    for out in outs:
        if (out / RESULT).exists() and not overwrite:
            raise ConfigError(
                f"{out / RESULT} already holds results", "pass --overwrite to replace them"
            )
    if demo:
        return targets, summary
    target = exp.cfg.model.path or stages.target_model(exp)
    if _same(target, model):
        raise ConfigError(
            f"the run's model.path is the model to attack ({model}), so its target (the "
            "model before unlearning) is unknown",
            "pass model.path=<the model it was unlearned from>",
        )
    subjects = Subjects(model, target, stages.retain_model(exp))
    return [Target(run.name, run, subjects)], None


def _demo_targets(run: Path, summary: dict[str, Any]) -> list[Target]:
    paths: dict[str, str] = {}
    for i, r in enumerate(summary["rows"]):
        name = r.get("model") if isinstance(r, dict) else None
        path = r.get("model_path") if isinstance(r, dict) else None
        if not isinstance(name, str) or not isinstance(path, str) or not path:
            raise ConfigError(
                f"{run}/summary.json: row {i} has no model name and model_path",
                "re-run obliviate demo into this folder",
            )
        paths[name] = path
    if "target" not in paths:
        raise ConfigError(f"{run}/summary.json has no target row", "re-run obliviate demo")
    out = [
        Target(name, run / name, Subjects(path, paths["target"], paths.get("retain")))
        for name, path in paths.items()
        if name not in ("target", "retain")
    ]
    if not out:
        raise ConfigError(f"{run}/summary.json has no unlearned rows", "re-run obliviate demo")
    return out


def _evaluated_model(run: Path, summary: dict[str, Any]) -> str:
    if (run / "model").is_dir():
        return str(run / "model")
    if isinstance(summary.get("model"), str) and summary["model"]:
        return summary["model"]
    raise ConfigError(f"{run} holds no model/ and no summary.json naming a model", FIX)


def _same(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not readable JSON: {e}", FIX) from None
    return data if isinstance(data, dict) else {}


def run_attacks(
    exp: Experiment, run_dir: str | Path, attacks: list[str] | None = None, overwrite: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """Attack every unlearned model in ``run_dir``; returns ``[(name, robustness section)]``.

    Everything is checked before any model is attacked; results are written only when every
    model's are complete (``robustness.json`` in place is refused unless ``overwrite``).
    """
    from obliviate import progress
    from obliviate.api import check_inputs

    names = resolve_attacks(
        attacks if attacks is not None else exp.cfg.attack.attacks,
        "--attacks" if attacks is not None else "attack.attacks",
    )
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise ConfigError(f"run directory {run} does not exist", FIX)
    runner = AttackRunner(exp)  # the split and metrics are checked before any model is trained
    targets, demo = find_targets(exp, run, overwrite)
    s0 = targets[0].subjects
    check_inputs(exp, [s0.target, s0.retain, *(t.subjects.unlearned for t in targets)])
    with progress.log_file(run):
        results = []
        for t in targets:
            log(f"attacking {t.name} ({len(names)} attacks and probes)")
            results.append((t, runner.robustness(t.subjects, names)))
        for t, res in results:
            _write(t.out, res)
        if demo is not None:
            by_name = {t.name: res for t, res in results}
            for row in demo["rows"]:
                if isinstance(row, dict) and row.get("model") in by_name:
                    _join(row, by_name[row["model"]])
            write_json(run / "summary.json", demo)
        log(f"robustness written to {', '.join(str(t.out / RESULT) for t, _ in results)}")
    return [(t.name, res) for t, res in results]


def _join(summary: dict[str, Any], res: dict[str, Any]) -> None:
    summary["robustness"] = res
    summary["robust_forget_score"] = res["robust_forget_score"]


def _write(out: Path, res: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RESULT, res)
    summary = _read(out / "summary.json")
    if summary:
        _join(summary, res)
        write_json(out / "summary.json", summary)


def format_robustness(name: str, res: dict[str, Any]) -> str:
    """A plain-text table: per attack, the recovered fraction per metric for the unlearned model
    and for the retain model (the control), and the unlearned model's knowledge position; then
    why the attacks that could not run did not."""
    keys = res["metrics"]
    head = ["attack", "n"] + [f"recovered {k}" for k in keys] + [f"control {k}" for k in keys]
    head.append("knowledge")
    body, notes = [], []
    for attack, a in res["attacks"].items():
        if "unavailable" in a:
            body.append([attack, "-"] + ["-"] * (2 * len(keys) + 1))
            notes.append(f"  {attack}: {a['unavailable']}")
            continue
        cells = [attack, str(a["measured"])]
        cells += [number(_part(a, "recovered").get(k), True) for k in keys]
        cells += [number(_part(a, "retain_recovered").get(k), True) for k in keys]
        ks = [v for v in _part(a, "knowledge").values() if v is not None]
        cells.append(number(max(ks)) if ks else "-")
        body.append(cells)
    for probe, p in res.get("probes", {}).items():
        if "unavailable" in p:
            notes.append(f"  {probe}: {p['unavailable']}")
    score = res["robust_forget_score"]
    lines = [
        f"{name}: robust forget score {number(score) if not isinstance(score, str) else score}"
    ]
    if "worst" in res:
        w = res["worst"]
        lines.append(f"  worst: {w['attack']} on {w['metric']} (knowledge {w['knowledge']:.2f})")
    return "\n".join([*lines, aligned(head, body), *notes])


def _part(a: dict[str, Any], key: str) -> dict[str, Any]:
    got = a.get(key)
    return got if isinstance(got, dict) else {}
