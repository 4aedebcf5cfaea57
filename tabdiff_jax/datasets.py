"""Bundled demo tables (shipped inside the package, so no network is needed) and file loading.

>>> from tabdiff_jax import datasets
>>> train, test = datasets.load("adult")
>>> train.shape
(32561, 15)
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from tabdiff_jax.errors import DataError
from tabdiff_jax.io import load_table

__all__ = ["BUNDLED", "load", "load_table", "resolve_table", "DatasetInfo"]


class DatasetInfo(NamedTuple):
    train_file: str
    test_file: str
    target: str
    task: str
    source: str


BUNDLED: dict[str, DatasetInfo] = {
    "adult": DatasetInfo(
        train_file="adult_train.csv.gz",
        test_file="adult_test.csv.gz",
        target="income",
        task="classification",
        source="UCI Adult (Becker & Kohavi 1996), CC BY 4.0; see tabdiff_jax/data/README.md",
    ),
}


def _read_bundled(filename: str) -> pd.DataFrame:
    with resources.as_file(resources.files("tabdiff_jax.data") / filename) as path:
        return pd.read_csv(path)


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the (train, test) DataFrames of a bundled data set.

    Raises:
      DataError: ``name`` is not one of :data:`BUNDLED`.
    """
    info = BUNDLED.get(str(name).lower())
    if info is None:
        raise DataError(f"unknown bundled data set {name!r}; available: {', '.join(sorted(BUNDLED))}")
    return _read_bundled(info.train_file), _read_bundled(info.test_file)


def resolve_table(spec: str) -> tuple[pd.DataFrame, DatasetInfo | None]:
    """A file path (.csv / .parquet) or a bundled name (``adult``: its train split) -> DataFrame.

    Returns the table and, for a bundled name, its :class:`DatasetInfo` (target and task).
    """
    if str(spec).lower() in BUNDLED and not Path(spec).exists():
        info = BUNDLED[str(spec).lower()]
        return _read_bundled(info.train_file), info
    if not Path(spec).exists():
        close = difflib.get_close_matches(str(spec).lower(), list(BUNDLED), n=1, cutoff=0.6)
        if close:
            raise DataError(f"{spec}: no such file; did you mean the bundled table {close[0]!r}?")
        raise DataError(f"{spec}: no such file (bundled tables: {', '.join(sorted(BUNDLED))})")
    return load_table(spec), None
