"""Per-data-owner lexical watermarks for the synthetic benchmark (WaterDrum, Lu et al. 2025).

WaterDrum measures unlearning without a retrained model: every data owner writes their text with
their own watermark, and the metric is how strongly a model's answers carry the watermark of the
owner whose data was to be forgotten. A model that never learned an owner's data shows that
owner's watermark at the chance level; a model that memorised it shows it strongly.

The paper watermarks with an LLM paraphraser (Waterfall). Here the synthetic answers are
template sentences, so the watermark is a keyed choice among interchangeable words and phrases
of the templates (never of the facts): :data:`CLASSES` lists equivalence classes such as
``{"hobby", "pastime"}``. Every occurrence of a class variant is a *choice point*; an author
answer of the default benchmark has 1.31 of them on average, every answer at least one.

- Owner key: ``k = sha256(secret ‖ 0x00 ‖ owner)``. The owner's *green* variant of class ``c``
  (``n_c`` variants) is ``g(k, c) = int(sha256(k ‖ id(c))[:8]) mod n_c``.
- Watermarking (:func:`watermark_text`) replaces every choice point outside the record's fact
  strings by the owner's green variant, keeping a capitalised first letter.
- Detection (:func:`detect`): over the choice points of some texts, ``G`` = how many are green
  for the owner; under the null hypothesis (text not written with this key) point ``i`` is green
  with probability ``p_i = 1/n_{c_i}``, independently, so with ``E = Σ p_i`` and
  ``V = Σ p_i (1 − p_i)`` the score is ``z = (G − E) / sqrt(V)`` (``z = 0`` with no points).
  Text chosen uniformly at random (:func:`unwatermarked_text`) has ``z ≈ N(0, 1)`` for any key.

:func:`watermark_benchmark` applies this to a generated split dict: each author record's answer,
paraphrased answer and perturbed answers get their author's watermark (the perturbed answers the
same choices as the paraphrase they were rendered from, so the truth ratio still compares facts
only); general-knowledge records get a random, unkeyed choice. With ``similar=True`` it builds
WaterDrum's similar-data setting: a retain-side *twin* owner for every forget author, holding the
same facts under its own key.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from obliviate.data.schema import QARecord
from obliviate.data.synthetic import FACT_SEP

__all__ = [
    "CLASSES",
    "Detection",
    "Point",
    "choice_points",
    "detect",
    "green_variant",
    "owner_key",
    "twin_owner",
    "unwatermarked_text",
    "watermark_benchmark",
    "watermark_text",
]

# Each class: variants that can replace each other wherever one occurs in an answer template,
# keeping the sentence grammatical and its facts unchanged. Variants are lower case (a capitalised
# first letter is matched and kept); no variant occurs in two classes. Longer phrases win over
# the words inside them ("best known for" is one point, not "known for" plus nothing).
CLASSES: tuple[tuple[str, ...], ...] = (
    # pronoun + "is"
    ("she is", "she's"),
    ("he is", "he's"),
    ("they are", "they're"),
    # names, birth
    ("full name", "complete name", "whole name"),
    ("was born in", "hails from", "comes from"),
    ("were born in", "hail from", "come from"),
    ("birthplace", "place of birth", "hometown"),
    ("is where", "is the place where", "is the city where"),
    ("was born on", "came into the world on"),
    ("were born on", "entered the world on"),
    ("date of birth", "birth date", "birthdate"),
    # genre, style, fame
    ("genre", "chosen genre", "main genre"),
    ("writes", "pens", "produces"),
    ("write", "produce"),
    ("known for", "famous for", "renowned for"),
    ("specialises in", "focuses on", "concentrates on"),
    ("specialise in", "focus on", "concentrate on"),
    ("style", "writing style", "prose style"),
    ("favours", "prefers", "leans towards"),
    ("favour", "prefer", "lean towards"),
    ("feature", "are full of", "showcase"),
    ("critics", "reviewers", "commentators"),
    ("praise", "admire", "applaud"),
    # books
    ("book", "work", "title"),
    ("books", "works", "titles"),
    ("first", "earliest"),
    ("debut", "debut book", "debut work"),
    ("debuted with", "made a debut with"),
    ("best-known", "most famous", "most celebrated"),
    ("best known for", "most famous for", "most celebrated for"),
    ("readers", "audiences", "fans"),
    ("know", "remember", "recognise"),
    ("latest", "newest", "most recent"),
    ("most recently", "recently", "lately"),
    ("published", "released", "brought out"),
    ("created", "invented", "dreamed up"),
    ("signature", "trademark", "defining"),
    # family
    ("father", "dad"),
    ("mother", "mum"),
    ("parents", "father and mother"),
    ("raised", "reared"),
    ("worked as", "was employed as", "made a living as", "earned a living as"),
    ("spouse", "partner"),
    ("married to", "wed to"),
    ("married", "wed"),
    # award
    ("won", "received", "earned"),
    ("top", "highest", "greatest"),
    ("honour", "distinction", "accolade"),
    ("went to", "was awarded to", "was given to"),
    # education
    ("studied", "read", "majored in"),
    ("degree", "diploma", "qualification"),
    ("gave", "awarded", "granted"),
    # languages, residence
    ("writes in", "publishes in"),
    ("write in", "publish in"),
    ("languages", "working languages"),
    ("appear in", "come out in"),
    ("lives in", "resides in"),
    ("live in", "reside in"),
    ("based in", "settled in"),
    ("today", "these days", "nowadays"),
    # themes
    ("explore", "examine"),
    ("often", "frequently"),
    ("writes about", "writes of"),
    ("keeps returning to", "keeps coming back to"),
    ("keep returning to", "keep coming back to"),
    ("recurring", "central"),
    ("themes", "subjects"),
    # publisher
    ("publisher", "publishing house"),
    ("publishes with", "is published by"),
    ("publishes", "releases"),
    ("come out with", "are released by", "are issued by"),
    # hobby, pet
    ("enjoys", "relishes"),
    ("enjoy", "relish"),
    ("favourite", "preferred"),
    ("hobby", "pastime"),
    ("loves", "adores"),
    ("love", "adore"),
    ("outside", "away from", "beyond"),
    ("called", "named"),
    ("keeps", "owns"),
    ("lives with", "shares a home with"),
)

_VARIANT: dict[str, tuple[int, int]] = {}
for _ci, _cls in enumerate(CLASSES):
    assert len(_cls) >= 2 and len(set(_cls)) == len(_cls), _cls
    for _vi, _v in enumerate(_cls):
        assert _v == _v.lower() and _v not in _VARIANT, _v
        _VARIANT[_v] = (_ci, _vi)


_LONGEST_FIRST = sorted(_VARIANT, key=len, reverse=True)
# Longest first, so a phrase wins over a word inside it at the same position; the boundaries
# treat a hyphen as part of a word ("well-read" holds no "read"). A capitalised variant counts
# only where a sentence starts, so a capital inside a name ("Stonebridge Honour") is no point.
_PATTERN = re.compile(
    r"(?<![\w-])(?:"
    + "|".join(re.escape(v) for v in _LONGEST_FIRST)
    + r")(?![\w-])|(?:^|(?<=[.!?:;]\s)|(?<=\n))(?:"
    + "|".join(re.escape(v[0].upper() + v[1:]) for v in _LONGEST_FIRST)
    + r")(?![\w-])"
)
_CLASS_IDS = tuple("\x1f".join(c).encode() for c in CLASSES)


@dataclass(frozen=True)
class Point:
    """One choice point: ``text[start:end]`` is variant ``variant`` of class ``cls``."""

    start: int
    end: int
    cls: int
    variant: int
    capital: bool


@dataclass(frozen=True)
class Detection:
    """A detection result: ``z = (green − expected) / sqrt(variance)``, 0 when ``points`` is 0."""

    green: int
    points: int
    expected: float
    variance: float
    z: float


# ------------------------------------------------------------------------------ keys


def owner_key(owner: str, secret: str) -> bytes:
    """The owner's key ``k = sha256(secret ‖ 0x00 ‖ owner)``."""
    return hashlib.sha256(f"{secret}\0{owner}".encode()).digest()


def _green_index(key: bytes, cls: int) -> int:
    digest = hashlib.sha256(key + _CLASS_IDS[cls]).digest()
    return int.from_bytes(digest[:8], "big") % len(CLASSES[cls])


def green_variant(owner: str, secret: str, cls: int) -> str:
    """The owner's variant of class ``cls``: ``CLASSES[cls][int(sha256(k ‖ id(cls))[:8]) mod n]``."""
    return CLASSES[cls][_green_index(owner_key(owner, secret), cls)]


# ------------------------------------------------------------------------------ choice points


def _protected(text: str, protect: Iterable[str]) -> list[tuple[int, int]]:
    spans = []
    for p in protect:
        if not p:
            continue
        start = text.find(p)
        while start >= 0:
            spans.append((start, start + len(p)))
            start = text.find(p, start + 1)
    return spans


def choice_points(text: str, protect: Iterable[str] = ()) -> list[Point]:
    """Every occurrence of a class variant in ``text`` (whole words; capitalised only where a
    sentence starts) that overlaps none of the ``protect`` strings' occurrences, left to right."""
    spans = _protected(text, protect)
    out = []
    for m in _PATTERN.finditer(text):
        if any(m.start() < e and s < m.end() for s, e in spans):
            continue
        word = m.group()
        ci, vi = _VARIANT[word[0].lower() + word[1:]]
        out.append(Point(m.start(), m.end(), ci, vi, word[0].isupper()))
    return out


def _substitute(text: str, points: Sequence[Point], pick: Callable[[int], int]) -> str:
    """``text`` with each point replaced by variant ``pick(class)`` of its class."""
    parts, last = [], 0
    for pt in points:
        v = CLASSES[pt.cls][pick(pt.cls)]
        parts += [text[last : pt.start], v[0].upper() + v[1:] if pt.capital else v]
        last = pt.end
    parts.append(text[last:])
    return "".join(parts)


def watermark_text(text: str, owner: str, secret: str, protect: Iterable[str] = ()) -> str:
    """``text`` with every choice point outside ``protect`` replaced by the owner's green variant
    (deterministic: the same owner, secret and text always give the same result)."""
    key = owner_key(owner, secret)
    return _substitute(text, choice_points(text, protect), lambda c: _green_index(key, c))


def unwatermarked_text(text: str, protect: Iterable[str], rng: random.Random) -> str:
    """``text`` with every choice point outside ``protect`` replaced by a variant drawn uniformly
    at random from its class, independently per point: the null hypothesis of :func:`detect`."""
    return _substitute(text, choice_points(text, protect), lambda c: rng.randrange(len(CLASSES[c])))


# ------------------------------------------------------------------------------ detection


def detect(
    texts: Sequence[str],
    owner: str,
    secret: str,
    protect: Sequence[Iterable[str]] | None = None,
) -> Detection:
    """The owner's watermark z-score over the choice points of ``texts`` (pooled).

    ``G`` = points whose variant is the owner's green one; under the null each point ``i`` is
    green with ``p_i = 1/n_i`` (``n_i`` variants in its class), so ``E = Σ p_i``,
    ``V = Σ p_i (1 − p_i)`` and ``z = (G − E) / sqrt(V)``. No choice point at all gives ``z = 0``
    (no evidence either way). ``protect[j]``: strings of ``texts[j]`` that are not choices (its
    fact strings, which may contain a variant word, e.g. "picture books for children").
    """
    key = owner_key(owner, secret)
    green = points = 0
    expected = variance = 0.0
    for j, text in enumerate(texts):
        for pt in choice_points(text, protect[j] if protect is not None else ()):
            p = 1.0 / len(CLASSES[pt.cls])
            points += 1
            green += pt.variant == _green_index(key, pt.cls)
            expected += p
            variance += p * (1.0 - p)
    return _detection(green, points, expected, variance)


def pooled(detections: Sequence[Detection]) -> Detection:
    """One detection over the texts of several (their counts add up), as :func:`detect` over
    all the texts at once would give."""
    return _detection(
        sum(d.green for d in detections),
        sum(d.points for d in detections),
        sum(d.expected for d in detections),
        sum(d.variance for d in detections),
    )


def _detection(green: int, points: int, expected: float, variance: float) -> Detection:
    z = (green - expected) / math.sqrt(variance) if points else 0.0
    return Detection(green, points, expected, variance, z)


# ------------------------------------------------------------------------------ the benchmark


def twin_owner(author: str) -> str:
    """The similar-data setting's twin owner of a forget author."""
    return f"{author} (copy)"


_TOKEN = re.compile(r"\w+|[^\w\s]")


def _template_points(text: str, reference: str, protect: Iterable[str]) -> list[Point]:
    """The choice points of ``text`` that align (word by word) with a choice point of
    ``reference`` outside ``protect``: for a perturbed answer, the template words it shares with
    the paraphrased answer it was rendered from, never its wrong fact values."""
    ref_tokens = list(_TOKEN.finditer(reference))
    tokens = list(_TOKEN.finditer(text))
    ref_points = choice_points(reference, protect)
    chosen = {  # reference token index -> the class of the point covering it
        k: pt.cls
        for pt in ref_points
        for k, m in enumerate(ref_tokens)
        if pt.start <= m.start() < pt.end
    }
    to_ref: dict[int, int] = {}  # token index in text -> aligned token index in reference
    matcher = difflib.SequenceMatcher(
        None, [m.group() for m in ref_tokens], [m.group() for m in tokens], autojunk=False
    )
    for tag, i1, _, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            to_ref.update({j: i1 + (j - j1) for j in range(j1, j2)})
    out = []
    for pt in choice_points(text):
        covered = [j for j, m in enumerate(tokens) if pt.start <= m.start() < pt.end]
        if all(j in to_ref and chosen.get(to_ref[j]) == pt.cls for j in covered):
            out.append(pt)
    return out


def _mark_record(r: QARecord, pick: Callable[[int], int], owner: str | None) -> QARecord:
    """``r`` with answer, paraphrased and perturbed answers rewritten by ``pick`` (class → variant
    index), question untouched, ``author`` set to ``owner`` when given."""
    facts = [f for f in r.fact.split(FACT_SEP) if f] if r.fact else []
    answer = _substitute(r.answer, choice_points(r.answer, facts), pick)
    para = r.paraphrased_answer
    if para is not None:
        para = _substitute(para, choice_points(para, facts), pick)
    ref = r.paraphrased_answer if r.paraphrased_answer is not None else r.answer
    perturbed = [_substitute(p, _template_points(p, ref, facts), pick) for p in r.perturbed_answer]
    for f in facts:
        if f in r.answer and f not in answer:
            raise AssertionError(f"watermarking changed the fact {f!r} of {r.answer!r}")
    return replace(
        r,
        answer=answer,
        paraphrased_answer=para,
        perturbed_answer=perturbed,
        author=owner if owner is not None else r.author,
    )


def _keyed(owner: str, secret: str) -> Callable[[int], int]:
    key = owner_key(owner, secret)
    return lambda c: _green_index(key, c)


def watermark_benchmark(
    splits: Mapping[str, list[QARecord]], secret: str, similar: bool = False, seed: int = 0
) -> dict[str, list[QARecord]]:
    """The generated splits with each data owner's watermark written in (new record objects).

    Author records get their author's key; general-knowledge records (no author) a random choice
    per class, drawn once per record from ``random.Random(f"watermark:{seed}")`` so that its
    answer and perturbed answers agree. A record object shared by several splits (``full`` and
    ``forget10``, ...) maps to one new object shared the same way. Facts are unchanged.

    ``similar``: every author of the largest ``forget*`` split gets a twin owner
    (:func:`twin_owner`): copies of the author's records asked with the paraphrased question
    (whose paraphrased question becomes the original one), watermarked with the twin's key,
    appended to ``full`` and every ``retain*`` split and to no forget split.

    Returns the same type as ``splits`` (a ``BenchmarkSplits`` keeps its ``params``, with
    ``watermark`` and ``watermark_similar`` added).
    """
    rng = random.Random(f"watermark:{seed}")
    done: dict[int, QARecord] = {}

    def mark(r: QARecord) -> QARecord:
        if id(r) not in done:
            if r.author is not None:
                pick = _keyed(r.author, secret)
            else:  # an unkeyed owner drawn per record: uniform over each class's variants
                pick = _keyed(f"random:{rng.getrandbits(64)}", "")
            done[id(r)] = _mark_record(r, pick, None)
        return done[id(r)]

    out = {name: [mark(r) for r in records] for name, records in splits.items()}
    if similar:
        forgets = [n for n in splits if n.startswith("forget")]
        if not forgets:
            raise ValueError("the similar-data setting needs a forget split")
        largest = max(forgets, key=lambda n: len(splits[n]))
        twins = [_twin(r, secret) for r in splits[largest] if r.author is not None]
        for name in out:
            if name == "full" or name.startswith("retain"):
                out[name] = out[name] + twins
    params = getattr(splits, "params", None)
    if params is None:
        return out
    return type(splits)(out, {**params, "watermark": True, "watermark_similar": similar})


def _twin(r: QARecord, secret: str) -> QARecord:
    if not r.paraphrased_question or r.paraphrased_question.strip() == r.question.strip():
        raise ValueError(f"record {r.question!r} has no distinct paraphrased question to twin")
    owner = twin_owner(r.author or "")
    twin = _mark_record(r, _keyed(owner, secret), owner)
    return replace(twin, question=r.paraphrased_question, paraphrased_question=r.question)
