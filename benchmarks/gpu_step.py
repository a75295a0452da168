"""Unlearning step time, evaluation throughput and peak GPU memory on a model with Llama-3.2-1B's
shapes (randomly initialised: no hub, no download).

    python benchmarks/gpu_step.py            # a GPU: hidden 2048, 16 layers, 32 / 8 heads, ...
    python benchmarks/gpu_step.py --small    # any machine (CI smoke test): a small shape on CPU

Measured in one run, on the same model shape, batch and sequences:

- the time of one optimiser step of GA, NPO (with its frozen reference model, and NPO's default
  retain term) and LoRA-NPO (r 16 on every projection; the reference is the base with the
  adapter off), each through obliviate's trainer (``run_unlearning``), against a plain HF
  ``Trainer`` fine-tuning step (cross-entropy on the forget batch) — the floor. Ratios are to
  the floor; the median of the timed steps after the warm-up ones is reported;
- teacher-forced scoring and greedy generation throughput (tokens per second) of the
  evaluation's passes (``score_pairs`` / ``generate_answers``: length-sorted batches, KV cache);
- peak GPU memory of each configuration (``torch.cuda.max_memory_allocated``, from loading the
  model to the last step).

The model is stored once in a temporary dir (the reference loads from it, as in a real run);
weights are bf16 on a GPU that supports it (``model.dtype=auto``), fp32 on CPU.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402

from obliviate import load_config, progress  # noqa: E402
from obliviate.data.collate import QADataset, SFTCollator  # noqa: E402
from obliviate.data.schema import QARecord  # noqa: E402
from obliviate.eval.scoring import PassCounter, generate_answers, score_pairs  # noqa: E402
from obliviate.models.io import load_model, resolve_device, resolve_dtype  # noqa: E402
from obliviate.models.tokenizer import train_bpe_tokenizer  # noqa: E402
from obliviate.training.args import training_arguments  # noqa: E402
from obliviate.training.trainer import run_unlearning  # noqa: E402

LLAMA_32_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
}
SMALL = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 4096,
    "tie_word_embeddings": True,
    "max_position_embeddings": 1024,
}


def records(n: int, seed: int, q_words: int, a_words: int) -> list[QARecord]:
    """QA pairs of random words (fixed lengths, so every batch has the same shape)."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))
        for _ in range(3000)
    ]

    def text(k: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(k))

    return [QARecord(question=text(q_words) + "?", answer=text(a_words) + ".") for _ in range(n)]


class StepTimer(TrainerCallback):
    """Wall time of every optimiser step (device synchronised at both ends). Also passed to
    ``run_unlearning`` through its ``monitor`` seam (``bind`` / ``finish`` do nothing)."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.times: list[float] = []
        self.t0 = 0.0

    def bind(self, model, tokenizer, trainer) -> None:  # noqa: D102
        pass

    def finish(self, model) -> None:  # noqa: D102
        return None

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: D102
        self.sync()
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        self.sync()
        self.times.append(time.perf_counter() - self.t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a small shape (CPU smoke test)")
    ap.add_argument("--batch", type=int, default=8, help="per-step batch (default 8)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (3; --small 2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (10; --small 4)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    a = ap.parse_args()
    warmup = a.warmup if a.warmup is not None else (2 if a.small else 3)
    steps = a.steps if a.steps is not None else (4 if a.small else 10)

    progress.set_enabled(False)
    progress.silence_libraries()
    device = resolve_device("auto")
    dtype = resolve_dtype("auto", device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    shape = SMALL if a.small else LLAMA_32_1B
    q_words, a_words = (8, 24) if a.small else (24, 72)
    forget = records(8 * a.batch, 1, q_words, a_words)
    retain = records(32 * a.batch, 2, q_words, a_words)
    tok = train_bpe_tokenizer(
        [t for r in forget + retain for t in (r.question, r.answer)], 2048 if a.small else 8192
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    lines: list[str] = []

    def say(s: str = "") -> None:
        lines.append(s)
        print(s, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        n_params, seq = build_model(shape, tok, dtype, device, model_dir, forget)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
        say(f"# gpu_step: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {name}")
        say(
            f"# torch {torch.__version__}, transformers {transformers.__version__}, "
            f"{'Llama-3.2-1B shapes' if not a.small else 'small shape (--small)'}: "
            f"{n_params / 1e6:.1f}M parameters, {dtype}".replace("torch.", "")
        )
        say(
            f"# batch {a.batch} x {seq} tokens (forget; NPO adds a retain batch), "
            f"{warmup} warm-up + {steps} timed steps, median step"
        )
        rows = []
        floor = measure(
            "HF Trainer fine-tuning (floor)",
            lambda timer: plain_step(
                model_dir, tok, forget, a.batch, warmup + steps, timer, device
            ),
            sync,
            device,
            warmup,
        )
        rows.append(floor)
        for label, method, extra in (
            ("GA (obliviate trainer)", "ga", []),
            ("NPO + reference (obliviate trainer)", "npo", []),
            ("LoRA-NPO r16 (obliviate trainer)", "npo", ["unlearn.lora.r=16"]),
        ):
            ov = [f"unlearn.method={method}", *extra]
            rows.append(
                measure(
                    label,
                    lambda timer, ov=ov: obliviate_step(
                        model_dir, tok, forget, retain, a.batch, warmup + steps, ov, timer, device
                    ),
                    sync,
                    device,
                    warmup,
                )
            )
        say("")
        say(f"{'configuration':40s} {'step':>10s} {'x floor':>8s} {'peak GPU mem':>13s}")
        for r in rows:
            mem = f"{r['peak'] / 2**30:.2f} GiB" if r["peak"] is not None else "n/a (CPU)"
            ratio = r["step"] / floor["step"]
            say(f"{r['label']:40s} {r['step'] * 1e3:8.1f}ms {ratio:7.2f}x {mem:>13s}")
        say("")
        for line in throughput(model_dir, tok, retain, device, sync, a.small):
            say(line)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines) + "\n")


def build_model(shape, tok, dtype, device, out: Path, forget) -> tuple[int, int]:
    """The randomly initialised model, saved at ``out``; returns (parameters, forget tokens)."""
    cfg = LlamaConfig(
        **shape,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    batch = SFTCollator(tok, 512)(forget[:1])
    del model
    _free(device)
    return n, int(batch["input_ids"].shape[1])


def measure(label: str, run, sync, device, warmup: int) -> dict[str, Any]:
    """Peak memory and the median step of ``run(timer)`` (after ``warmup`` steps)."""
    _free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer = StepTimer(sync)
    extra = run(timer) or ""
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    timed = timer.times[warmup:]
    print(f"  {label}: {len(timer.times)} steps {extra}", file=sys.stderr, flush=True)
    _free(device)
    return {"label": label, "step": statistics.median(timed), "peak": peak}


def plain_step(model_dir, tok, forget, batch, max_steps, timer, device) -> None:
    """A plain HF ``Trainer``: causal-LM cross-entropy on the forget answers (the floor)."""
    cfg = load_config("demo", _overrides(batch, max_steps, []))
    model = load_model(str(model_dir), "auto", device)
    with tempfile.TemporaryDirectory() as work:
        args = training_arguments(cfg.unlearn, len(forget), work, device)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=QADataset(forget),
            data_collator=SFTCollator(tok, cfg.unlearn.max_length),
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    del trainer, model


def obliviate_step(model_dir, tok, forget, retain, batch, max_steps, ov, timer, device) -> str:
    """One unlearning run through obliviate's trainer, timed by ``timer``."""
    cfg = load_config("demo", _overrides(batch, max_steps, ov))
    model = load_model(str(model_dir), "auto", device)
    with tempfile.TemporaryDirectory() as work:
        info = run_unlearning(
            model, tok, str(model_dir), forget, retain, cfg.unlearn, work, device, monitor=timer
        )
    lora = info.get("lora")
    del model
    return f"(LoRA: {lora['trainable_parameters'] / 1e6:.2f}M trainable)" if lora else ""


def _overrides(batch: int, max_steps: int, extra: list[str]) -> list[str]:
    return [
        f"unlearn.batch_size={batch}",
        f"unlearn.max_steps={max_steps}",
        "unlearn.lr=1e-5",
        "unlearn.warmup_epochs=0",
        "unlearn.max_length=512",
        *extra,
    ]


def throughput(model_dir, tok, records_, device, sync, small: bool) -> list[str]:
    """Scoring and generation tokens per second (evaluation's passes, batch 32)."""
    model = load_model(str(model_dir), "auto", device)
    pairs = [(r.question, r.answer) for r in records_]
    score_pairs(model, tok, pairs[:32], 32)  # warm-up
    counter = PassCounter()
    sync()
    t0 = time.perf_counter()
    score_pairs(model, tok, pairs, 32, counter=counter)
    sync()
    scored = counter.scored_tokens / (time.perf_counter() - t0)
    questions = [r.question for r in records_[: 32 if small else 128]]
    new_tokens = 16 if small else 64
    generate_answers(model, tok, questions[:8], max_new_tokens=4, batch_size=32)  # warm-up
    counter = PassCounter()
    sync()
    t0 = time.perf_counter()
    generate_answers(
        model, tok, questions, max_new_tokens=new_tokens, batch_size=32, counter=counter
    )
    sync()
    generated = counter.generated_tokens / (time.perf_counter() - t0)
    del model
    _free(device)
    return [
        f"scoring:    {scored:10,.0f} tokens/s ({len(pairs)} sequences, batch 32, teacher-forced)",
        f"generation: {generated:10,.0f} tokens/s ({len(questions)} prompts, batch 32, "
        f"greedy, up to {new_tokens} new tokens, KV cache)",
    ]


def _free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
