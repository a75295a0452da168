"""Every registered method end to end through the CLI on the tiny synthetic benchmark (slow).

``obliviate unlearn demo methods/<m>`` (the same config as ``unlearn.method=<m>``: the method's
published defaults, the demo schedule and demo.yaml's ``unlearn.per_method`` values): the run must
finish, stay finite, write a model directory that loads, and lower forget-set probability below
the target model's. The target model is trained once and cached under $OBLIVIATE_CACHE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from obliviate import api, load_config
from obliviate.cli import main
from obliviate.eval.scoring import score_pairs
from obliviate.methods.base import method_names
from obliviate.models.io import load_model, load_tokenizer, read_card

pytestmark = pytest.mark.slow


def _cli(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0, f"obliviate {' '.join(argv)} exited {exc.value.code}"


def _forget_prob(model_dir: str) -> float:
    """Mean over the forget split of exp(−S̄), S̄ the length-normalised answer NLL."""
    cfg = load_config("demo", [])
    pairs = [(r.question, r.answer) for r in api.load_benchmark(cfg).forget]
    scored = score_pairs(load_model(model_dir, "float32", "cpu"), load_tokenizer(model_dir), pairs)
    return sum(math.exp(-scored[p].mean_nll) for p in pairs) / len(pairs)


@pytest.fixture(scope="module")
def target_forget_prob() -> float:
    cfg = load_config("demo", [])
    api.setup_runtime(cfg)
    return _forget_prob(api.finetune(cfg, "full"))


@pytest.fixture(scope="module")
def unlearned(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``unlearned(m)`` → the model dir of ``obliviate unlearn demo methods/<m>``, run once."""
    root = tmp_path_factory.mktemp("methods")
    done: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in done:
            run_dir = root / method
            _cli(["unlearn", "demo", f"methods/{method}", f"run_dir={run_dir}"])
            done[method] = run_dir / "model"
        return done[method]

    return get


@pytest.mark.parametrize("method", method_names())
def test_method_unlearns_through_cli(method, unlearned, target_forget_prob):
    model_dir = unlearned(method)
    card = read_card(model_dir)
    assert card["stage"] == "unlearn" and card["method"] == method
    assert 0 < card["max_grad_norm"] < 1e6  # every step's gradient finite and under the bound
    assert card["steps"] > 0
    model = load_model(str(model_dir), "float32", "cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    prob = _forget_prob(str(model_dir))
    assert prob < target_forget_prob, f"{method}: forget prob {prob:.3f} ≥ target's"


@pytest.mark.parametrize(
    ("method", "loads"),
    [("ga", False), ("simnpo", False), ("wga", False), ("flat", False), ("npo", True)],
)
def test_reference_model_loaded_only_when_needed(method, loads, unlearned):
    assert read_card(unlearned(method))["loaded_reference_model"] is loads


def test_eval_loads_an_unlearned_model_dir(unlearned, tmp_path, capsys):
    model_dir = unlearned("npo")
    _cli(["eval", "demo", f"model.path={model_dir}", f"run_dir={tmp_path / 'eval'}"])
    assert (tmp_path / "eval" / "summary.json").is_file()
    assert "model utility" in capsys.readouterr().out
