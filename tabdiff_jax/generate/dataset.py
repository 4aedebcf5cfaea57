"""Datasets of parquet parts with a manifest: resumable, filled by any number of processes; see
:mod:`tabdiff_jax.generate`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.generate.stream import (
    DEFAULT_ROWS_PER_PART,
    _frame,
    _positive,
    _Progress,
    _table,
    arrow_schema,
    raw_batches,
    write_file,
)

FORMAT = "tabdiff_jax.dataset/1"
MANIFEST = "_manifest.json"
LOCK = ".manifest.lock"
IDENTITY = ("format", "run", "model", "seed", "n", "rows_per_part", "condition", "chunk_size", "options")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- datasets
def model_fingerprint(model) -> str:
    """A hash of what decides the rows: the model's name, options, columns, state and preprocessor."""
    meta, arrays = model._get_state()
    pre_meta, pre_arrays = model.preprocessor.to_state() if model.preprocessor is not None else ({}, {})
    head = {"model": model.model_name, "config": model.config, "target": model.target, "columns": model.columns,
            "state": meta, "preprocessor": pre_meta}
    h = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    for group in (arrays, pre_arrays):
        for name in sorted(group):
            a = np.ascontiguousarray(group[name])
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def part_name(i: int, num_parts: int) -> str:
    return f"part-{i:0{max(5, len(str(num_parts - 1)))}d}.parquet"


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


@contextlib.contextmanager
def _locked(folder: Path):
    import fcntl

    with open(folder / LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_identity(saved: dict, identity: dict, folder: Path) -> None:
    diffs = [f"{k} {json.dumps(saved.get(k))} (asked {json.dumps(identity[k])})" for k in IDENTITY
             if saved.get(k) != identity[k]]
    if diffs:
        raise ConfigError(f"{folder}: holds a dataset made with {'; '.join(diffs)}; use a new folder, or the "
                          "settings in its _manifest.json to resume it")


def _read_manifest(folder: Path) -> Optional[dict]:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: corrupt ({type(exc).__name__}); remove it to rebuild it from the parts") from None


def _file_rows(path: Path) -> Optional[int]:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # truncated or not parquet: the part is missing
        return None


def _complete(folder: Path, layout: dict, i: int, listed: Optional[dict], rehash: bool) -> Optional[dict]:
    """The manifest entry of part ``i`` if its file is complete, else None."""
    n, size = layout["n"], layout["rows_per_part"]
    lo, hi = i * size, min((i + 1) * size, n)
    path = folder / part_name(i, layout["num_parts"])
    if not path.is_file():
        return None
    nbytes = path.stat().st_size
    if listed is not None and listed.get("bytes") == nbytes and (not rehash or _sha256(path) == listed.get("sha256")):
        return listed
    if listed is None and _file_rows(path) == hi - lo:  # renamed when complete, not listed yet
        return {"part": i, "file": path.name, "rows": [lo, hi], "bytes": nbytes, "sha256": _sha256(path)}
    return None


def _merge(folder: Path, layout: dict, written: dict) -> dict:
    """Rewrite the manifest from the part files on disk (under the lock): the parts this process
    wrote, the listed ones still intact, and complete ones other processes renamed in meanwhile."""
    from tabdiff_jax.io import write_json

    with _locked(folder):
        saved = _read_manifest(folder) or {}
        listed = {p["part"]: p for p in saved.get("parts", [])}
        parts = []
        for i in range(layout["num_parts"]):
            entry = written.get(i) or _complete(folder, layout, i, listed.get(i), rehash=False)
            if entry is not None:
                parts.append(entry)
        manifest = {**layout, "complete": len(parts) == layout["num_parts"], "parts": parts}
        write_json(manifest, folder / MANIFEST)
    return manifest


def write_dataset(model, folder, n: int, *, seed: int = 0, rows_per_part: Optional[int] = None, start: int = 0,
                  stop: Optional[int] = None, condition: Optional[dict] = None, progress: bool = False,
                  source: Optional[str] = None, max_candidates: Optional[int] = None, **kwargs) -> dict:
    """Rows ``start .. stop - 1`` (whole parts) of a dataset of ``n`` rows into ``folder``: the missing
    parts are written, complete ones kept, and the manifest merged. Returns a summary."""
    from tabdiff_jax import __version__
    from tabdiff_jax.io import write_json

    t0, folder = time.perf_counter(), Path(folder)
    size = DEFAULT_ROWS_PER_PART if rows_per_part is None else _positive("rows_per_part", rows_per_part)
    n = _positive("n", n)
    stop = n if stop is None else int(stop)
    if not 0 <= int(start) <= stop <= n:  # an empty range (a --part with no parts) only merges the manifest
        raise ConfigError(f"rows {start}:{stop} must satisfy 0 <= START <= STOP <= n ({n})")
    if start % size or (stop % size and stop != n):
        raise ConfigError(f"rows {start}:{stop} do not fall on parts of {size} rows; use multiples of {size} "
                          f"(or n={n} as STOP), e.g. {start // size * size}:{min(-(-stop // size) * size, n)}")
    finish = model._candidate_stream(seed, condition, kwargs)[2]
    identity = _plain({"format": FORMAT, "run": model_fingerprint(model), "model": model.model_name, "seed": int(seed),
                       "n": int(n), "rows_per_part": size, "condition": condition or None,
                       "chunk_size": kwargs.get("chunk_size"),
                       "options": {k: v for k, v in kwargs.items() if k != "chunk_size"} or None})
    layout = {**identity, "num_parts": -(-n // size), "columns": list(model.columns), "library": __version__,
              "source": source}
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: is a file, not a dataset folder")
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        saved = _read_manifest(folder)
        if saved is not None:
            _check_identity(saved, identity, folder)
        elif any(folder.glob("part-*.parquet")):
            raise ConfigError(f"{folder}: holds part files but no {MANIFEST}; use a new folder")
        else:
            write_json({**layout, "complete": False, "parts": []}, folder / MANIFEST)
    listed = {p["part"]: p for p in (saved or {}).get("parts", [])}
    mine = range(start // size, -(-stop // size))
    todo = [i for i in mine if _complete(folder, layout, i, listed.get(i), rehash=True) is None]
    rows = {i: min((i + 1) * size, n) - i * size for i in mine}
    bar = _Progress(stop - start, sum(rows.values()) - sum(rows[i] for i in todo), "sample", progress)
    schema, written = arrow_schema(model), {}
    try:
        for run_lo, run_hi in _runs(todo):
            for first, raw in raw_batches(model, n, seed=seed, size=size, start=run_lo * size,
                                          stop=min(run_hi * size, n), condition=condition,
                                          max_candidates=max_candidates, **kwargs):
                written[first // size] = _write_part(_frame(model, first, raw, finish), schema, folder, layout,
                                                     first // size)
                bar.update(len(raw[0]))
    finally:
        bar.close()
        manifest = _merge(folder, layout, written)
    return {"path": str(folder), "rows": stop - start, "parts_written": sorted(written),
            "rows_written": sum(e["rows"][1] - e["rows"][0] for e in written.values()),
            "parts_kept": [i for i in mine if i not in written], "complete": manifest["complete"],
            "seconds": round(time.perf_counter() - t0, 3)}


def _runs(parts: list) -> list[tuple[int, int]]:
    """Consecutive part indices as ``(first, last + 1)`` runs."""
    out = []
    for i in parts:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _write_part(df, schema, folder: Path, layout: dict, i: int) -> dict:
    import pyarrow.parquet as pq

    from tabdiff_jax.io import atomic_path

    path = folder / part_name(i, layout["num_parts"])
    with atomic_path(path) as tmp:
        pq.write_table(_table(df, schema), tmp, row_group_size=max(len(df), 1))
        entry = {"part": i, "file": path.name, "rows": [int(df.index[0]), int(df.index[-1]) + 1],
                 "bytes": tmp.stat().st_size, "sha256": _sha256(tmp)}
    return entry


def is_folder_output(path) -> bool:
    """A folder of parts: a trailing slash, an existing folder, or a name without a suffix."""
    text = str(path)
    return text.endswith(("/", os.sep)) or Path(text).is_dir() or not Path(text).suffix


def sample_to(model, path, n: int, *, seed: int = 0, rows_per_part: Optional[int] = None, start: int = 0,
              stop: Optional[int] = None, condition: Optional[dict] = None, progress: bool = False, **kwargs) -> dict:
    """Stream rows ``start .. stop - 1`` of ``model.sample(n, seed=seed, condition=condition)`` to ``path``:
    a folder (:func:`write_dataset`: parquet parts of ``rows_per_part`` rows and ``_manifest.json``,
    resumable, fillable by several processes) or one ``.csv`` / ``.parquet`` file (:func:`write_file`,
    batches of ``rows_per_part`` rows). Memory is bounded by ``rows_per_part``, not ``n``."""
    if is_folder_output(path):
        return write_dataset(model, path, n, seed=seed, rows_per_part=rows_per_part, start=start, stop=stop,
                             condition=condition, progress=progress, **kwargs)
    return write_file(model, path, n, seed=seed, rows_per_batch=rows_per_part, start=start, stop=stop,
                      condition=condition, progress=progress, **kwargs)
