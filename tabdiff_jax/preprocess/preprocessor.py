"""The shared tabular preprocessor: fit on a DataFrame, encode / decode with pure jnp halves."""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.io import stage_file as _stage
from tabdiff_jax.preprocess import dependencies, frames, inference, linear
from tabdiff_jax.preprocess.codec import CodecPlan, CodecStats, decode_raw, encode_raw
from tabdiff_jax.preprocess.schema import (
    CATEGORICAL,
    DATA,
    DATETIME,
    ColumnSpec,
    fit_column,
    infer_kind,
)
from tabdiff_jax.preprocess.transforms import TRANSFORMS, num_modes, params_from_arrays
from tabdiff_jax.table import CATEGORY, MISSING, MODE, EncodedTable, TableLayout

CLASSIFICATION, REGRESSION = "classification", "regression"
FORMAT = "tabdiff_jax.preprocessor/1"
META_FILE, ARRAYS_FILE = "preprocessor.json", "preprocessor.npz"
_TRANSFORM_FACTS = {"quantile": ["quantiles"], "standard": ["mean", "std"], "mode_specific": ["modes"], "minmax": []}


def _check_keys(arg: str, mapping: Optional[Mapping], columns) -> dict:
    mapping = dict(mapping or {})
    unknown = [k for k in mapping if k not in set(columns)]
    if unknown:
        raise DataError(f"{arg} names column(s) {unknown!r} that are not in the table")
    return mapping


class Preprocessor:
    """Mixed-type table <-> :class:`~tabdiff_jax.table.EncodedTable`, shared by every model.

    Numeric columns go through one of four transforms (``numeric=``): ``"quantile"`` (to a normal,
    as TabDDPM), ``"minmax"`` (to ``[-1, 1]``), ``"standard"``, or ``"mode_specific"`` (CTGAN's
    Bayesian-mixture normalisation: a value in ``[-0.99, 0.99]`` plus a ``"<col>__mode"`` block).
    Categorical columns become int32 codes (one block each). A numeric column with missing values
    gets its median imputed plus a ``"<col>__missing"`` block (size 2); a categorical column's
    missing value is a category of its own. Both are restored as missing on decode.
    ``derive="auto"`` (or pairs ``[(X, Y), ...]``) leaves out each column a categorical column (:mod:`.dependencies`)
    or, for "auto", a linear formula of numeric columns (:mod:`.linear`) gives in every row; rebuilt on decode.

    ``encode = encode_arrays o to_arrays`` and ``decode = from_arrays o decode_arrays``: the
    ``*_arrays`` halves are pure jnp functions of the fitted statistics (usable under ``jax.jit``,
    so samplers decode on the device); ``to_arrays`` / ``from_arrays`` are the vectorised host
    halves (labels <-> codes, dtypes, datetimes). See :mod:`tabdiff_jax.preprocess.schema` for
    the schema inference rules and :mod:`tabdiff_jax.preprocess.frames` for the raw arrays.

    Round-trip precision (float32 on the device): categories, missing values, constant columns
    and (minmax / standard) integer columns come back exactly; minmax / standard floats within
    about 1e-6 of max(|x|, column std); quantile within 1/1000 of the width of the quantile bin
    holding the value (so a wide integer column may be off by one in a sparse tail);
    mode_specific is CTGAN's encoding, which clips a value more than 3.96 sigma from its chosen
    mode (a few outliers per column on the bundled tables, e.g. 57 of 32,561 capital-gain values
    of Adult).

    Example:
      >>> pre = Preprocessor(numeric="quantile").fit(df, target="income")
      >>> enc = pre.encode(df)                  # numeric f32 [n, N], categorical i32 [n, B]
      >>> back = pre.decode(enc)                # same columns, order and dtypes as df
    """

    def __init__(self, numeric: str = "quantile", max_categories: int = 1000, n_quantiles: int = 1000,
                 max_modes: int = 10, integer_categorical_max: Optional[int] = None, seed: int = 0, derive=None):
        self.numeric = validate.in_choices("numeric", numeric, sorted(TRANSFORMS))
        self.max_categories = validate.positive_int("max_categories", max_categories)
        self.n_quantiles = validate.positive_int("n_quantiles", n_quantiles, 2)
        self.max_modes = validate.positive_int("max_modes", max_modes)
        self.integer_categorical_max = (None if integer_categorical_max is None
                                        else validate.positive_int("integer_categorical_max", integer_categorical_max))
        self.seed = validate.positive_int("seed", seed, 0)
        self.derive, self.derived, self.linear = dependencies.check_option(derive), (), ()
        self.specs: Optional[tuple[ColumnSpec, ...]] = None

    # ------------------------------------------------------------------ fit
    def fit(self, df: pd.DataFrame, target: Optional[str] = None, task: Optional[str] = None,
            column_kinds: Optional[Mapping[str, str]] = None, public_bounds: Optional[Mapping] = None,
            public_categories: Optional[Mapping] = None) -> "Preprocessor":
        """Learn the schema and the transform statistics of ``df``; returns ``self``.

        Args:
          df: the table (rows are never dropped).
          target: name of the target column, or ``None``.
          task: ``"classification"`` or ``"regression"``; inferred from the target's kind if ``None``
            (categorical -> classification). Classification makes a numeric target categorical.
          column_kinds: ``{"col": "numeric" | "categorical"}`` overrides of the inferred kinds.
          public_bounds: ``{"col": (low, high)}`` bounds that are not learned from the data
            (values outside are clipped); datetime bounds as timestamps.
          public_categories: ``{"col": [labels]}`` category sets not learned from the data
            (values outside are an error).

        Raises:
          DataError: bad table (empty, no columns, duplicate or non-string names, a column all
            missing, inf, mixed types, too many categories, values outside public categories),
            or unknown column names in the arguments.
          ConfigError: bad ``task``, or kinds that contradict the dtypes or the task.
        """
        frames.check_table(df)
        columns = list(df.columns)
        if target is not None and target not in columns:
            raise DataError(f"target {target!r} is not a column of the table (columns: {columns[:20]!r})")
        if task not in (None, CLASSIFICATION, REGRESSION):
            raise ConfigError(f"task = {task!r}; expected 'classification', 'regression' or None")
        if task is not None and target is None:
            raise ConfigError(f"task = {task!r} given without a target")
        kinds = _check_keys("column_kinds", column_kinds, columns)
        bounds = _check_keys("public_bounds", public_bounds, columns)
        cats = _check_keys("public_categories", public_categories, columns)
        for name in cats:
            if kinds.get(name, CATEGORICAL) != CATEGORICAL:
                raise ConfigError(f"column {name!r} has public_categories but column_kinds says {kinds[name]!r}")
            kinds[name] = CATEGORICAL
        given_task = task
        if task is None and target is not None and target not in kinds and inference.binary_number(df[target]):
            task = CLASSIFICATION  # a 0/1 target: two classes, not a regression
        if task == CLASSIFICATION:
            if kinds.get(target, CATEGORICAL) != CATEGORICAL:
                raise ConfigError(f"target {target!r} is declared numeric but task is 'classification'")
            kinds[target] = CATEGORICAL

        specs = []
        for name in columns:
            series = df[name]
            kind = infer_kind(series, kinds.get(name), self.integer_categorical_max)
            if kind == CATEGORICAL and name in bounds:
                raise ConfigError(f"public_bounds given for column {name!r}, which is categorical")
            specs.append(fit_column(series, kind, self.max_categories, bounds.get(name), cats.get(name)))
        if target is not None:
            target_kind = next(s.kind for s in specs if s.name == target)
            if task == REGRESSION and target_kind == CATEGORICAL:
                raise ConfigError(f"target {target!r} is categorical; task 'regression' needs a numeric column")
            task = task or (CLASSIFICATION if target_kind == CATEGORICAL else REGRESSION)
        note = None if given_task or target is None else inference.task_note(df[target], task)
        helpers = {f"{s.name}__{suffix}" for s in specs for suffix in ("missing", "mode")}
        clash = sorted(helpers & set(columns))
        if clash:
            raise DataError(f"column name(s) {clash!r} clash with the names of helper blocks; rename them")

        derived, lin = linear.find_all(df, specs, target, self.derive, self.seed)
        specs = [s for s in specs if s.name not in {d.column for d in (*derived, *lin)}]  # rebuilt on decode
        num_specs = [s for s in specs if s.kind != CATEGORICAL]
        x = np.empty((len(df), len(num_specs)), order="F")  # column-major: the fits read columns
        for j, s in enumerate(num_specs):
            x[:, j] = frames.centred_values(df[s.name], s)
        span = np.array([s.span for s in num_specs], np.float64)
        np.clip(x, 0.0, span, out=x)  # public bounds: statistics of the clipped values
        impute = np.array([np.median(col[~np.isnan(col)]) for col in x.T], np.float32)
        params = TRANSFORMS[self.numeric].fit(x, span, n_quantiles=self.n_quantiles, max_modes=self.max_modes, seed=self.seed)
        # Assign only once everything succeeded, so a failed fit leaves the object as it was.
        self.specs, self.target, self.task = tuple(specs), target, task
        self.impute, self.params, self.derived, self.linear = impute, params, derived, lin
        self.inferred = dependencies.note(inference.describe(specs, note, df), (*derived, *lin))
        self._build()
        return self

    def _build(self) -> None:
        """Derive the static layout and block plan, the device statistics and the label lookups."""
        self._num_specs = [s for s in self.specs if s.kind != CATEGORICAL]
        self._cat_specs = [s for s in self.specs if s.kind == CATEGORICAL]
        has_modes = TRANSFORMS[self.numeric].has_modes
        modes = num_modes(self.params) if has_modes else ()
        names, sizes, roles, blocks = [], [], [], []
        i = j = 0
        for s in self.specs:  # blocks in table order; a numeric column's helpers follow its place
            if s.kind == CATEGORICAL:
                names.append(s.name), sizes.append(s.num_codes), roles.append(CATEGORY), blocks.append(("category", j))
                j += 1
                continue
            if has_modes:
                names.append(f"{s.name}__mode"), sizes.append(modes[i]), roles.append(MODE), blocks.append(("mode", i))
            if s.has_missing:
                names.append(f"{s.name}__missing"), sizes.append(2), roles.append(MISSING), blocks.append(("missing", i))
            i += 1
        sizes = tuple(int(z) for z in sizes)
        self._plan = CodecPlan(self.numeric, tuple(blocks), sizes, len(self._num_specs), len(self._cat_specs))
        # numpy does the dtype conversions, so that building a preprocessor compiles nothing
        self._stats = jax.device_put(CodecStats(
            impute=np.asarray(self.impute, np.float32),
            span=np.asarray([s.span for s in self._num_specs], np.float32),
            integer=np.asarray([s.integer for s in self._num_specs], bool),
            params=jax.tree.map(np.asarray, self.params),
        ))
        self.layout = TableLayout(
            numeric_names=tuple(s.name for s in self._num_specs), categorical_names=tuple(names),
            categorical_sizes=sizes, categorical_roles=tuple(roles), target=self.target, task=self.task,
        )
        self._indexes = {s.name: frames.label_index(s) for s in self._cat_specs}
        self._labels = {s.name: frames.label_array(s) for s in self._cat_specs}

    def _require_fitted(self) -> None:
        if self.specs is None:
            raise ConfigError("the Preprocessor is not fitted: call fit(df) first")

    # ------------------------------------------------------------------ public views
    @property
    def columns(self) -> dict[str, str]:
        """Kind of each original column, in table order: ``"numeric"``, ``"categorical"`` or ``"datetime"``."""
        self._require_fitted()
        return {s.name: s.kind for s in self.specs}

    def data_dependent(self) -> dict[str, list[str]]:
        """What was learned from the fitted data, per column (a private model must account for it).

        ``"bounds"`` / ``"categories"`` unless given as public; ``"missing"`` (the presence of a
        missing block / category) and ``"median"`` (imputation) when the data had missing values;
        the transform's statistics (``"quantiles"``, ``"mean"``, ``"std"``, ``"modes"``; none for
        ``"minmax"``, which only uses the bounds); ``"unit"`` for datetimes; ``"decimals"`` (none with public bounds).
        """
        self._require_fitted()
        out = {}
        for s in self.specs:
            facts = []
            if s.domain_source == DATA:
                facts.append("categories" if s.kind == CATEGORICAL else "bounds")
            if s.kind != CATEGORICAL:
                facts += _TRANSFORM_FACTS[self.numeric]
                facts += ["unit"] if s.kind == DATETIME else (["decimals"] if s.decimals is not None else [])
            facts += (["missing"] + (["median"] if s.kind != CATEGORICAL else [])) if s.has_missing else []
            out[s.name] = facts
        return out

    def data_dependent_columns(self) -> list[str]:
        """Columns for which anything in :meth:`data_dependent` was learned from the data."""
        return [name for name, facts in self.data_dependent().items() if facts]

    # ------------------------------------------------------------------ host halves
    def to_arrays(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """DataFrame -> ``(raw_numeric float32 [n, N], raw_codes int32 [n, K])`` (host, vectorised)."""
        self._require_fitted()
        return frames.frame_to_raw(df, self.specs, self._indexes)

    def from_arrays(self, raw_numeric, raw_codes) -> pd.DataFrame:
        """Raw arrays -> DataFrame with the fitted columns, order and dtypes (host, vectorised)."""
        self._require_fitted()
        frame = frames.raw_to_frame(np.asarray(raw_numeric), np.asarray(raw_codes), self.specs, self._labels)
        return dependencies.restore(frame, raw_codes, self.derived, [s.name for s in self._cat_specs],
                                    linear.restored(frame, self.linear))

    # ------------------------------------------------------------------ pure jnp halves
    def encode_arrays(self, raw_numeric, raw_codes) -> EncodedTable:
        """Raw arrays -> :class:`EncodedTable`; pure jnp, usable under ``jax.jit``.

        Args:
          raw_numeric: float32 ``[n, N]``, numeric / datetime columns as ``x - low`` (NaN missing).
          raw_codes: int32 ``[n, K]``, categorical codes (missing = ``len(categories)``).

        Values outside ``[0, span]`` are clipped to the bounds; NaN in a column fitted without
        missing values is imputed silently here (the host half raises instead).
        """
        self._require_fitted()
        x = jnp.asarray(raw_numeric, jnp.float32)
        codes = jnp.asarray(raw_codes, jnp.int32)
        if x.ndim != 2 or x.shape[1] != self._plan.num_numeric or codes.shape != (x.shape[0], self._plan.num_codes):
            raise DataError(f"raw arrays have shapes {x.shape} and {codes.shape}; expected "
                            f"[n, {self._plan.num_numeric}] and [n, {self._plan.num_codes}]")
        numeric, categorical = encode_raw(self._plan, self._stats, x, codes)
        return EncodedTable(numeric=numeric, categorical=categorical, layout=self.layout)

    def decode_arrays(self, encoded: EncodedTable) -> tuple[jax.Array, jax.Array]:
        """:class:`EncodedTable` -> ``(raw_numeric float32 [n, N], raw_codes int32 [n, K])``; pure jnp.

        Inverts the numeric transform, clips to the bounds, rounds integer (and datetime) columns,
        puts NaN where the missing block says so, and clips codes into each block's range.
        """
        self._require_fitted()
        if encoded.layout != self.layout:
            raise DataError("the encoded table's layout differs from this preprocessor's layout")
        return decode_raw(self._plan, self._stats, encoded.numeric, encoded.categorical)

    # ------------------------------------------------------------------ composed
    def encode(self, df: pd.DataFrame) -> EncodedTable:
        """DataFrame -> :class:`EncodedTable` (``to_arrays`` then ``encode_arrays``).

        Rows are padded to a size bucket (see :func:`_bucket`) so that tables of similar sizes
        share one compiled program; the padding is dropped on the host, which is cheaper than a
        device slice compiled for every row count.
        """
        self._require_fitted()
        n = len(df) if isinstance(df, pd.DataFrame) else 0
        raw_numeric, raw_codes = frames.frame_to_raw(df, self.specs, self._indexes, rows=_bucket(n))
        out = self.encode_arrays(raw_numeric, raw_codes)
        return EncodedTable(numeric=jnp.asarray(np.asarray(out.numeric)[:n]),
                            categorical=jnp.asarray(np.asarray(out.categorical)[:n]), layout=out.layout)

    def decode(self, encoded: EncodedTable) -> pd.DataFrame:
        """:class:`EncodedTable` -> DataFrame (``decode_arrays`` then ``from_arrays``; rows padded as in
        :meth:`encode`)."""
        self._require_fitted()
        n = encoded.numeric.shape[0]
        padded = EncodedTable(_pad_rows(np.asarray(encoded.numeric), n), _pad_rows(np.asarray(encoded.categorical), n),
                              encoded.layout)
        raw_numeric, raw_codes = self.decode_arrays(padded)
        return self.from_arrays(np.asarray(raw_numeric)[:n], np.asarray(raw_codes)[:n])

    def fit_encode(self, df: pd.DataFrame, **fit_kwargs) -> EncodedTable:
        """``fit(df, **fit_kwargs)`` then ``encode(df)``."""
        return self.fit(df, **fit_kwargs).encode(df)

    # ------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(meta, arrays)``: a JSON-able dict and named numpy arrays that :meth:`from_state` reads."""
        self._require_fitted()
        meta = {
            "format": FORMAT,
            "config": {"numeric": self.numeric, "max_categories": self.max_categories, "n_quantiles": self.n_quantiles,
                       "max_modes": self.max_modes, "integer_categorical_max": self.integer_categorical_max,
                       "seed": self.seed, "derive": self.derive},
            "target": self.target, "task": self.task,
            "columns": [s.to_json() for s in self.specs],
            "layout": self.layout.to_json(), **linear.state(self.derived, self.linear),
        }
        arrays = {"impute": np.asarray(self.impute)}
        arrays.update({f"params.{k}": np.asarray(v) for k, v in self.params._asdict().items()})
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: Mapping[str, np.ndarray]) -> "Preprocessor":
        """Rebuild a fitted preprocessor from :meth:`to_state`'s output."""
        if meta.get("format") != FORMAT:
            raise DataError(f"not a saved preprocessor (format {meta.get('format')!r}, expected {FORMAT!r})")
        try:
            pre = cls(**meta["config"])
            pre.specs = tuple(ColumnSpec.from_json(c) for c in meta["columns"])
            pre.target, pre.task = meta["target"], meta["task"]
            pre.impute = np.asarray(arrays["impute"], np.float32)
            params = {k[len("params."):]: v for k, v in arrays.items() if k.startswith("params.")}
            pre.params = params_from_arrays(pre.numeric, params)
            pre.derived, pre.linear = linear.from_state(meta)
            pre._build()
            saved_layout = TableLayout.from_json(meta["layout"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"saved preprocessor is malformed ({type(err).__name__}: {err})") from err
        if pre.layout != saved_layout:
            raise DataError("saved preprocessor is inconsistent: its layout does not match its columns")
        return pre

    def save(self, directory: str) -> None:
        """Write ``preprocessor.json`` and ``preprocessor.npz`` into ``directory``.

        Both files are written to temporary names first and renamed only once both are complete,
        so a failure leaves any previous pair untouched.
        """
        meta, arrays = self.to_state()
        os.makedirs(directory, exist_ok=True)
        staged = []
        try:
            staged.append(_stage(directory, ARRAYS_FILE, lambda f: np.savez(f, **arrays)))
            staged.append(_stage(directory, META_FILE, lambda f: f.write(json.dumps(meta, indent=1).encode())))
        except BaseException:
            for tmp, _ in staged:
                os.remove(tmp)
            raise
        for tmp, path in staged:
            os.replace(tmp, path)

    @classmethod
    def load(cls, directory: str) -> "Preprocessor":
        """Read a preprocessor written by :meth:`save` (no pickle)."""
        for name in (META_FILE, ARRAYS_FILE):
            if not os.path.isfile(os.path.join(directory, name)):
                raise DataError(f"{directory}: no saved preprocessor ({name} is missing)")
        with open(os.path.join(directory, META_FILE)) as f:
            meta = json.load(f)
        with np.load(os.path.join(directory, ARRAYS_FILE), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls.from_state(meta, arrays)

    def __repr__(self) -> str:
        state = "unfitted" if self.specs is None else f"{len(self.specs)} columns, target={self.target!r}"
        return f"Preprocessor(numeric={self.numeric!r}, {state})"


def _bucket(n: int) -> int:
    """Row count that jitted calls are padded to: at most 1/8 above ``n``, so that a few compiled
    shapes serve every table size (rows are independent, padding rows are dropped)."""
    if n <= 1024:
        return 1024
    unit = 1 << (n.bit_length() - 4)
    return -(-n // unit) * unit


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((_bucket(n),) + a.shape[1:], a.dtype)
    out[:n] = a
    return out

