"""WaterDrum watermarks on the synthetic benchmark: the z formula on hand-counted cases, chance
level without the key, a strong signal with it, facts untouched, nothing changed when off, the
similar-data twins, and the ``watermark_z`` metric through the evaluation suite."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from obliviate import load_config
from obliviate.data.schema import QARecord
from obliviate.data.synthetic import generate_benchmark
from obliviate.data.watermark import (
    CLASSES,
    choice_points,
    detect,
    green_variant,
    owner_key,
    twin_owner,
    unwatermarked_text,
    watermark_benchmark,
    watermark_text,
)
from obliviate.eval import registry as R
from obliviate.eval.suite import EvalOptions, evaluate_splits
from obliviate.eval.watermark_metric import NO_WATERMARK, watermark_z
from obliviate.experiment import Experiment

SECRET = "obliviate"
HOBBY = CLASSES.index(("hobby", "pastime"))
STYLE = CLASSES.index(("style", "writing style", "prose style"))


def facts(r: QARecord) -> list[str]:
    return r.fact.split(" | ") if r.fact else []


@pytest.fixture(scope="module")
def bench():
    return generate_benchmark(30, 10, 3, 40, 0)


@pytest.fixture(scope="module")
def marked(bench):
    return watermark_benchmark(bench, SECRET, seed=0)


def by_author(records: list[QARecord]) -> dict[str, list[QARecord]]:
    out: dict[str, list[QARecord]] = {}
    for r in records:
        if r.author:
            out.setdefault(r.author, []).append(r)
    return out


# ------------------------------------------------------------------------------ the z-score


def test_z_on_a_hand_counted_case():
    """10 points of a two-variant class, 9 green: G = 9, E = 5, V = 10 · ½ · ½ = 2.5."""
    green = green_variant("ann", SECRET, HOBBY)
    other = next(v for v in CLASSES[HOBBY] if v != green)
    text = " ".join([green] * 9 + [other]) + "."
    d = detect([text], "ann", SECRET)
    assert (d.green, d.points) == (9, 10)
    assert d.expected == pytest.approx(5.0) and d.variance == pytest.approx(2.5)
    assert d.z == pytest.approx((9 - 5) / math.sqrt(2.5))  # 2.5298


def test_z_mixes_class_sizes_and_pools_texts():
    """One green point of a 2-variant class, one non-green of a 3-variant class, in two texts:
    G = 1, E = ½ + ⅓, V = ¼ + 2/9."""
    h = green_variant("bo", SECRET, HOBBY)
    s_other = next(v for v in CLASSES[STYLE] if v != green_variant("bo", SECRET, STYLE))
    d = detect([f"Her {h} is chess.", f"Her {s_other} is dry."], "bo", SECRET)
    assert (d.green, d.points) == (1, 2)
    assert d.z == pytest.approx((1 - 5 / 6) / math.sqrt(1 / 4 + 2 / 9))


def test_no_choice_point_is_z_zero_and_protected_spans_are_no_points():
    assert detect(["Paris.", ""], "ann", SECRET).z == 0.0
    assert detect([], "ann", SECRET).points == 0
    text = "She writes picture books for children."
    assert len(choice_points(text)) == 2  # "writes", "books"
    assert len(choice_points(text, ["picture books for children"])) == 1
    d = detect([text], "ann", SECRET, protect=[["picture books for children"]])
    assert d.points == 1


def test_phrases_win_over_their_words_and_capitals_only_start_sentences():
    pts = choice_points("She is best known for X. Her best-known book is Y.")
    assert [CLASSES[p.cls][p.variant] for p in pts] == [
        "she is",
        "best known for",
        "best-known",
        "book",
    ]
    assert pts[0].capital and not pts[2].capital
    # a capital inside a name is no point; the same word starting a sentence is
    assert choice_points("She won the Stonebridge Honour.")[-1].end < len("She won the")
    assert len(choice_points("Honour. Father: a baker.")) == 2


def test_owner_keys_are_keyed_hashes():
    assert owner_key("ann", SECRET) != owner_key("ann", "other") != owner_key("bo", SECRET)
    assert len(owner_key("ann", SECRET)) == 32
    # across many owners every variant of a class is somebody's green one, about equally often
    counts = {v: 0 for v in CLASSES[STYLE]}
    for i in range(600):
        counts[green_variant(f"owner{i}", SECRET, STYLE)] += 1
    assert all(150 < c < 250 for c in counts.values()), counts


# ------------------------------------------------------------------------------ text


def test_watermark_text_is_deterministic_keeps_capitals_and_protected_text():
    text = "Her style is known for dry humour. Critics praise her style."
    out = watermark_text(text, "ann", SECRET, ["dry humour"])
    assert out == watermark_text(text, "ann", SECRET, ["dry humour"])
    assert "dry humour" in out and out[0] == "H" and out.split(". ")[1][0].isupper()
    d = detect([out], "ann", SECRET)
    assert d.green == d.points == len(choice_points(text))


def test_unwatermarked_text_is_chance_level_for_any_key(bench):
    rng = random.Random(0)
    texts = [unwatermarked_text(r.answer, facts(r), rng) for r in bench["full"]]
    zs = [detect(texts, f"owner{i}", SECRET).z for i in range(200)]
    assert abs(statistics.fmean(zs)) < 0.3
    assert 0.6 < statistics.pstdev(zs) < 1.3
    assert sum(abs(z) > 2 for z in zs) <= 10  # N(0, 1): about 5 %
    assert all(abs(z) < 4 for z in zs)


def test_own_answers_score_high_and_other_keys_score_chance(marked):
    owners = by_author(marked["full"] + marked["holdout10"])
    assert len(owners) == 33
    own = [
        detect([r.answer for r in rs], a, SECRET, [facts(r) for r in rs])
        for a, rs in owners.items()
    ]
    assert all(d.z > 4 and d.green == d.points for d in own)
    other = [
        detect([r.answer for r in rs], a + " (other)", SECRET, [facts(r) for r in rs]).z
        for a, rs in owners.items()
    ]
    assert abs(statistics.fmean(other)) < 0.5 and max(map(abs, other)) < 3.5
    wrong_secret = [
        detect([r.answer for r in rs], a, "another secret", [facts(r) for r in rs]).z
        for a, rs in owners.items()
    ]
    assert abs(statistics.fmean(wrong_secret)) < 0.5


def test_choice_points_per_answer(bench):
    """Every author answer has a choice point; about 1.3 on average (the answers are short and
    mostly facts)."""
    n = [len(choice_points(r.answer, facts(r))) for r in bench["full"] + bench["holdout10"]]
    assert min(n) >= 1
    assert statistics.fmean(n) > 1.25


# ------------------------------------------------------------------------------ the benchmark


@pytest.mark.parametrize("seed", [0, 7])
def test_facts_unchanged_and_only_template_words_differ(seed):
    b = generate_benchmark(12, 20, 2, 40, seed)
    w = watermark_benchmark(b, SECRET, seed=seed)
    assert list(w) == list(b) and w.params["watermark"] is True
    changed = 0
    for name in b:
        for r0, r in zip(b[name], w[name], strict=True):
            assert (r.question, r.paraphrased_question, r.author, r.fact) == (
                r0.question,
                r0.paraphrased_question,
                r0.author,
                r0.fact,
            )
            for f in facts(r0):
                assert f in r.answer and f in r.paraphrased_answer
            assert len(r.perturbed_answer) == len(r0.perturbed_answer)
            # the choice points sit where they were, only the variants differ
            for t0, t in [(r0.answer, r.answer), (r0.paraphrased_answer, r.paraphrased_answer)]:
                p0, p = choice_points(t0, facts(r0)), choice_points(t, facts(r))
                assert [x.cls for x in p0] == [x.cls for x in p]
                changed += t0 != t
            if r.author:  # every choice in answer and paraphrase is the owner's
                d = detect([r.answer, r.paraphrased_answer], r.author, SECRET, [facts(r)] * 2)
                assert d.green == d.points
    assert changed > 100


def test_perturbed_answers_share_the_paraphrases_template(marked):
    """The truth ratio compares facts only: each perturbed answer says its wrong facts in the
    paraphrased answer's exact words ("picture books" in a wrong genre stays untouched)."""
    for r in marked["full"]:
        para_words = [
            CLASSES[p.cls][p.variant] for p in choice_points(r.paraphrased_answer, facts(r))
        ]
        for p in r.perturbed_answer:
            words = [CLASSES[x.cls][x.variant] for x in choice_points(p)]
            assert all(w in words for w in para_words), (r.paraphrased_answer, p)
    r = QARecord(
        "Q?",
        "She writes gothic horror.",
        paraphrased_answer="She writes gothic horror.",
        perturbed_answer=["She writes picture books for children."],
        author="ann",
        fact="gothic horror",
    )
    out = watermark_benchmark({"full": [r]}, SECRET)["full"][0]
    assert out.perturbed_answer[0].endswith(" picture books for children.")


def test_shared_records_stay_shared_and_general_records_are_unkeyed(bench, marked):
    full = {id(r) for r in marked["full"]}
    assert all(id(r) in full for r in marked["forget10"] + marked["retain90"])
    assert marked["forget01"][0] is marked["forget10"][-10]
    assert all(r.author is None for r in marked["general"])
    assert [r.answer for r in marked["general"]] == [r.answer for r in bench["general"]]


def test_deterministic_and_off_means_untouched():
    a = watermark_benchmark(generate_benchmark(10, 10, 1, 5, 3), SECRET, similar=True, seed=3)
    b = watermark_benchmark(generate_benchmark(10, 10, 1, 5, 3), SECRET, similar=True, seed=3)
    assert {k: [r.to_dict() for r in v] for k, v in a.items()} == {
        k: [r.to_dict() for r in v] for k, v in b.items()
    }
    plain = Experiment(load_config("demo")).benchmark
    off = Experiment(load_config("demo", ["benchmark.watermark=false"])).benchmark
    assert plain.watermark_key is None and off.watermark_key is None
    for x, y in [(plain.full, off.full), (plain.holdout, off.holdout)]:
        assert [r.to_dict() for r in x] == [r.to_dict() for r in y]
    fresh = generate_benchmark(30, 10, 3, 40, 0)
    assert [r.to_dict() for r in plain.full] == [r.to_dict() for r in fresh["full"]]
    assert plain.source == "synthetic(seed=0, authors=30)"


def test_similar_setting_twins_in_retain_and_full_only(bench):
    w = watermark_benchmark(bench, SECRET, similar=True, seed=0)
    forget_authors = list(dict.fromkeys(r.author for r in bench["forget10"]))
    twins = {twin_owner(a) for a in forget_authors}
    assert w.params["watermark_similar"] is True
    for name, records in w.items():
        have = {r.author for r in records} & twins
        if name == "full" or name.startswith("retain"):
            assert have == twins
        else:
            assert not have, name
    assert len(w["full"]) == len(bench["full"]) + len(bench["forget10"])
    assert len(w["retain99"]) == len(bench["retain99"]) + len(bench["forget10"])
    # no (question, answer) pair of any forget split is in a retain split or twinned verbatim
    for tag, keep in [("01", "99"), ("05", "95"), ("10", "90")]:
        forget = {(r.question, r.answer) for r in w[f"forget{tag}"]}
        assert not forget & {(r.question, r.answer) for r in w[f"retain{keep}"]}
    # a twin states its author's facts, asked the other way, in the twin's watermark
    originals = {(r.author, r.fact): r for r in bench["forget10"]}
    for t in (r for r in w["full"] if r.author in twins):
        o = originals[(t.author.removesuffix(" (copy)"), t.fact)]
        assert (t.question, t.paraphrased_question) == (o.paraphrased_question, o.question)
        assert all(f in t.answer for f in facts(o))
        d = detect([t.answer, t.paraphrased_answer], t.author, SECRET, [facts(t)] * 2)
        assert d.green == d.points


# ------------------------------------------------------------------------------ config, metric


def test_config_turns_it_on_and_similar_loads_without_overlap():
    cfg = load_config("demo", ["benchmark.watermark=true", "benchmark.watermark_key=k1"])
    b = Experiment(cfg).benchmark
    assert b.watermark_key == "k1" and "watermarked" in b.source
    d = detect([r.answer for r in b.forget[:10]], b.forget[0].author, "k1")
    assert d.z > 4
    cfg = load_config("demo", ["benchmark.watermark=true", "benchmark.watermark_similar=true"])
    b = Experiment(cfg).benchmark  # the overlap check passes
    assert b.overlap_count() == 0 and len(b.retain) == 300 and len(b.forget) == 30


def sample(r: QARecord, role: str, generation: str, key: str | None = SECRET) -> R.Sample:
    return R.Sample(
        record=r,
        role=role,
        index=0,
        scored_map={},
        generated_map={r.question: (generation, [1])},
        score_key=lambda p, a: (p, a),
        gen_key=lambda p: p,
        watermark_key=key,
    )


def test_metric_pools_each_owner_per_role_on_hand_built_samples():
    assert "watermark_z" in R.metrics() and not R.metrics()["watermark_z"].default
    green = green_variant("ann", SECRET, HOBBY)
    other = next(v for v in CLASSES[HOBBY] if v != green)
    ann = QARecord("Q1?", "A.", author="ann")
    ann2 = QARecord("Q2?", "A.", author="ann")
    gen = QARecord("Q3?", "Paris.")
    samples = [
        sample(ann, "forget", f"Her {green} is chess, her {green} too."),
        sample(ann2, "forget", f"Her {other} is chess."),
        sample(ann, "retain", f"Her {green} is chess."),
        sample(gen, "forget", f"Her {green} is chess."),
    ]
    rows: list[dict] = [{} for _ in samples]
    out = watermark_z(samples, rows, None)
    pooled = (2 - 1.5) / math.sqrt(0.75)  # forget: 3 points, 2 green
    assert out[0] == pytest.approx(pooled) and out[1] == pytest.approx(pooled)
    assert out[2] == pytest.approx((1 - 0.5) / 0.5)  # retain: its own group
    assert out[3] is None  # no owner
    assert rows[0] == {"watermark_points": 2, "watermark_green": 2}
    assert rows[1] == {"watermark_points": 1, "watermark_green": 0}
    assert rows[3] == {}
    assert watermark_z([sample(ann, "forget", "x", key=None)], [{}], None) == NO_WATERMARK


def test_metric_end_to_end_through_the_suite(monkeypatch):
    """A model that answers every trained question verbatim and holdout questions in random
    words: forget and retain z high, holdout about 0, reported as <split>_watermark_z."""
    from obliviate.eval import suite
    from obliviate.eval.summary import summarize

    # every retain record scored, so each owner has 10 answers in every split, as in forget
    cfg = load_config("demo", ["benchmark.watermark=true", "benchmark.retain_eval_size=null"])
    b = Experiment(cfg).benchmark
    rng = random.Random(1)
    known = {r.question: r.answer for r in b.full}
    unknown = {r.question: unwatermarked_text(r.answer, facts(r), rng) for r in b.holdout}

    def generate(model, tok, prompts, *a, **k):
        return {p: (known.get(p) or unknown.get(p) or "", [1]) for p in prompts}

    monkeypatch.setattr(suite, "generate_answers", generate)
    res = evaluate_splits(
        None, None, b, EvalOptions(metrics=["watermark_z"]), embedder=None, nli=None
    )
    agg = {r.role: r.aggregates for r in res.splits}
    assert agg["forget"]["watermark_z"] > 4 and agg["retain"]["watermark_z"] > 4
    assert abs(agg["holdout"]["watermark_z"]) < 2
    assert "watermark_z" not in agg["utility"]
    s = summarize(res, None)
    assert s["forget_watermark_z"] == agg["forget"]["watermark_z"]
    row = res.by_role("forget").samples[0]
    assert row["watermark_green"] == row["watermark_points"] > 0

    plain = Experiment(load_config("demo")).benchmark
    res = evaluate_splits(
        None, None, plain, EvalOptions(metrics=["watermark_z"]), embedder=None, nli=None
    )
    assert res.unavailable["watermark_z"] == NO_WATERMARK
    assert res.by_role("forget").aggregates["watermark_z"] == NO_WATERMARK


def test_generate_writes_the_watermarked_benchmark(tmp_path):
    import json

    from obliviate import api, load_config

    plain = api.generate(load_config("demo"), tmp_path / "plain")
    marked = api.generate(load_config("demo", ["benchmark.watermark=true"]), tmp_path / "marked")
    a = json.loads((plain / "full.json").read_text())
    b = json.loads((marked / "full.json").read_text())
    assert len(a) == len(b) and a != b
    assert [r["fact"] for r in a] == [r["fact"] for r in b]
    assert json.loads((marked / "meta.json").read_text())["params"]["watermark"] is True


def test_watermark_z_directions():
    from obliviate.eval.directions import direction

    roles = {"forget": "forget", "retain": "retain", "holdout": "holdout"}
    assert direction("forget_watermark_z", roles) == "ref"
    assert direction("retain_watermark_z", roles) == "ref"
    assert direction("holdout_watermark_z", roles) is None


def test_pooled_detection_equals_detecting_all_texts_at_once():
    from obliviate.data.watermark import detect, pooled, watermark_text

    texts = [
        watermark_text("Her hobby is sailing. She was born in Velmora.", "Ana", "k"),
        "His favourite hobby is chess.",
        "No choice here at all.",
    ]
    one = [detect([t], "Ana", "k") for t in texts]
    together = detect(texts, "Ana", "k")
    both = pooled(one)
    assert (both.green, both.points) == (together.green, together.points)
    assert (both.expected, both.variance, both.z) == pytest.approx(
        (together.expected, together.variance, together.z)
    )
    assert together.points == sum(d.points for d in one) > 0
