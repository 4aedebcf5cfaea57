"""Numbers -> bins for the marginal mechanisms, and back.

Works on the shared preprocessor's raw arrays (:mod:`tabdiff_jax.preprocess.frames`: numbers as
``x - low`` in ``[0, span]``, NaN when missing; categories as codes). Each numeric or datetime column
becomes a discrete attribute:

* **public bounds** (``public_bounds=`` in fit): ``bins`` equal-width bins over ``[low, high]``; an
  integer column with at most ``bins`` values gets one bin per value;
* **bounds learned from the data**: the bin edges are private quantiles (``k / bins``, ``k = 1 ..
  bins - 1``), each released by the exponential mechanism over a grid of 1,024 points (or every
  integer) with utility ``-|#{x <= t} - q n|`` (sensitivity 1), all of them together costing the
  ``rho`` given (recorded in the ledger). The bounds themselves are then data-dependent, which the
  preprocessing audit reports as outside the budget;
* a column with missing values gets one more code for them.

Decoding draws a number uniformly within its bin (a bin of one integer gives that integer); the
preprocessor's decoding then rounds integers and restores dtypes.
"""

from __future__ import annotations

import numpy as np

from tabdiff_jax.marginal.common import exponential_mechanism, split_key
from tabdiff_jax.marginal.zcdp import Ledger, exponential_epsilon
from tabdiff_jax.preprocess.schema import CATEGORICAL, PUBLIC

GRID = 1024


def equal_width(span: float, integer: bool, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cuts, low, high)`` of equal-width bins over ``[0, span]`` (one per value for a small integer range)."""
    if span <= 0:
        return np.zeros(0), np.zeros(1), np.zeros(1)
    if integer and span + 1 <= bins:
        values = np.arange(int(round(span)) + 1, dtype=np.float64)
        return values[:-1] + 0.5, values, values
    edges = np.linspace(0.0, span, bins + 1)
    return edges[1:-1], edges[:-1], edges[1:]


def private_cuts(key, x: np.ndarray, span: float, integer: bool, bins: int, rho: float,
                 ledger: Ledger, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cuts, low, high)`` from private quantiles of ``x`` (no NaN) spending ``rho`` in all."""
    if span <= 0:
        return np.zeros(0), np.zeros(1), np.zeros(1)
    grid = (np.arange(int(round(span)) + 1, dtype=np.float64) if integer and span + 1 <= GRID
            else np.linspace(0.0, span, GRID + 1))
    below = np.searchsorted(np.sort(x), grid, side="right").astype(np.float64)  # #{x <= t}
    epsilon = exponential_epsilon(rho / (bins - 1))
    cuts = []
    for k in range(1, bins):
        q = k / bins
        cuts.append(grid[exponential_mechanism(split_key(key, k), -np.abs(below - q * len(x)), epsilon, 1.0)])
        ledger.spend(f"quantile:{name}:{k}", rho / (bins - 1))
    cuts = np.unique(np.asarray(cuts))
    cuts = cuts[(cuts > 0) & (cuts < span)] if not integer else cuts[cuts < span]
    edges = np.concatenate([[0.0], cuts, [span]])
    return cuts, edges[:-1], edges[1:]


class Discretiser:
    """Per column of the table (preprocessor order): its cuts and decoding ranges, or its codes."""

    def __init__(self, columns: list[dict]):
        self.columns = columns  # [{"name", "kind", "missing", "cuts", "low", "high", "source"}]

    @classmethod
    def fit(cls, specs, raw_numeric: np.ndarray, bins: int, rho: float, key, ledger: Ledger) -> "Discretiser":
        """Bins for every numeric / datetime column; the private quantile step spends ``rho`` (split
        evenly over the columns without public bounds)."""
        private = [s for s in specs if s.kind != CATEGORICAL and s.domain_source != PUBLIC]
        columns, i = [], 0
        for s in specs:
            if s.kind == CATEGORICAL:
                columns.append({"name": s.name, "kind": "categorical", "size": s.num_codes})
                continue
            x = np.clip(raw_numeric[:, i].astype(np.float64), 0.0, s.span)
            if s.domain_source == PUBLIC:
                cuts, low, high = equal_width(s.span, s.integer, bins)
                source = "public bounds, equal width"
            else:
                cuts, low, high = private_cuts(split_key(key, i), x[~np.isnan(x)], s.span, s.integer, bins,
                                               rho / len(private), ledger, s.name)
                source = "private quantiles (bounds from the data)"
            columns.append({"name": s.name, "kind": "numeric", "missing": bool(s.has_missing), "index": i,
                            "cuts": cuts.tolist(), "low": low.tolist(), "high": high.tolist(), "source": source,
                            "size": len(low) + int(s.has_missing)})
            i += 1
        return cls(columns)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(c["size"]) for c in self.columns)

    def encode(self, raw_numeric: np.ndarray, raw_codes: np.ndarray) -> np.ndarray:
        """Codes ``[n, d]`` of the table's columns."""
        out, j = [], 0
        for c in self.columns:
            if c["kind"] == "categorical":
                out.append(raw_codes[:, j].astype(np.int64))
                j += 1
                continue
            x = raw_numeric[:, c["index"]].astype(np.float64)
            nbins = len(c["low"])
            code = np.minimum(np.searchsorted(np.asarray(c["cuts"]), x, side="left"), nbins - 1)
            out.append(np.where(np.isnan(x), nbins, code).astype(np.int64))
        return np.stack(out, axis=1)

    def decode(self, codes: np.ndarray, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw arrays from codes ``[n, d]`` and one uniform per numeric column ``[n, N]``."""
        numeric, cats = [], []
        for a, c in enumerate(self.columns):
            if c["kind"] == "categorical":
                cats.append(codes[:, a])
                continue
            low, high = np.asarray(c["low"]), np.asarray(c["high"])
            b = np.minimum(codes[:, a], len(low) - 1)
            x = low[b] + uniforms[:, len(numeric)] * (high[b] - low[b])
            numeric.append(np.where(codes[:, a] >= len(low), np.nan, x))
        n = len(codes)
        raw_numeric = np.stack(numeric, axis=1).astype(np.float32) if numeric else np.zeros((n, 0), np.float32)
        raw_codes = np.stack(cats, axis=1).astype(np.int32) if cats else np.zeros((n, 0), np.int32)
        return raw_numeric, raw_codes
