"""Run folders: what ``fit`` may write into, the record ``resume`` checks, and reading saved files.

A run folder holds ``resume.json`` (written when training starts: the model, its options and a
fingerprint of the table), ``checkpoints/`` (orbax, written during training) and, once the fit has
finished, ``model.json``, ``state.npz``, ``preprocessor.*`` and ``run.json``. Resuming compares the
new fit with ``resume.json`` and names what differs instead of failing inside orbax; a corrupt or
missing file is a :class:`DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from tabdiff_jax.errors import ConfigError, DataError, TabdiffError
from tabdiff_jax.io import _json_default, write_json

RESUME_FILE = "resume.json"
CHECKPOINTS = "checkpoints"
RUN_FILES = ("model.json", "run.json", "state.npz", "preprocessor.json", "preprocessor.npz", RESUME_FILE, CHECKPOINTS)
FORMAT = "tabdiff_jax.resume/1"
# Options that change neither the result nor the meaning of a checkpoint: free to differ on resume.
_FREE_OPTIONS = {"checkpoint_every", "checkpoint_seconds", "log_every", "sample_chunk_size"}
# How long to train (as an option or a fit argument): a resumed run may extend or shorten a non-private
# run; a private run's noise was calibrated for its planned length, so that length is fixed.
_LENGTH = {"steps", "epochs"}
_FREE_FIT = {"max_seconds", "stop_after_steps"}
PRIVATE_MODELS = ("tablediffusion", "dpgan")  # private by default (epsilon=None opts out); others opt in


def _private(record: dict) -> bool:
    """A private run: ``epsilon`` set in its options (or left at the default of a private-by-default model)."""
    default = 1.0 if record.get("model") in PRIVATE_MODELS else None
    return (record.get("config") or {}).get("epsilon", default) is not None


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """Steps of the checkpoints saved in ``run_dir/checkpoints`` (without opening orbax)."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def _plain(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples -> lists, numpy scalars -> Python)."""
    return json.loads(json.dumps(obj, default=_json_default, sort_keys=True))


def table_fingerprint(df: pd.DataFrame) -> dict:
    """Columns, dtypes, row count and a hash of the contents of ``df``."""
    try:
        digest = hashlib.sha256(np.ascontiguousarray(pd.util.hash_pandas_object(df, index=False).to_numpy()).tobytes())
        content = digest.hexdigest()[:16]
    except TypeError:  # unhashable cells (lists, dicts): the other facts still identify the table
        content = None
    return {"columns": [str(c) for c in df.columns], "dtypes": [str(t) for t in df.dtypes],
            "rows": len(df), "hash": content}


def fit_record(model_name: str, config: dict, df: pd.DataFrame, fit_args: dict) -> dict:
    """What ``resume.json`` holds: the model, its options, the fit's arguments and the table."""
    return _plain({"format": FORMAT, "model": model_name, "config": config, "fit": fit_args,
                   "table": table_fingerprint(df)})


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def differences(saved: dict, new: dict) -> list[str]:
    """What differs between two records, as short phrases (empty when they match)."""
    out = []
    if saved.get("model") != new.get("model"):
        out.append(f"model {saved.get('model')} -> {new.get('model')}")
    old_t, new_t = saved.get("table") or {}, new.get("table") or {}
    old_cols, new_cols = old_t.get("columns", []), new_t.get("columns", [])
    gone, added = [c for c in old_cols if c not in new_cols], [c for c in new_cols if c not in old_cols]
    if gone or added:
        out.append("table columns" + (f" missing {', '.join(gone)}" if gone else "") + (f" new {', '.join(added)}" if added else ""))
    elif old_cols != new_cols:
        out.append("table column order")
    else:
        changed = [c for c, a, b in zip(old_cols, old_t.get("dtypes", []), new_t.get("dtypes", [])) if a != b]
        if changed:
            out.append(f"dtype of {', '.join(changed)}")
    if old_t.get("rows") != new_t.get("rows"):
        out.append(f"table rows {old_t.get('rows')} -> {new_t.get('rows')}")
    elif not out and old_t.get("hash") != new_t.get("hash"):
        out.append("table contents (same shape, different values)")
    length = set() if _private(saved) else _LENGTH
    for section, free in (("config", _FREE_OPTIONS | length), ("fit", _FREE_FIT | length)):
        old_s, new_s = saved.get(section) or {}, new.get(section) or {}
        for key in sorted(set(old_s) | set(new_s)):
            if key not in free and old_s.get(key) != new_s.get(key):
                out.append(f"{key} {_short(old_s.get(key))} -> {_short(new_s.get(key))}")
    return out


class RunFolder:
    """One fit's use of ``run_dir``: checked before preprocessing, started just before training,
    and abandoned (what it created removed) if training fails before any checkpoint."""

    def __init__(self, run_dir: str | Path, record: dict, *, resume: bool, overwrite: bool = False):
        self.path, self.record, self.resume, self.overwrite = Path(run_dir), record, resume, overwrite
        if resume and overwrite:
            raise ConfigError("--overwrite and --resume exclude each other: replace the run, or continue it")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run folder {self.path}: is a file, not a folder")
        if not resume and not overwrite and checkpoint_steps(self.path):
            raise ConfigError(f"run folder {self.path} already holds checkpoints (last step "
                              f"{checkpoint_steps(self.path)[-1]}): resume that run or use an empty folder")
        if resume:
            saved_path = self.path / RESUME_FILE
            if saved_path.is_file():
                diffs = differences(read_run_json(saved_path), record)
                if diffs:
                    raise ConfigError(f"--resume: {self.path} was started with a different setup: {'; '.join(diffs)}. "
                                      "Fit into a new folder, or resume with the run's own table and options")
        self._existed = self.path.exists()
        self._had = {name: (self.path / name).exists() for name in (RESUME_FILE, CHECKPOINTS)}

    def start(self) -> None:
        """Create the folder and write ``resume.json`` (atomically)."""
        if self.overwrite:
            clear_run_dir(self.path)
            self._had = dict.fromkeys(self._had, False)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.record, self.path / RESUME_FILE)

    def abandon(self) -> None:
        """After a failed fit: remove what :meth:`start` and training created, unless a checkpoint
        was saved (then the run can be resumed)."""
        if checkpoint_steps(self.path):
            return
        if not self._had[CHECKPOINTS]:
            shutil.rmtree(self.path / CHECKPOINTS, ignore_errors=True)
        if not self._had[RESUME_FILE]:
            (self.path / RESUME_FILE).unlink(missing_ok=True)
        if not self._existed and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()


def check_out_dir(path: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse, before any work, a ``--out`` that ``fit`` would fail on or destroy.

    Raises:
      ConfigError: ``path`` is a file; a non-empty folder without ``--overwrite`` / ``--resume``;
        a folder holding files that are not a run's (even with ``--overwrite``); ``--resume``
        of a folder that holds no run; ``--overwrite`` with ``--resume``.
    """
    p = Path(path)
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume exclude each other: replace the run, or continue it")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {p}: is a file, not a run folder")
    if resume:
        if not (p / RESUME_FILE).is_file() and not checkpoint_steps(p):
            raise ConfigError(f"--resume: {p} holds no run to resume (no {RESUME_FILE}, no checkpoints); "
                              "fit without --resume")
        return
    if p.is_dir() and any(p.iterdir()):
        foreign = sorted(c.name for c in p.iterdir() if c.name not in RUN_FILES and not c.name.endswith(".tmp"))
        if foreign:
            raise ConfigError(f"--out {p}: folder is not empty and is not a run folder (it holds {', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")
        if not overwrite:
            raise ConfigError(f"--out {p}: holds a run already; pass --overwrite to replace it, --resume to "
                              "continue it, or choose another folder")


def clear_run_dir(path: str | Path) -> None:
    """Remove a run's files from ``path`` (only the names a run writes; see :func:`check_out_dir`)."""
    p = Path(path)
    if not p.is_dir():
        return
    for child in p.iterdir():
        if child.name in RUN_FILES or child.name.endswith(".tmp"):
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def _missing(path: Path) -> DataError:
    hint = ""
    if checkpoint_steps(path.parent):
        hint = " (training did not finish: continue it with `tabdiff-jax fit ... --resume`)"
    return DataError(f"{path}: missing; {path.parent} is not a complete run folder{hint}")


def read_run_json(path: str | Path) -> Any:
    """Read a JSON file of a run folder; DataError naming the file if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: corrupt or truncated ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})") from None


def read_run_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` of a run folder; DataError naming the file if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: corrupt or truncated ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})") from None


def load_run(run_dir: str | Path):
    """Load the model of a run folder; any unreadable file is one DataError naming it."""
    from tabdiff_jax.models.base import load

    directory = Path(run_dir)
    if not directory.exists():
        raise DataError(f"{directory}: no such run folder")
    if not directory.is_dir():
        raise DataError(f"{directory}: is a file, expected a run folder written by `tabdiff-jax fit`")
    try:
        return load(directory)
    except TabdiffError:
        raise
    except Exception as exc:  # a file that parses but does not hold what it should
        culprit = _first_unreadable(directory)
        where = f"{culprit}: corrupt or inconsistent" if culprit else f"{directory}: cannot load the saved model"
        raise DataError(f"{where} ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})") from exc


def _first_unreadable(directory: Path) -> Optional[Path]:
    for name, read in (("model.json", read_run_json), ("state.npz", read_run_npz),
                       ("preprocessor.json", read_run_json), ("preprocessor.npz", read_run_npz)):
        if (directory / name).exists():
            try:
                read(directory / name)
            except DataError:
                return directory / name
    return None
