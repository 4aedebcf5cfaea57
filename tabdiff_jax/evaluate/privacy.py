"""Privacy of a synthetic table: distances to closest records, copies and membership inference.

Distances are Euclidean on min-max scaled numbers (scaled by the training table) and one-hot
categories (see :mod:`tabdiff_jax.evaluate.distances`). With *train* the table the generator was
fitted on and *holdout* real rows it never saw:

* ``dcr_median``: median distance from a synthetic row to its closest train row (TabDDPM's DCR);
* ``dcr_holdout_median``: median distance from a holdout row to its closest train row: the
  real-vs-holdout baseline, what "new real data" looks like;
* ``dcr_synthetic_to_holdout_median``: median distance from a synthetic row to its closest holdout row;
* ``closer_to_train_share``: share of synthetic rows closer to the train table than to the holdout,
  with both reduced to the same number of rows (seeded subsample); ties count one half. 0.5 is
  ideal, 1.0 means every synthetic row sits on a training row;
* ``exact_copies``: share of synthetic rows equal to some train row in every column (numbers to
  12 significant digits);
* ``mia_auc``: a distance-based membership-inference attack: it scores each row of an equal-size
  sample of train rows (members) and of holdout rows (non-members) by minus its distance to the
  closest synthetic row; the ROC-AUC of that score. 0.5 means the synthetic table reveals nothing
  about membership.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tabdiff_jax.evaluate.columns import Columns
from tabdiff_jax.evaluate.distances import concat_rows, encode_rows, nearest_neighbours


def _row_hashes(df: pd.DataFrame) -> np.ndarray:
    # Numbers compare at 12 significant digits: a value written to CSV and parsed back may differ
    # from the original in its last bit, and is still a copy.
    df = df.copy()
    for c in df.columns:
        if pd.api.types.is_float_dtype(df[c].dtype):
            df[c] = np.char.mod("%.12g", df[c].to_numpy())
    return pd.util.hash_pandas_object(df, index=False).to_numpy()


def exact_copy_mask(synthetic: pd.DataFrame, train: pd.DataFrame) -> np.ndarray:
    """Bool ``[n_synthetic]``: the synthetic row equals some train row in every column (NaN == NaN;
    numbers to 12 significant digits)."""
    return np.isin(_row_hashes(synthetic), _row_hashes(train))


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else float("nan")


def privacy_metrics(train: pd.DataFrame, synthetic: pd.DataFrame, holdout: pd.DataFrame, columns: Columns,
                    *, seed: int = 0, chunk_size: int = 2048, encoded=None) -> tuple[dict, dict]:
    """The privacy metrics of the module docstring.

    Args:
      train, synthetic, holdout: tables normalised by :func:`~tabdiff_jax.evaluate.columns.prepare`.
      seed: seed of the equal-size subsamples.
      encoded: optional ``(train, synthetic, holdout)`` :class:`EncodedRows` already made by
        ``encode_rows([train, synthetic, holdout], columns, reference=train)``.

    Returns:
      ``(metrics, distances)``: the JSON-able metrics, and the per-row distance arrays
      (``synthetic_to_train``, ``holdout_to_train``, ``synthetic_to_holdout``) for plots.
    """
    if encoded is None:
        encoded, _ = encode_rows([train, synthetic, holdout], columns, reference=train)
    tr, sy, ho = encoded
    rng = np.random.default_rng(seed)
    n_eq = min(tr.num_rows, ho.num_rows)
    tr_perm, ho_perm = rng.permutation(tr.num_rows), rng.permutation(ho.num_rows)
    tr_eq, tr_rest = np.sort(tr_perm[:n_eq]), np.sort(tr_perm[n_eq:])
    ho_eq, ho_rest = np.sort(ho_perm[:n_eq]), np.sort(ho_perm[n_eq:])

    # Synthetic rows against four disjoint reference tables in one call: equal-size train / holdout
    # samples (for the closer-to-train share) and the remaining rows (for the full-table DCRs).
    parts = [tr.take(tr_eq), tr.take(tr_rest), ho.take(ho_eq), ho.take(ho_rest)]
    d, _ = nearest_neighbours(sy, parts, chunk_size=chunk_size)
    syn_to_train = np.minimum(d[:, 0], d[:, 1])
    syn_to_holdout = np.minimum(d[:, 2], d[:, 3])
    closer = np.mean(d[:, 0] < d[:, 2]) + 0.5 * np.mean(d[:, 0] == d[:, 2])

    holdout_to_train, _ = nearest_neighbours(ho, tr, chunk_size=chunk_size)
    holdout_to_train = holdout_to_train[:, 0]

    members = concat_rows([parts[0], parts[2]])
    to_synthetic, _ = nearest_neighbours(members, sy, chunk_size=chunk_size)
    labels = np.concatenate([np.ones(n_eq, np.int64), np.zeros(n_eq, np.int64)])
    mia = _auc(-to_synthetic[:, 0], labels)

    copies = exact_copy_mask(synthetic, train)
    metrics = {
        "dcr_median": _median(syn_to_train),
        "dcr_holdout_median": _median(holdout_to_train),
        "dcr_synthetic_to_holdout_median": _median(syn_to_holdout),
        "dcr_quantiles": {q: float(np.quantile(syn_to_train, float(q))) for q in ("0.01", "0.05", "0.5")},
        "closer_to_train_share": float(closer),
        "exact_copies": float(copies.mean()),
        "exact_copies_count": int(copies.sum()),
        "mia_auc": mia,
        "equal_size_rows": int(n_eq),
        "distance": "euclidean on min-max scaled numbers (train ranges) and one-hot categories",
    }
    distances = {
        "synthetic_to_train": syn_to_train,
        "holdout_to_train": holdout_to_train,
        "synthetic_to_holdout": syn_to_holdout,
    }
    return metrics, distances

