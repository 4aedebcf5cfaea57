"""The ``tabdiff-jax`` command line: demo, fit, sample, impute, evaluate.

Errors caused by the input (a missing column, a bad flag value, an unreadable file) print one line
naming the culprit and exit with status 2; ``--debug`` (before or after the command) shows the
traceback instead. Ctrl-C during ``fit`` saves a checkpoint and prints the command that resumes it
(exit 130). Warnings print as one line; see :mod:`tabdiff_jax.cli_support` for the helpers and
:mod:`tabdiff_jax.runs` for run folders (``--out`` checks, ``resume.json``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from tabdiff_jax import cli_support as cs
from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError, TabdiffError
from tabdiff_jax.generate import cli as generate_cli

EXIT_USAGE = 2


def _flag_type(flag: str, cast, check, noun: str):
    """An argparse type: ``check(flag, cast(value))`` (a :mod:`tabdiff_jax.validate` check), its
    failure reported as an argparse error naming ``flag``."""

    def parse(value: str):
        try:
            return check(flag, cast(value))
        except ValueError:  # a failed cast, or the check's ConfigError
            raise argparse.ArgumentTypeError(f"{flag} expects a positive {noun}, got {value!r}") from None

    return parse


def _int_flag(flag: str):
    return _flag_type(flag, int, validate.positive_int, "integer")


def _float_flag(flag: str):
    return _flag_type(flag, float, validate.positive_float, "finite number")


def build_parser() -> argparse.ArgumentParser:
    from tabdiff_jax import __version__

    parser = cs.OneLineParser(
        prog="tabdiff-jax",
        description="Synthetic mixed-type tables with JAX: fit a generator, sample rows, evaluate them.",
    )
    parser.add_argument("--version", action="version", version=f"tabdiff-jax {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="fit a model on the bundled Adult table, sample, evaluate, write a report")
    demo.add_argument("--out", default="tabdiff-demo", help="output folder (default: ./tabdiff-demo)")
    demo.add_argument("--steps", type=_int_flag("--steps"), default=None, help="training steps")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.add_argument("--sensitive", default=None, metavar="COL",
                      help="also report the fairness of the utility models over COL's groups (e.g. sex)")

    fit = sub.add_parser("fit", help="fit a model on a table and save it to a run folder", epilog=cs.models_epilog(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("data", metavar="DATA", help="a .csv / .tsv / .parquet file (.csv: comma, or semicolon / tab / bar where the header has no comma) or a bundled name (adult)")
    fit.add_argument("--model", required=True, help="model to fit (one of the models listed below)")
    fit.add_argument("--target", default=None, help="target column (default: the bundled table's target)")
    fit.add_argument("--task", choices=["classification", "regression"], default=None,
                     help="task of the target (default: inferred from the column)")
    fit.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write (new or empty)")
    fit.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    fit.add_argument("--steps", type=_int_flag("--steps"), default=None, help="training steps")
    fit.add_argument("--epochs", type=_int_flag("--epochs"), default=None, help="training epochs (GANs, TVAE)")
    fit.add_argument("--batch-size", type=_int_flag("--batch-size"), default=None, help="rows per training batch")
    fit.add_argument("--seed", type=int, default=0, help="random seed of the fit (default 0)")
    fit.add_argument("--epsilon", type=_float_flag("--epsilon"), default=None, help="privacy budget (private models)")
    fit.add_argument("--delta", type=_float_flag("--delta"), default=None, help="privacy delta (default 1e-5)")
    fit.add_argument("--numeric", choices=["quantile", "minmax", "standard", "mode_specific"], default=None,
                     help="numeric transform of the preprocessor")
    fit.add_argument("--derive", choices=["auto", "none"], default=None,
                     help="columns a categorical column determines in every row (education -> education-num): "
                          "auto = rebuilt from it on decode, not modelled (TabDiff's default); none = modelled")
    fit.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    fit.add_argument("--device", default=None, help="JAX platform to run on (cpu, gpu, tpu); default: JAX's choice")
    fit.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    fit.add_argument("--distributed", action="store_true",
                     help="one of several processes (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID): "
                          "data parallel over all their devices; process 0 writes --out")
    fit.add_argument("--max-categories", type=_int_flag("--max-categories"), default=None, metavar="N",
                     help="most distinct values a categorical column may have (default 1000)")
    fit.add_argument("--column-kind", type=cs.column_kind, action="append", metavar="COL=KIND",
                     help="treat COL as KIND (numeric or categorical) instead of inferring it; repeatable")
    fit.add_argument("--public-bounds", type=cs.public_bounds, action="append", metavar="COL=LO:HI",
                     help="public range of a numeric column (private models learn nothing from the data); repeatable")
    fit.add_argument("--public-categories", type=cs.public_categories, action="append", metavar="COL=A,B,C",
                     help="public labels of a categorical column (private models); repeatable")
    fit.add_argument("--option", type=cs.option, action="append", metavar="KEY=VALUE",
                     help="any other model option (VALUE read as JSON where it parses, e.g. lr=0.001, "
                          "checkpoint_seconds=30); repeatable")

    sample = sub.add_parser("sample", help="generate rows from a fitted run folder")
    sample.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `tabdiff-jax fit`")
    sample.add_argument("-n", "--num-rows", type=_int_flag("-n"), required=True, dest="n", metavar="N",
                        help="number of rows to generate")
    sample.add_argument("-o", "--output", required=True,
                        help="output .csv or .parquet (streamed, written atomically), or DIR/: parquet parts + manifest")
    sample.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same rows)")
    sample.add_argument("--chunk-size", "--batch-size", type=_int_flag("--chunk-size"), default=None, dest="chunk_size",
                        help="rows per compiled sampling call (memory; the rows do not depend on it)")
    sample.add_argument("--condition", action="append", default=[], metavar="COL=VALUE",
                        help="fix a column to a value in every row (categorical; numeric too with TabDDPM and "
                             "TabDiff, e.g. age=40); repeatable")
    sample.add_argument("--device", default=None, help="JAX platform to run on (cpu, gpu, tpu)")
    generate_cli.add_flags(sample)  # --rows, --part/--of, --rows-per-part, --no-progress

    imp = sub.add_parser("impute", help="fill the missing cells of a table with draws from a fitted run (TabDDPM, "
                                        "TabDiff)")
    imp.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `tabdiff-jax fit`")
    imp.add_argument("-i", "--input", required=True, help="the .csv / .parquet table with missing cells to fill")
    imp.add_argument("-o", "--output", required=True, help="output .csv or .parquet (written atomically)")
    imp.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same fills)")
    imp.add_argument("--chunk-size", type=_int_flag("--chunk-size"), default=None, dest="chunk_size",
                     help="rows per compiled sampling call (memory; the fills do not depend on it)")
    imp.add_argument("--device", default=None, help="JAX platform to run on (cpu, gpu, tpu)")

    ev = sub.add_parser("evaluate", help="utility, fidelity and privacy of a synthetic table")
    ev.add_argument("--real", required=True, help="the training table")
    ev.add_argument("--synthetic", required=True, help="the synthetic table")
    ev.add_argument("--test", default=None, help="held-out real table for machine-learning efficiency")
    ev.add_argument("--holdout", default=None, help="real rows not used for training (privacy baseline)")
    ev.add_argument("--target", default=None, help="target column")
    ev.add_argument("--sensitive", default=None, metavar="COL",
                    help="sensitive column: demographic-parity and equalised-odds differences of the utility models")
    ev.add_argument("--json", default=None, help="write the report as JSON here")
    ev.add_argument("--plots", default=None, metavar="DIR", help="write plots into this folder")
    for command in (demo, fit, sample, imp, ev):  # --debug before or after the command
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
    return parser


def _select_device(device: Optional[str]) -> None:
    cs.select_device(device)  # before JAX starts; an unknown or absent device is one ConfigError


def _parse_conditions(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--condition expects COL=VALUE, got {item!r}")
        col, value = item.split("=", 1)
        out[col.strip()] = value
    return out


def cmd_fit(args) -> int:
    from tabdiff_jax import runs

    runs.check_out_dir(args.out, overwrite=args.overwrite, resume=args.resume)  # before any work
    _select_device(args.device)
    primary = True
    if args.distributed:  # before anything else uses JAX
        from tabdiff_jax.distributed import initialize_from_env

        primary = initialize_from_env()[0] == 0
    from tabdiff_jax.datasets import resolve_table
    from tabdiff_jax.models.base import get_model_class

    cls = get_model_class(args.model)
    config = {}
    if args.epsilon is not None:
        config["epsilon"] = args.epsilon
    if args.delta is not None:
        config["delta"] = args.delta
    if args.numeric is not None:
        config["preprocessor"] = {"numeric": args.numeric}
    if args.max_categories is not None:
        config.setdefault("preprocessor", {})["max_categories"] = args.max_categories
    if args.derive is not None:
        config.setdefault("preprocessor", {})["derive"] = None if args.derive == "none" else "auto"
    if args.epsilon is None and args.delta is not None:
        raise ConfigError("--delta needs --epsilon")
    fit_kwargs = {k: v for k, v in (("steps", args.steps), ("epochs", args.epochs), ("batch_size", args.batch_size)) if v is not None}
    for name, flag, items in (("column_kinds", "--column-kind", args.column_kind),
                              ("public_bounds", "--public-bounds", args.public_bounds),
                              ("public_categories", "--public-categories", args.public_categories)):
        if items:
            fit_kwargs[name] = cs.pairs(items, flag)
    model = cs.build_model(cls, config, cs.pairs(args.option, "--option"))
    df, info = resolve_table(args.data)
    target = args.target if args.target is not None else (info.target if info else None)
    if args.resume and not runs.checkpoint_steps(args.out) and not (Path(args.out) / "model.json").exists():
        print(f"tabdiff-jax fit: note: {args.out} has no checkpoint yet; training starts from step 0", file=sys.stderr)
    t0 = time.perf_counter()
    model.fit(df, target=target, task=args.task, seed=args.seed, run_dir=args.out, resume=args.resume,
              overwrite=args.overwrite, progress=primary and not args.no_progress, **fit_kwargs)
    if not primary:
        return 0
    line = f"fitted {args.model} on {len(df)} rows in {time.perf_counter() - t0:.1f} s -> {args.out}"
    from tabdiff_jax.preprocess.inference import summary
    from tabdiff_jax.privacy.preprocessing import budget_summary

    inferred, budget = summary(model.fit_info.get("inferred")), budget_summary(model.fit_info)
    print(line + (f"\ninferred: {inferred}" if inferred else "") + (f"\n{budget}" if budget else ""))
    return 0


def cmd_sample(args) -> int:
    generate_cli.check(args)  # output and row range, before loading or sampling anything
    _select_device(args.device)
    from tabdiff_jax.runs import load_run

    model = load_run(args.run_dir)
    kwargs = {}
    if args.chunk_size is not None:
        kwargs["chunk_size"] = args.chunk_size
    conditions = _parse_conditions(args.condition)
    if conditions:  # the text of a value -> a label of the column's type ('1' -> 1 for a 0/1 target)
        from tabdiff_jax.preprocess.inference import typed_conditions

        conditions = typed_conditions(model, conditions)
        kwargs["condition"] = conditions
    try:
        line = generate_cli.run(model, args, kwargs)  # streamed: memory bounded by --rows-per-part
    except TypeError as exc:  # a model that does not take one of the flags' keywords
        if "keyword" not in str(exc):
            raise
        flag = "--condition" if "condition" in str(exc) else "--chunk-size"
        raise ConfigError(f"{flag}: the {model.model_name} model does not support it ({exc})") from exc
    print(line)
    return 0


def cmd_impute(args) -> int:
    cs.check_table_output(args.output, "-o")  # before loading or sampling anything
    _select_device(args.device)
    from tabdiff_jax.io import load_table, write_table
    from tabdiff_jax.runs import load_run

    model = load_run(args.run_dir)
    df = load_table(args.input)
    t0 = time.perf_counter()
    kwargs = {} if args.chunk_size is None else {"chunk_size": args.chunk_size}
    out = model.impute(df, seed=args.seed, **kwargs)
    write_table(out, args.output)
    cells = int(df.isna().to_numpy().sum())
    print(f"filled {cells} missing cells in {len(df)} rows in {time.perf_counter() - t0:.1f} s -> {args.output}")
    return 0


def cmd_evaluate(args) -> int:
    from tabdiff_jax.evaluate import evaluate_files

    report = evaluate_files(args.real, args.synthetic, test_path=args.test, holdout_path=args.holdout,
                            target=args.target, json_out=args.json, plots_dir=args.plots, sensitive=args.sensitive)
    print(report.summary_table())
    for note in report.to_dict().get("notes", []):  # what was skipped, what the holdout was
        print(f"note: {note}")
    return 0


def cmd_demo(args) -> int:
    from tabdiff_jax.demo import run_demo

    run_demo(out=args.out, steps=args.steps, seed=args.seed, quick=args.quick, progress=not args.no_progress,
             sensitive=args.sensitive)
    return 0


COMMANDS = {"fit": cmd_fit, "sample": cmd_sample, "impute": cmd_impute, "evaluate": cmd_evaluate, "demo": cmd_demo}


def _interrupted(exc: KeyboardInterrupt, argv: Optional[Sequence[str]]) -> str:
    """One line for Ctrl-C: where the run was saved and the command that continues it."""
    from tabdiff_jax.checkpoint import TrainingInterrupted

    if not isinstance(exc, TrainingInterrupted):
        return "interrupted"
    if exc.saved_step <= 0:
        return f"interrupted at step {exc.step} of {exc.total}; nothing was saved"
    words = [w for w in (sys.argv[1:] if argv is None else list(argv)) if w != "--overwrite"]
    command = " ".join(shlex.quote(w) for w in ["tabdiff-jax", *words, *([] if "--resume" in words else ["--resume"])])
    return f"{exc}; continue with: {command}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        with cs.one_line_warnings():
            return COMMANDS[args.command](args)
    except (TabdiffError, OSError) as exc:  # OSError: a file the user named cannot be read or written
        if args.debug:
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"tabdiff-jax {args.command}: error: {cs.with_flag_hints(text)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        print(f"tabdiff-jax {args.command}: {_interrupted(exc, argv)}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
