"""The encoded table shared by every model: a numeric block, categorical codes and a static layout.

An :class:`EncodedTable` is a JAX pytree: ``numeric`` (float32, ``[n, num_numeric]``) and
``categorical`` (int32, ``[n, num_categorical]``) are leaves, the :class:`TableLayout` is static
auxiliary data (hashable, so a jitted function specialises on it and compiles once per layout).

Every categorical block is one column of codes ``0 .. size - 1``. Blocks have a *role*:

* ``"category"``: a categorical column of the input table;
* ``"missing"``: the missing-value indicator of a numeric column (size 2: 0 present, 1 missing);
* ``"mode"``: the mixture component of a numeric column under mode-specific normalisation.

Models that want a dense float matrix (GANs, TVAE, TableDiffusion, the TabDDPM denoiser input)
use :func:`to_dense` / :func:`from_dense`: ``[numeric | one-hot block 0 | one-hot block 1 | ...]``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

from tabdiff_jax.blocks import block_argmax, block_offsets, onehot

CATEGORY = "category"
MISSING = "missing"
MODE = "mode"
BLOCK_ROLES = (CATEGORY, MISSING, MODE)


@dataclasses.dataclass(frozen=True)
class TableLayout:
    """Static description of an encoded table.

    Attributes:
      numeric_names: names of the columns of the numeric block, in order.
      categorical_names: names of the categorical blocks, in order (``"<col>__missing"`` and
        ``"<col>__mode"`` for the helper blocks of numeric column ``<col>``).
      categorical_sizes: number of categories of each block.
      categorical_roles: role of each block, one of :data:`BLOCK_ROLES`.
      target: name of the target column of the original table, or ``None``.
      task: ``"classification"``, ``"regression"`` or ``None``.
    """

    numeric_names: tuple[str, ...] = ()
    categorical_names: tuple[str, ...] = ()
    categorical_sizes: tuple[int, ...] = ()
    categorical_roles: tuple[str, ...] = ()
    target: Optional[str] = None
    task: Optional[str] = None

    def __post_init__(self):
        n = len(self.categorical_names)
        if len(self.categorical_sizes) != n or len(self.categorical_roles) != n:
            raise ValueError("categorical_names, categorical_sizes and categorical_roles differ in length")
        for role in self.categorical_roles:
            if role not in BLOCK_ROLES:
                raise ValueError(f"unknown block role {role!r}; expected one of {BLOCK_ROLES}")
        for name, size in zip(self.categorical_names, self.categorical_sizes):
            if int(size) < 1:
                raise ValueError(f"categorical block {name!r} has size {size}; expected >= 1")

    @property
    def num_numeric(self) -> int:
        return len(self.numeric_names)

    @property
    def num_categorical(self) -> int:
        return len(self.categorical_names)

    @property
    def onehot_offsets(self) -> tuple[int, ...]:
        """Start of each one-hot block inside the one-hot part (not counting the numeric block)."""
        return block_offsets(self.categorical_sizes)

    @property
    def onehot_dim(self) -> int:
        return int(sum(self.categorical_sizes))

    @property
    def dense_dim(self) -> int:
        """Width of :func:`to_dense`: numeric columns plus all one-hot blocks."""
        return self.num_numeric + self.onehot_dim

    @property
    def target_numeric_index(self) -> Optional[int]:
        """Index of a regression target in the numeric block, else ``None``."""
        if self.target is not None and self.target in self.numeric_names:
            return self.numeric_names.index(self.target)
        return None

    @property
    def target_categorical_index(self) -> Optional[int]:
        """Index of a classification target among the categorical blocks, else ``None``."""
        if self.target is not None and self.target in self.categorical_names:
            return self.categorical_names.index(self.target)
        return None

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> "TableLayout":
        return cls(
            numeric_names=tuple(d.get("numeric_names", ())),
            categorical_names=tuple(d.get("categorical_names", ())),
            categorical_sizes=tuple(int(s) for s in d.get("categorical_sizes", ())),
            categorical_roles=tuple(d.get("categorical_roles", ())),
            target=d.get("target"),
            task=d.get("task"),
        )

    def without_target(self) -> "TableLayout":
        """The layout once the classification target block is removed (see :func:`split_target`)."""
        i = self.target_categorical_index
        if i is None:
            return self
        drop = lambda t: t[:i] + t[i + 1:]
        return dataclasses.replace(
            self,
            categorical_names=drop(self.categorical_names),
            categorical_sizes=drop(self.categorical_sizes),
            categorical_roles=drop(self.categorical_roles),
        )


@struct.dataclass
class EncodedTable:
    """Encoded rows: ``numeric`` float32 ``[n, num_numeric]``, ``categorical`` int32 ``[n, num_categorical]``."""

    numeric: jax.Array
    categorical: jax.Array
    layout: TableLayout = struct.field(pytree_node=False)

    @property
    def num_rows(self) -> int:
        return int(self.numeric.shape[0])


def to_onehot(codes: jax.Array, layout: TableLayout, dtype=jnp.float32) -> jax.Array:
    """Int codes ``[n, num_categorical]`` -> concatenated one-hot blocks ``[n, onehot_dim]``
    (:func:`tabdiff_jax.blocks.onehot` of the layout's block sizes)."""
    return onehot(codes, layout.categorical_sizes, dtype)


def split_onehot(x: jax.Array, layout: TableLayout) -> list[jax.Array]:
    """Split ``[..., onehot_dim]`` into the list of per-block arrays ``[..., size_j]``."""
    return [x[..., o:o + s] for o, s in zip(layout.onehot_offsets, layout.categorical_sizes)]


def to_dense(table: EncodedTable, dtype=jnp.float32) -> jax.Array:
    """``[numeric | one-hot blocks]`` as one float matrix ``[n, layout.dense_dim]``."""
    return jnp.concatenate([table.numeric.astype(dtype), to_onehot(table.categorical, table.layout, dtype)], axis=-1)


def from_dense(x: jax.Array, layout: TableLayout) -> EncodedTable:
    """Inverse of :func:`to_dense`; each one-hot block (or logits / probabilities) goes through argmax."""
    numeric = x[..., : layout.num_numeric].astype(jnp.float32)
    codes = block_argmax(x[..., layout.num_numeric:], layout.categorical_sizes)
    return EncodedTable(numeric=numeric, categorical=codes, layout=layout)


def split_target(table: EncodedTable) -> tuple[EncodedTable, Optional[jax.Array]]:
    """Remove a classification target block: returns (features table, target codes ``[n]``).

    Regression targets stay in the numeric block (TabDDPM diffuses them like any number); for
    them, and for tables without a target, the second element is ``None``.
    """
    i = table.layout.target_categorical_index
    if i is None:
        return table, None
    codes = table.categorical
    feats = jnp.concatenate([codes[:, :i], codes[:, i + 1:]], axis=1)
    return EncodedTable(table.numeric, feats, table.layout.without_target()), codes[:, i]


def merge_target(features: EncodedTable, y: Optional[jax.Array], layout: TableLayout) -> EncodedTable:
    """Inverse of :func:`split_target` for the full ``layout``."""
    i = layout.target_categorical_index
    if i is None:
        return EncodedTable(features.numeric, features.categorical, layout)
    codes = features.categorical
    y = jnp.asarray(y, jnp.int32).reshape(-1, 1)
    merged = jnp.concatenate([codes[:, :i], y, codes[:, i:]], axis=1)
    return EncodedTable(features.numeric, merged, layout)

