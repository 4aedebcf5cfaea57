"""``tabdiff-jax sample``'s streamed output: the row-range flags and the writer they choose.

``-o OUT.csv|.parquet`` streams to one file; ``-o DIR/`` (a trailing slash, an existing folder or a
name without a suffix) writes parquet parts and ``_manifest.json``; ``--rows START:STOP`` or
``--part I --of K`` generate only those global rows (for a folder: whole parts).
"""

from __future__ import annotations

import argparse
from typing import Optional

from tabdiff_jax.errors import ConfigError


def _row_range(text: str) -> tuple[int, Optional[int]]:
    lo, sep, hi = text.partition(":")
    try:
        start, stop = int(lo or 0), (int(hi) if hi.strip() else None)
    except ValueError:
        start = stop = -1
    if not sep or start < 0 or (stop is not None and stop <= start):
        raise argparse.ArgumentTypeError(f"--rows expects START:STOP with 0 <= START < STOP (STOP may be left "
                                         f"out: up to -n), got {text!r}")
    return start, stop


def _count(flag: str, least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"{flag} expects an integer >= {least}, got {text!r}")
        return value

    return parse


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The row-range and streaming flags of ``tabdiff-jax sample``."""
    parser.add_argument("--rows", type=_row_range, default=None, metavar="START:STOP",
                        help="generate only global rows START..STOP-1 of the N (a folder: whole parts)")
    parser.add_argument("--part", type=_count("--part", 0), default=None, metavar="I",
                        help="generate the I-th (from 0) of --of K row ranges of whole parts (e.g. "
                             "$SLURM_ARRAY_TASK_ID); K processes into one DIR/ give the one-process dataset")
    parser.add_argument("--of", type=_count("--of", 1), default=None, metavar="K", help="number of --part ranges")
    parser.add_argument("--rows-per-part", type=_count("--rows-per-part", 1), default=None, metavar="R",
                        help="rows per parquet part of DIR/ (and per streamed batch; bounds memory; default 100000)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check(args) -> None:
    """Refuse, before loading anything, flags and outputs that the writer would refuse after it."""
    from tabdiff_jax import cli_support as cs
    from tabdiff_jax.generate.dataset import is_folder_output
    from tabdiff_jax.generate.stream import DEFAULT_ROWS_PER_PART

    if (args.part is None) != (args.of is None):
        raise ConfigError("--part I and --of K go together")
    if args.part is not None and args.rows is not None:
        raise ConfigError("--rows and --part exclude each other: give one row range")
    if args.part is not None and args.part >= args.of:
        raise ConfigError(f"--part {args.part} --of {args.of}: I counts from 0, so it must be below K")
    if args.rows is not None and args.rows[1] is not None and args.rows[1] > args.n:
        raise ConfigError(f"--rows {args.rows[0]}:{args.rows[1]}: STOP is beyond -n {args.n}")
    if args.rows is not None and args.rows[0] >= args.n:
        raise ConfigError(f"--rows {args.rows[0]}:: START is beyond -n {args.n}")
    if not is_folder_output(args.output):
        cs.check_table_output(args.output, "-o")
        return
    size = args.rows_per_part or DEFAULT_ROWS_PER_PART
    if args.rows is not None:
        start, stop = args.rows[0], args.n if args.rows[1] is None else args.rows[1]
        if start % size or (stop % size and stop != args.n):
            raise ConfigError(f"--rows {start}:{stop}: a folder takes whole parts of {size} rows "
                              f"(--rows-per-part); e.g. --rows {start // size * size}:{min(-(-stop // size) * size, args.n)}")


def run(model, args, kwargs: dict) -> str:
    """Write what ``args`` ask for; the line to print."""
    from tabdiff_jax.generate.dataset import is_folder_output, write_dataset
    from tabdiff_jax.generate.stream import (
        DEFAULT_ROWS_PER_PART,
        part_range,
        write_file,
    )

    kwargs = dict(kwargs)
    condition = kwargs.pop("condition", None)
    size = args.rows_per_part or DEFAULT_ROWS_PER_PART
    if args.part is not None:
        start, stop = part_range(args.part, args.of, args.n, size)
    elif args.rows is not None:
        start, stop = args.rows[0], args.n if args.rows[1] is None else args.rows[1]
    else:
        start, stop = 0, args.n
    common = dict(seed=args.seed, start=start, stop=stop, condition=condition, progress=not args.no_progress, **kwargs)
    if is_folder_output(args.output):
        out = write_dataset(model, args.output, args.n, rows_per_part=size, source=str(args.run_dir), **common)
        state = "complete" if out["complete"] else "incomplete (other parts pending)"
        return (f"wrote {len(out['parts_written'])} parts ({out['rows_written']} rows), kept {len(out['parts_kept'])} "
                f"complete parts, rows {start}:{stop} of {args.n} in {out['seconds']:.1f} s -> {args.output} "
                f"(dataset {state})")
    out = write_file(model, args.output, args.n, rows_per_batch=size, **common)
    return f"wrote {out['rows']} rows to {args.output} in {out['seconds']:.1f} s"
