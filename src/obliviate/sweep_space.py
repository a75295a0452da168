"""The search space and objective of ``obliviate sweep``, checked without importing optuna or
torch (config loading calls :func:`check_sweep`).

- **Space.** ``sweep.space`` maps a dotted ``unlearn.*`` setting to a distribution:
  ``{low, high}`` (float; ``log: true`` samples on a log scale; ``step`` a grid),
  ``{low, high, int: true}`` (integer) or ``{choices: [...]}`` (categorical). Nested mappings
  (what a ``sweep.space.unlearn.lr={low: ..}`` override writes) are flattened to dotted keys.
- **Formulas.** ``sweep.score`` (and each ``sweep.pareto`` objective) is a tiny arithmetic
  language over summary metrics: names, numbers, ``+ - * /``, unary minus, parentheses and
  ``log10(...)``. It is parsed here into a tree, never handed to ``eval``.
- **Metrics.** A formula may read ``forget_quality``, ``log10_forget_quality``,
  ``model_utility``, ``model_utility_ratio`` (over the target's), any per-split aggregate
  ``<split>_<aggregate>`` (``forget_prob``, ``retain_rouge`` ...), and any of these as the
  target model's value, ``target_<name>`` (``retain_prob / target_retain_prob``).
  :func:`metric_needs` says which per-sample metrics and split roles an evaluation must compute
  for them, so a trial is scored on those only.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from obliviate.errors import ConfigError
from obliviate.eval.directions import is_number

OBJECTIVES = ("score", "pareto")
SAMPLERS = ("tpe", "nsga2", "random")
SPEC_KEYS = frozenset({"low", "high", "log", "int", "step", "choices"})
"""The keys of one distribution; a mapping without ``low``/``high``/``choices`` is a nesting level."""
NOT_SWEPT = ("method", "per_method")
"""Unlearn settings a study cannot vary: one study tunes one method (``sweeps/<m>.yaml``)."""

FQ_FLOOR = 1e-300
"""``log10_forget_quality`` reads forget quality as at least this (a p-value may underflow to 0)."""

# --------------------------------------------------------------------------------------------
# metrics a formula may read


@dataclass(frozen=True)
class Needs:
    """What the evaluations of a study compute: per-sample ``metrics`` on splits of ``roles``;
    ``reference``: the retain model's forget truth ratios too. (The target model is always
    evaluated the same way: it is the table's baseline and the ``target_<name>`` values.)"""

    metrics: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    reference: bool = False

    def __or__(self, other: Needs) -> Needs:
        return Needs(
            self.metrics | other.metrics,
            self.roles | other.roles,
            self.reference or other.reference,
        )


_FQ = Needs(frozenset({"truth_ratio"}), frozenset({"forget"}), reference=True)
# model utility: the harmonic mean of ROUGE, Prob (normalised on utility sets) and TR over the
# retain-type splits (eval.summary.tofu_summary)
_MU = Needs(
    frozenset({"rouge_l_recall", "prob", "prob_normalized", "truth_ratio"}),
    frozenset({"retain", "utility"}),
)
DERIVED: dict[str, Needs] = {
    "forget_quality": _FQ,
    "log10_forget_quality": _FQ,
    "model_utility": _MU,
    "model_utility_ratio": _MU,
}
"""Summary numbers a formula may read by name, and what computing them needs. Any name may also
be read as the target model's: ``target_<name>`` (``retain_prob / target_retain_prob``)."""
TARGET = "target_"


def derived_values(summary: dict[str, Any], target: dict[str, Any] | None) -> dict[str, Any]:
    """What a formula reads beyond ``summary``'s own keys (one model's summary numbers):
    ``log10_forget_quality``, ``model_utility_ratio`` and ``target_<name>`` for every number of
    ``target`` (the target model's summary, the same way derived)."""
    out: dict[str, Any] = {}
    fq = summary.get("forget_quality")
    if is_number(fq):
        out["log10_forget_quality"] = math.log10(max(float(fq), FQ_FLOOR))
    if target is None:
        return out
    own = {**target, **derived_values(target, None)}
    out.update({TARGET + k: v for k, v in own.items() if is_number(v)})
    mu, tmu = summary.get("model_utility"), target.get("model_utility")
    if is_number(mu) and is_number(tmu) and tmu > 0:
        out["model_utility_ratio"] = float(mu) / float(tmu)
    return out


def missing_reason(name: str, values: dict[str, Any]) -> str:
    """Why a formula's ``name`` has no value among ``values`` (the target's, derived)."""
    if name == "model_utility_ratio" and values.get("model_utility") == 0:
        return "model_utility_ratio is undefined: the target's model utility is 0"
    if name.endswith("forget_quality"):
        return f"{name} needs forget quality, which this evaluation does not produce"
    return f"{name} is not produced by this benchmark's evaluation (a split it lacks?)"


def metric_needs(name: str, at: str) -> Needs:
    """What evaluating ``name`` needs; an unknown name is a one-line error naming ``at``."""
    if name in DERIVED:
        return DERIVED[name]
    if name.startswith(TARGET) and len(name) > len(TARGET):
        return metric_needs(name[len(TARGET) :], at)
    from obliviate.eval.registry import metrics  # torch-free (~1 s): only for split aggregates

    by_key: dict[str, list[Any]] = {}
    for m in metrics().values():
        if m.aggregate is not None:
            by_key.setdefault(m.aggregate_key, []).append(m)
    for key in sorted(by_key, key=len, reverse=True):  # the longest aggregate name that fits
        split = name[: -len(key) - 1] if name.endswith("_" + key) else ""
        if split and re.fullmatch(r"[A-Za-z0-9_]+", split):
            ms = by_key[key]
            return Needs(
                frozenset(m.name for m in ms),
                frozenset(r for m in ms for r in m.roles),
            )
    raise ConfigError(
        f"{at} reads an unknown metric {name!r}",
        f"use {', '.join(DERIVED)}, a split aggregate <split>_<aggregate> such as forget_prob "
        f"(aggregates: {', '.join(sorted(by_key))}), or target_<any of these>",
    )


# --------------------------------------------------------------------------------------------
# formulas


@dataclass(frozen=True)
class Formula:
    """A parsed formula: ``text`` and its tree of tuples ``("num", x)``, ``("name", n)``,
    ``("neg", a)``, ``("log10", a)`` and ``(op, a, b)`` with ``op`` in ``+ - * /``."""

    text: str
    tree: tuple
    names: tuple[str, ...] = field(default=())

    def __call__(self, values: dict[str, Any]) -> float:
        """The formula's value for ``values`` (name → number). A missing or non-numeric name,
        a division by zero or the log of a number ≤ 0 gives NaN (the trial then fails)."""
        return _eval(self.tree, values)


_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[-+*/()]))"
)


def parse_formula(text: str, at: str) -> Formula:
    """Parse ``text`` (the grammar in the module docstring); a syntax error is one line that
    says where. The names are not checked here (see :func:`formula_needs`)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{at} is empty", "write e.g. log10_forget_quality + 10 * model_utility")
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    text_end = len(text.rstrip())
    while pos < text_end:
        m = _TOKEN.match(text, pos)
        if m is None:
            bad = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise ConfigError(
                f"{at}={text!r} has an unexpected character {text[bad]!r} at position {bad + 1}",
                "use metric names, numbers, + - * /, parentheses and log10()",
            )
        kind = m.lastgroup or "op"
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    parser = _Parser(tokens, text, at)
    try:
        tree = parser.expr()
        if parser.i < len(tokens):
            parser.fail("an operator or the end")
        names: list[str] = []
        _collect(tree, names)
    except RecursionError:
        raise ConfigError(
            f"{at} nests parentheses or signs too deeply", "write a flatter formula"
        ) from None
    return Formula(text, tree, tuple(dict.fromkeys(names)))


class _Parser:
    """Recursive descent: expr = term (('+'|'-') term)*; term = unary (('*'|'/') unary)*;
    unary = ('-'|'+') unary | number | name | log10 '(' expr ')' | '(' expr ')'."""

    def __init__(self, tokens: list[tuple[str, str, int]], text: str, at: str) -> None:
        self.tokens, self.text, self.at, self.i = tokens, text, at, 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def fail(self, expected: str) -> None:
        tok = self.peek()
        where = f"{tok[1]!r} at position {tok[2] + 1}" if tok else "the end"
        raise ConfigError(
            f"{self.at}={self.text!r} is not a formula: expected {expected}, found {where}",
            "write e.g. log10_forget_quality + 10 * model_utility_ratio",
        )

    def take(self, value: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] == value:
            self.i += 1
            return True
        return False

    def expr(self) -> tuple:
        node = self.term()
        while (tok := self.peek()) is not None and tok[1] in ("+", "-") and tok[0] == "op":
            self.i += 1
            node = (tok[1], node, self.term())
        return node

    def term(self) -> tuple:
        node = self.unary()
        while (tok := self.peek()) is not None and tok[1] in ("*", "/") and tok[0] == "op":
            self.i += 1
            node = (tok[1], node, self.unary())
        return node

    def unary(self) -> tuple:
        if self.take("-"):
            return ("neg", self.unary())
        if self.take("+"):
            return self.unary()
        tok = self.peek()
        if tok is None:
            self.fail("a number, a metric name or (")
        assert tok is not None
        kind, value, _ = tok
        if kind == "num":
            self.i += 1
            return ("num", float(value))
        if kind == "name":
            self.i += 1
            if value == "log10":
                if not self.take("("):
                    self.fail("( after log10")
                inner = self.expr()
                if not self.take(")"):
                    self.fail(")")
                return ("log10", inner)
            return ("name", value)
        if self.take("("):
            inner = self.expr()
            if not self.take(")"):
                self.fail(")")
            return inner
        self.fail("a number, a metric name or (")
        raise AssertionError  # unreachable: fail raises


def _collect(node: tuple, out: list[str]) -> None:
    if node[0] == "name":
        out.append(node[1])
    elif node[0] != "num":
        for child in node[1:]:
            _collect(child, out)


def _eval(node: tuple, values: dict[str, Any]) -> float:
    op = node[0]
    if op == "num":
        return node[1]
    if op == "name":
        v = values.get(node[1])
        return float(v) if is_number(v) else math.nan
    if op == "neg":
        return -_eval(node[1], values)
    if op == "log10":
        x = _eval(node[1], values)
        return math.log10(x) if x > 0 else math.nan
    a, b = _eval(node[1], values), _eval(node[2], values)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b if b != 0 else math.nan


def formula_needs(formula: Formula, at: str) -> Needs:
    """What evaluating ``formula`` needs (every name checked)."""
    needs = Needs()
    for name in formula.names:
        needs = needs | metric_needs(name, at)
    return needs


# --------------------------------------------------------------------------------------------
# the space


@dataclass(frozen=True)
class Dimension:
    """One swept setting: ``kind`` ``float`` / ``int`` (``low``..``high``, ``log``, ``step``) or
    ``choice`` (``choices``)."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def extremes(self) -> list[Any]:
        """The values that bound this dimension (checked as settings before a study starts)."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def to_spec(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        spec: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.kind == "int":
            spec["int"] = True
        if self.log:
            spec["log"] = True
        if self.step is not None:
            spec["step"] = self.step
        return spec


def flatten_space(space: Any, at: str, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: spec mapping}`` from a space written with dotted keys, nested mappings or
    both (a mapping holding ``low``, ``high`` or ``choices`` is a distribution). A setting given
    twice (a file's ``unlearn.lr`` and a ``sweep.space.unlearn.lr={...}`` override) takes the
    later spec; a null spec takes the setting out of the space."""
    return {k: v for k, v in _flatten(space, at, prefix).items() if v is not None}


def _flatten(space: Any, at: str, prefix: str) -> dict[str, Any]:
    if space is None:
        return {}
    if not isinstance(space, dict):
        raise ConfigError(
            f"{at}{'.' + prefix if prefix else ''} must be a mapping of settings to ranges",
            "write e.g. unlearn.lr: {low: 1.0e-5, high: 1.0e-3, log: true}",
        )
    out: dict[str, Any] = {}
    for key, spec in space.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(spec, dict) and not ({"low", "high", "choices"} & set(spec)):
            if not spec:
                raise ConfigError(f"{at}.{dotted} is empty", "give {low, high} or {choices}")
            out.update(_flatten(spec, at, dotted))
        else:
            out[dotted] = spec
    return out


def parse_dimension(key: str, spec: Any, at: str) -> Dimension:
    """One space entry, checked: the key names a sweepable ``unlearn`` setting and the spec is a
    well-formed distribution."""
    where = f"{at}.{key}"
    _check_key(key, where)
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where} must be a mapping, got {spec!r}",
            "write {low: .., high: ..}, {low: .., high: .., int: true} or {choices: [..]}",
        )
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(
            f"{where} has unknown keys {', '.join(map(str, unknown))}",
            "use low, high, log, int, step or choices",
        )
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        if extra:
            raise ConfigError(
                f"{where} gives choices and {', '.join(extra)}", "give choices alone, or a range"
            )
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices is empty", "list at least one value")
        # PyYAML reads 1e-5 and 1.0e6 (an exponent without a sign or a dot) as strings
        choices = [
            float(c) if isinstance(c, str) and _EXPONENT.fullmatch(c) else c for c in choices
        ]
        for c in choices:
            if not (c is None or isinstance(c, str | int | float | bool)):
                raise ConfigError(
                    f"{where}.choices holds {c!r}", "choices are numbers, strings, true/false, null"
                )
        if len({repr(c) for c in choices}) != len(choices):
            raise ConfigError(f"{where}.choices repeats a value", "give each choice once")
        return Dimension(key, "choice", choices=tuple(choices))
    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise ConfigError(f"{where} has no {missing[0]}", "give both low and high")
    is_int = _flag(spec, "int", where)
    log = _flag(spec, "log", where)
    low = _bound(spec["low"], f"{where}.low", is_int)
    high = _bound(spec["high"], f"{where}.high", is_int)
    if low >= high:
        raise ConfigError(
            f"{where}: low={low} is not below high={high}",
            "give low < high (a fixed value is an override, not a range)",
        )
    if log and low <= 0:
        raise ConfigError(
            f"{where}: log scale needs low > 0, got low={low}", "raise low or drop log: true"
        )
    step = None
    if spec.get("step") is not None:
        step = _bound(spec["step"], f"{where}.step", is_int)
        if step <= 0:
            raise ConfigError(f"{where}.step={step} is not positive", "give a step > 0")
        if log:
            raise ConfigError(f"{where} gives both step and log", "use one of them")
    _check_field_type(key, is_int, where)
    return Dimension(key, "int" if is_int else "float", low, high, log, step)


_EXPONENT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _flag(spec: dict[str, Any], name: str, where: str) -> bool:
    v = spec.get(name, False)
    if not isinstance(v, bool):
        raise ConfigError(f"{where}.{name} must be true or false, got {v!r}", "write true or false")
    return v


def _bound(v: Any, where: str, is_int: bool) -> float | int:
    if isinstance(v, str):  # PyYAML reads 1e-5 (no dot) as a string
        with contextlib.suppress(ValueError):
            v = float(v)
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        raise ConfigError(f"{where} must be a finite number, got {v!r}", "write e.g. 1.0e-4")
    if is_int:
        if float(v) != int(v):
            raise ConfigError(f"{where}={v} is not a whole number", "int: true takes whole bounds")
        return int(v)
    return float(v)


def _check_key(key: str, where: str) -> None:
    """``key`` is ``unlearn.<field>``, ``unlearn.params.<name>[...]`` or ``unlearn.<mask|lora>
    .<field>``, with a field the config has."""
    import dataclasses

    from obliviate.config import LoraConfig, MaskConfig, UnlearnConfig

    parts = key.split(".")
    fix = "sweep unlearn settings, e.g. unlearn.lr or unlearn.params.beta"
    if parts[0] != "unlearn" or len(parts) < 2 or not all(parts):
        raise ConfigError(f"{where}: only unlearn.* settings can be swept", fix)
    if parts[1] in NOT_SWEPT:
        raise ConfigError(
            f"{where}: unlearn.{parts[1]} cannot be swept",
            "a study tunes one method: run one sweep per method (sweeps/<method>)",
        )
    if parts[1] == "params":
        if len(parts) < 3:
            raise ConfigError(f"{where} names no parameter", "write unlearn.params.<name>")
        return  # checked against the method when the study starts
    sections = {"mask": MaskConfig, "lora": LoraConfig}
    names = {f.name for f in dataclasses.fields(UnlearnConfig)}
    if parts[1] not in names:
        raise ConfigError(
            f"{where}: unlearn has no setting {parts[1]!r}",
            f"choose from {', '.join(sorted(names))}",
        )
    if parts[1] in sections:
        sub = {f.name for f in dataclasses.fields(sections[parts[1]])}
        if len(parts) != 3 or parts[2] not in sub:
            raise ConfigError(
                f"{where}: unlearn.{parts[1]} has no setting {'.'.join(parts[2:])!r}",
                f"choose from {', '.join(sorted(sub))}",
            )
    elif len(parts) != 2:
        raise ConfigError(f"{where}: unlearn.{parts[1]} has no sub-settings", fix)


def _check_field_type(key: str, is_int: bool, where: str) -> None:
    """A float range over an integer setting (``unlearn.batch_size``) would sample fractions."""
    import dataclasses

    from obliviate.config import LoraConfig, MaskConfig, UnlearnConfig

    parts = key.split(".")
    if parts[1] == "params":
        return
    cls: Any = {"mask": MaskConfig, "lora": LoraConfig}.get(parts[1], UnlearnConfig)
    name = parts[-1]
    ftype = {f.name: str(f.type) for f in dataclasses.fields(cls)}.get(name, "")
    if not is_int and ftype.replace(" ", "") in ("int", "int|None"):
        raise ConfigError(f"{where} is an integer setting", "add int: true to its range")
    if ftype.replace(" ", "") not in ("int", "int|None", "float", "float|None"):
        raise ConfigError(f"{where} is not a numeric setting", "give it as {choices: [...]}")


def parse_space(space: Any, at: str) -> list[Dimension]:
    """Every dimension of ``sweep.space``, in the order written."""
    return [parse_dimension(k, v, at) for k, v in flatten_space(space, at).items()]


# --------------------------------------------------------------------------------------------
# the section


PARETO_DEFAULT = ("log10_forget_quality", "model_utility_ratio")


def check_sweep(cfg: Any, at: str) -> None:
    """Check a ``sweep`` section (a :class:`~obliviate.config.SweepConfig`) and normalise its
    space to dotted keys. An empty space is allowed here (a config that is not a sweep's);
    ``obliviate sweep`` refuses it."""
    from obliviate.strict import check_choice, check_range

    check_range(f"{at}.trials", cfg.trials, 1, 100_000)
    check_choice(f"{at}.objective", cfg.objective, OBJECTIVES)
    check_choice(f"{at}.sampler", cfg.sampler, SAMPLERS)
    check_range(f"{at}.jobs", cfg.jobs, 1, 1024)
    check_range(f"{at}.seed", cfg.seed, 0, 2**32 - 1)
    check_range(f"{at}.top", cfg.top, 1, 100_000)
    cfg.space = {d.key: d.to_spec() for d in parse_space(cfg.space, f"{at}.space")}
    formula_needs(parse_formula(cfg.score, f"{at}.score"), f"{at}.score")
    if not cfg.pareto or len(cfg.pareto) < 2:
        raise ConfigError(
            f"{at}.pareto needs at least two objectives, got {cfg.pareto!r}",
            "e.g. [log10_forget_quality, model_utility_ratio]",
        )
    for i, text in enumerate(cfg.pareto):
        formula_needs(parse_formula(text, f"{at}.pareto[{i}]"), f"{at}.pareto[{i}]")


def study_formulas(cfg: Any, at: str = "sweep") -> tuple[Formula, list[Formula], Needs]:
    """The score formula, the objectives maximised (``[score]``, or the ``pareto`` list) and
    what evaluating all of them needs."""
    score = parse_formula(cfg.score, f"{at}.score")
    needs = formula_needs(score, f"{at}.score")
    objectives = [score]
    if cfg.objective == "pareto":
        objectives = [parse_formula(t, f"{at}.pareto[{i}]") for i, t in enumerate(cfg.pareto)]
        for i, f in enumerate(objectives):
            needs = needs | formula_needs(f, f"{at}.pareto[{i}]")
    return score, objectives, needs
