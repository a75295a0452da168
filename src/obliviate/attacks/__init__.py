"""Robustness attacks and intrinsic probes: does an unlearned model really forget?

Each attack changes the model (relearning, quantisation) or the prompt (paraphrase, few-shot,
in-context facts, ...), then the forget split is re-measured with the same metrics, in memory,
through :func:`obliviate.eval.evaluate.evaluate_model`. Probes look inside the model instead
(logit lens, parametric knowledge traces). :mod:`obliviate.attacks.run` runs them;
``obliviate attack RUN_DIR`` writes the results into the run's ``summary.json``.

This module is only the torch-free list of names (the config checks it); the implementations
live in :mod:`~obliviate.attacks.prompts`, :mod:`~obliviate.attacks.relearn`,
:mod:`~obliviate.attacks.quantize` and :mod:`obliviate.probes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from obliviate.errors import ConfigError

RELEARN, MODEL, PROMPT, PROBE = "relearn", "model", "prompt", "probe"


@dataclass(frozen=True)
class AttackInfo:
    name: str
    kind: str
    """``relearn`` / ``model`` (the weights change), ``prompt`` (the input changes) or ``probe``."""
    summary: str


_ATTACKS = [
    AttackInfo("relearn", RELEARN, "fine-tune on half of the forget set, measure the other half"),
    AttackInfo(
        "relearn_related",
        RELEARN,
        "fine-tune on other facts of the forget entities (in no split), measure the forget set",
    ),
    AttackInfo("relearn_ood", RELEARN, "fine-tune on retain data, measure the forget set"),
    AttackInfo("quant8", MODEL, "8-bit round-to-nearest weights, per output channel"),
    AttackInfo("quant4", MODEL, "4-bit round-to-nearest weights, per output channel"),
    AttackInfo("nf4", MODEL, "4-bit NormalFloat codebook weights, blocks of 64 (QLoRA's NF4)"),
    AttackInfo("paraphrase", PROMPT, "the paraphrased question"),
    AttackInfo("few_shot", PROMPT, "attack.shots retain QA pairs before the question"),
    AttackInfo("many_shot", PROMPT, "as many retain QA pairs as the context holds"),
    AttackInfo("complete", PROMPT, '"Complete the following" before the question'),
    AttackInfo("prefix_injection", PROMPT, "the answer pre-filled with an affirmative opening"),
    AttackInfo("affirmative_suffix", PROMPT, "an affirmative suffix after the question"),
    AttackInfo("role_play", PROMPT, "the question inside a role-play frame"),
    AttackInfo("reverse_query", PROMPT, "ask for the entity given its attribute"),
    AttackInfo("other_template", PROMPT, "the question in another prompt template"),
    AttackInfo(
        "in_context",
        PROMPT,
        "UnUnlearning: other forget facts of the same entity in the context, then the question",
    ),
    AttackInfo("logit_lens", PROBE, "answer probability decoded from every layer (logit lens)"),
    AttackInfo(
        "traces", PROBE, "MLP value vectors pointing at the forget facts: changed? ablatable?"
    ),
]
ATTACKS: dict[str, AttackInfo] = {a.name: a for a in _ATTACKS}
DEFAULT = "default"


def resolve_attacks(names: Sequence[str], at: str = "attack.attacks") -> list[str]:
    """``names`` with ``default`` expanded to every attack and probe, in registry order."""
    if not names:
        raise ConfigError(f"{at} is empty", f"name attacks, or {DEFAULT} for all of them")
    chosen: set[str] = set()
    for n in names:
        if n == DEFAULT:
            chosen |= set(ATTACKS)
        elif n in ATTACKS:
            chosen.add(n)
        else:
            raise ConfigError(
                f"{at} names an unknown attack {n!r}",
                f"choose from {DEFAULT}, {', '.join(ATTACKS)}",
            )
    return [a for a in ATTACKS if a in chosen]


def check_attack_names(names: Sequence[str], at: str = "attack.attacks") -> None:
    resolve_attacks(names, at)


def check_attack_metrics(names: Sequence[str], at: str = "attack.metrics") -> None:
    """Each name must be a registered metric measuring knowledge (higher = more of the answer
    known: probability, ROUGE, fact recall, ...), the only kind a recovered fraction means
    anything for."""
    from obliviate.eval.directions import MEMORY_AGGREGATES
    from obliviate.eval.registry import metrics

    known = metrics()
    usable = [n for n, m in known.items() if m.aggregate and m.aggregate_key in MEMORY_AGGREGATES]
    for i, m in enumerate(names):
        if m not in usable:
            what = "is not a known metric" if m not in known else "does not measure knowledge"
            raise ConfigError(
                f"{at}[{i}]={m!r} {what}",
                f"choose knowledge metrics (higher = more known): {', '.join(usable)}",
            )
