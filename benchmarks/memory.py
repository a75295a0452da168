"""Peak memory of unlearning: reference-free against reference methods, full weights against LoRA.

    python benchmarks/memory.py           # writes benchmarks/results/memory.txt (a few minutes)

A randomly initialised Llama (hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 32000:
~58M parameters, float32; no hub) is saved once; then every configuration runs in a fresh
subprocess through obliviate's own path (``models.io.load_model`` and
``training.trainer.run_unlearning``, as ``obliviate unlearn`` does, without the final save): a few
AdamW steps of batch 8 on the demo benchmark's forget10 split (and its retain pairs where the
method reads them). Each child reports its peak resident set size (``getrusage`` ``ru_maxrss``),
its RSS after the imports (the interpreter and libraries, the same in every child) and after
loading the model.

Configurations: GA (no reference), GradDiff (no reference; the same forget + retain passes as
NPO), NPO (loads a second, frozen copy of the model as its reference), and LoRA (rank 8 on every
projection) GA / GradDiff / NPO, where NPO's reference is the same model with the adapter disabled.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OUT = Path(__file__).parent / "results" / "memory.txt"
SHAPE = {
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "intermediate_size": 1376,
    "vocab_size": 32000,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
STEPS, BATCH, MAX_LEN, THREADS = 4, 8, 128, 2
CONFIGS = [  # (label, method, lora)
    ("GA", "ga", False),
    ("GradDiff", "graddiff", False),
    ("NPO", "npo", False),
    ("LoRA-GA", "ga", True),
    ("LoRA-GradDiff", "graddiff", True),
    ("LoRA-NPO", "npo", True),
]


def rss_mib() -> float:
    """The current resident set size (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _benchmark_records():
    from obliviate import load_config
    from obliviate.experiment import Experiment

    bench = Experiment(load_config("demo", [])).benchmark
    return bench.forget, bench.retain


def child(method: str, lora: bool, model_dir: str, work: str) -> None:
    """One configuration, in this (fresh) process; prints one JSON line."""
    import torch

    from obliviate import load_config
    from obliviate.models import io
    from obliviate.training.trainer import run_unlearning

    torch.set_num_threads(THREADS)
    forget, retain = _benchmark_records()
    overrides = [
        f"unlearn.method={method}",
        f"unlearn.max_steps={STEPS}",
        f"unlearn.batch_size={BATCH}",
        f"unlearn.max_length={MAX_LEN}",
        "unlearn.lr=1e-5",
        "unlearn.warmup_epochs=0",
    ] + (["unlearn.lora.r=8"] if lora else [])
    cfg = load_config("demo", overrides).unlearn
    loads: list[str] = []
    real = io._load
    io._load = lambda name, *a, **k: loads.append(name) or real(name, *a, **k)
    after_imports = rss_mib()
    tok = io.load_tokenizer(model_dir)
    model = io.load_model(model_dir, "float32", "cpu")
    after_load = rss_mib()
    t0 = time.perf_counter()
    info = run_unlearning(model, tok, model_dir, forget, retain, cfg, work, torch.device("cpu"))
    seconds = time.perf_counter() - t0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if "lora" in info:
        trainable = info["lora"]["trainable_parameters"]
    print(
        json.dumps(
            {
                "peak": peak_mib(),
                "after_imports": after_imports,
                "after_load": after_load,
                "model_loads": len(loads),
                "steps": info["steps"],
                "seconds": seconds,
                "trainable": trainable,
            }
        )
    )


def build_model(out: Path) -> tuple[int, int]:
    """Save the random Llama and a BPE tokenizer trained on the benchmark; its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from obliviate.models.tokenizer import train_bpe_tokenizer

    forget, retain = _benchmark_records()
    texts = [t for r in forget + retain for t in (r.question, r.answer)]
    tok = train_bpe_tokenizer(texts, vocab_size=SHAPE["vocab_size"])
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    cfg = LlamaConfig(**SHAPE, **ids, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters()), len(tok)


def run_child(method: str, lora: bool, model_dir: Path, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(int(lora)), str(model_dir), str(work)]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"{method} (lora={lora}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import torch
    from machine import cpu_model  # benchmarks/machine.py

    started = datetime.now(UTC)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        n_params, n_vocab = build_model(model_dir)
        for label, method, lora in CONFIGS:
            r = run_child(method, lora, model_dir, Path(tmp) / f"work-{label}")
            rows.append((label, r))
            print(f"  {label}: peak {r['peak']:.0f} MiB", file=sys.stderr)
    ga = rows[0][1]["peak"]
    base = rows[0][1]["after_imports"]
    mib = n_params * 4 / 2**20
    lines = [
        f"obliviate peak memory of unlearning — {started:%Y-%m-%d %H:%M} UTC",
        f"machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPU cores (shared), "
        f"torch {torch.__version__}, {THREADS} threads, python {platform.python_version()}",
        "command: python benchmarks/memory.py",
        f"model: random Llama, hidden {SHAPE['hidden_size']}, {SHAPE['num_hidden_layers']} layers, "
        f"intermediate {SHAPE['intermediate_size']}, vocab {SHAPE['vocab_size']} "
        f"(tokenizer {n_vocab}): {n_params:,} parameters = {mib:.0f} MiB in float32",
        f"run: obliviate's run_unlearning, {STEPS} AdamW steps, batch {BATCH} (forget10 of the demo "
        f"benchmark, max_length {MAX_LEN}); LoRA rank 8 on q,k,v,o,gate,up,down_proj; one fresh "
        "process per row; peak = ru_maxrss of that process",
        "",
        f"{'configuration':<15}{'reference':<22}{'trainable':>12}{'loads':>7}"
        f"{'peak MiB':>10}{'× GA':>7}{'above imports':>15}{'× GA':>7}",
    ]
    for label, r in rows:
        lora = label.startswith("LoRA")
        ref = "none"
        if label.endswith("NPO"):
            ref = "adapter disabled" if lora else "frozen copy"
        above = r["peak"] - r["after_imports"]
        lines.append(
            f"{label:<15}{ref:<22}{r['trainable']:>12,}{r['model_loads']:>7}"
            f"{r['peak']:>10.0f}{r['peak'] / ga:>7.2f}{above:>15.0f}"
            f"{above / (ga - rows[0][1]['after_imports']):>7.2f}"
        )
    peak = {label: r["peak"] for label, r in rows}
    lines += [
        "",
        f"(RSS after the imports, the same in every process: ~{base:.0f} MiB; 'above imports' "
        "subtracts it; 'loads' counts models loaded from disk)",
        f"NPO / GradDiff (the cost of the reference copy): {peak['NPO'] / peak['GradDiff']:.2f}x, "
        f"+{peak['NPO'] - peak['GradDiff']:.0f} MiB",
        f"LoRA-NPO / LoRA-GradDiff (the adapter-disabled reference): "
        f"{peak['LoRA-NPO'] / peak['LoRA-GradDiff']:.2f}x, "
        f"+{peak['LoRA-NPO'] - peak['LoRA-GradDiff']:.0f} MiB",
        f"LoRA-NPO / NPO: {peak['LoRA-NPO'] / peak['NPO']:.2f}x; "
        f"LoRA-GA / GA: {peak['LoRA-GA'] / peak['GA']:.2f}x",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], bool(int(sys.argv[3])), sys.argv[4], sys.argv[5])
    else:
        main()
