"""Evaluating during training and keeping the best checkpoint (``unlearn.eval_every`` /
``unlearn.select_best``, :mod:`obliviate.training.select`): parsing and refusals, the evaluation
schedule, the choice on hand-made curves, which weights are kept and put back, and end to end on
the mini experiment: the saved model is the chosen checkpoint, bit for bit, under full weights, a
WAGLE mask and LoRA; a run that only evaluates trains bit-identical weights; a resumed run
chooses as an uninterrupted one; the card and the log record the curve and the choice."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from obliviate import load_config
from obliviate.errors import ConfigError
from obliviate.training.criteria import (
    Bound,
    Criterion,
    Every,
    choose,
    eval_steps,
    parse_criterion,
    parse_every,
    plan_metrics,
)
from obliviate.training.select import Monitor

CRIT = "max forget_quality subject to model_utility >= 0.9*target"

# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "text, want",
    [
        ("1", "1 epochs"),
        (2, "2 epochs"),
        ("0.5", "0.5 epochs"),
        ("0.25 Epoch", "0.25 epochs"),
        (" 3 epochs ", "3 epochs"),
        ("20 steps", "20 steps"),
        ("1 step", "1 steps"),
        ("1e1 steps", "10 steps"),
    ],
)
def test_eval_every_forms_and_their_canonical_spelling(text, want):
    assert str(parse_every(text, "x")) == want
    cfg = load_config("demo", [f"unlearn.eval_every={text}"])
    assert cfg.unlearn.eval_every == want


@pytest.mark.parametrize(
    "text, needle",
    [
        ("0", "unlearn.eval_every='0' is out of range (use a positive"),
        ("-1 epochs", "is out of range"),
        ("1.5 steps", "is not a whole number of steps"),
        ("every epoch", "is not a number of epochs or steps (write e.g. `1 epochs`"),
        ("nan", "is not a number of epochs or steps"),
        ("2 days", "is not a number of epochs or steps"),
    ],
)
def test_eval_every_refusals_are_one_line(text, needle):
    with pytest.raises(ConfigError) as e:
        load_config("demo", [f"unlearn.eval_every={text}"])
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "text, want",
    [
        (CRIT, Criterion("max", "forget_quality", (Bound("model_utility", ">=", 0.9, True),))),
        ("min forget_prob", Criterion("min", "forget_prob")),
        (
            "Maximise forget_quality s.t. model_utility ≥ 0.9 × target and retain_prob > .5",
            Criterion(
                "max",
                "forget_quality",
                (Bound("model_utility", ">=", 0.9, True), Bound("retain_prob", ">", 0.5)),
            ),
        ),
        (
            "minimize forget_prob subject to retain_prob>=target, model_utility <= 2e-1",
            Criterion(
                "min",
                "forget_prob",
                (Bound("retain_prob", ">=", 1.0, True), Bound("model_utility", "<=", 0.2)),
            ),
        ),
        (
            "max forget_quality subject to model_utility >= target*0.85",
            Criterion("max", "forget_quality", (Bound("model_utility", ">=", 0.85, True),)),
        ),
    ],
)
def test_criteria_parse_and_print_back(text, want):
    got = parse_criterion(text, "x")
    assert got == want
    assert parse_criterion(str(got), "x") == got  # the canonical spelling reads back the same


def test_config_writes_the_criterion_canonically_and_keys_equal_settings_equally():
    from obliviate.config import dump_yaml
    from obliviate.stages import result_settings

    a = load_config(
        "demo",
        [
            "unlearn.eval_every=1",
            "unlearn.select_best=Max forget_quality s.t. model_utility ≥ 0.9 × target",
        ],
    )
    b = load_config("demo", ["unlearn.eval_every=1 epoch", f"unlearn.select_best={CRIT}"])
    assert a.unlearn.select_best == CRIT and a.unlearn.eval_every == "1 epochs"
    assert result_settings(a.unlearn) == result_settings(b.unlearn)
    assert "select_best" in result_settings(a.unlearn)
    c = load_config("demo", ["unlearn.eval_every=1 epoch", "unlearn.select_best=min forget_prob"])
    assert result_settings(c.unlearn) != result_settings(a.unlearn)
    assert load_config("demo").unlearn.eval_every is None
    again = __import__("yaml").safe_load(dump_yaml(a))["unlearn"]
    assert again["select_best"] == CRIT and again["eval_every"] == "1 epochs"


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            [f"unlearn.select_best={CRIT}"],
            "unlearn.select_best is set but unlearn.eval_every is not",
        ),
        (
            ["unlearn.eval_every=1", "unlearn.select_best=forget_quality"],
            "does not start with max or min (write max or min, then one metric",
        ),
        (
            ["unlearn.eval_every=1", "unlearn.select_best=best forget_quality"],
            "starts with 'best'",
        ),
        (
            ["unlearn.eval_every=1", "unlearn.select_best=max forget_rouge"],
            "reads 'forget_rouge', which is not in unlearn.eval_metrics (forget_quality,",
        ),
        (
            ["unlearn.eval_every=1", "unlearn.select_best=max forget_quality subject to mu >= 1"],
            "reads 'mu', which is not in unlearn.eval_metrics",
        ),
        (
            [
                "unlearn.eval_every=1",
                "unlearn.select_best=max forget_quality subject to model_utility => 0.9*target",
            ],
            "cannot read the constraint 'model_utility => 0.9*target' (write METRIC >= NUMBER",
        ),
        (
            [
                "unlearn.eval_every=1",
                "unlearn.select_best=max forget_quality subject to model_utility >= 0.9*baseline",
            ],
            "cannot read '0.9*baseline'",
        ),
        (["unlearn.eval_every=1", "unlearn.select_best="], "unlearn.select_best is empty"),
        (["unlearn.eval_metrics=[]"], "unlearn.eval_metrics is empty"),
        (
            ["unlearn.eval_metrics=[forget_prob, bogus]"],
            "unlearn.eval_metrics[1] names an unknown metric 'bogus' (use forget_quality",
        ),
        (
            ["unlearn.eval_metrics=[forget_cosine_similarity]"],
            "needs a model or pass not available during training",
        ),
        (["unlearn.eval_metrics=[mia_auc_gradnorm]"], "not available during training"),
        (
            ["unlearn.method=ssd", "unlearn.eval_every=1"],
            "unlearn.eval_every is set but unlearn.method=ssd is a training-free method",
        ),
    ],
)
def test_selection_refusals_are_one_line(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config("demo", overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_selection_key_holds_what_the_curve_is_measured_with():
    from obliviate.experiment import Experiment
    from obliviate.training.select import selection_key

    sel = ["unlearn.eval_every=1", f"unlearn.select_best={CRIT}"]
    assert selection_key(Experiment(load_config("demo", ["unlearn.eval_every=1"]))) is None
    a = selection_key(Experiment(load_config("demo", sel)))
    b = selection_key(Experiment(load_config("demo", [*sel, "eval.max_new_tokens=8"])))
    c = selection_key(Experiment(load_config("demo", [*sel, "benchmark.retain_eval_size=10"])))
    assert a["eval"]["max_new_tokens"] == 48 and b["eval"]["max_new_tokens"] == 8
    assert len({json.dumps(x, sort_keys=True) for x in (a, b, c)}) == 3


def test_config_check_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; from obliviate import load_config; "
        f"load_config('demo', ['unlearn.eval_every=0.5', 'unlearn.select_best={CRIT}', "
        "'unlearn.eval_metrics=[forget_quality, model_utility, privleak, retain_rouge]']); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize(
    "every, per_epoch, max_steps, want",
    [
        (Every(1, "epochs"), 3, 12, [0, 3, 6, 9, 12]),
        # 0.5 epochs of 3 steps = 1.5 steps: the first step at or after 1.5, 3, 4.5, …
        (Every(0.5, "epochs"), 3, 12, [0, 2, 3, 5, 6, 8, 9, 11, 12]),
        (Every(5, "steps"), 3, 12, [0, 5, 10, 12]),
        (Every(10, "epochs"), 3, 12, [0, 12]),  # longer than training: target and final only
        (Every(0.1, "epochs"), 3, 4, [0, 1, 2, 3, 4]),  # finer than a step: every step
        (Every(1, "epochs"), 4, 10, [0, 4, 8, 10]),  # max_steps not a whole number of epochs
        (Every(1 / 3, "epochs"), 3, 6, [0, 1, 2, 3, 4, 5, 6]),  # float noise: 3 × 1/3 is 1
    ],
)
def test_eval_steps_by_hand(every, per_epoch, max_steps, want):
    assert eval_steps(every, per_epoch, max_steps) == want


# ------------------------------------------------------------------------------ choosing


def _row(step, fq, mu, fp=None):
    r = {"step": step, "epoch": step / 3, "forget_quality": fq, "model_utility": mu}
    if fp is not None:
        r["forget_prob"] = fp
    return r


CURVE = [
    _row(0, 0.01, 0.60, 0.90),  # the target: baseline, never a candidate
    _row(3, 0.20, 0.58, 0.50),
    _row(6, 0.50, 0.55, 0.30),
    _row(9, 0.90, 0.40, 0.10),
    _row(12, 0.95, 0.20, 0.05),
]


def test_choose_by_hand():
    # 0.9 × 0.60 = 0.54: steps 3 and 6 hold it; 6 has the higher forget quality
    best, ok = choose(CURVE, parse_criterion(CRIT, "x"))
    assert (best["step"], ok) == (6, True)
    # 0.95 × 0.60 = 0.57: only step 3
    crit = parse_criterion("max forget_quality subject to model_utility >= 0.95*target", "x")
    assert choose(CURVE, crit) == (CURVE[1], True)
    # no constraint: the highest forget quality, the last step
    assert choose(CURVE, parse_criterion("max forget_quality", "x"))[0]["step"] == 12
    assert choose(CURVE, parse_criterion("min forget_prob", "x"))[0]["step"] == 12
    # an absolute bound and a second one
    crit = parse_criterion(
        "min forget_prob subject to model_utility > 0.3 and forget_quality >= 0.5", "x"
    )
    assert choose(CURVE, crit) == (CURVE[3], True)  # 6 (0.30) and 9 (0.10) qualify; 9 is lower
    # the target itself is never chosen, even when it is the only row meeting the bound
    crit = parse_criterion("max forget_quality subject to model_utility >= target", "x")
    best, ok = choose(CURVE, crit)
    # none holds: relative shortfalls (0.60 − mu) / 0.60 = 0.033, 0.083, 0.33, 0.67 → step 3
    assert (best["step"], ok) == (3, False)


def test_choose_ties_go_to_the_earliest_and_missing_values_last():
    curve = [
        _row(0, 0.1, 0.5),
        _row(2, 0.4, 0.5),
        _row(4, 0.4, 0.6),  # same objective, later: not chosen
        _row(6, "unavailable: no reference", 0.9),
        _row(8, 0.9, "unavailable: x"),  # a constraint it cannot show it meets
    ]
    best, ok = choose(curve, parse_criterion(CRIT, "x"))
    assert (best["step"], ok) == (2, True)
    # unsatisfiable for every row: equal shortfalls, so the objective decides, then the step
    crit = parse_criterion("max forget_quality subject to model_utility >= 2*target", "x")
    # shortfalls (1.0 − mu) / 1.0: step 2 0.5, step 4 0.4, step 8 inf → step 4
    assert choose(curve, crit) == (curve[2], False)
    # a strict bound at its threshold is not met
    crit = parse_criterion("max forget_quality subject to model_utility > 0.6", "x")
    assert choose(curve, crit)[1] is False
    with pytest.raises(ValueError):
        choose(curve[:1], crit)


def test_plan_runs_only_the_metrics_each_split_needs():
    from obliviate.data.benchmarks.base import Benchmark, EvalSplit

    def bench(*splits):
        return Benchmark("toy", "", "forget10", [], [], [], eval_splits=list(splits))

    full = bench(
        EvalSplit("forget", "forget", []),
        EvalSplit("retain", "retain", []),
        EvalSplit("real_authors", "utility", []),
        EvalSplit("holdout", "holdout", []),
    )
    p = plan_metrics(["forget_prob", "forget_quality"], full)
    assert p.by_role == {"forget": ["prob", "truth_ratio"]}
    assert p.reference == {"forget_quality": "forget_ratios"}
    p = plan_metrics(["model_utility"], full)
    assert p.by_role == {
        "retain": ["rouge_l_recall", "prob", "truth_ratio"],
        "utility": ["rouge_l_recall", "prob", "prob_normalized", "truth_ratio"],
    }
    assert p.reference == {}
    p = plan_metrics(["privleak", "mia_auc_zlib", "real_authors_prob"], full)
    assert p.by_role == {
        "forget": ["mia_min_k", "mia_zlib"],
        "holdout": ["mia_min_k", "mia_zlib"],
        "utility": ["prob", "prob_normalized"],
    }
    assert p.reference == {"privleak": "mia:min_k"}
    # eval.metrics without prob_normalized: the utility split's prob is the plain one there too
    allowed = {"prob", "truth_ratio", "rouge_l_recall"}
    assert plan_metrics(["real_authors_prob"], full, allowed).by_role == {"utility": ["prob"]}
    with pytest.raises(ConfigError, match="needs truth_ratio, but eval.metrics leaves it out"):
        plan_metrics(["forget_quality"], full, {"prob"})
    with pytest.raises(ConfigError, match=r"no split's metric on the toy benchmark \(splits: "):
        plan_metrics(["world_facts_prob"], full)
    with pytest.raises(ConfigError, match="needs a holdout split, and the toy benchmark has none"):
        plan_metrics(["privleak"], bench(EvalSplit("forget", "forget", [])))


# ------------------------------------------------------------------------------ the monitor


def _fake_run(tmp_path: Path, values: dict[int, dict], criterion: str | None, every="1 epochs"):
    """A Monitor driven by hand through 2 epochs of 2 steps on a small model whose first layer is
    frozen (as LoRA's base or a mask's unselected tensors are); each step adds 1 to every
    trainable weight, and ``values[step]`` is what the evaluation reports."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []

    def measure(m, tok):
        seen.append([(n, mod.training) for n, mod in m.named_modules()])
        return values[int(m[1].weight[0, 0].item() - start["1.weight"][0, 0].item() + 0.5)]

    crit = parse_criterion(criterion, "x") if criterion else None
    mon = Monitor(parse_every(every, "x"), ["forget_quality", "model_utility"], measure, crit)
    mon.bind(model, None, None)
    model.train()
    args = SimpleNamespace(gradient_accumulation_steps=1, output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=0, max_steps=4, epoch=0.0)
    control = SimpleNamespace(should_save=False)
    mon.on_train_begin(args, state, control, train_dataloader=[0, 1])
    for step in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p += 1.0
        state.global_step, state.epoch = step, step / 2
        mon.on_step_end(args, state, control)
    mon.on_train_end(args, state, control)
    return model, start, mon, seen


VALUES = {
    0: {"forget_quality": 0.01, "model_utility": 0.6},
    2: {"forget_quality": 0.4, "model_utility": 0.58},
    4: {"forget_quality": 0.9, "model_utility": 0.1},
}


def test_monitor_keeps_and_restores_only_the_trainable_weights(tmp_path):
    import torch

    model, start, mon, seen = _fake_run(tmp_path, VALUES, CRIT)
    assert mon.steps == [0, 2, 4] and [r["step"] for r in mon.curve] == [0, 2, 4]
    assert sorted(mon.best_weights) == ["1.bias", "1.weight"]  # the frozen layer is not copied
    assert all(not training for modes in seen for _, training in modes)  # evaluated in eval mode
    assert model.training and model[0].training  # and put back
    out = mon.finish(model)
    assert out["chosen_step"] == 2 and out["satisfied"] is True and out["chosen_epoch"] == 1.0
    assert out["chosen_metrics"] == {"forget_quality": 0.4, "model_utility": 0.58}
    assert out["curve"][0] == {
        "step": 0,
        "epoch": 0.0,
        "forget_quality": 0.01,
        "model_utility": 0.6,
    }
    assert out["criterion"] == CRIT and out["eval_steps"] == [0, 2, 4]
    p = dict(model.named_parameters())
    assert torch.allclose(p["1.weight"], start["1.weight"] + 2)  # the step-2 weights, not 4's
    assert torch.equal(p["0.weight"], start["0.weight"])  # frozen: as it was
    json.dumps(out)


def test_monitor_without_criterion_leaves_the_last_weights(tmp_path):
    import torch

    model, start, mon, _ = _fake_run(tmp_path, VALUES, None)
    out = mon.finish(model)
    assert out["criterion"] is None and out["satisfied"] is None and out["chosen_step"] == 4
    assert mon.best_weights is None  # nothing copied when nothing is selected
    assert torch.allclose(dict(model.named_parameters())["1.weight"], start["1.weight"] + 4)


def test_monitor_refuses_a_criterion_the_target_cannot_give(tmp_path):
    bad = {k: {**v, "model_utility": "unavailable: no retain split"} for k, v in VALUES.items()}
    with pytest.raises(ConfigError, match="reads model_utility, which is 'unavailable: no retain"):
        _fake_run(tmp_path, bad, CRIT)


def test_evaluation_leaves_modes_and_random_state_as_they_were():
    import numpy as np
    import torch

    from obliviate.training.select import _undisturbed

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    model.train()
    model[0].eval()  # a module a method keeps in eval mode stays so
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    with _undisturbed(model):
        assert not model.training and not model[1].training
        torch.rand(7), random.random(), np.random.rand(2)  # an evaluation that draws numbers
        assert not torch.is_grad_enabled()
    assert model.training and not model[0].training and model[1].training
    a = (torch.rand(3), random.random(), np.random.rand(2))
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    b = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])


def test_monitor_state_round_trips_through_a_checkpoint(tmp_path):
    """What on_step_end writes beside a checkpoint is what a resumed monitor starts from."""
    import torch

    model, _, mon, _ = _fake_run(tmp_path, VALUES, CRIT)
    (tmp_path / "checkpoint-2").mkdir()
    mon._save(tmp_path, 4)
    mon._save(tmp_path, 2)  # drops selection-4: checkpoint-4 does not exist
    assert sorted(p.name for p in tmp_path.glob("selection-*")) == ["selection-2"]
    fresh = Monitor(mon.every, mon.names, mon.measure, mon.criterion)
    fresh.bind(model, None, None)
    args = SimpleNamespace(gradient_accumulation_steps=1, output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=2, max_steps=4, epoch=1.0)
    fresh.on_train_begin(args, state, SimpleNamespace(should_save=False), train_dataloader=[0, 1])
    assert fresh.curve == mon.curve and fresh.best == mon.best and fresh.resumed_at == 2
    assert all(torch.equal(fresh.best_weights[k], mon.best_weights[k]) for k in mon.best_weights)
    # a checkpoint without the state cannot resume a selection
    shutil.rmtree(tmp_path / "selection-2")
    with pytest.raises(ConfigError, match="has no evaluation state for unlearn.select_best"):
        Monitor(mon.every, mon.names, mon.measure, mon.criterion).on_train_begin(
            args, state, SimpleNamespace(should_save=False), train_dataloader=[0, 1]
        )


# ------------------------------------------------------------------------------ end to end

from mini import MINI  # noqa: E402

TRAINED = [*MINI, "finetune.epochs=30", "finetune.lr=1e-2", "unlearn.method=ga"]
"""The mini experiment with a target that has learned its data (forget / retain probability
0.35 / 0.33 against 0.004 after MINI's 2 epochs; model utility 0.19), unlearned by GA for 4
epochs of 3 steps."""
LR = {"full": "1.5e-3", "mask": "3e-3", "lora": "5e-3"}
"""Measured on that target: model utility holds for the first epochs and collapses to 0 by
epoch 3 (full weights: 0.19, 0.19, 0.18, 0, 0), so a utility-constrained choice is mid-run."""
SELECT = "min forget_prob subject to model_utility >= 0.9*target"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The cache holding the trained mini target and retain models."""
    from obliviate import api

    cache = tmp_path_factory.mktemp("select_cache")
    cfg = load_config("demo", [*TRAINED, f"cache_dir={cache}"])
    api.setup_runtime(cfg)
    api.target_model(cfg), api.retain_model(cfg)
    return cache


def _unlearn_in_memory(cache, tmp_path, extra, monitor_hook=None, model_hook=None, **kw):
    """run_unlearning on the cached target with the experiment's monitor (if eval_every is set);
    returns (model, info, snapshots of every parameter at each evaluated step)."""
    import torch

    from obliviate import stages
    from obliviate.experiment import Experiment
    from obliviate.models.io import load_model, load_tokenizer
    from obliviate.training.select import make_monitor
    from obliviate.training.trainer import run_unlearning

    cfg = load_config("demo", [*TRAINED, f"cache_dir={cache}", *extra])
    exp = Experiment(cfg)
    source = stages.target_model(exp)
    tok, model = load_tokenizer(source), load_model(source, "float32", exp.device)
    if model_hook:
        model_hook(model)
    snaps: dict[int, dict] = {}
    mon = None
    if cfg.unlearn.eval_every:
        mon = make_monitor(exp, source)
        evaluate = mon._evaluate

        def spy(state):
            snaps[state.global_step] = {
                n: p.detach().clone() for n, p in mon.model.named_parameters()
            }
            evaluate(state)

        mon._evaluate = spy
        if monitor_hook:
            monitor_hook(mon)
    bench = exp.benchmark
    work = kw.pop("work", tmp_path / "work")
    info = run_unlearning(
        model, tok, source, bench.forget, bench.retain, cfg.unlearn, work, torch.device("cpu"),
        monitor=mon, **kw,
    )  # fmt: skip
    return model, info, snaps


def _same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _params(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["full", "mask", "lora"])
def test_the_kept_weights_are_the_chosen_checkpoint_bit_for_bit(kind, trained, tmp_path):
    """GA with a utility-constrained criterion: after training, every parameter equals the
    snapshot taken at the chosen evaluation, not the last one; with a mask or LoRA too."""
    extra = {
        "full": [],
        "mask": ["unlearn.mask.fraction=0.3"],
        "lora": ["unlearn.lora.r=4"],
    }[kind]
    over = [
        *extra,
        f"unlearn.lr={LR[kind]}",
        "unlearn.eval_every=1",
        f"unlearn.select_best={SELECT}",
    ]
    model, info, snaps = _unlearn_in_memory(trained, tmp_path, over)
    sel = info["selection"]
    curve = sel["curve"]
    assert [r["step"] for r in curve] == sel["eval_steps"] == sorted(snaps) == [0, 3, 6, 9, 12]
    target = curve[0]["model_utility"]
    ok = [r for r in curve[1:] if r["model_utility"] >= 0.9 * target]
    assert ok, f"{kind}: no checkpoint keeps utility: {curve}"
    best = min(ok, key=lambda r: (r["forget_prob"], r["step"]))  # the criterion, by hand
    assert sel["chosen_step"] == best["step"] and sel["satisfied"] is True
    assert sel["chosen_metrics"] == {k: best[k] for k in sel["chosen_metrics"]}
    assert best["step"] != 12, f"{kind}: the test needs a choice before the end: {curve}"
    now = _params(model)
    assert _same(now, snaps[best["step"]])
    assert not _same(now, snaps[12])
    if kind == "lora":
        moved = [n for n in now if not __import__("torch").equal(now[n], snaps[0][n])]
        assert moved and all(".lora_" in n for n in moved)  # only the adapter differs
    json.dumps(info)


@pytest.mark.slow
def test_evaluating_without_selecting_trains_bit_identical_weights(trained, tmp_path):
    """With attention dropout on (so training draws random numbers) and an evaluation that
    draws from every generator, ``eval_every`` without ``select_best`` ends with the weights of
    a run without it (this fails when the random state is not put back)."""
    import numpy as np
    import torch

    def dropout(model):
        for m in model.modules():
            if hasattr(m, "attention_dropout"):
                m.attention_dropout = 0.2

    def noisy(mon):
        inner = mon.measure

        def measure(model, tok):
            torch.rand(5), random.random(), np.random.rand(3)
            return inner(model, tok)

        mon.measure = measure

    over = ["unlearn.method=graddiff", "unlearn.lr=1.5e-3"]
    plain, _, _ = _unlearn_in_memory(trained, tmp_path / "a", over, model_hook=dropout)
    watched, info, snaps = _unlearn_in_memory(
        trained,
        tmp_path / "b",
        [*over, "unlearn.eval_every=0.5"],
        model_hook=dropout,
        monitor_hook=noisy,
    )
    assert info["selection"]["eval_steps"] == [0, 2, 3, 5, 6, 8, 9, 11, 12] == sorted(snaps)
    assert info["selection"]["criterion"] is None
    assert _same(_params(plain), _params(watched))
    assert not _same(snaps[0], _params(watched))  # it did train


@pytest.mark.slow
def test_a_resumed_run_chooses_as_an_uninterrupted_one(trained, tmp_path):
    """Checkpoints every 3 steps; the step-12 checkpoint removed as a kill would leave it: the
    resumed run restores the curve and best weights saved with checkpoint 9 and ends with the
    same selection and weights."""
    over = [
        f"unlearn.lr={LR['full']}",
        "unlearn.eval_every=1",
        f"unlearn.select_best={SELECT}",
        "unlearn.save_every=3",
    ]
    work = tmp_path / "work"
    first, info, _ = _unlearn_in_memory(trained, tmp_path, over, work=work)
    assert (work / "selection-9" / "best.safetensors").is_file()
    shutil.rmtree(work / "checkpoint-12")
    second, again, snaps = _unlearn_in_memory(trained, tmp_path, over, work=work, resume=True)
    assert sorted(snaps) == [12]  # only the step after the resume point was evaluated again
    a, b = info["selection"], again["selection"]
    assert b.pop("resumed_at") == 9
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert _same(_params(first), _params(second))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_cli_unlearn_keeps_the_best_and_records_it(kind, trained, tmp_path):
    """``obliviate unlearn`` with eval_every / select_best: the card's ``selection`` names the
    chosen step, the log holds every evaluation, and ``obliviate eval`` of the saved model (a
    full model dir, or a LoRA adapter dir) gives the numbers logged for that step."""
    from obliviate import api
    from obliviate.cli import run
    from obliviate.models.io import read_card

    over = [
        *TRAINED,
        f"cache_dir={trained}",
        f"unlearn.lr={LR[kind]}",
        *(["unlearn.lora.r=4"] if kind == "lora" else []),
        "unlearn.eval_every=1 epochs",
        f"unlearn.select_best={SELECT}",
    ]
    run_dir = tmp_path / "run"
    assert run(["unlearn", "demo", *over, f"run_dir={run_dir}", "--no-progress"]) == 0
    card = read_card(run_dir / "model")
    assert ("lora" in card) is (kind == "lora")
    sel = card["selection"]
    assert sel["criterion"] == SELECT and sel["satisfied"] is True
    assert sel["chosen_step"] not in (0, 12)
    chosen = next(r for r in sel["curve"] if r["step"] == sel["chosen_step"])
    assert sel["chosen_epoch"] == chosen["epoch"] == sel["chosen_step"] / 3
    log = (run_dir / "obliviate.log").read_text()
    rows = [json.loads(line.split("evaluation: ", 1)[1]) for line in log.splitlines() if
            "unlearning (ga) evaluation: " in line]  # fmt: skip
    assert rows == sel["curve"]
    assert f"kept step {sel['chosen_step']} (epoch" in log
    cfg = load_config("demo", [*over, f"run_dir={tmp_path / 'eval'}"])
    summary = api.evaluate(cfg, str(run_dir / "model"), tmp_path / "eval", record_card=False)
    for name, value in sel["chosen_metrics"].items():
        assert summary[name] == pytest.approx(value, abs=1e-6), name
    assert yaml_of(run_dir)["unlearn"]["select_best"] == SELECT


def yaml_of(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())
