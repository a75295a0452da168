"""Method parameters at config level: one source of truth, resolved the same way on every path.

Class defaults are the published values; ``configs/methods/<m>.yaml`` only names the method; an
experiment's model-specific values sit under ``unlearn.per_method.<m>``. Loading a config and
checking its method must not import torch.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from obliviate.config import dump_yaml, load_config
from obliviate.demo import method_config
from obliviate.errors import ConfigError
from obliviate.methods import build_method, method_names


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_loading_and_validating_a_config_does_not_import_torch():
    out = _fresh_python(
        """
        import sys
        import obliviate.config as c
        cfg = c.load_config("demo", ["unlearn.method=rmu"])
        c.load_config(["demo", "methods/idk_ap"], ["demo.methods=[ga, graddiff, me_gd]"])
        assert cfg.unlearn.method == "rmu"
        assert "torch" not in sys.modules, "torch imported"
        print("ok")
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_bad_method_or_param_is_a_config_error_before_torch():
    out = _fresh_python(
        """
        import sys
        import obliviate.config as c
        from obliviate.errors import ConfigError
        for bad in (["unlearn.method=nosuch"], ["unlearn.method=npo", "unlearn.params.betaa=1"],
                    ["unlearn.method=npo", "unlearn.params.beta=abc"],
                    ["unlearn.per_method.rmu.params.alpah=1"], ["demo.methods=[ga, nosuch]"],
                    ["unlearn.method=npo", "unlearn.params.beta=nan"]):
            try:
                c.load_config("demo", bad)
            except ConfigError as e:
                msg = e.one_line()
                assert "\\n" not in msg
                print(msg)
            else:
                raise SystemExit(f"no error for {bad}")
        assert "torch" not in sys.modules, "torch imported"
        """
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6
    assert "unlearn.method" in lines[0]
    assert "unlearn.params.betaa" in lines[1]
    assert "unlearn.params.beta" in lines[2]
    assert "unlearn.per_method.rmu.params.alpah" in lines[3]
    assert "demo.methods[1]" in lines[4]
    assert "unlearn.params.beta=nan is out of range" in lines[5]


@pytest.mark.parametrize("name", method_names())
def test_method_by_name_equals_method_file(name):
    by_name = load_config(["demo"], [f"unlearn.method={name}"]).unlearn
    by_file = load_config(["demo", f"methods/{name}"]).unlearn
    assert by_name == by_file
    assert method_config(load_config("demo"), name).unlearn == by_name


@pytest.mark.parametrize("name", method_names())
def test_method_file_alone_gives_the_published_defaults(name):
    """Without an experiment's per-method values a method runs on its class defaults."""
    cfg = load_config(f"methods/{name}")
    assert cfg.unlearn.params == {}
    assert cfg.unlearn.per_method == {}


def test_demo_methods_train_the_same_models_as_before():
    """demo.methods = [ga, graddiff, npo]: the demo schedule and the same effective hyper-parameters
    the per-method files used to spell out."""
    demo = load_config("demo")
    before = {
        "ga": {"gamma": 1.0, "alpha": 1.0, "retain_loss": None},
        "graddiff": {"gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
        "npo": {"beta": 0.1, "gamma": 1.0, "alpha": 1.0, "retain_loss": "nll"},
    }
    assert demo.demo.methods == list(before)
    for m, expected in before.items():
        u = method_config(demo, m).unlearn
        assert (u.method, u.lr, u.epochs, u.batch_size, u.warmup_epochs, u.weight_decay) == (
            m,
            1.5e-4,
            8.0,
            8,
            1.0,
            0.01,
        )
        built = build_method(u.method, u.params)
        assert {k: getattr(built, k) for k in expected} == expected
        assert built.retain_params == {}


def test_per_method_values_apply_to_their_method_only():
    rmu = load_config("demo", ["unlearn.method=rmu"]).unlearn
    assert rmu.lr == pytest.approx(3e-3) and rmu.params == {"alpha": 5.0}
    assert build_method("rmu", rmu.params).alpha == 5.0
    npo = load_config("demo").unlearn
    assert npo.lr == pytest.approx(1.5e-4) and npo.params == {}
    assert load_config("methods/rmu").unlearn.lr == pytest.approx(1e-5)  # no demo: published


def test_overrides_and_later_files_win_over_per_method_values(tmp_path):
    cfg = load_config(
        "demo", ["unlearn.method=rmu", "unlearn.lr=1e-3", "unlearn.params.steer_scale=2"]
    )
    assert cfg.unlearn.lr == pytest.approx(1e-3)
    assert cfg.unlearn.params == {"alpha": 5.0, "steer_scale": 2}
    cfg = load_config("demo", ["unlearn.method=rmu", "unlearn.params.alpha=7"])
    assert cfg.unlearn.params == {"alpha": 7}
    # an override for the selected method's params never lands in another method's entry
    cfg = load_config("demo", ["unlearn.params.beta=0.5"])
    assert cfg.unlearn.params == {"beta": 0.5}
    assert cfg.unlearn.per_method["rmu"] == {"lr": 3e-3, "params": {"alpha": 5.0}}
    later = tmp_path / "later.yaml"
    later.write_text("unlearn:\n  lr: 2.0e-3\n")
    assert load_config(["demo", str(later)], ["unlearn.method=rmu"]).unlearn.lr == pytest.approx(
        2e-3
    )
    # a later file's params replace earlier params whole, the per-method ones too
    later.write_text("unlearn:\n  method: rmu\n  params: {steer_scale: 2.0}\n")
    assert load_config(["demo", str(later)]).unlearn.params == {"steer_scale": 2.0}
    # within one file, the per-method entry wins over the file's own section
    same = tmp_path / "same.yaml"
    same.write_text("unlearn:\n  method: ga\n  lr: 1.0e-4\n  per_method:\n    ga: {lr: 5.0e-4}\n")
    assert load_config(str(same)).unlearn.lr == pytest.approx(5e-4)


def test_resolved_config_reloads_to_itself(tmp_path):
    for overrides in (["unlearn.method=rmu"], ["unlearn.method=rmu", "unlearn.lr=1e-3"], []):
        cfg = load_config("demo", overrides)
        path = tmp_path / "config.yaml"
        path.write_text(dump_yaml(cfg))
        assert load_config(str(path)).unlearn == cfg.unlearn


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("unlearn.per_method.nosuch.lr=1", "unlearn.per_method"),
        ("unlearn.per_method.rmu.method=ga", "unlearn.per_method.rmu.method"),
        ("unlearn.per_method.rmu.lrr=1", "unlearn.per_method.rmu.lrr"),
        ("unlearn.per_method.rmu.lr=abc", "unlearn.per_method.rmu.lr"),
        ("unlearn.per_method.npo.params.retain_params.beta=1", "retain_params"),
    ],
)
def test_bad_per_method_entries_name_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config("demo", [override])
    assert field in e.value.one_line()


def test_demo_refuses_to_carry_one_methods_values_into_another():
    cfg = load_config("demo", ["unlearn.method=rmu"])
    assert method_config(cfg, "rmu").unlearn == cfg.unlearn
    with pytest.raises(ConfigError, match="demo.methods"):
        method_config(cfg, "npo")
    # once an override has replaced the per-method lr, every demo method runs at that lr
    cfg = load_config("demo", ["unlearn.method=rmu", "unlearn.lr=1e-3"])
    assert method_config(cfg, "npo").unlearn.lr == pytest.approx(1e-3)
    assert method_config(cfg, "npo").unlearn.params == {}
    # a per-method entry for the other method that sets the same keys is fine
    cfg = load_config("demo", ["unlearn.method=rmu", "unlearn.per_method.npo.lr=1e-4"])
    assert method_config(cfg, "npo").unlearn.lr == pytest.approx(1e-4)


def test_method_config_keeps_the_user_schedule():
    cfg = load_config("demo", ["unlearn.epochs=3"])
    for m in ("ga", "graddiff", "rmu"):
        u = method_config(cfg, m).unlearn
        assert u.epochs == 3.0
        assert dataclasses.asdict(u)["per_method"] == cfg.unlearn.per_method
