"""Numeric transforms: fitted on the host (numpy / scikit-learn), applied as pure jnp functions.

Each transform is a :class:`NumericTransform` ``(fit, encode, decode)``:

* ``fit(x, span, *, n_quantiles, max_modes, seed) -> params``: ``x`` float64 ``[n, C]`` holds the
  columns relative to their lower bound (in ``[0, span]``, ``NaN`` where missing), ``span``
  float64 ``[C]``; ``params`` is a NamedTuple of float32 numpy arrays (a pytree);
* ``encode(params, x) -> (values, modes)``: ``x`` float32 ``[n, C]`` without NaN; ``values``
  float32 ``[n, C]``; ``modes`` int32 ``[n, C]`` for mode-specific normalisation, else ``None``;
* ``decode(params, values, modes) -> x`` float32 ``[n, C]`` (the caller clips to ``[0, span]``).

``encode`` and ``decode`` are pure functions of arrays: they run eagerly or under ``jax.jit``.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri
from sklearn.exceptions import ConvergenceWarning

# Quantile-to-normal squeezes u in [0, 1] affinely into [TAIL, 1 - TAIL] before ndtri (instead of
# clipping, as scikit-learn does), so the tails stay invertible: the fitted minimum maps to about
# -5.2 and back to the minimum.
TAIL = 1e-7
MODE_CLIP = 0.99          # CTGAN clips (x - mu) / (4 sigma) to [-0.99, 0.99]
MODE_WEIGHT_MIN = 5e-3    # CTGAN keeps mixture components with weight above this
MODE_PRIOR = 1e-3         # Dirichlet-process weight concentration prior (CTGAN)
MODE_SUBSAMPLE = 10_000   # rows used to fit each Bayesian mixture
TINY32 = float(np.finfo(np.float32).tiny)  # XLA on CPU flushes float32 below this to zero
NEGLIGIBLE_SPAN = 2.0**-100                # a column narrower than this is numerically constant


class MinMaxParams(NamedTuple):
    span: np.ndarray        # [C] high - low; [0, span] -> [-1, 1]


class StandardParams(NamedTuple):
    mean: np.ndarray        # [C]
    std: np.ndarray         # [C], 1 for constant columns


class QuantileParams(NamedTuple):
    quantiles: np.ndarray   # [C, Q] non-decreasing; level of quantiles[:, k] is k / (Q - 1)
    run_starts: np.ndarray  # [C, Q] int32: first index of the run of ties that holds quantiles[:, k]


class ModeParams(NamedTuple):
    means: np.ndarray        # [C, K] kept modes first (sorted by mean), padding after
    stds: np.ndarray         # [C, K] padding 1
    log_weights: np.ndarray  # [C, K] padding -inf


class NumericTransform(NamedTuple):
    fit: Callable
    encode: Callable
    decode: Callable
    params_type: type
    has_modes: bool = False


def _valid(x: np.ndarray, j: int) -> np.ndarray:
    col = x[:, j]
    return col[~np.isnan(col)]


# ---------------------------------------------------------------- min-max
def fit_minmax(x, span, **_) -> MinMaxParams:
    return MinMaxParams(span=np.asarray(span, np.float32))


def encode_minmax(p: MinMaxParams, x):
    # x / span in [0, 1] first (correctly rounded; no overflow of 2 / span for tiny spans), and a
    # clip: at x = span the result may round one ulp past 1, and the range is the contract.
    safe = jnp.where(p.span > 0, p.span, 1.0)
    return jnp.where(p.span > 0, jnp.clip((x / safe) * 2.0 - 1.0, -1.0, 1.0), 0.0), None


def decode_minmax(p: MinMaxParams, values, modes=None):
    return ((jnp.clip(values, -1.0, 1.0) + 1.0) * 0.5) * p.span


# ---------------------------------------------------------------- standard
def fit_standard(x, span, **_) -> StandardParams:
    c = x.shape[1]
    mean = np.array([_valid(x, j).mean() for j in range(c)], np.float64)
    std = np.array([_valid(x, j).std() for j in range(c)], np.float64)
    # A std that float32 cannot hold as a normal number (XLA flushes subnormals to zero) counts
    # as a constant column: scale 1, so the encoding is 0 and decodes to the mean.
    std = np.where(std >= TINY32, std, 1.0)
    return StandardParams(mean=mean.astype(np.float32), std=std.astype(np.float32))


def encode_standard(p: StandardParams, x):
    return (x - p.mean) / p.std, None


def decode_standard(p: StandardParams, values, modes=None):
    return values * p.std + p.mean


# ---------------------------------------------------------------- quantile to normal
def empirical_quantiles(values: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Linear-interpolation quantiles (numpy's default method) of ``values`` at ``references``."""
    s = np.sort(values)
    pos = references * (len(s) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(s) - 1)
    q = s[lo] + (pos - lo) * (s[hi] - s[lo])
    return np.maximum.accumulate(q)


def fit_quantile(x, span, *, n_quantiles: int = 1000, **_) -> QuantileParams:
    n, c = x.shape
    num = max(2, min(int(n_quantiles), n))
    levels = np.linspace(0.0, 1.0, num)
    quantiles = np.stack([empirical_quantiles(_valid(x, j), levels) for j in range(c)]) if c else np.zeros((0, num))
    quantiles = np.maximum.accumulate(quantiles.astype(np.float32), axis=1)
    return QuantileParams(quantiles=quantiles, run_starts=run_starts(quantiles))


def run_starts(quantiles: np.ndarray) -> np.ndarray:
    """For each entry of sorted rows ``[C, Q]``, the first index of its run of equal values."""
    c, num = quantiles.shape
    starts = np.concatenate([np.ones((c, 1), bool), quantiles[:, 1:] != quantiles[:, :-1]], axis=1)
    return np.maximum.accumulate(np.where(starts, np.arange(num), 0), axis=1).astype(np.int32)


def _take_rows(table, offsets, index):
    """``table`` [C * R, W] (R rows per column), ``index`` [n, C] -> ``table[c * R + index]`` [n, C, W].

    One gather per lookup: on CPU a gather costs as much to compile as a dozen elementwise ops.
    Indices are in range by construction, so "clip" spares the out-of-bounds fill.
    """
    return jnp.take(table, offsets + index, axis=0, mode="clip")


def _count_at_most(q, x):
    """Number of quantiles ``<= x`` per entry: ``q`` [C, Q] sorted rows, ``x`` [n, C] -> int32 [n, C].

    A branchless binary search in a ``fori_loop``: one gather from the small flattened table per
    step, on all columns at once (no ``vmap`` of ``jnp.searchsorted`` over columns).
    """
    num_cols, num_q = q.shape
    flat = q.reshape(-1)
    offsets = jnp.arange(num_cols, dtype=jnp.int32) * num_q
    num_steps = num_q.bit_length()

    def step(i, count):
        candidate = count + jnp.left_shift(1, num_steps - 1 - i)
        probe = jnp.take(flat, offsets + jnp.minimum(candidate, num_q) - 1, mode="clip")
        return jnp.where((candidate <= num_q) & (probe <= x), candidate, count)

    return jax.lax.fori_loop(0, num_steps, step, jnp.zeros(x.shape, jnp.int32))


def _levels(q, first_of_run, x):
    """Empirical CDF ``x`` [n, C] -> ``(u, 1 - u)`` [n, C], each computed directly (no cancellation).

    ``q`` [C, Q] are the quantiles, ``first_of_run`` [C, Q] their :func:`run_starts`.

    Linear between quantiles (quantile ``k`` has level ``k / (Q - 1)``); a value equal to a run of
    tied quantiles ``q_a = ... = q_{b-1}`` gets the middle level ``(a + b - 1) / (2 (Q - 1))``,
    which is what scikit-learn's average of the interpolations from both ends gives, except at
    the minimum and maximum (levels 0 and 1, as scikit-learn).
    """
    num_cols, num_q = q.shape
    # Row i of a column: (q_i, q_{i+1}, first index of q_i's run of ties).
    table = jnp.stack([q, jnp.concatenate([q[:, 1:], q[:, -1:]], axis=1), first_of_run.astype(q.dtype)], axis=-1)
    offsets = jnp.arange(num_cols, dtype=jnp.int32) * num_q
    b = _count_at_most(q, x)                       # quantiles <= x
    last = jnp.clip(b - 1, 0, num_q - 1)
    row = _take_rows(table.reshape(-1, 3), offsets, last)
    lo, hi = row[..., 0], row[..., 1]              # the bin [q_{b-1}, q_b] when 1 <= b <= Q - 1
    hit = (b > 0) & (lo == x)
    a = jnp.where(hit, row[..., 2].astype(jnp.int32), b)  # quantiles < x
    width = hi - lo
    safe = jnp.where(width > 0, width, 1.0)
    t = jnp.where(width > 0, jnp.clip((x - lo) / safe, 0.0, 1.0), 0.0)
    t_top = jnp.where(width > 0, jnp.clip((hi - x) / safe, 0.0, 1.0), 1.0)  # 1 - t, precise near hi
    mid = 0.5 * (a + last).astype(x.dtype)
    k = jnp.clip(b, 1, num_q - 1)
    scale = 1.0 / (num_q - 1)
    u = jnp.where(hit, mid, (k - 1).astype(x.dtype) + t) * scale
    v = jnp.where(hit, (num_q - 1) - mid, (num_q - 1 - k).astype(x.dtype) + t_top) * scale
    # As scikit-learn: values at (or beyond) the fitted minimum / maximum get level 0 / 1, even
    # when tied over many quantiles (a point mass at the minimum maps to the lower tail).
    # A constant column keeps level 1/2 (it encodes to 0, as in the other transforms).
    constant = q[:, 0] == q[:, -1]
    at_min, at_max = (x <= q[:, 0]) & ~constant, (x >= q[:, -1]) & ~constant
    u = jnp.where(at_min, 0.0, jnp.where(at_max, 1.0, jnp.where(constant, 0.5, u)))
    v = jnp.where(at_min, 1.0, jnp.where(at_max, 0.0, jnp.where(constant, 0.5, v)))
    return u, v


def encode_quantile(p: QuantileParams, x):
    # float32 resolves u near 1 only to 6e-8, which the inverse multiplies by (Q - 1) times the
    # width of the last quantile bin: so the upper half goes through the complement 1 - u,
    # computed directly and precise near 0, and the normal's symmetry.
    u, v = _levels(jnp.asarray(p.quantiles), jnp.asarray(p.run_starts), x)
    lower = u <= 0.5
    s = ndtri(TAIL + (1.0 - 2.0 * TAIL) * jnp.where(lower, u, v))
    return jnp.where(lower, s, -s), None


def decode_quantile(p: QuantileParams, values, modes=None):
    q = jnp.asarray(p.quantiles)
    num_cols, num_q = q.shape
    offsets = jnp.arange(num_cols, dtype=jnp.int32) * (num_q - 1)
    pairs = jnp.stack([q[:, :-1], q[:, 1:]], axis=-1).reshape(-1, 2)  # bins (q_k, q_{k+1})
    tail = (ndtr(-jnp.abs(values)) - TAIL) / (1.0 - 2.0 * TAIL)  # the smaller of u and 1 - u
    # Levels are uniform (k / (Q - 1)), so the bin is found by arithmetic, not by a search;
    # for values > 0 it is counted from the top quantile down.
    pos = jnp.clip(tail, 0.0, 1.0) * (num_q - 1)
    k = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, num_q - 2)
    t = pos - k
    lower = values <= 0
    pair = _take_rows(pairs, offsets, jnp.where(lower, k, num_q - 2 - k))
    start = jnp.where(lower, pair[..., 0], pair[..., 1])
    end = jnp.where(lower, pair[..., 1], pair[..., 0])
    return start + t * (end - start)


# ---------------------------------------------------------------- mode-specific (CTGAN)
def _fit_modes_one(values: np.ndarray, max_modes: int, rng: np.random.Generator):
    """Bayesian Gaussian mixture of one column -> (means, stds, weights) of the kept modes."""
    from sklearn.mixture import BayesianGaussianMixture

    sub = rng.choice(values, size=MODE_SUBSAMPLE, replace=False) if len(values) > MODE_SUBSAMPLE else values
    loc, scale = sub.mean(), sub.std()
    if values.max() - values.min() < NEGLIGIBLE_SPAN:  # constant: one mode, sigma 1, encodes to ~0
        return np.array([values.mean()]), np.array([1.0]), np.array([1.0])
    if scale == 0:  # the subsample missed the rare other values: one mode as wide as the column
        return np.array([loc]), np.array([max(values.std(), TINY32)]), np.array([1.0])
    bgm = BayesianGaussianMixture(
        n_components=min(max_modes, len(sub)),
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=MODE_PRIOR,
        covariance_type="diag",
        n_init=1,
        random_state=int(rng.integers(2**31 - 1)),
    )
    bgm.fit(((sub - loc) / scale)[:, None])
    weights = bgm.weights_
    keep = weights > MODE_WEIGHT_MIN
    keep[np.argmax(weights)] = True
    means = loc + scale * bgm.means_[keep, 0]
    stds = np.maximum(scale * np.sqrt(bgm.covariances_[keep, 0]), TINY32)
    order = np.argsort(means)
    return means[order], stds[order], weights[keep][order]


def fit_modes(x, span, *, max_modes: int = 10, seed: int = 0, **_) -> ModeParams:
    c = x.shape[1]
    means = np.zeros((c, max_modes), np.float32)
    stds = np.ones((c, max_modes), np.float32)
    log_weights = np.full((c, max_modes), -np.inf, np.float32)
    # One mixture per column, each with its own seeded generator (so the result does not depend
    # on the order); threads overlap the numpy work of scikit-learn's iterations.
    fit_one = lambda j: _fit_modes_one(_valid(x, j), max_modes, np.random.default_rng([seed, j]))
    # The warning filter is process-wide, so it is set here around all threads (CTGAN's 100
    # iterations often stop short of scikit-learn's tolerance; that is expected).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with ThreadPoolExecutor(max_workers=max(1, min(c, os.cpu_count() or 1))) as pool:
            fitted = list(pool.map(fit_one, range(c)))
    for j, (m, s, w) in enumerate(fitted):
        k = len(m)
        means[j, :k], stds[j, :k], log_weights[j, :k] = m, s, np.log(w / w.sum())
    return ModeParams(means=means, stds=stds, log_weights=log_weights)


def num_modes(p: ModeParams) -> tuple[int, ...]:
    """Number of kept modes of each column (the size of its ``"<col>__mode"`` block)."""
    return tuple(int(k) for k in np.isfinite(np.asarray(p.log_weights)).sum(axis=1))


def _mode_stats(p: ModeParams, codes):
    """``codes`` [n, C] -> ``(mu, sigma)`` of the chosen modes, each [n, C] (one gather)."""
    num_cols, num_k = p.means.shape
    table = jnp.stack([jnp.asarray(p.means), jnp.asarray(p.stds)], axis=-1).reshape(-1, 2)
    row = _take_rows(table, jnp.arange(num_cols, dtype=jnp.int32) * num_k, codes)
    return row[..., 0], row[..., 1]


def encode_modes(p: ModeParams, x):
    # Deterministic mode choice: the argmax over k of the posterior responsibility
    # log w_k + log N(x | mu_k, sigma_k), accumulated one mode at a time so that no [n, C, K]
    # array is materialised.
    best_score = jnp.full(x.shape, -jnp.inf, x.dtype)
    best = jnp.zeros(x.shape, jnp.int32)
    for k in range(p.means.shape[1]):
        z = (x - p.means[:, k]) / p.stds[:, k]
        score = p.log_weights[:, k] - jnp.log(p.stds[:, k]) - 0.5 * z * z
        better = score > best_score
        best = jnp.where(better, k, best)
        best_score = jnp.where(better, score, best_score)
    mu, sigma = _mode_stats(p, best)
    return jnp.clip((x - mu) / (4.0 * sigma), -MODE_CLIP, MODE_CLIP), best


def decode_modes(p: ModeParams, values, modes):
    kmax = jnp.sum(jnp.isfinite(p.log_weights), axis=1).astype(jnp.int32) - 1
    modes = jnp.clip(modes, 0, kmax)
    mu, sigma = _mode_stats(p, modes)
    return jnp.clip(values, -1.0, 1.0) * (4.0 * sigma) + mu


TRANSFORMS = {
    "quantile": NumericTransform(fit_quantile, encode_quantile, decode_quantile, QuantileParams),
    "minmax": NumericTransform(fit_minmax, encode_minmax, decode_minmax, MinMaxParams),
    "standard": NumericTransform(fit_standard, encode_standard, decode_standard, StandardParams),
    "mode_specific": NumericTransform(fit_modes, encode_modes, decode_modes, ModeParams, has_modes=True),
}


def params_from_arrays(name: str, arrays: dict) -> NamedTuple:
    """Rebuild a transform's params from the arrays saved by ``params._asdict()``."""
    cls = TRANSFORMS[name].params_type
    return cls(**{f: np.asarray(arrays[f]) for f in cls._fields})
