"""`obliviate eval` on a local directory in TOFU's exact schema (JSON lines, *_perturbed splits,
real_authors / world_facts utility sets), and the hub path's offline error."""

import json

import pytest

from obliviate.cli import main
from obliviate.config import TinyModelConfig
from obliviate.data.benchmarks.tofu import load_tofu_dir as load_benchmark_dir
from obliviate.errors import ConfigError, DataError
from obliviate.models.io import save_model_dir
from obliviate.models.tiny import build_tiny_model
from obliviate.models.tokenizer import train_bpe_tokenizer

TOFU_DIR = __import__("pathlib").Path(__file__).parent / "data" / "tofu_mini"


def test_tofu_dir_loads_in_tofu_layout():
    b = load_benchmark_dir(str(TOFU_DIR), "forget10")
    assert [s.name for s in b.eval_splits] == ["forget", "retain", "real_authors", "world_facts"]
    forget = b.split("forget")
    assert len(forget.records) == 2 and len(forget.records[0].perturbed_answer) == 3
    assert forget.records[0].paraphrased_answer  # taken from forget10_perturbed, not forget10
    assert b.split("world_facts").role == "utility"
    assert b.extra_train == []


@pytest.fixture(scope="module")
def random_tiny_model(tmp_path_factory):
    texts = [line for f in TOFU_DIR.glob("*.json") for line in f.read_text().splitlines()]
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    cfg = TinyModelConfig(
        vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64
    )
    out = tmp_path_factory.mktemp("m") / "model"
    save_model_dir(build_tiny_model(cfg, tok), tok, out, {"stage": "test"})
    return out


def test_eval_command_on_tofu_dir(random_tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "eval",
        "benchmark.name=tofu",
        f"benchmark.path={TOFU_DIR}",
        f"model.path={random_tiny_model}",
        f"model.retain_path={random_tiny_model}",
        f"run_dir={run}",
        "eval.max_new_tokens=8",
    ]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert (run / "config.yaml").is_file()
    # The model is its own retain reference here, so forget quality is exactly 1.
    assert summary["forget_quality"] == pytest.approx(1.0)
    assert set(summary["model_utility_terms"]) == {
        f"{s}_{m}"
        for s in ("retain", "real_authors", "world_facts")
        for m in ("rouge", "prob", "truth_ratio")
    }
    rows = json.loads((run / "eval" / "world_facts.json").read_text())
    assert len(rows) == 2 and 0 < rows[0]["prob_normalized"] < 1 and "generation" in rows[0]
    # A second run into the same dir must not silently overwrite it.
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert "already holds" in capsys.readouterr().err


def test_malformed_rows_name_the_problem(tmp_path):
    (tmp_path / "forget10.json").write_text('{"question": "q?"}\n')
    (tmp_path / "retain90.json").write_text('{"question": "q?", "answer": "a"}\n')
    with pytest.raises(DataError, match="forget10.json line 1 lacks .*answer"):
        load_benchmark_dir(str(tmp_path), "forget10")
    (tmp_path / "forget10.json").write_text("{not json\n")
    with pytest.raises(DataError, match="not valid JSON"):
        load_benchmark_dir(str(tmp_path), "forget10")


def test_hub_path_gives_clear_error_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        load_benchmark_dir("locuslab/TOFU", "forget10")
    msg = e.value.one_line()
    assert "locuslab/TOFU" in msg and "benchmark.path" in msg and "\n" not in msg


def test_jsonl_errors_name_the_files_own_line(tmp_path):
    """Blank lines do not shift the reported line: a broken row on line 7 is reported as line 7."""
    good = '{"question": "q?", "answer": "a"}'
    lines = [good, "", good, good, "", good, "{broken", good]
    (tmp_path / "forget10.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "retain90.json").write_text(good + "\n")
    with pytest.raises(DataError, match=r"forget10.jsonl is not valid JSON lines \(line 7"):
        load_benchmark_dir(str(tmp_path), "forget10")
    lines[6] = '{"question": "q?"}'
    (tmp_path / "forget10.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="forget10.jsonl line 7 lacks .*answer"):
        load_benchmark_dir(str(tmp_path), "forget10")


def test_parquet_and_non_utf8_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"question": f"q{i}?", "answer": f"a{i}", "perturbed_answer": ["x", "y"]} for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "forget10.parquet")
    (tmp_path / "retain90.jsonl").write_text('{"question": "r?", "answer": "b"}\n')
    b = load_benchmark_dir(str(tmp_path), "forget10")
    assert [r.answer for r in b.forget] == ["a0", "a1", "a2"]
    assert b.split("forget").records[2].perturbed_answer == ["x", "y"]
    (tmp_path / "retain90.jsonl").write_bytes(b'{"question": "r?", "answer": "\xff"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        load_benchmark_dir(str(tmp_path), "forget10")


def test_tofu_protocol_scores_the_whole_retain_set_with_200_tokens(tmp_path):
    from obliviate import load_config
    from obliviate.experiment import Experiment

    cfg = load_config([], ["benchmark.name=tofu", f"benchmark.path={TOFU_DIR}", "model.path=x/y"])
    exp = Experiment(cfg)
    assert cfg.benchmark.retain_eval_size is None and cfg.eval.max_new_tokens is None
    n_lines = len((TOFU_DIR / "retain_perturbed.json").read_text().splitlines())
    assert len(exp.benchmark.split("retain").records) == n_lines > 0
    assert exp.benchmark.max_new_tokens == 200
    demo = load_config("demo")
    assert demo.benchmark.retain_eval_size == 60 and demo.eval.max_new_tokens == 48


def test_a_new_benchmark_needs_no_edit_to_the_pipeline(tmp_path, monkeypatch):
    """Register a loader as the README's "Adding a benchmark" shows; config, the experiment
    context and the cache key pick it up by name."""
    from obliviate import load_config
    from obliviate.data.benchmarks import base
    from obliviate.data.benchmarks.base import Benchmark, EvalSplit, register_benchmark
    from obliviate.data.schema import QARecord
    from obliviate.data.sources import Source
    from obliviate.experiment import Experiment

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # undo afterwards
    (tmp_path / "forget.jsonl").write_text('{"question": "q?", "answer": "a"}\n')
    (tmp_path / "retain.jsonl").write_text('{"question": "r?", "answer": "b"}\n')

    @register_benchmark("my_bench", "a test benchmark", needs_path=True)
    def load_my_bench(cfg):
        src = Source(cfg.path)
        forget = [QARecord.from_dict(row, where) for where, row in src.rows("forget")]
        retain = [QARecord.from_dict(row, where) for where, row in src.rows("retain")]
        splits = [EvalSplit("forget", "forget", forget), EvalSplit("retain", "retain", retain)]
        return Benchmark(
            "my_bench", str(cfg.path), "forget", forget, retain, forget + retain, eval_splits=splits
        )

    with pytest.raises(ConfigError, match="benchmark.path is required"):
        load_config([], ["benchmark.name=my_bench"])
    exp = Experiment(load_config([], ["benchmark.name=my_bench", f"benchmark.path={tmp_path}"]))
    assert [r.answer for r in exp.benchmark.retain] == ["b"]
    before = exp.data_key["files"]
    (tmp_path / "forget.jsonl").write_text('{"question": "q?", "answer": "changed"}\n')
    assert Experiment(exp.cfg).data_key["files"] != before  # edited data → new cache key
