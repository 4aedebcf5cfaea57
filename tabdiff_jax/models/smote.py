"""SMOTE as a generator (Chawla et al. 2002), the TabDDPM paper's strong baseline.

A new row is an interpolation between a training row ``x`` and one of its ``k`` nearest
neighbours ``x'`` *of the same class* (classification: the target's value; regression or no
target: one class): numbers (and datetimes) become ``x + lambda (x' - x)`` with
``lambda ~ U(0, 1)``; categories (and a number missing in either row) are taken from the end of
the segment the new point is nearer to, ``x`` if ``lambda < 0.5`` else ``x'``. Integers are
rounded, and columns, order and dtypes are those of the training table (decoding shares the
preprocessor's column schema, :mod:`tabdiff_jax.preprocess.schema`).

Neighbours are found once, at fit time, with scikit-learn's ``NearestNeighbors`` on min-max
scaled numbers (missing: 0 plus an indicator) and one-hot categories weighted as in SMOTE-NC
(a differing category costs about the median standard deviation of the numbers, per class). Class counts of a sample
follow the training frequencies (largest-remainder rounding). All randomness comes from the
``seed`` of :meth:`sample`. The state (the encoded training rows and their neighbour lists) is
saved as arrays in ``state.npz`` and the column schema as JSON: no pickle.

Example:
  >>> model = SMOTE(k_neighbors=5).fit(train, target="income")
  >>> synthetic = model.sample(len(train), seed=0)
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.models.base import Synthesizer, register
from tabdiff_jax.preprocess import frames
from tabdiff_jax.preprocess.schema import (
    CATEGORICAL,
    ColumnSpec,
    fit_column,
    infer_kind,
)

_MAX_CATEGORIES = 1_000_000  # SMOTE copies categories; it has no reason to limit their number
_DENSE_BYTES = 256 * 2**20


def _neighbour_features(raw_numeric: np.ndarray, codes: np.ndarray, specs: list[ColumnSpec]):
    """``[min-max numbers (missing 0) | missing indicators | one-hot categories]`` rows, and the
    number of leading number columns.

    Dense when they fit in 256 MB (scikit-learn's brute-force search is about 5x faster on dense
    rows), else sparse (columns with very many categories).
    """
    from scipy import sparse

    num_specs = [s for s in specs if s.kind != CATEGORICAL]
    cat_specs = [s for s in specs if s.kind == CATEGORICAL]
    span = np.array([s.span if s.span > 0 else 1.0 for s in num_specs], np.float64)
    x = raw_numeric.astype(np.float64) / span if num_specs else np.zeros((len(codes), 0))
    missing = np.isnan(x)
    parts = [sparse.csr_matrix(np.where(missing, 0.0, x)), sparse.csr_matrix(missing[:, missing.any(axis=0)].astype(np.float64))]
    n = len(codes)
    for j, s in enumerate(cat_specs):
        parts.append(sparse.csr_matrix((np.ones(n), (np.arange(n), codes[:, j])), shape=(n, s.num_codes)))
    features = sparse.hstack(parts, format="csr")
    dense = features.shape[0] * features.shape[1] * 8 <= _DENSE_BYTES
    return (features.toarray() if dense else features), len(num_specs)


def _nominal_scale(features, num_numeric: int) -> np.ndarray:
    """Per-column factors that give the one-hot / indicator entries SMOTE-NC's weight.

    SMOTE-NC (Chawla et al. 2002) charges a differing nominal value the median of the standard
    deviations of the numbers; as in imbalanced-learn's ``SMOTENC`` (the TabDDPM baseline), the
    one-hot entries become ``median_std / 2`` (kept at 1 when there are no varying numbers).
    """
    scale = np.ones(features.shape[1])
    if num_numeric:
        numbers = features[:, :num_numeric]
        numbers = numbers.toarray() if hasattr(numbers, "toarray") else numbers
        median_std = float(np.median(numbers.std(axis=0)))
        if median_std > 0:
            scale[num_numeric:] = median_std / 2.0
    return scale


def _class_neighbours(features: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]`` indices of each row's ``k`` nearest *other* rows (``k < n``)."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(features).kneighbors(features, return_distance=False)
    n = len(index)
    drop = index == np.arange(n)[:, None]
    # A row with duplicates may not list itself: then drop its farthest neighbour instead.
    drop[~drop.any(axis=1), -1] = True
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(index, order, axis=1)


def largest_remainder(n: int, counts: np.ndarray) -> np.ndarray:
    """Split ``n`` into integers proportional to ``counts`` (largest-remainder rounding)."""
    share = n * counts / counts.sum()
    out = np.floor(share).astype(np.int64)
    out[np.argsort(-(share - out), kind="stable")[: n - out.sum()]] += 1
    return out


@register("smote")
class SMOTE(Synthesizer):
    """Interpolating oversampler with the common fit / sample / save / load API (see module doc).

    Args:
      k_neighbors: neighbours per row to interpolate towards (within its class).
    """

    uses_preprocessor = False

    def __init__(self, k_neighbors: int = 5, **config):
        if isinstance(k_neighbors, bool) or not isinstance(k_neighbors, (int, np.integer)) or k_neighbors < 1:
            raise ConfigError(f"k_neighbors must be a positive integer, got {k_neighbors!r}")
        super().__init__(k_neighbors=int(k_neighbors), **config)

    def _fit(self, df, encoded, key, *, run_dir, resume, progress, **fit_kwargs) -> None:
        if fit_kwargs:
            raise ConfigError(f"SMOTE does not train: option(s) {sorted(fit_kwargs)} do not apply")
        specs = [fit_column(df[c], infer_kind(df[c], None, None), _MAX_CATEGORIES) for c in df.columns]
        self._set_schema(specs)
        raw_numeric, codes = frames.frame_to_raw(df, specs, self._indexes)
        if self.target is not None and self.task == "classification":
            classes = pd.factorize(df[self.target], use_na_sentinel=False)[0].astype(np.int32)
        else:
            classes = np.zeros(len(df), np.int32)
        k = self.config["k_neighbors"]
        features, num_numeric = _neighbour_features(raw_numeric, codes, specs)
        neighbours = np.full((len(df), k), -1, np.int32)
        for c in np.unique(classes):
            rows = np.flatnonzero(classes == c)
            k_c = min(k, len(rows) - 1)
            if k_c > 0:
                class_features = features[rows]
                scale = _nominal_scale(class_features, num_numeric)
                class_features = class_features.multiply(scale[None, :]).tocsr() if hasattr(class_features, "multiply") \
                    else class_features * scale[None, :]
                neighbours[rows, :k_c] = rows[_class_neighbours(class_features, k_c)]
        self._raw_numeric, self._codes = raw_numeric.astype(np.float32), codes.astype(np.int32)
        self._classes, self._neighbours = classes, neighbours
        self.fit_info["classes"] = int(classes.max()) + 1

    def _set_schema(self, specs: list[ColumnSpec]) -> None:
        self._specs = list(specs)
        cat_specs = [s for s in specs if s.kind == CATEGORICAL]
        self._indexes = {s.name: frames.label_index(s) for s in cat_specs}
        self._labels = {s.name: frames.label_array(s) for s in cat_specs}

    def _sample(self, n: int, key: jax.Array, **kwargs) -> pd.DataFrame:
        unknown = set(kwargs) - {"batch_size"}  # one pass, no batches: batch_size is accepted and ignored
        if unknown:
            raise ConfigError(f"SMOTE.sample does not take {sorted(unknown)}")
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32))
        class_ids, class_counts = np.unique(self._classes, return_counts=True)
        parts_num, parts_codes = [], []
        for c, m in zip(class_ids, largest_remainder(n, class_counts)):
            if m == 0:
                continue
            rows = np.flatnonzero(self._classes == c)
            base = rows[rng.integers(len(rows), size=m)]
            k_c = int((self._neighbours[rows[0]] >= 0).sum())
            lam = rng.random(m)
            partner = self._neighbours[base, rng.integers(k_c, size=m)] if k_c > 0 else base
            x, x_nb = self._raw_numeric[base].astype(np.float64), self._raw_numeric[partner].astype(np.float64)
            near_partner = (lam >= 0.5)[:, None]
            mixed = x + lam[:, None] * (x_nb - x)
            either_missing = np.isnan(x) | np.isnan(x_nb)
            parts_num.append(np.where(either_missing, np.where(near_partner, x_nb, x), mixed))
            parts_codes.append(np.where(near_partner, self._codes[partner], self._codes[base]))
        order = rng.permutation(n)
        raw_numeric = np.concatenate(parts_num)[order]
        codes = np.concatenate(parts_codes)[order]
        return frames.raw_to_frame(raw_numeric, codes, self._specs, self._labels)

    def _get_state(self):
        meta = {"specs": [s.to_json() for s in self._specs]}
        arrays = {"raw_numeric": self._raw_numeric, "codes": self._codes,
                  "classes": self._classes, "neighbours": self._neighbours}
        return meta, arrays

    def _set_state(self, meta, arrays) -> None:
        self._set_schema([ColumnSpec.from_json(d) for d in meta["specs"]])
        self._raw_numeric = np.asarray(arrays["raw_numeric"], np.float32)
        self._codes = np.asarray(arrays["codes"], np.int32)
        self._classes = np.asarray(arrays["classes"], np.int32)
        self._neighbours = np.asarray(arrays["neighbours"], np.int32)
