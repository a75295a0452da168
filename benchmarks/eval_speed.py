"""Evaluation speed: the full suite on the demo's tiny target model, against a naive per-metric
implementation measured in the same run.

    python benchmarks/eval_speed.py            # writes benchmarks/results/eval_speed.txt

Figures:
- wall time of one full-suite evaluation (every split + holdout; cosine similarity with the
  offline MiniLM; GradNorm and the Reference attack off, entailment unavailable offline);
- tokens scored per second (teacher-forced tokens / wall time);
- forward passes: sequences forwarded vs distinct (prompt, answer) sequences (the minimum), and
  prompts generated vs distinct prompts; the goal is equality;
- the naive implementation, as open-unlearning structures it: every metric computes its own
  inputs, i.e. one scoring pass per likelihood metric (probability, truth ratio's paraphrased and
  perturbed passes, normalised probability, exact memorisation, extraction strength, the
  paraphrased-question probability, each of LOSS / ZLib / Min-K% / Min-K%++ on forget and
  holdout) and one greedy generation per text metric (ROUGE, token entropy, cosine similarity,
  QA exact match, fact recall, paraphrased ROUGE). Same batching and kernels; only the sharing
  differs. The metric values of both are checked to agree.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

from obliviate import api, load_config  # noqa: E402
from obliviate.data.benchmarks import Benchmark, EvalSplit  # noqa: E402
from obliviate.eval import closer_look as CL  # noqa: E402
from obliviate.eval import metrics as M  # noqa: E402
from obliviate.eval import mia as MIA  # noqa: E402
from obliviate.eval.memorization import exact_memorization, extraction_strength  # noqa: E402
from obliviate.eval.scoring import PassCounter, generate_answers, score_pairs  # noqa: E402
from obliviate.eval.semeval import qa_exact_match  # noqa: E402
from obliviate.eval.suite import EvalOptions, evaluate_splits, plan_passes  # noqa: E402
from obliviate.experiment import Experiment  # noqa: E402
from obliviate.models.io import load_model, load_tokenizer  # noqa: E402

OUT = Path(__file__).parent / "results" / "eval_speed.txt"


def naive_suite(model, tok, bench: Benchmark, opts: EvalOptions, embedder, counter: PassCounter):
    """Every metric runs its own passes (no sharing between metrics). Returns per-split means."""
    bs, mnt = opts.batch_size, opts.max_new_tokens
    splits: list[EvalSplit] = [s for s in bench.eval_splits if s.role != "holdout"]
    hold = next((s for s in bench.eval_splits if s.role == "holdout"), None)
    means: dict[str, float] = {}

    def score(pairs, what):
        return score_pairs(model, tok, pairs, bs, counter=counter, desc=what)

    def gen(questions, what):
        return generate_answers(model, tok, questions, mnt, bs, counter, what)

    for sp in splits:
        recs = sp.records
        qa = [(r.question, r.answer) for r in recs]
        s = score(qa, "prob")
        means[f"{sp.name}_prob_raw"] = float(np.mean([M.probability(s[p].mean_nll) for p in qa]))
        if any(r.perturbed_answer for r in recs):
            para = [
                (r.question, r.paraphrased_answer or r.answer)
                if sp.role != "utility"
                else (r.question, r.answer)
                for r in recs
            ]
            pert = [(r.question, p) for r in recs for p in r.perturbed_answer]
            sp_, spe = score(para, "tr para"), score(pert, "tr pert")
            means[f"{sp.name}_tr_first"] = M.truth_ratio(
                sp_[para[0]].mean_nll,
                [spe[(recs[0].question, p)].mean_nll for p in recs[0].perturbed_answer],
            )
            if sp.role == "utility":
                s1, s2 = score(qa, "norm prob a"), score(pert, "norm prob pert")
                means[f"{sp.name}_normprob_first"] = M.normalized_probability(
                    s1[qa[0]].mean_nll,
                    [s2[(recs[0].question, p)].mean_nll for p in recs[0].perturbed_answer],
                )
        s = score(qa, "exact mem")
        means[f"{sp.name}_exact_memorization"] = float(
            np.mean([exact_memorization(s[p]) for p in qa])
        )
        s = score(qa, "extraction")
        means[f"{sp.name}_extraction_strength"] = float(
            np.mean([extraction_strength(s[p]) for p in qa])
        )
        pq = [(r.paraphrased_question, r.answer) for r in recs if r.paraphrased_question]
        if pq:
            s = score(pq, "para q prob")
            means[f"{sp.name}_paraphrased_prob"] = float(
                np.mean([M.probability(s[p].mean_nll) for p in pq])
            )
            g = gen([q for q, _ in pq], "para q rouge")
            means[f"{sp.name}_paraphrased_rouge_l_recall"] = float(
                np.mean([M.rouge_l_recall(a, g[q][0]) for q, a in pq])
            )
        qs = [r.question for r in recs]
        g = gen(qs, "rouge")
        means[f"{sp.name}_rouge"] = float(
            np.mean([M.rouge_l_recall(r.answer, g[r.question][0]) for r in recs])
        )
        g = gen(qs, "token entropy")
        means[f"{sp.name}_token_entropy"] = float(np.mean([CL.token_entropy(g[q][1]) for q in qs]))
        g = gen(qs, "cosine")
        if not isinstance(embedder, CL.Unavailable):
            cs = CL.cosine_similarity_scores(
                embedder, [g[q][0] for q in qs], [r.answer for r in recs]
            )
            means[f"{sp.name}_cosine_similarity"] = float(np.mean(cs))
        g = gen(qs, "qa em")
        means[f"{sp.name}_qa_exact_match"] = float(
            np.mean([qa_exact_match(r.answer, g[r.question][0]) for r in recs])
        )
        if any(r.fact for r in recs):
            g = gen(qs, "fact recall")  # the fact check re-generates too
    if hold is not None:
        forget = bench.split("forget")
        for attack, fn in (
            ("loss", lambda q, t: MIA.loss_score(q)),
            ("zlib", MIA.zlib_score),
            ("min_k", lambda q, t: MIA.mink_score(q, opts.mia_k)),
            ("min_k_pp", lambda q, t: MIA.minkpp_score(q, opts.mia_k)),
        ):
            per = []
            for sp in (forget, hold):
                pairs = [(r.question, r.answer) for r in sp.records]
                s = score(pairs, attack)
                per.append([fn(s[p], p[1]) for p in pairs])
            means[f"mia_auc_{attack}"] = MIA.mia_auc(per[0], per[1])
    return means


def main() -> None:
    cfg = load_config("demo", ["threads=0"])
    api.setup_runtime(cfg)
    exp = Experiment(cfg)
    target = api.finetune(exp, "full")
    bench = exp.benchmark
    tok = load_tokenizer(target)
    model = load_model(target, cfg.model.dtype, "cpu")
    opts = EvalOptions.from_config(cfg.eval)
    opts.entailment = False
    embedder = CL.load_default_embedder()
    nli = CL.Unavailable("entailment", "off for the benchmark")
    # warm-up (kernels, rouge tokenizer) so neither side pays first-call costs
    evaluate_splits(model, tok, bench, opts, embedder=embedder, nli=nli)

    splits = bench.eval_splits
    plan = plan_passes(bench, opts)[0]
    distinct_seq = len({p for pairs in plan.score.values() for p in pairs})
    distinct_prompts = len({q for prompts in plan.generate.values() for q in prompts})

    c = PassCounter()
    t0 = time.perf_counter()
    results = evaluate_splits(model, tok, bench, opts, counter=c, embedder=embedder, nli=nli).splits
    suite_s = time.perf_counter() - t0

    n = PassCounter()
    t0 = time.perf_counter()
    naive = naive_suite(model, tok, bench, opts, embedder, n)
    naive_s = time.perf_counter() - t0

    # the two implementations must agree on every mean they both report
    agg = {f"{r.name}_{k}": v for r in results for k, v in r.aggregates.items()}
    for k, v in naive.items():
        if k in agg and isinstance(agg[k], float):
            assert abs(agg[k] - v) < 1e-4, (k, agg[k], v)

    # the eval cache: a second evaluation of the same weights + settings
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cexp = exp.with_config(load_config("demo", [f"cache_dir={tmp}"]))
        t0 = time.perf_counter()
        api.evaluate_results(cexp, target)
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, hit = api.evaluate_results(cexp, target)
        warm_s = time.perf_counter() - t0
        assert hit

    lines = [
        f"obliviate eval speed — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {cpu_model()} ({platform.machine()}), "
        f"{os.cpu_count()} CPU cores (shared), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, python {platform.python_version()}",
        "command: python benchmarks/eval_speed.py",
        f"model: demo target (tiny Llama, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"params); splits: {', '.join(f'{s.name}={len(s.records)}' for s in splits if s)}; "
        f"max_new_tokens={opts.max_new_tokens}, batch {opts.batch_size}",
        "",
        "full suite (score once, derive many):",
        f"  wall time              {suite_s:8.2f} s",
        f"  tokens scored / s      {c.scored_tokens / suite_s:8.0f}  ({c.scored_tokens} tokens)",
        f"  sequences forwarded    {c.scored_sequences:8d}  (minimum = distinct sequences: "
        f"{distinct_seq}) in {c.forward_batches} batches",
        f"  prompts generated      {c.generated_prompts:8d}  (minimum = distinct prompts: "
        f"{distinct_prompts})",
        "",
        "naive per-metric implementation (each metric runs its own passes), same run:",
        f"  wall time              {naive_s:8.2f} s",
        f"  sequences forwarded    {n.scored_sequences:8d}",
        f"  prompts generated      {n.generated_prompts:8d}",
        f"  speed-up               {naive_s / suite_s:8.1f}x",
        "  (metric means of both implementations agree to 1e-4)",
        "",
        "eval cache (api.evaluate_results; key = weights' content hash + benchmark + eval config):",
        f"  first evaluation       {cold_s:8.2f} s  (model load, embedder, suite, cache write)",
        f"  second evaluation      {warm_s:8.2f} s  (cache hit)",
    ]
    text = "\n".join(lines)
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text + "\n")
    print(f"written to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
