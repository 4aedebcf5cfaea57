"""Evaluate any pair of tables: no model of this library needed, only two DataFrames.

The synthetic table can come from anywhere (another library, a CSV on disk). Here it is a crude
generator written in five lines: every column drawn independently from its own marginal, which
keeps the shapes (one-column distributions) and destroys the trends (pairwise dependencies).
The report shows both, beside machine-learning utility, detection and privacy distances.

    python examples/evaluate_any_tables.py              # Adult, bundled with the package
    python examples/evaluate_any_tables.py --real a.csv --synthetic b.csv --test c.csv --target y
"""

import argparse

import numpy as np
import pandas as pd

import tabdiff_jax
from tabdiff_jax import datasets
from tabdiff_jax.io import load_table


def independent_marginals(df: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Each column resampled on its own: the same marginals, no dependence between columns."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: df[c].to_numpy()[rng.integers(0, len(df), n)] for c in df.columns})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", default=None, help="training table (.csv / .parquet); default: Adult")
    parser.add_argument("--synthetic", default=None, help="synthetic table; default: independent marginals")
    parser.add_argument("--test", default=None)
    parser.add_argument("--target", default="income")
    parser.add_argument("--rows", type=int, default=5000, help="rows of the default tables (keeps it quick)")
    args = parser.parse_args()

    if args.real is None:
        real, test = datasets.load("adult")
        real, test = real.sample(args.rows, random_state=0), test.sample(args.rows, random_state=1)
    else:
        real, test = load_table(args.real), (load_table(args.test) if args.test else None)
    synthetic = load_table(args.synthetic) if args.synthetic else independent_marginals(real, len(real))

    report = tabdiff_jax.evaluate(real, synthetic, test=test, target=args.target)
    print(report.summary_table())
    print("shape (marginals kept) vs trend (dependencies lost):",
          round(report["fidelity"]["shape"], 3), round(report["fidelity"]["trend"], 3))


if __name__ == "__main__":
    main()
