"""Config loading: strict fields, overrides, merging, one-line errors naming the field."""

import pytest

from obliviate.config import load_config, merge_raw
from obliviate.errors import ConfigError


def test_shipped_demo_loads_and_overrides_apply():
    cfg = load_config("demo", ["unlearn.lr=1e-4", "unlearn.params.beta=0.5", "demo.methods=[ga]"])
    assert cfg.unlearn.lr == pytest.approx(1e-4)  # "1e-4" is a string to PyYAML: coerced to float
    assert cfg.unlearn.params == {"beta": 0.5}
    assert cfg.demo.methods == ["ga"]
    assert cfg.benchmark.name == "synthetic"


@pytest.mark.parametrize(
    "override, field",
    [
        ("unlearn.lrr=1", "unlearn.lrr"),
        ("unlearn.lr=abc", "unlearn.lr"),
        ("finetune.batch_size=0", "finetune.batch_size"),
        ("benchmark.forget_split=forget3", "benchmark.forget_split"),
        ("unlearn.method=nosuch", "unlearn.method"),
        ("unlearn.params.betaa=1", "unlearn.params.betaa"),
        ("model.tiny.num_heads=3", "model.tiny.hidden_size"),
        ("benchmark.qa_per_author=25", "benchmark.qa_per_author"),
        ("eval.write_generations=maybe", "eval.write_generations"),
        ("unlearn.params.beta=inf", "unlearn.params.beta"),
        ("unlearn.params.gamma=nan", "unlearn.params.gamma"),
        ("unlearn.params={beta: 1, beta: 2}", "unlearn.params"),
    ],
)
def test_bad_fields_name_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config("demo", [override])
    msg = e.value.one_line()
    assert field in msg and "\n" not in msg


def test_tofu_needs_path():
    with pytest.raises(ConfigError, match="benchmark.path"):
        load_config("demo", ["benchmark.name=tofu"])


def test_merge_replaces_params_but_merges_sections():
    base = {"unlearn": {"lr": 1e-4, "params": {"beta": 0.1, "retain_loss": "kl"}}}
    new = {"unlearn": {"method": "ga", "params": {"gamma": 2.0}}}
    out = merge_raw(base, new)
    assert out == {"unlearn": {"lr": 1e-4, "method": "ga", "params": {"gamma": 2.0}}}


def test_yaml_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("unlearn: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(lst))
