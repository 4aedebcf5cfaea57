"""Tabular preprocessing shared by every model: schema, numeric transforms, encode / decode.

* :class:`Preprocessor`: fit on a DataFrame, ``encode`` to an :class:`~tabdiff_jax.table.EncodedTable`,
  ``decode`` back; pure jnp halves ``encode_arrays`` / ``decode_arrays`` for use under ``jax.jit``.
* :mod:`~tabdiff_jax.preprocess.schema`: column kinds and domains (:class:`ColumnSpec`).
* :mod:`~tabdiff_jax.preprocess.transforms`: the numeric transforms as ``(fit, encode, decode)``.
* :mod:`~tabdiff_jax.preprocess.frames`: the host halves (DataFrame <-> raw arrays).
* :mod:`~tabdiff_jax.preprocess.dependencies`: exact column dependencies rebuilt on decode (``derive=``).
"""

from tabdiff_jax.preprocess.preprocessor import Preprocessor
from tabdiff_jax.preprocess.schema import ColumnSpec
from tabdiff_jax.preprocess.transforms import TRANSFORMS

NUMERIC_TRANSFORMS = tuple(TRANSFORMS)

__all__ = ["Preprocessor", "ColumnSpec", "NUMERIC_TRANSFORMS"]
