"""A miniature experiment for tests that run real commands: a 10-author benchmark and a
one-layer, 32-wide Llama, so fine-tuning plus unlearning take seconds on a CPU."""

MINI = [
    "benchmark.n_authors=10",
    "benchmark.n_general=5",
    "benchmark.n_holdout=1",
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=1",
    "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64",
    "model.tiny.vocab_size=400",
    "finetune.epochs=2",
    "unlearn.epochs=4",
    "unlearn.batch_size=4",
    "threads=1",
    "eval.cosine=false",
    "eval.entailment=false",
    "eval.max_new_tokens=8",
]
"""Overrides over the shipped demo config. forget10 of 10 authors is 10 QA pairs: with batch 4,
three unlearning steps an epoch, twelve in all."""
