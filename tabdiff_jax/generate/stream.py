"""Rows in batches on one grid, decoded batch by batch, and single-file output (CSV appended,
parquet a row group per batch); see :mod:`tabdiff_jax.generate`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from tabdiff_jax.errors import ConfigError

DEFAULT_ROWS_PER_PART = 100_000


# ------------------------------------------------------------------------------ rows
def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_range(n: int, start: int = 0, stop: Optional[int] = None) -> tuple[int, int]:
    """``(start, stop)`` checked against ``n`` (``stop`` None: ``n``)."""
    n = _positive("n", n)
    stop = n if stop is None else int(stop)
    if not 0 <= int(start) < stop <= n:
        raise ConfigError(f"rows {start}:{stop} must satisfy 0 <= START < STOP <= n ({n})")
    return int(start), stop


def part_range(part: int, of: int, n: int, rows_per_part: int) -> tuple[int, int]:
    """Rows of the ``part``-th (from 0) of ``of`` near-equal ranges of whole parts (empty: ``(r, r)``)."""
    if not 0 <= int(part) < int(of):
        raise ConfigError(f"--part {part} --of {of}: expected 0 <= I < K")
    parts = -(-n // rows_per_part)
    lo, hi = part * parts // of, (part + 1) * parts // of
    return min(lo * rows_per_part, n), min(hi * rows_per_part, n)


def _cut(raw, a: int, b: int) -> tuple:
    return tuple(np.asarray(x)[a:b] for x in raw)


def raw_batches(model, n: int, *, seed: int = 0, size: int, start: int = 0, stop: Optional[int] = None,
                condition: Optional[dict] = None, max_candidates: Optional[int] = None,
                **kwargs) -> Iterator[tuple[int, tuple]]:
    """``(first row, raw arrays)`` of global rows ``start .. stop - 1``, cut on the grid of ``size``;
    never more than ``min(size, n)`` rows asked of the model at once."""
    from tabdiff_jax.sampling import MIN_REJECTION_CANDIDATES, accepted_windows

    start, stop = check_range(n, start, stop)
    size = _positive("rows per batch", size)
    draw, accept, _ = model._candidate_stream(seed, condition, kwargs)
    count = min(size, n)
    if accept is None:
        from tabdiff_jax.collapse import ClassTally

        tally = None if condition else ClassTally(model)  # one class of the target over the stream warns
        for lo in range(start // size * size, stop, size):
            a, b = max(lo, start), min(lo + size, stop)
            raw = _cut(draw(lo, count), a - lo, b - lo)
            if tally is not None:
                tally.update(raw[1])
            yield a, raw
        if tally is not None:
            tally.finish()
        return
    cap = max(100 * stop, MIN_REJECTION_CANDIDATES) if max_candidates is None else int(max_candidates)
    block = min(size, max(n, 1024))  # candidates per call: a batch at most, not a handful for a small n
    yield from accepted_windows(draw, accept, start=start, stop=stop, size=size, block=block, cap=cap,
                                describe=", ".join(f"{c}={v!r}" for c, v in condition.items()))


def _frame(model, first: int, raw, finish=None):
    import pandas as pd

    df = model._raw_frame(*raw)[model.columns]
    df.index = pd.RangeIndex(first, first + len(df))
    return df if finish is None else finish(df)  # finish: the given cells of a condition, exactly


def sample_batches(model, n: int, *, seed: int = 0, rows_per_batch: Optional[int] = None, start: int = 0,
                   stop: Optional[int] = None, condition: Optional[dict] = None,
                   max_candidates: Optional[int] = None, **kwargs):
    """Rows ``start .. stop - 1`` of ``model.sample(n, seed=seed, condition=condition)`` as DataFrames
    of at most ``rows_per_batch`` rows (default 100,000), in row order, indexed by global row number.

    Batches lie on the grid of ``rows_per_batch`` from row 0 (an unaligned ``start`` gives a shorter
    first batch), so their values do not depend on ``start``, ``stop`` or the process computing them.
    Arguments are checked here, before the first batch is asked for.
    """
    size = DEFAULT_ROWS_PER_PART if rows_per_batch is None else _positive("rows_per_batch", rows_per_batch)
    check_range(n, start, stop)
    finish = model._candidate_stream(seed, condition, kwargs)[2]  # errors now, not at the first next()
    raws = raw_batches(model, n, seed=seed, size=size, start=start, stop=stop, condition=condition,
                       max_candidates=max_candidates, **kwargs)
    return (_frame(model, first, raw, finish) for first, raw in raws)


# --------------------------------------------------------------------------- writing
def arrow_schema(model):
    """The arrow schema of the model's frames, the same for every batch: read from a frame holding
    every label of every categorical column and a missing value wherever a column has them."""
    import pyarrow as pa

    from tabdiff_jax.preprocess.schema import CATEGORICAL

    specs = model._schema()[0]
    cats = [s for s in specs if s.kind == CATEGORICAL]
    nums = [s for s in specs if s.kind != CATEGORICAL]
    m = max([s.num_codes for s in cats] + [2])
    codes = np.stack([np.arange(m) % s.num_codes for s in cats], 1) if cats else np.zeros((m, 0))
    numeric = np.zeros((m, len(nums)), np.float32)
    numeric[0, [i for i, s in enumerate(nums) if s.has_missing]] = np.nan
    return pa.Schema.from_pandas(model._raw_frame(numeric, codes.astype(np.int32))[model.columns], preserve_index=False)


def _table(df, schema):
    import pyarrow as pa

    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


class _Progress:
    """A progress bar over rows with rows/s and the time left."""

    def __init__(self, total: int, done: int, desc: str, enabled: bool):
        from tabdiff_jax.progress import progress_bar

        self.bar, self.left, self.rows, self.t0 = progress_bar(total, done, desc, enabled), total - done, 0, time.monotonic()

    def update(self, rows: int) -> None:
        self.rows += rows
        rate = self.rows / max(time.monotonic() - self.t0, 1e-9)
        self.bar.set_postfix({"rows/s": f"{rate:,.0f}", "eta": f"{(self.left - self.rows) / max(rate, 1e-9):.0f}s"})
        self.bar.update(rows)

    def close(self) -> None:
        self.bar.close()


def write_file(model, path, n: int, *, seed: int = 0, rows_per_batch: Optional[int] = None, start: int = 0,
               stop: Optional[int] = None, condition: Optional[dict] = None, progress: bool = False, **kwargs) -> dict:
    """Rows ``start .. stop - 1`` to one ``.csv`` / ``.csv.gz`` / ``.parquet`` file, batch by batch (a
    parquet row group per batch), under a temporary name renamed at the end."""
    import gzip

    import pyarrow.parquet as pq

    from tabdiff_jax.io import TABLE_SUFFIXES, _suffix, atomic_path

    path, t0 = Path(path), time.perf_counter()
    suffix = _suffix(path)
    if suffix not in TABLE_SUFFIXES:
        raise ConfigError(f"output {path}: unsupported file type {suffix or '(none)'}; use .csv, .parquet or a folder/")
    start, stop = check_range(n, start, stop)
    batches = sample_batches(model, n, seed=seed, rows_per_batch=rows_per_batch, start=start, stop=stop,
                             condition=condition, **kwargs)
    bar = _Progress(stop - start, 0, "sample", progress)
    try:
        with atomic_path(path) as tmp:
            if suffix in (".parquet", ".pq"):
                schema = arrow_schema(model)
                with pq.ParquetWriter(tmp, schema) as writer:
                    for df in batches:
                        writer.write_table(_table(df, schema), row_group_size=max(len(df), 1))
                        bar.update(len(df))
            else:
                opener = gzip.open if suffix == ".csv.gz" else open
                with opener(tmp, "wt", newline="") as f:
                    for i, df in enumerate(batches):
                        df.to_csv(f, header=i == 0, index=False)
                        bar.update(len(df))
    finally:
        bar.close()
    return {"path": str(path), "rows": stop - start, "seconds": round(time.perf_counter() - t0, 3)}


