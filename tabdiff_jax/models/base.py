"""The estimator layer: one fit / sample / save / load shape for every generator.

A model subclasses :class:`Synthesizer`, registers a name with :func:`register`, and implements

* ``_fit(df, encoded, key, *, run_dir, resume, progress, **fit_kwargs)``: train; ``encoded`` is the
  :class:`~tabdiff_jax.table.EncodedTable` of ``df`` (``None`` when ``uses_preprocessor`` is False);
* ``_sample_raw(start, n, key, **kwargs) -> (raw_numeric, raw_codes)``: rows ``start ..
  start + n - 1``, row ``i`` drawn from ``fold_in(key, i)`` only (:mod:`tabdiff_jax.sampling`);
* ``_get_state() -> (meta, arrays)`` and ``_set_state(meta, arrays)``: JSON-able metadata and a flat
  dict of numpy arrays (no pickle).

The base class validates the input, fits the shared preprocessor, times the fit, writes
``run_dir/run.json``, and saves / loads ``model.json``, ``preprocessor.*`` and ``state.npz``.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from tabdiff_jax import validate
from tabdiff_jax.distributed import barrier, is_primary
from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.io import write_json, write_npz
from tabdiff_jax.runs import read_run_json, read_run_npz
from tabdiff_jax.sampling import seed_key

# The model registry lives in tabdiff_jax.models.registry; re-exported here, where models import it from.
from tabdiff_jax.models.registry import (  # noqa: E402,F401
    MODEL_ALIASES,
    MODEL_MODULES,
    MODEL_REGISTRY,
    get_model_class,
    register,
)

MIN_ROWS = 10  # fewer rows than this are refused by fit: nothing to learn a distribution from


def validate_frame(df: Any, target: Optional[str] = None) -> pd.DataFrame:
    """Checks shared by every model before any fitting: a non-empty DataFrame with unique columns."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if df.shape[1] == 0:
        raise DataError("the table has no columns")
    if df.shape[0] == 0:
        raise DataError("the table is empty (0 rows)")
    if df.shape[0] < MIN_ROWS:
        raise DataError(f"the table has {df.shape[0]} rows; fitting a model needs at least {MIN_ROWS}")
    dup = df.columns[df.columns.duplicated()].tolist()
    if dup:
        raise DataError(f"duplicate column names: {', '.join(map(str, dup))}")
    if target is not None and target not in df.columns:
        raise DataError(f"target {target!r} is not a column; columns are: {', '.join(map(str, df.columns))}")
    return df


def _flatten_state(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": np.asarray(v) for k, v in arrays.items()}


class Synthesizer:
    """Base class of every generator (see the module docstring for the contract)."""

    model_name: ClassVar[str] = "base"
    uses_preprocessor: ClassVar[bool] = True
    preprocessor_options: ClassVar[dict] = {}
    supports_inpainting: ClassVar[bool] = False  # _sample_raw takes known= (tabdiff_jax.conditioning)

    def __init__(self, **config):
        self.config: dict = dict(config)
        self.preprocessor = None
        self.target: Optional[str] = None
        self.task: Optional[str] = None
        self.columns: list[str] = []
        self.fit_info: dict = {}
        self.fitted = False

    # ----------------------------------------------------------------------------- fitting
    def fit(
        self,
        df: pd.DataFrame,
        target: Optional[str] = None,
        *,
        task: Optional[str] = None,
        seed: int = 0,
        run_dir: Optional[str | Path] = None,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        column_kinds: Optional[dict] = None,
        public_bounds: Optional[dict] = None,
        public_categories: Optional[dict] = None,
        **fit_kwargs,
    ) -> "Synthesizer":
        """Fit the model on ``df`` (optionally with a ``target`` column) and return ``self``.

        ``seed`` drives every random choice of the fit: the model's initialisation and training
        (from ``jax.random.key(seed)``) and the preprocessor's mixture fits (a seed folded out of the
        same key; a ``"seed"`` among the ``preprocessor`` options overrides it).

        With ``run_dir``, ``resume.json`` (model, options, a fingerprint of the table) is written
        when training starts, and checkpoints go to ``run_dir/checkpoints`` (also every
        ``checkpoint_seconds`` and on Ctrl-C); a fit that fails before any checkpoint leaves no
        files behind. ``overwrite=True`` replaces a run already there.

        Raises:
          DataError: the table is empty, has duplicate columns, or ``target`` is not a column
            (and whatever the preprocessor rejects, naming the column).
          ConfigError: ``run_dir`` holds checkpoints but neither ``resume`` nor ``overwrite`` is
            set, or ``resume`` with a table, model or options unlike the run's (named).
        """
        validate_frame(df, target)
        seed = validate.seed(seed)
        if task not in (None, "classification", "regression"):
            raise ConfigError(f"task must be 'classification', 'regression' or None, got {task!r}")
        run = None
        if run_dir is not None:  # checked before any work: resuming a different table or model fails here
            from tabdiff_jax import runs

            record_args = {"target": target, "task": task, "seed": int(seed), "column_kinds": column_kinds,
                           "public_bounds": public_bounds, "public_categories": public_categories, **fit_kwargs}
            run = runs.RunFolder(run_dir, runs.fit_record(self.model_name, self.config, df, record_args), resume=resume,
                                 overwrite=overwrite)
        t0 = time.perf_counter()
        key = seed_key(seed)
        self.columns = [str(c) for c in df.columns]
        self.target = target
        encoded = None
        if self.uses_preprocessor:
            from tabdiff_jax.preprocess import Preprocessor, dependencies

            # ``preprocessor=None`` (the documented default) means no extra options; the mixture
            # fits draw from fit's seed unless the options name their own
            options = {"seed": preprocessor_seed(key), **self.preprocessor_options,
                       **(self.config.get("preprocessor") or {})}
            options = dependencies.model_options(self, options)  # private: no derived columns
            self.preprocessor = Preprocessor(**options).fit(
                df,
                target=target,
                task=task,
                column_kinds=column_kinds,
                public_bounds=public_bounds,
                public_categories=public_categories,
            )
            self.task = self.preprocessor.task
            encoded = self.preprocessor.encode(df)
        else:
            self.task = task or (None if target is None else _infer_task(df[target]))
        from tabdiff_jax.preprocess import inference

        if self.task == "classification":
            inference.single_class(target, df[target])
        t_pre = time.perf_counter() - t0
        if run is not None:  # several processes (tabdiff_jax.distributed): process 0 writes the run folder
            if is_primary():
                run.start()  # writes resume.json (after removing the old run's files if overwrite)
            barrier("tabdiff_jax: run folder started")
        try:
            self._fit(df, encoded, key, run_dir=run_dir, resume=resume, progress=progress, **fit_kwargs)
        except BaseException:  # Ctrl-C too: a run with no checkpoint leaves nothing to resume
            if run is not None and is_primary():
                run.abandon()  # nothing half-written unless a checkpoint can be resumed
            raise
        if jax.process_count() > 1:  # parameters that span every process -> this process's own copy, so
            self._set_state(*self._get_state())  # that it samples on its local devices like any loaded model
        self.fitted = True
        inferred = getattr(self.preprocessor, "inferred", None) or inference.describe(  # models without one: SMOTE
            getattr(self, "_specs", ()), inference.task_note(df[target], self.task) if target and not task else None, df)
        self.fit_info = {
            "model": self.model_name,
            "config": self.config,
            "target": target,
            "task": self.task,
            "rows": int(len(df)),
            "seed": int(seed),
            "preprocess_seconds": round(t_pre, 3),
            "fit_seconds": round(time.perf_counter() - t0, 3),
            "inferred": inferred,
            **self.fit_info,
        }
        if self.preprocessor is not None:
            self.fit_info.setdefault("schema", self.preprocessor.layout.to_json())
        if run_dir is not None and is_primary():
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            self.save(run_dir)
            write_json(self.fit_info, Path(run_dir) / "run.json")
        return self

    def _fit(self, df, encoded, key, *, run_dir, resume, progress, **fit_kwargs) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------------------- sampling
    def sample(self, n: int, *, seed: int = 0, condition: Optional[dict] = None,
               max_candidates: Optional[int] = None, **kwargs) -> pd.DataFrame:
        """Generate ``n`` rows as a DataFrame with the training table's columns, order and dtypes.

        Row ``i`` depends only on ``(seed, i)`` (see :mod:`tabdiff_jax.sampling`): not on ``n``,
        ``chunk_size`` (rows per compiled call, a keyword of every model) or the device count.

        Args:
          condition: ``{column: value}`` every row must have: any columns with ``supports_inpainting``
            (TabDDPM, TabDiff; given cells returned exactly, :mod:`tabdiff_jax.conditioning`), else
            categorical ones: imposed where the model is conditional on the column (CGAN, CTGAN, SMOTE),
            else met by rejection (candidates in row order, at most ``max_candidates``, default
            ``max(100 n, 100,000)``).

        Raises:
          ConfigError: bad ``n``; a condition on an unknown column (or a numeric one without
            inpainting), a missing value, or a value the column never had or cannot be encoded
            (named); a class too rare to reach ``n`` rows by rejection.
        """
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n must be a positive integer, got {n!r}")
        draw, accept, finish = self._candidate_stream(seed, condition, kwargs)
        if accept is None:
            raw = draw(0, int(n))
            if condition is None:
                from tabdiff_jax.collapse import check_one_class

                check_one_class(self, raw[1])  # warns on one class of the target (rule: tabdiff_jax.collapse)
        else:
            from tabdiff_jax.sampling import rejection_sample

            raw = rejection_sample(draw, int(n), accept, describe=", ".join(f"{c}={v!r}" for c, v in condition.items()),
                                   max_candidates=max_candidates)
        return finish(self._raw_frame(*raw)[self.columns])

    def _candidate_stream(self, seed: int, condition: Optional[dict], kwargs: dict) -> tuple:
        """``(draw(start, count) -> raw rows, accept or None, finish(frame) -> frame)`` of ``sample(n, seed=seed,
        condition=condition, **kwargs)``, checked (fitted, keywords, condition) before any row is drawn; shared
        with streamed sampling (:mod:`tabdiff_jax.generate`)."""
        if not self.fitted:
            raise ConfigError(f"{type(self).__name__} is not fitted: call fit() or load() first")
        taken = [p for p in inspect.signature(self._sample_raw).parameters if p not in ("start", "n", "key", "known")]
        unknown = sorted(set(kwargs) - set(taken) - {"condition"})
        if unknown:
            hint = " (rows per compiled call is chunk_size=)" if "batch_size" in unknown else ""
            raise ConfigError(f"{type(self).__name__}.sample does not take {', '.join(unknown)}{hint}; its options: "
                              f"{', '.join(['n', 'seed', 'condition', *taken])}")
        key = seed_key(seed)
        if condition is None:
            return (lambda start, count: self._sample_raw(start, count, key, **kwargs)), None, (lambda df: df)
        from tabdiff_jax import conditioning

        return conditioning.stream(self, key, condition, kwargs)

    def impute(self, df: pd.DataFrame, *, seed: int = 0, **kwargs) -> pd.DataFrame:
        """``df`` with its missing cells drawn given each row's observed cells, which stay untouched
        (:func:`tabdiff_jax.conditioning.impute`; models with ``supports_inpainting``)."""
        from tabdiff_jax import conditioning

        return conditioning.impute(self, df, seed=seed, **kwargs)

    def sample_batches(self, n: int, **kwargs):
        """The rows of ``sample(n, ...)`` as DataFrames of ``rows_per_batch`` rows, in row order (``start=``,
        ``stop=``: a row range); memory bounded by the batch (:func:`tabdiff_jax.generate.sample_batches`)."""
        from tabdiff_jax import generate

        return generate.sample_batches(self, n, **kwargs)

    def sample_to(self, path, n: int, **kwargs) -> dict:
        """Stream ``n`` rows to a ``.csv`` / ``.parquet`` file or a folder of parquet parts with a manifest,
        resumable and row-addressable (:func:`tabdiff_jax.generate.sample_to`)."""
        from tabdiff_jax import generate

        return generate.sample_to(self, path, n, **kwargs)

    def _sample_raw(self, start: int, n: int, key: jax.Array, *, condition: Optional[dict] = None,
                    **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start .. start + n - 1`` as raw arrays ``(numeric [n, N], codes [n, K])`` (see
        :mod:`tabdiff_jax.preprocess.frames`); ``condition`` ``{column: (j, code)}`` only when
        :meth:`_native_condition` accepted it."""
        raise NotImplementedError

    def _native_condition(self, codes: dict) -> bool:
        """Whether the model imposes ``{column: (j, code)}`` itself (else: rejection sampling)."""
        return False

    def _schema(self) -> tuple[list, dict]:
        """``(column specs, {categorical column: label index})`` of the raw arrays."""
        return self.preprocessor.specs, self.preprocessor._indexes

    def _raw_frame(self, raw_numeric: np.ndarray, raw_codes: np.ndarray) -> pd.DataFrame:
        return self.preprocessor.from_arrays(raw_numeric, raw_codes)

    # ------------------------------------------------------------------------ persistence
    def _get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        raise NotImplementedError

    def _set_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json``, the preprocessor and ``state.npz`` into ``directory``."""
        if not self.fitted:
            raise ConfigError(f"{type(self).__name__} is not fitted: nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta, arrays = self._get_state()
        if self.preprocessor is not None:
            self.preprocessor.save(directory)
        write_npz(arrays, directory / "state.npz")
        from tabdiff_jax import __version__

        write_json(
            {
                "model": self.model_name,
                "version": __version__,
                "config": self.config,
                "target": self.target,
                "task": self.task,
                "columns": self.columns,
                "fit_info": self.fit_info,
                "state": meta,
            },
            directory / "model.json",
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Synthesizer":
        """Load a model saved by :meth:`save` (any registered model: dispatches on ``model.json``)."""
        directory = Path(directory)
        path = directory / "model.json"
        if not path.exists():
            raise DataError(f"{directory}: not a saved model (no model.json)")
        info = read_run_json(path)
        model_cls = get_model_class(info["model"])
        if cls is not Synthesizer and not issubclass(model_cls, cls):
            raise ConfigError(f"{directory} holds a {info['model']!r} model, not {cls.__name__}")
        model = model_cls(**info.get("config", {}))
        model.target, model.task = info.get("target"), info.get("task")
        model.columns = list(info.get("columns", []))
        model.fit_info = dict(info.get("fit_info", {}))
        if model.uses_preprocessor:
            from tabdiff_jax.preprocess import Preprocessor

            model.preprocessor = Preprocessor.load(directory)
        model._set_state(info.get("state", {}), read_run_npz(directory / "state.npz"))
        model.fitted = True
        return model


class NetworkState:
    """``_get_state`` / ``_set_state`` of the diffusion estimators (TabDDPM, TabDiff): the table layout, the
    config dataclass (under ``CONFIG_KEY``), the parameter tree, and a private fit's released class prior."""

    CONFIG_KEY: ClassVar[str] = "config"

    def _get_state(self):
        import dataclasses

        from tabdiff_jax.training import tree_to_arrays

        meta = {"layout": self._layout.to_json(), self.CONFIG_KEY: dataclasses.asdict(self._config),
                "class_probs": None if self._class_probs is None else [float(p) for p in self._class_probs]}
        return meta, tree_to_arrays(self._params, "params")

    def _set_state(self, meta, arrays):
        from tabdiff_jax.table import TableLayout
        from tabdiff_jax.training import arrays_to_tree

        _, _, template = self._build(TableLayout.from_json(meta["layout"]), jax.random.key(0))
        self._params = arrays_to_tree(template, arrays, "params")
        probs = meta.get("class_probs")  # private fits with a classification target; absent in older saves
        self._class_probs = None if probs is None else np.asarray(probs, np.float64)
        self._postprocess = None


def preprocessor_seed(key: jax.Array) -> int:
    """The preprocessor's integer seed (its mixture fits run in NumPy), derived from fit's ``key``.

    Folded in rather than split off, so the model's own training stream stays ``key``.
    """
    bits = jax.random.bits(jax.random.fold_in(key, 0x50524550), (), jnp.uint32)  # "PREP"
    return int(bits) >> 1  # a non-negative int32


def _infer_task(y: pd.Series) -> str:
    from tabdiff_jax.preprocess.inference import binary_number

    if binary_number(y):  # a 0/1 target: two classes
        return "classification"
    return "regression" if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y) else "classification"


def load(directory: str | Path) -> Synthesizer:
    """Load any saved model: ``tabdiff_jax.load(run_dir)``."""
    return Synthesizer.load(directory)
