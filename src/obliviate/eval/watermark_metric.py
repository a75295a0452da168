"""WaterDrum's unlearning metric (Lu et al. 2025): each data owner's watermark in the model's
answers, measured with no retrained model.

On a benchmark whose training text carries per-owner watermarks (``benchmark.watermark=true``,
:mod:`obliviate.data.watermark`), ``watermark_z`` (opt-in: ``eval.metrics=[default,
watermark_z]``) detects, in the greedy answers to each owner's questions, that owner's watermark:

    z_o = (G_o − Σ_i p_i) / sqrt(Σ_i p_i (1 − p_i))

over the choice points ``i`` of all generations for owner ``o``'s questions in one split (their
fact strings excluded), ``G_o`` the points carrying ``o``'s green variant and ``p_i = 1/n_i`` the
chance of that under the null hypothesis (a model that never learned ``o``'s text). Every sample
of owner ``o`` gets ``z_o``; its own counts go to ``row["watermark_points"]`` and
``row["watermark_green"]``. The split aggregate, the mean over samples, is the mean of the owners'
z weighted by their sample counts (equal weights in forget and holdout, where each owner has
``qa_per_author`` samples): ``forget_watermark_z``, ``retain_watermark_z``,
``holdout_watermark_z``. A good unlearning method brings ``forget_watermark_z`` down to the level
of owners never trained on (``holdout_watermark_z``, about 0) while ``retain_watermark_z`` stays
high. A memorised owner's z grows like the square root of its number of answers, so compare
splits with as many answers per owner: ``benchmark.retain_eval_size=null`` scores all of them
(the demo's 60 sampled retain records give each retain owner about 2).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from obliviate.eval.registry import Sample, register_metric

WATERMARK_ROLES = ("forget", "retain", "holdout")
NO_WATERMARK = (
    "unavailable: the benchmark carries no watermarks "
    "(set benchmark.watermark=true on the synthetic benchmark)"
)


def _facts(s: Sample) -> list[str]:
    from obliviate.data.synthetic import FACT_SEP

    return [f for f in (s.record.fact or "").split(FACT_SEP) if f]


@register_metric(
    "watermark_z",
    reads=["generation"],
    roles=WATERMARK_ROLES,
    default=False,
    batched=True,
)
def watermark_z(
    samples: list[Sample], rows: list[dict[str, Any]], text_models: Any
) -> list[float | None] | str:
    """WaterDrum: z-score of the owner's watermark in the answers to that owner's questions.

    z = (G − Σp) / sqrt(Σ p(1 − p)) pooled over the owner's samples of a split (role); samples
    without an owner (``author``) get None. Opt-in; needs ``benchmark.watermark=true``.
    """
    if not samples:
        return []
    secret = samples[0].watermark_key
    if secret is None:
        return NO_WATERMARK
    from obliviate.data.watermark import detect, pooled  # here: registering stays cheap

    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if s.record.author is not None:
            groups[(s.role, s.record.author)].append(i)
    out: list[float | None] = [None] * len(samples)
    for (_, owner), idx in groups.items():
        own = {i: detect([samples[i].generation], owner, secret, [_facts(samples[i])]) for i in idx}
        for i, d in own.items():
            rows[i]["watermark_points"] = d.points
            rows[i]["watermark_green"] = d.green
        z = pooled(list(own.values())).z  # the owner's answers in this split, counted once
        for i in idx:
            out[i] = z
    return out
