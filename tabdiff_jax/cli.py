"""The ``tabdiff-jax`` command line: demo, fit, sample, evaluate.

Errors caused by the input (a missing column, a bad flag value, an unreadable file) print one line
naming the culprit and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

from tabdiff_jax.errors import ConfigError, TabdiffError

EXIT_USAGE = 2


def _positive(flag: str, cast, noun: str):
    """An argparse type: ``cast(value)`` that must be > 0 and finite, else an error naming ``flag``."""

    def parse(value: str):
        try:
            v = cast(value)
        except ValueError:
            v = None
        if v is None or not v > 0 or v == float("inf"):  # NaN fails "> 0"
            raise argparse.ArgumentTypeError(f"{flag} expects a positive {noun}, got {value!r}")
        return v

    return parse


def _positive_int(flag: str):
    return _positive(flag, int, "integer")


def _positive_float(flag: str):
    return _positive(flag, float, "finite number")


def build_parser() -> argparse.ArgumentParser:
    from tabdiff_jax import __version__

    parser = argparse.ArgumentParser(
        prog="tabdiff-jax",
        description="Synthetic mixed-type tables with JAX: fit a generator, sample rows, evaluate them.",
    )
    parser.add_argument("--version", action="version", version=f"tabdiff-jax {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="fit a model on the bundled Adult table, sample, evaluate, write a report")
    demo.add_argument("--out", default="tabdiff-demo", help="output folder (default: ./tabdiff-demo)")
    demo.add_argument("--steps", type=_positive_int("--steps"), default=None, help="training steps")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    fit = sub.add_parser("fit", help="fit a model on a table and save it to a run folder")
    fit.add_argument("data", metavar="DATA", help="a .csv / .parquet file or a bundled name (adult)")
    fit.add_argument("--model", required=True, help="model name (see `tabdiff-jax fit --help`)")
    fit.add_argument("--target", default=None, help="target column (default: the bundled table's target)")
    fit.add_argument("--task", choices=["classification", "regression"], default=None)
    fit.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    fit.add_argument("--steps", type=_positive_int("--steps"), default=None, help="training steps")
    fit.add_argument("--epochs", type=_positive_int("--epochs"), default=None, help="training epochs (GANs, TVAE)")
    fit.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--epsilon", type=_positive_float("--epsilon"), default=None, help="privacy budget (private models)")
    fit.add_argument("--delta", type=_positive_float("--delta"), default=None, help="privacy delta (default 1e-5)")
    fit.add_argument("--numeric", choices=["quantile", "minmax", "standard", "mode_specific"], default=None,
                     help="numeric transform of the preprocessor")
    fit.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    fit.add_argument("--device", default=None, help="JAX platform to run on (cpu, gpu, tpu); default: JAX's choice")
    fit.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    sample = sub.add_parser("sample", help="generate rows from a fitted run folder")
    sample.add_argument("run_dir", metavar="RUN_DIR")
    sample.add_argument("-n", "--num-rows", type=_positive_int("-n"), required=True, dest="n")
    sample.add_argument("-o", "--output", required=True, help="output .csv or .parquet (written atomically)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None, help="rows per generated chunk")
    sample.add_argument("--condition", action="append", default=[], metavar="COL=VALUE",
                        help="fix a categorical column (the target for TabDDPM) to a value; repeatable")
    sample.add_argument("--device", default=None, help="JAX platform to run on (cpu, gpu, tpu)")

    ev = sub.add_parser("evaluate", help="utility, fidelity and privacy of a synthetic table")
    ev.add_argument("--real", required=True, help="the training table")
    ev.add_argument("--synthetic", required=True, help="the synthetic table")
    ev.add_argument("--test", default=None, help="held-out real table for machine-learning efficiency")
    ev.add_argument("--holdout", default=None, help="real rows not used for training (privacy baseline)")
    ev.add_argument("--target", default=None, help="target column")
    ev.add_argument("--json", default=None, help="write the report as JSON here")
    ev.add_argument("--plots", default=None, metavar="DIR", help="write plots into this folder")
    return parser


def _select_device(device: Optional[str]) -> None:
    # Must run before jax initialises its backends; the platform name comes from the user.
    if device:
        import jax

        jax.config.update("jax_platforms", device.lower())


def _parse_conditions(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--condition expects COL=VALUE, got {item!r}")
        col, value = item.split("=", 1)
        out[col.strip()] = value
    return out


def cmd_fit(args) -> int:
    _select_device(args.device)
    from tabdiff_jax.datasets import resolve_table
    from tabdiff_jax.models.base import get_model_class

    cls = get_model_class(args.model)
    df, info = resolve_table(args.data)
    target = args.target if args.target is not None else (info.target if info else None)
    config = {}
    if args.epsilon is not None:
        config["epsilon"] = args.epsilon
    if args.delta is not None:
        config["delta"] = args.delta
    if args.numeric is not None:
        config["preprocessor"] = {"numeric": args.numeric}
    if args.epsilon is None and args.delta is not None:
        raise ConfigError("--delta needs --epsilon")
    fit_kwargs = {k: v for k, v in (("steps", args.steps), ("epochs", args.epochs), ("batch_size", args.batch_size)) if v is not None}
    model = cls(**config)
    t0 = time.perf_counter()
    model.fit(df, target=target, task=args.task, seed=args.seed, run_dir=args.out, resume=args.resume,
              progress=not args.no_progress, **fit_kwargs)
    line = f"fitted {args.model} on {len(df)} rows in {time.perf_counter() - t0:.1f} s -> {args.out}"
    if "epsilon_spent" in model.fit_info:
        line += f" (epsilon spent {model.fit_info['epsilon_spent']:.3f} of {model.fit_info.get('epsilon')})"
    print(line)
    return 0


def cmd_sample(args) -> int:
    _select_device(args.device)
    from tabdiff_jax.io import write_table
    from tabdiff_jax.models.base import load

    model = load(args.run_dir)
    kwargs = {}
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    conditions = _parse_conditions(args.condition)
    if conditions:
        kwargs["condition"] = conditions
    t0 = time.perf_counter()
    df = model.sample(args.n, seed=args.seed, **kwargs)
    write_table(df, args.output)
    print(f"wrote {len(df)} rows to {args.output} in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_evaluate(args) -> int:
    from tabdiff_jax.evaluate import evaluate_files

    report = evaluate_files(args.real, args.synthetic, test_path=args.test, holdout_path=args.holdout,
                            target=args.target, json_out=args.json, plots_dir=args.plots)
    print(report.summary_table())
    return 0


def cmd_demo(args) -> int:
    from tabdiff_jax.demo import run_demo

    run_demo(out=args.out, steps=args.steps, seed=args.seed, quick=args.quick, progress=not args.no_progress)
    return 0


COMMANDS = {"fit": cmd_fit, "sample": cmd_sample, "evaluate": cmd_evaluate, "demo": cmd_demo}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except (TabdiffError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(f"tabdiff-jax {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"tabdiff-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
