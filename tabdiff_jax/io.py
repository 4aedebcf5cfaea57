"""Reading and writing tables and JSON, with atomic writes (a temp file in the target folder, then rename)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError

TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(TABLE_SUFFIXES, key=len, reverse=True):
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
    """Read a ``.csv`` (optionally ``.gz``) or ``.parquet`` file into a DataFrame.

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
        if suffix in (".csv", ".csv.gz"):
            df = pd.read_csv(path, **read_kwargs)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path, **read_kwargs)
        else:
            raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; expected one of {', '.join(TABLE_SUFFIXES)}")
    except DataError:
        raise
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable table ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if df.shape[1] == 0:
        raise DataError(f"{path}: the table has no columns")
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
