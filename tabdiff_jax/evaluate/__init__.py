"""Evaluation of synthetic tables: machine-learning utility, fidelity and privacy.

>>> import tabdiff_jax.evaluate as ev
>>> report = ev.evaluate(train, synthetic, test=test, target="income")   # doctest: +SKIP
>>> print(report.summary_table())                                        # doctest: +SKIP

Modules: :mod:`.columns` (column kinds), :mod:`.fidelity` (shape, trend, associations),
:mod:`.detection`, :mod:`.sdmetrics_detection` (SDMetrics' LogisticDetection, the "C2ST"),
:mod:`.relations` (exact relations of the real table kept by synthetic rows), :mod:`.coverage`
(alpha-precision / beta-recall), :mod:`.distances` (chunked JAX nearest neighbours), :mod:`.privacy`
(DCR, copies, membership inference), :mod:`.sdmetrics_dcr`,
:mod:`.utility` (CatBoost / scikit-learn), :mod:`.fairness` (the utility models' demographic-parity and
equalised-odds differences over a sensitive column), :mod:`.report` and :mod:`.plots`.
"""

from tabdiff_jax.evaluate.core import PARTS, evaluate, evaluate_files
from tabdiff_jax.evaluate.distances import (
    EncodedRows,
    encode_rows,
    nearest,
    nearest_neighbours,
)
from tabdiff_jax.evaluate.report import Report

__all__ = ["PARTS", "EncodedRows", "Report", "encode_rows", "evaluate", "evaluate_files", "nearest", "nearest_neighbours"]


class _CallableModule(__import__("types").ModuleType):
    """Lets ``tabdiff_jax.evaluate(real, synthetic, ...)`` call :func:`evaluate` on the package itself."""

    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
