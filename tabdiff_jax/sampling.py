"""The one sampling contract: row ``i`` of ``sample(n, seed)`` depends only on ``(seed, i)``.

Every model draws each row from that row's own key, ``fold_in(key, i)`` (:func:`row_keys`), and
generates rows in fixed-size compiled chunks through :func:`sample_rows`: the chunk size, the
device count, ``n`` and the first row requested change how rows are computed, never their values.
So ``sample(n, seed)[:m] == sample(m, seed)``, chunks of 7 and of 65,536 rows give the same table,
and one device and eight give the same table (``jax_threefry_partitionable``, the default from
JAX 0.5, makes the random bits independent of the sharding). Chunks are compiled with float32
matrix products on every backend (:data:`SAMPLING_MATMUL_PRECISION`): a GPU's default for float32,
TF32, rounds to 10 mantissa bits in a way that depends on the chunk's shape, which moved sampled
numbers by up to 1e-3 (relative) between chunk sizes and against a CPU (seen on an H200).

A condition on a categorical column that a model cannot impose natively is met by
:func:`rejection_sample`: candidate rows are generated in row order and the ones with the requested
categories kept, so conditional sampling keeps the contract (row ``i`` of the conditional sample is
the ``i``-th accepted candidate of a fixed stream).

Example:
  >>> def make_chunk(size, mesh):
  ...     return jax.jit(lambda start, _: jax.vmap(lambda k: jax.random.normal(k, (3,)))(
  ...         row_keys(key, start, size)))
  >>> rows = sample_rows(make_chunk, 10, chunk_size=4)   # == sample_rows(make_chunk, 10, chunk_size=7)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.extend.random import threefry_2x32

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.sharding import local_mesh, round_up

MIN_REJECTION_CANDIDATES = 100_000  # the least a rejection sampler may try, whatever n
# Matrix products of every sampling chunk in full float32 (XLA's CPU backend does this anyway; GPUs
# would use TF32 by default, whose shape-dependent rounding breaks the contract above).
SAMPLING_MATMUL_PRECISION = "float32"


def default_chunk_size() -> int:
    """Rows per compiled sampling call when none is given: 2,048 on CPUs (a chunk's activations stay
    in the cache: 20-25% more rows/s than 8,192 on 2 cores), 65,536 on accelerators (a full device)."""
    return 2048 if jax.default_backend() == "cpu" else 65536


def seed_key(seed) -> jax.Array:
    """The PRNG key of a user's ``seed`` (an integer ``0 .. 2**64 - 1``, :func:`tabdiff_jax.validate.seed`).

    ``jax.random.key(seed)`` for seeds below ``2**32``; above, JAX (64-bit types off) keeps only the low 32
    bits, so that ``2**32 + s`` would repeat seed ``s``'s rows: there the high half is folded into the key of
    the low half instead.

    Raises:
      ConfigError: not such an integer (named).
    """
    from tabdiff_jax import validate

    seed = validate.seed(seed)
    key = jax.random.key(seed & 0xFFFFFFFF)
    return key if seed < 2**32 else jax.random.fold_in(key, seed >> 32)


def check_chunk_size(chunk_size: Optional[int], name: str = "chunk_size") -> Optional[int]:
    """``chunk_size`` as an int (None stays None: the default).

    Raises:
      ConfigError: not a positive integer.
    """
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or int(chunk_size) < 1:
        raise ConfigError(f"{name} must be a positive integer (rows per compiled sampling call), got {chunk_size!r}")
    return int(chunk_size)


def row_keys(key: jax.Array, start, size: int) -> jax.Array:
    """Keys ``[size]`` of rows ``start .. start + size - 1``: ``fold_in(key, row)``; usable under jit."""
    rows = jnp.asarray(start, jnp.uint32) + jnp.arange(size, dtype=jnp.uint32)
    return jax.vmap(jax.random.fold_in, (None, 0))(key, rows)


def row_uniforms(key: jax.Array, n: int, width: int, *, start: int = 0, chunk_size: Optional[int] = None) -> np.ndarray:
    """``[n, width]`` float64 uniforms in ``[0, 1)`` of rows ``start .. start + n - 1``, row ``i`` from the
    32-bit words of ``fold_in(key, i)`` only: for samplers that draw on the host (NumPy) from per-row
    randomness (one compiled program per chunk size and width; chunks of 65,536 rows by default)."""
    def make(size, mesh):
        return functools.partial(_row_words, key, size=size, width=int(width))

    words = sample_rows(make, n, start=start, chunk_size=65536 if chunk_size is None else chunk_size, mesh=None)
    return words.astype(np.float64) / 2.0**32


# the largest float32 below -1's successor: uniforms on the open interval (-1, 1), whose erf_inv is finite
OPEN_LOW = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))


def step_uniforms(row_key: jax.Array, step, count: int) -> jax.Array:
    """``[count]`` float32 uniforms on ``[OPEN_LOW, 1)`` (inside ``(-1, 1)``) of a row's draw number ``step``.

    A per-step sampler's noise for one row (vmap it over the chunk's :func:`row_keys`), with the law of
    ``jax.random.uniform(fold_in(row_key, step), (count,), minval=OPEN_LOW, maxval=1)`` and a cheaper
    draw: counter-mode threefry under the row's own key, both 32-bit words of each hash kept (the
    counters ``step * W + j``, ``W`` = ``count`` rounded up to even), so ``ceil(count / 2)`` hashes
    instead of one for the fold-in plus one per value (JAX's partitionable threefry keeps one word of
    each). Still a function of ``(row_key, step)`` alone. Keys of another PRNG implementation take the
    ``jax.random.uniform`` route.
    """
    count = int(count)
    typed = jnp.issubdtype(row_key.dtype, jax.dtypes.prng_key)
    data = jax.random.key_data(row_key) if typed else row_key
    threefry = data.shape == (2,) and (not typed or str(jax.random.key_impl(row_key)) == "threefry2x32")
    if not threefry:
        return jax.random.uniform(jax.random.fold_in(row_key, step), (count,), minval=OPEN_LOW, maxval=1.0)
    width = count + count % 2
    counters = jnp.asarray(step, jnp.uint32) * jnp.uint32(width) + jnp.arange(width, dtype=jnp.uint32)
    # threefry_2x32 returns every hash's first word, then every second word (a concatenation); the same
    # words rebuilt as two zero-padded halves or-ed together: XLA's CPU backend then fuses the draw into
    # the step's update as plain elementwise code, where a concatenation inside that fusion made it
    # 2-5x slower (King's 20 normals a row: 550 -> 235 us per 2,048 rows). Same bits.
    half = width // 2
    words = threefry_2x32(data, counters)
    bits = (jnp.pad(words[:half], (0, half)) | jnp.pad(words[half:], (half, 0)))[:count]
    unit = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0  # [0, 1)
    return jnp.maximum(OPEN_LOW, OPEN_LOW + (1.0 - OPEN_LOW) * unit)


@functools.partial(jax.jit, static_argnames=("size", "width"))
def _row_words(key, start, _unused=None, *, size, width):
    return jax.vmap(lambda k: jax.random.bits(k, (width,), jnp.uint32))(row_keys(key, start, size))


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    x = np.asarray(x)
    if len(x) == rows:
        return x
    return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)], axis=0)  # a valid value, trimmed later


def sample_rows(make_chunk: Callable, n: int, *, start: int = 0, chunk_size: Optional[int] = None,
                per_row: Any = None, mesh: Any = "auto") -> Any:
    """Rows ``start .. start + n - 1`` generated in fixed-size chunks; a pytree of NumPy arrays ``[n, ...]``.

    Args:
      make_chunk: ``make_chunk(size, mesh) -> chunk(start, per_row_chunk)``, called once; ``chunk``
        (typically jitted, ``size`` static) returns a pytree of arrays ``[size, ...]`` for rows
        ``start .. start + size - 1`` (``start`` a uint32 scalar), each drawn from its own key (see
        :func:`row_keys`), with its rows split over ``mesh`` when given.
      n: number of rows (>= 1).
      start: global index of the first row.
      chunk_size: rows per compiled call (None: :func:`default_chunk_size`); rounded up to a multiple
        of the device count, the last chunk padded and trimmed.
      per_row: optional pytree of arrays ``[n, ...]`` (e.g. class labels) cut into the chunks.
      mesh: a ``data`` mesh, None for one device, or "auto" (all local devices).

    Raises:
      ConfigError: bad ``n``, ``start`` or ``chunk_size``.
    """
    n, start = int(n), int(start)
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if start < 0 or start + n > 2**32:
        raise ConfigError(f"rows {start}..{start + n} are outside 0..2**32 (row keys are 32-bit)")
    chunk_size = check_chunk_size(chunk_size) or default_chunk_size()
    mesh = local_mesh() if isinstance(mesh, str) else mesh
    size = round_up(min(chunk_size, n), mesh)
    num_chunks = -(-n // size)
    chunk = make_chunk(size, mesh)
    if per_row is not None:
        per_row = jax.tree.map(lambda x: _pad_rows(x, num_chunks * size), per_row)
    outs, pending = [], None
    for c in range(num_chunks):  # dispatch chunk c before fetching chunk c - 1 (overlaps host copies)
        part = None if per_row is None else jax.tree.map(lambda x: jnp.asarray(x[c * size:(c + 1) * size]), per_row)
        with jax.default_matmul_precision(SAMPLING_MATMUL_PRECISION):  # part of the compiled program's key
            res = chunk(jnp.uint32(start + c * size), part)
        if pending is not None:
            outs.append(jax.device_get(pending))
        pending = res
    outs.append(jax.device_get(pending))
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0)[:n], *outs)


# ------------------------------------------------------------------------------ conditions
def condition_codes(condition: dict, specs: Sequence, indexes: dict) -> dict:
    """``{column: value}`` -> ``{column: (j, code)}``: ``j`` the column's place among the categorical
    columns (the raw codes' column), ``code`` the value's code.

    A string that matches no label exactly matches the label with the same text (the command line's
    ``--condition income=1`` for an integer label).

    Raises:
      ConfigError: not a dict, an unknown or non-categorical column, or a value that the column
        never had (listing the known values).
    """
    from tabdiff_jax.preprocess import frames
    from tabdiff_jax.preprocess.schema import CATEGORICAL

    if not isinstance(condition, dict) or not condition:
        raise ConfigError(f"condition must be a non-empty dict {{column: value}}, got {condition!r}")
    cat_specs = [s for s in specs if s.kind == CATEGORICAL]
    by_name = {s.name: j for j, s in enumerate(cat_specs)}
    out = {}
    for column, value in condition.items():
        if column not in by_name:
            if column in [s.name for s in specs]:
                raise ConfigError(f"condition: column {column!r} is not categorical; conditions take one of "
                                  f"{sorted(by_name)}")
            raise ConfigError(f"condition: {column!r} is not a column; categorical columns: {sorted(by_name)}")
        j = by_name[column]
        spec = cat_specs[j]
        try:
            code = int(frames.category_codes(pd.Series([value], dtype=object), spec, indexes[column])[0])
        except DataError:
            text = [i for i, label in enumerate(spec.categories) if str(label) == str(value)]
            if isinstance(value, str) and len(text) == 1:
                code = text[0]
            else:
                raise ConfigError(f"condition: {value!r} is not a value of column {column!r}; known values: "
                                  f"{list(spec.categories)}") from None
        out[column] = (j, code)
    return out


def rejection_sample(draw: Callable[[int, int], Any], n: int, accept: Callable[[Any], np.ndarray], *,
                     describe: str, max_candidates: Optional[int] = None) -> Any:
    """The first ``n`` rows of the candidate stream ``draw`` that ``accept`` keeps.

    Candidates are drawn in blocks of a fixed size (one compiled program) in row order, so the
    result depends only on the stream: ``rejection_sample(draw, n)[:m] == rejection_sample(draw, m)``.

    Args:
      draw: ``draw(start, count)`` -> pytree of NumPy arrays ``[count, ...]``: candidate rows
        ``start .. start + count - 1``.
      n: rows wanted.
      accept: pytree of candidate rows -> bool ``[count]``.
      describe: the condition, for the error message (e.g. ``"income='>50K'"``).
      max_candidates: most candidate rows tried (default ``max(100 n, 100,000)``).

    Raises:
      ConfigError: the first ``max_candidates`` candidates hold fewer than ``n`` accepted rows
        (one line naming the condition and the rate at which the model generates it).
    """
    cap = max(100 * n, MIN_REJECTION_CANDIDATES) if max_candidates is None else int(max_candidates)
    if cap < n:
        raise ConfigError(f"max_candidates ({cap}) must be at least n ({n})")
    block = min(cap, 1 << max(8, int(np.ceil(np.log2(2 * n)))))  # a power of two: few distinct compiles
    windows = [raw for _, raw in accepted_windows(draw, accept, start=0, stop=n, size=n, block=block, cap=cap,
                                                  describe=describe)]
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *windows)


def accepted_windows(draw: Callable[[int, int], Any], accept: Callable[[Any], np.ndarray], *, start: int, stop: int,
                     size: int, block: int, cap: int, describe: str):
    """``(first, rows)`` of accepted candidates ``start .. stop - 1`` (numbered in acceptance order) cut on
    the grid of ``size``: the one rejection loop of :func:`rejection_sample` and of streamed sampling
    (:mod:`tabdiff_jax.generate`). Candidates are drawn from row 0 in blocks of ``block`` rows, at most
    ``cap`` of them; memory holds a block and at most one window of accepted rows.

    Raises:
      ConfigError: the first ``cap`` candidates hold fewer than ``stop`` accepted rows.
    """
    found = tried = 0  # accepted candidates so far (their global row numbers), candidates drawn
    row, buf = start, None  # first row not yet yielded; accepted rows from ``row`` on
    while row < stop:
        if tried >= cap:
            raise ConfigError(f"condition {describe}: the model generates it in {found / max(tried, 1):.3%} of rows "
                              f"({found} of {tried} candidates), too rare for {stop} rows within {cap} candidates; "
                              "pass max_candidates= or use a conditional model (TabDDPM, CGAN, CTGAN)")
        count = min(block, cap - tried)
        rows = draw(tried, count)
        tried += count
        take = np.flatnonzero(np.asarray(accept(rows), bool))
        have = row + (0 if buf is None else len(jax.tree.leaves(buf)[0]))  # the next accepted row to keep
        keep = take[max(0, have - found): max(0, stop - found)]
        found += len(take)
        if len(keep):
            got = jax.tree.map(lambda x: np.asarray(x)[keep], rows)
            buf = got if buf is None else jax.tree.map(lambda x, y: np.concatenate([x, y]), buf, got)
        while buf is not None and row < stop:
            need = min((row // size + 1) * size, stop) - row
            if len(jax.tree.leaves(buf)[0]) < need:
                break
            yield row, jax.tree.map(lambda x: x[:need], buf)
            buf, row = jax.tree.map(lambda x: x[need:], buf), row + need


def cached_chunk(holder: Any, size: int, mesh: Any, owners: tuple, build: Callable[[], Callable]) -> Callable:
    """``build()`` (a compiled chunk function) cached on ``holder`` per ``(size, mesh)``, as long as
    the objects in ``owners`` (what the function closes over: graph definitions, preprocessor) are
    the same; a refit or load replaces them and so the cache."""
    cache = holder.__dict__.get("_chunk_cache")
    if cache is None or len(cache[0]) != len(owners) or any(a is not b for a, b in zip(cache[0], owners)):
        cache = holder._chunk_cache = (owners, {})
    if (size, mesh) not in cache[1]:
        cache[1][(size, mesh)] = build()
    return cache[1][(size, mesh)]
