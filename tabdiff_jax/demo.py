"""``tabdiff-jax demo``: the main job on the bundled Adult table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd


def round_trip_summary(df: pd.DataFrame, decoded: pd.DataFrame) -> pd.DataFrame:
    """Per column: kind, dtype kept, and the largest round-trip error (0 for exact)."""
    rows = []
    for col in df.columns:
        a, b = df[col], decoded[col]
        if pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a):
            x, y = a.to_numpy(np.float64), b.to_numpy(np.float64)
            both = ~(np.isnan(x) | np.isnan(y))
            err = float(np.max(np.abs(x[both] - y[both]) / np.maximum(np.abs(x[both]), 1.0))) if both.any() else 0.0
            same_missing = bool((np.isnan(x) == np.isnan(y)).all())
            kind = "numeric"
        else:
            err = float((a.astype(object).where(a.notna(), None) != b.astype(object).where(b.notna(), None)).mean())
            same_missing = bool((a.isna() == b.isna()).all())
            kind = "categorical"
        rows.append({"column": col, "kind": kind, "dtype": str(a.dtype), "dtype_kept": a.dtype == b.dtype,
                     "missing_kept": same_missing, "max_rel_error_or_mismatch_share": err})
    return pd.DataFrame(rows)


def run_demo(out: str | Path = "tabdiff-demo", steps: Optional[int] = None, seed: int = 0,
             quick: bool = False, progress: bool = True) -> dict:
    """Load Adult, fit the shared preprocessor, encode and decode it, print and save a summary."""
    from tabdiff_jax import datasets
    from tabdiff_jax.io import write_json
    from tabdiff_jax.preprocess import Preprocessor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = datasets.load("adult")
    if quick:
        train = train.sample(n=2000, random_state=seed).reset_index(drop=True)
    results = {}
    for numeric in ("quantile", "minmax", "standard", "mode_specific"):
        t0 = time.perf_counter()
        pre = Preprocessor(numeric=numeric).fit(train, target="income")
        t_fit = time.perf_counter() - t0
        enc = pre.encode(train)
        t_enc = time.perf_counter() - t0 - t_fit
        dec = pre.decode(enc)
        t_dec = time.perf_counter() - t0 - t_fit - t_enc
        summary = round_trip_summary(train, dec)
        results[numeric] = {
            "fit_s": round(t_fit, 3), "encode_s": round(t_enc, 3), "decode_s": round(t_dec, 3),
            "columns_equal": list(dec.columns) == list(train.columns),
            "dtypes_equal": bool((dec.dtypes == train.dtypes).all()),
            "numeric_width": pre.layout.num_numeric, "categorical_blocks": pre.layout.num_categorical,
            "onehot_width": pre.layout.onehot_dim,
            "max_numeric_rel_error": float(summary.loc[summary.kind == "numeric", "max_rel_error_or_mismatch_share"].max()),
            "categorical_mismatch_share": float(summary.loc[summary.kind == "categorical", "max_rel_error_or_mismatch_share"].max()),
        }
        if numeric == "quantile":
            print(f"Adult train: {train.shape[0]} rows x {train.shape[1]} columns; target 'income' ({pre.task})")
            print(summary.to_string(index=False))
            print()
    table = pd.DataFrame(results).T
    print("Round trip decode(encode(df)) per numeric transform:")
    print(table.to_string())
    write_json({"dataset": "adult", "rows": len(train), "round_trip": results}, out / "preprocess_round_trip.json")
    print(f"\nwrote {out / 'preprocess_round_trip.json'}")
    return results
