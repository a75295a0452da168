"""``obliviate`` command line: a thin layer over :mod:`obliviate.api`.

Every command takes config files and ``key=value`` overrides in any order::

    obliviate demo
    obliviate unlearn demo methods/simnpo unlearn.lr=1e-4 run_dir=runs/simnpo
    obliviate eval my_experiment.yaml model.path=runs/simnpo/model

With no config file the shipped ``demo`` config is the base.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from obliviate.errors import ConfigError, ObliviateError

COMMANDS = {
    "demo": "generate the benchmark, train target + retain models, unlearn, evaluate, print a table",
    "generate": "write the synthetic benchmark (TOFU-schema JSON splits) to a directory",
    "finetune": "fine-tune the tiny model on the full set (target) or the retain set",
    "unlearn": "run an unlearning method and save the model to <run_dir>/model",
    "run": "unlearn and evaluate in one run dir; with --seeds N, N seeds and mean ± sd",
    "sweep": "tune unlearn settings with an Optuna study (sweep.space); writes trials, Pareto set, best.yaml",
    "eval": "evaluate a model dir: per-sample JSON under <run_dir>/eval and <run_dir>/summary.json",
    "attack": "robustness attacks and probes on the unlearned model(s) of a run dir; results join its summary.json",
    "report": "write one self-contained HTML report (plots, metric table, per-sample browser) of run dirs",
    "compare": "print a leaderboard of run dirs ranked by one metric (table, Markdown or CSV)",
    "methods": "list the registered unlearning methods",
    "metrics": "list the registered metrics (what each reads, where it applies)",
    "benchmarks": "list the registered benchmarks",
    "configs": "list the configs shipped with obliviate",
}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``error:`` line (exit 2), like every other bad input."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(message, f"see `{self.prog} --help`")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("obliviate")
    except PackageNotFoundError:
        return "unknown"


def _top_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="obliviate",
        description="Machine unlearning for LLMs.",
        epilog="commands:\n" + "\n".join(f"  {k:10s} {v}" for k, v in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    p.add_argument("--version", action="version", version=f"obliviate {version()}")
    return p


def _command_parser(name: str) -> argparse.ArgumentParser:
    sp = _Parser(prog=f"obliviate {name}", description=COMMANDS[name])
    if name in ("methods", "metrics", "benchmarks", "configs"):
        return sp
    if name == "attack":
        sp.add_argument(
            "run", metavar="RUN_DIR", nargs="?", help="an unlearn, eval or demo run dir"
        )
        sp.add_argument(
            "items",
            nargs="*",
            metavar="CONFIG|key=value",
            help="overrides of the run's config.yaml (attack.relearn.lr=1e-3, ...)",
        )
        sp.add_argument("--attacks", help="comma-separated attacks and probes (default: all)")
        sp.add_argument("--list", action="store_true", help="list the attacks and probes")
        sp.add_argument("--overwrite", action="store_true", help="replace robustness.json")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")
        return sp
    if name in ("report", "compare"):
        sp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run dirs (demo or eval)")
        if name == "report":
            sp.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
            return sp
        sp.add_argument("--by", default="forget_quality", help="metric to rank by")
        sp.add_argument(
            "--format", choices=["table", "markdown", "csv"], default="table", dest="fmt"
        )
        sp.add_argument("--columns", help="comma-separated metrics to show beside --by")
        order = sp.add_mutually_exclusive_group()
        order.add_argument("--ascending", action="store_true", default=None, help="lower is better")
        order.add_argument(
            "--descending",
            dest="ascending",
            action="store_false",
            default=None,
            help="higher is better",
        )
        return sp
    sp.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG|key=value",
        help="YAML files / shipped config names, then overrides",
    )
    sp.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (status lines only; also OBLIVIATE_PROGRESS=0)",
    )
    if name in ("finetune", "unlearn", "eval", "run", "sweep"):
        sp.add_argument(
            "--overwrite", action="store_true", help="replace results already in run_dir"
        )
    if name in ("demo", "run"):
        sp.add_argument(
            "--seeds",
            type=int,
            metavar="N",
            help="repeat with seeds 0..N-1 (unlearn.seed) and report mean ± sd (same as seeds=[...])",
        )
    if name in ("finetune", "unlearn"):
        sp.add_argument(
            "--resume",
            action="store_true",
            help="continue an interrupted run from its newest checkpoint (see *.save_every)",
        )
    if name == "finetune":
        sp.add_argument(
            "--split",
            choices=["full", "retain"],
            default="full",
            help="full: target model; retain: retain model",
        )
    if name == "eval":
        sp.add_argument(
            "--model",
            help="model directory or hub id to evaluate (default: model.path, else the tiny target)",
        )
    if name == "generate":
        sp.add_argument("--out", required=True, help="directory to write the split files to")
    return sp


def _parse(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        top = _top_parser()
        if argv and argv[0] in ("-h", "--help"):
            top.print_help()
            raise SystemExit(0)
        if not argv:
            top.print_help(sys.stderr)
            raise ConfigError("no command given", f"choose one of {', '.join(COMMANDS)}")
        if argv[0] == "--version":
            top.parse_args(argv[:1])
        raise ConfigError(f"unknown command {argv[0]!r}", f"choose one of {', '.join(COMMANDS)}")
    args = _command_parser(argv[0]).parse_intermixed_args(argv[1:])
    args.command = argv[0]
    return args


def _load(items: list[str]):
    from obliviate.config import load_config

    files = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    return load_config(files or ["demo"], overrides)


def run(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.command == "methods":
        from obliviate.methods import get_method, method_names

        for m in method_names():
            spec = get_method(m)
            method = spec.from_params({})
            needs = ",".join(sorted(method.requirements()))
            print(f"{m:12s} {method.family:15s} {method.artefact:11s} {needs:34s} {spec.summary()}")
        return 0
    if args.command == "metrics":
        from obliviate.eval.registry import metrics

        for m in metrics().values():
            flag = "" if m.default else " (opt-in)"
            print(f"{m.name:28s} {','.join(sorted(m.roles)):34s} {m.doc}{flag}")
        return 0
    if args.command == "benchmarks":
        from obliviate.data.benchmarks import benchmark_names, get_benchmark

        for name in benchmark_names():
            print(f"{name:10s} {get_benchmark(name).summary}")
        return 0
    if args.command == "configs":
        from obliviate.config import shipped_configs

        print("\n".join(shipped_configs()))
        return 0
    if args.command == "report":
        from obliviate.report import write_report

        print(write_report(args.runs, args.out))
        return 0
    if args.command == "compare":
        from obliviate.report import leaderboard, load_runs

        columns = (
            [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
        )
        board = leaderboard(load_runs(args.runs), args.by, args.fmt, columns, args.ascending)
        print(board, end="" if board.endswith("\n") else "\n")
        return 0
    if args.command == "attack" and args.list:
        from obliviate.attacks import ATTACKS

        for a in ATTACKS.values():
            print(f"{a.name:20s} {a.kind:8s} {a.summary}")
        return 0
    if args.no_progress:
        from obliviate import progress

        progress.set_enabled(False)
    if args.command == "attack":
        return _attack(args)

    items = list(args.items)
    if getattr(args, "seeds", None) is not None:
        if args.seeds < 1:
            raise ConfigError(f"--seeds {args.seeds} is not a positive count", "give --seeds 3")
        items.append(f"seeds=[{','.join(str(i) for i in range(args.seeds))}]")
    cfg = _load(items)
    from obliviate import api

    api.setup_runtime(cfg)
    if args.command == "demo":
        from obliviate.demo import run_demo

        run_demo(cfg)
    elif args.command == "generate":
        print(api.generate(cfg, args.out))
    elif args.command == "finetune":
        path = api.finetune(cfg, args.split, cfg.run_dir, args.overwrite, args.resume)
        print(path)
    elif args.command == "unlearn":
        print(api.unlearn(cfg, overwrite=args.overwrite, resume=args.resume))
    elif args.command == "run":
        from obliviate.repeat import print_run, run_experiment

        print_run(run_experiment(cfg, overwrite=args.overwrite))
    elif args.command == "sweep":
        from obliviate.sweep import run_sweep

        print(run_sweep(cfg, overwrite=args.overwrite))
    elif args.command == "eval":
        summary = api.evaluate(
            cfg, args.model or cfg.model.path, cfg.run_dir, overwrite=args.overwrite
        )
        from obliviate.demo import COLUMNS, MUSE_COLUMNS, format_table

        columns = MUSE_COLUMNS if cfg.benchmark.name == "muse" else COLUMNS
        print(format_table([{**summary, "model": Path(summary["model"]).name}], columns))
        if summary.get("forget_quality") is None and columns is COLUMNS:
            api.log(f"forget quality is unavailable: {summary['forget_quality_reference']}")
    return 0


def _attack(args: argparse.Namespace) -> int:
    if not args.run:
        raise ConfigError("no RUN_DIR given", "obliviate attack RUN_DIR (or --list)")
    run = Path(args.run).expanduser()
    config = run / "config.yaml"
    if not config.is_file():
        raise ConfigError(
            f"{run} has no config.yaml", "give a run dir that obliviate unlearn, eval or demo wrote"
        )
    from obliviate.config import load_config

    files = [str(config)] + [i for i in args.items if "=" not in i]
    cfg = load_config(files, [i for i in args.items if "=" in i])
    from obliviate import api
    from obliviate.attacks.command import format_robustness

    api.setup_runtime(cfg)
    names = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    for name, res in api.attack(cfg, run, names, args.overwrite):
        print(format_robustness(name, res))
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run a command; exit 0, 2 (bad input), 3 (the run diverged), 130 (interrupted) or 141
    (stdout closed early, as by ``| head``: quietly)."""
    try:
        code = run(argv)
        sys.stdout.flush()
    except ObliviateError as e:
        from obliviate.distributed import own_error

        if own_error(e):  # a launch: each error once, from the process it happened in
            print(f"error: {e.one_line()}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print(
            "interrupted (unlearn / finetune: --resume continues from the last checkpoint)",
            file=sys.stderr,
        )
        code = 130
    except BrokenPipeError:
        # the reader went away: no traceback, and no second error when Python flushes at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)


if __name__ == "__main__":
    main()
