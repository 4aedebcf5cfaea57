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
(a differing category costs about the median standard deviation of the numbers, per class). Each
new row draws its class from the training class frequencies, then its base row, its neighbour and
``lambda``, all from its own key ``fold_in(key, i)`` (the sampling contract of
:mod:`tabdiff_jax.sampling`: ``sample(n)[:m] == sample(m)``); class counts are therefore
multinomial around the training frequencies (they used to be split exactly over ``n`` by
largest-remainder rounding, which made the rows depend on ``n``). ``sample(n, condition={target:
value})`` draws every row from that class. All randomness comes from the ``seed`` of :meth:`sample`. The state (the encoded training rows and their neighbour lists) is
saved as arrays in ``state.npz`` and the column schema as JSON: no pickle.

Example:
  >>> model = SMOTE(k_neighbors=5).fit(train, target="income")
  >>> synthetic = model.sample(len(train), seed=0)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.models.base import Synthesizer, register
from tabdiff_jax.preprocess import frames
from tabdiff_jax.preprocess.schema import (
    CATEGORICAL,
    ColumnSpec,
    fit_column,
    infer_kind,
)
from tabdiff_jax.sampling import row_keys, sample_rows

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


@functools.partial(jax.jit, static_argnames="size")
def _row_bits(key, start, _unused=None, *, size):
    """``[size, 4]`` uint32: four random words per row from ``fold_in(key, row)``."""
    return jax.vmap(lambda k: jax.random.bits(k, (4,), jnp.uint32))(row_keys(key, start, size))


@register("smote")
class SMOTE(Synthesizer):
    """Interpolating oversampler with the common fit / sample / save / load API (see module doc).

    Args:
      k_neighbors: neighbours per row to interpolate towards (within its class).
    """

    uses_preprocessor = False

    def __init__(self, k_neighbors: int = 5, **config):
        super().__init__(k_neighbors=validate.positive_int("k_neighbors", k_neighbors), **config)

    def _fit(self, df, encoded, key, *, run_dir, resume, progress, **fit_kwargs) -> None:
        if fit_kwargs:
            raise ConfigError(f"SMOTE does not train: option(s) {sorted(fit_kwargs)} do not apply")
        # a classification target is categorical whatever its dtype (its classes are what a condition names)
        kinds = {c: CATEGORICAL if c == self.target and self.task == "classification" else None for c in df.columns}
        specs = [fit_column(df[c], infer_kind(df[c], kinds[c], None), _MAX_CATEGORIES) for c in df.columns]
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

    def _schema(self):
        return self._specs, self._indexes

    def _raw_frame(self, raw_numeric, raw_codes) -> pd.DataFrame:
        return frames.raw_to_frame(raw_numeric, raw_codes, self._specs, self._labels)

    def _native_condition(self, codes: dict) -> bool:
        return self.task == "classification" and set(codes) == {self.target}  # draw from that class only

    def _sample_raw(self, start, n, key, *, condition=None, chunk_size=None):
        # Row i draws four 32-bit numbers from fold_in(key, i): its class, its base row, the neighbour,
        # and lambda, so it does not depend on n or on the other rows.
        bits = sample_rows(lambda size, mesh: functools.partial(_row_bits, key, size=size), n, start=start,
                           chunk_size=65536 if chunk_size is None else chunk_size, mesh=None)
        u = bits.astype(np.float64) / 2.0**32  # [n, 4] in [0, 1)
        class_ids, first, counts = np.unique(self._classes, return_index=True, return_counts=True)
        order = np.argsort(self._classes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        if condition:
            j, code = condition[self.target]
            rows = np.flatnonzero(self._codes[:, j] == code)
            cls = np.full(n, np.searchsorted(class_ids, self._classes[rows[0]]))
        else:  # the class by the training frequencies
            cls = np.minimum(np.searchsorted(np.cumsum(counts), u[:, 0] * counts.sum(), side="right"), len(counts) - 1)
        base = order[starts[cls] + np.minimum((u[:, 1] * counts[cls]).astype(np.int64), counts[cls] - 1)]
        valid = (self._neighbours[base] >= 0).sum(axis=1)
        pick = np.minimum((u[:, 2] * valid).astype(np.int64), np.maximum(valid - 1, 0))
        partner = np.where(valid > 0, self._neighbours[base, pick], base)
        lam = u[:, 3]
        x, x_nb = self._raw_numeric[base].astype(np.float64), self._raw_numeric[partner].astype(np.float64)
        near_partner = (lam >= 0.5)[:, None]
        mixed = x + lam[:, None] * (x_nb - x)
        either_missing = np.isnan(x) | np.isnan(x_nb)
        raw_numeric = np.where(either_missing, np.where(near_partner, x_nb, x), mixed)
        return raw_numeric, np.where(near_partner, self._codes[partner], self._codes[base])

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
