"""Alpha-precision and beta-recall (Alaa et al. 2022, "How faithful is your synthetic data?").

The estimator without a learned embedding, as synthcity's ``AlphaPrecision`` computes it (the
figures TabSyn and others report as alpha-precision / beta-recall), on the distance encoding of
:mod:`tabdiff_jax.evaluate.distances` (min-max numbers, one-hot categories, Euclidean), with equal
numbers of real and synthetic rows (a seeded subsample of the larger table, at most ``max_rows``):

* centre ``c`` = mean real row; for ``alpha`` in 30 steps over [0, 1], ``R_alpha`` = the
  ``alpha``-quantile of ``|x - c|`` over real rows;
  ``P(alpha)`` = share of synthetic rows with ``|s - c| <= R_alpha``;
* for each real row ``x``: ``s*(x)`` its nearest synthetic row, ``d_s(x) = |x - s*(x)|`` and
  ``d_r(x)`` its distance to the nearest other real row; ``c_s`` = mean synthetic row,
  ``Q_beta`` = the ``beta``-quantile of ``|s*(x) - c_s|``;
  ``R(beta)`` = share of real rows with ``d_s(x) <= d_r(x)`` and ``|s*(x) - c_s| <= Q_beta``;
* ``alpha_precision = 1 - 2 * integral_0^1 |P(alpha) - alpha| d alpha`` and ``beta_recall`` likewise
  from ``R(beta)``. 1 is best, 0 the worst a monotone curve can give. The integral is taken by the
  trapezoid rule on the 30 points; synthcity's right-endpoint sum (``step * sum``) overshoots by
  up to 1/29 and can give slightly negative values (about -0.03 for a curve stuck at 0).
"""

from __future__ import annotations

import numpy as np

from tabdiff_jax.evaluate.distances import EncodedRows, nearest_neighbours

NUM_STEPS = 30


class _Centre:
    """Mean of the embedding ``[numbers (missing: 0) | missing indicators | one-hot categories]``.

    Distances to it are computed in closed form, never materialising one-hot rows: for a one-hot
    block with mean ``f`` (the category frequencies), ``|e(x) - f|^2 = 1 - 2 f[x] + |f|^2``.
    """

    def __init__(self, rows: EncodedRows, sizes: list[int]):
        num = rows.numeric.astype(np.float64)
        self.missing_mean = np.isnan(num).mean(axis=0)
        self.numeric_mean = np.where(np.isnan(num), 0.0, num).mean(axis=0)
        self.freqs = [np.bincount(rows.codes[:, j], minlength=size) / max(rows.num_rows, 1) for j, size in enumerate(sizes)]

    def distance(self, rows: EncodedRows) -> np.ndarray:
        num = rows.numeric.astype(np.float64)
        missing = np.isnan(num)
        sq = ((np.where(missing, 0.0, num) - self.numeric_mean) ** 2).sum(axis=1)
        sq += ((missing - self.missing_mean) ** 2).sum(axis=1)
        for j, f in enumerate(self.freqs):
            sq += 1.0 - 2.0 * f[rows.codes[:, j]] + (f * f).sum()
        return np.sqrt(np.maximum(sq, 0.0))


def _delta(alphas: np.ndarray, curve: np.ndarray) -> float:
    """``1 - 2 * integral |curve - alpha|`` by the trapezoid rule, in [0, 1] for a monotone curve."""
    gap = np.abs(alphas - curve)
    integral = float(np.sum((gap[1:] + gap[:-1]) * np.diff(alphas)) / 2.0)
    return float(np.clip(1.0 - 2.0 * integral, 0.0, 1.0))


def alpha_precision_beta_recall(real: EncodedRows, synthetic: EncodedRows, *, seed: int = 0,
                                max_rows: int = 10_000, chunk_size: int = 2048) -> dict:
    """Alpha-precision, beta-recall and their curves (see the module docstring).

    Args:
      real, synthetic: rows from one :func:`~tabdiff_jax.evaluate.distances.encode_rows` call.
      seed: seed of the subsample that equalises the table sizes.
      max_rows: at most this many rows of each table.

    Returns:
      ``{"alpha_precision", "beta_recall", "alphas", "alpha_precision_curve", "beta_recall_curve", "rows"}``.
    """
    rng = np.random.default_rng(seed)
    n = int(min(real.num_rows, synthetic.num_rows, max_rows))
    real = real.take(np.sort(rng.choice(real.num_rows, n, replace=False)))
    synthetic = synthetic.take(np.sort(rng.choice(synthetic.num_rows, n, replace=False)))
    sizes = [int(max(real.codes[:, j].max(initial=0), synthetic.codes[:, j].max(initial=0))) + 1 for j in range(real.codes.shape[1])]
    alphas = np.linspace(0.0, 1.0, NUM_STEPS)

    centre = _Centre(real, sizes)
    radii = np.quantile(centre.distance(real), alphas)
    synth_to_center = centre.distance(synthetic)

    real_to_real = nearest_neighbours(real, real, exclude_self=True, chunk_size=chunk_size)[0][:, 0]
    real_to_synth, args = nearest_neighbours(real, synthetic, with_index=True, chunk_size=chunk_size)
    real_to_synth, args = real_to_synth[:, 0], args[:, 0]
    closest_to_synth_center = _Centre(synthetic, sizes).distance(synthetic.take(args))
    synth_radii = np.quantile(closest_to_synth_center, alphas)

    precision_curve = np.array([np.mean(synth_to_center <= r) for r in radii])
    covered = real_to_synth <= real_to_real
    recall_curve = np.array([np.mean(covered & (closest_to_synth_center <= q)) for q in synth_radii])
    return {
        "alpha_precision": _delta(alphas, precision_curve),
        "beta_recall": _delta(alphas, recall_curve),
        "alphas": alphas.tolist(),
        "alpha_precision_curve": precision_curve.tolist(),
        "beta_recall_curve": recall_curve.tolist(),
        "rows": n,
    }
