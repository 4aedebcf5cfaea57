"""Reading and writing tables and JSON, with atomic writes (a temp file in the target folder, then rename)."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError

TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")  # what tables are read from and written to
READ_SUFFIXES = TABLE_SUFFIXES + (".tsv", ".tsv.gz")  # read only (tab-separated)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(READ_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def stage_file(directory: str, name: str, write) -> tuple[str, str]:
    """Write a file under a temporary name in ``directory`` (``write(binary file)``); return
    (temporary path, final path) for the caller to rename once all its files are written."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
    except BaseException:
        os.remove(tmp)
        raise
    return tmp, os.path.join(directory, name)


def _json_default(obj: Any):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_npz(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write a dict of arrays as an uncompressed ``.npz`` (no pickled objects), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return Path(path)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_table(path: str | os.PathLike, **read_kwargs) -> pd.DataFrame:
    """Read a ``.csv`` / ``.tsv`` (optionally ``.gz``) or ``.parquet`` file into a DataFrame.

    A ``.csv`` whose header has no comma but semicolons (the spreadsheet export of many locales), tabs or
    bars, as many on each of its first lines, is read with that separator, and with ``decimal=","`` where its
    numbers are written ``3,25`` (unless ``sep`` / ``decimal`` are given).

    Raises:
      DataError: the file does not exist, has an unknown suffix, or is not a readable table.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .csv or .parquet file")
    suffix = _suffix(path)
    try:
        if suffix in (".csv", ".csv.gz", ".tsv", ".tsv.gz"):
            read_kwargs = _with_separator(path, suffix, read_kwargs)
            _check_csv_header(path, read_kwargs)
            df = _integers_with_gaps(path, pd.read_csv(path, **read_kwargs), read_kwargs)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path, **read_kwargs)
        else:
            raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; expected one of {', '.join(READ_SUFFIXES)}")
    except DataError:
        raise
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable table ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if df.shape[1] == 0:
        raise DataError(f"{path}: the table has no columns")
    return df


def _with_separator(path: Path, suffix: str, read_kwargs: dict) -> dict:
    """``read_kwargs`` with the text file's separator: tabs for ``.tsv``; for ``.csv`` a comma, unless the
    header has no comma and each of the first lines has as many ``;`` (or tabs, or ``|``) as the header, at
    least one. With such a separator, numbers written with a decimal comma (``3,25``, and no ``3.25``) are
    read with ``decimal=","``."""
    if "sep" in read_kwargs or "delimiter" in read_kwargs:
        return read_kwargs
    if suffix.startswith(".tsv"):
        return {**read_kwargs, "sep": "\t"}
    opener = gzip.open if suffix.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as f:
        lines = [line.rstrip("\r\n") for line in itertools.islice(f, 6)]
    lines = [line for line in lines if line]
    if not lines or "," in lines[0]:
        return read_kwargs
    for sep in (";", "\t", "|"):
        if lines[0].count(sep) and all(line.count(sep) == lines[0].count(sep) for line in lines[1:]):
            out = {**read_kwargs, "sep": sep}
            cells = [cell.strip().strip('"') for line in lines[1:] for cell in line.split(sep)]
            if "decimal" not in read_kwargs and any(re.fullmatch(r"[-+]?\d*,\d+", c) for c in cells) and not any(
                    re.fullmatch(r"[-+]?\d*\.\d+", c) for c in cells):
                out["decimal"] = ","
            return out
    return read_kwargs


def _check_csv_header(path: Path, read_kwargs: dict) -> None:
    """Refuse duplicate names in a CSV header (pandas would silently rename ``a,a`` to ``a,a.1``)."""
    if read_kwargs.get("header", "infer") not in ("infer", 0) or "names" in read_kwargs:
        return
    sep = read_kwargs.get("sep", read_kwargs.get("delimiter", ","))
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False, sep=sep)
    names = [str(v).strip() for v in header.iloc[0]] if len(header) else []
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: duplicate column name(s) {dup!r} in the header; rename them so each is unique")


def _integers_with_gaps(path: Path, df: pd.DataFrame, read_kwargs: dict) -> pd.DataFrame:
    """CSV columns of integers with blanks (which pandas reads as floats) -> nullable ``Int64``.

    A float column qualifies when it has missing values, every present value is a whole number and
    its text has no decimal point or exponent (``3`` is an integer, ``3.0`` stays a float).
    """
    candidates = [c for c in df.columns if df[c].dtype.kind == "f" and df[c].isna().any() and df[c].notna().any()]
    candidates = [c for c in candidates if np.all(np.mod(df[c].dropna().to_numpy(), 1) == 0)
                  and np.abs(df[c].dropna().to_numpy()).max() < 2.0**53]
    if not candidates or any(k in read_kwargs for k in ("names", "usecols", "dtype", "converters", "header")):
        return df
    text = pd.read_csv(path, usecols=candidates, dtype=str, keep_default_na=True,
                       sep=read_kwargs.get("sep", read_kwargs.get("delimiter", ",")))
    fraction = "[.eE" + re.escape(read_kwargs.get("decimal", ".")) + "]"  # a decimal point or an exponent
    for c in candidates:
        present = text[c].dropna().str.strip()
        if len(present) and not present.str.contains(fraction, regex=True).any():
            df[c] = df[c].astype("Int64")
    return df


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to ``.csv`` or ``.parquet`` (chosen by suffix), atomically."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in TABLE_SUFFIXES:
        raise ConfigError(f"output {path}: unsupported file type {suffix or '(none)'}; use .csv or .parquet")
    with atomic_path(path) as tmp:
        if suffix in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, compression="gzip" if suffix == ".csv.gz" else None)
    return path
