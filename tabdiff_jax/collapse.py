"""A warning when a sample holds a single class of the classification target (a collapsed generator).

The rule: an unconditioned sample of at least :data:`ONE_CLASS_MIN_ROWS` rows (688) whose
classification target holds one class warns, in one line (:class:`OneClassWarning`, a
``UserWarning``), from :meth:`~tabdiff_jax.models.base.Synthesizer.sample` and from streamed
generation (:func:`tabdiff_jax.generate.sample_batches`, ``sample_to``), once per sample or stream.

Why 688: ``fit`` refuses a target with fewer than two classes, so a generator that reproduces the
class shares gives one class only by chance; if the other classes hold a share ``p`` of the rows
together, with probability ``(1 - p) ** n``. 688 is the least ``n`` for which that chance is below
:data:`ONE_CLASS_FALSE_ALARM` (0.1%) for ``p =`` :data:`ONE_CLASS_MIN_SHARE` (1%). So a small sample,
or a target whose classes other than one hold under 1% of the rows together, may hold one class
without a warning; the models keep no class shares (a private model must not), so the rule uses ``n``
only. A condition (on any column) can make one class legitimate: conditioned samples never warn.
The check reads one column of the codes already computed (no extra pass over the model).
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np

ONE_CLASS_MIN_SHARE = 0.01  # the smallest share of the other classes the rule must not miss
ONE_CLASS_FALSE_ALARM = 1e-3  # the chance that a faithful sample of such a target warns
ONE_CLASS_MIN_ROWS = math.ceil(math.log(ONE_CLASS_FALSE_ALARM) / math.log1p(-ONE_CLASS_MIN_SHARE))


class OneClassWarning(UserWarning):
    """A sample holds a single class of the classification target."""


def target_code_column(model) -> Optional[int]:
    """The raw codes' column of ``model``'s classification target, or ``None`` (no target, regression)."""
    if model.target is None or model.task != "classification":
        return None
    from tabdiff_jax.preprocess.schema import CATEGORICAL

    names = [s.name for s in model._schema()[0] if s.kind == CATEGORICAL]
    return names.index(model.target) if model.target in names else None


class ClassTally:
    """The target classes seen over the raw code batches of one sample; :meth:`finish` warns by the rule."""

    def __init__(self, model):
        self.model, self.column = model, target_code_column(model)
        self.rows, self.code, self.mixed = 0, None, False

    def update(self, codes) -> None:
        """Count a batch of raw codes ``[rows, K]``."""
        if self.column is None or self.mixed:
            return
        column = np.asarray(codes)[:, self.column]
        if not len(column):
            return
        self.code = int(column[0]) if self.code is None else self.code
        self.rows += len(column)
        self.mixed = bool(np.any(column != self.code))

    def finish(self, stacklevel: int = 2) -> None:
        """Warn if every row counted (at least :data:`ONE_CLASS_MIN_ROWS`) had the same class; ``stacklevel``
        as :func:`warnings.warn` counts it from here."""
        if self.column is None or self.mixed or self.rows < ONE_CLASS_MIN_ROWS:
            return
        from tabdiff_jax.preprocess.schema import CATEGORICAL

        spec = [s for s in self.model._schema()[0] if s.kind == CATEGORICAL][self.column]
        label = spec.categories[self.code] if self.code < len(spec.categories) else "missing"
        warnings.warn(f"{type(self.model).__name__}: all {self.rows} sampled rows have {self.model.target}={label!r}, "
                      "one class of the target (a collapsed generator: train longer or change its options)",
                      OneClassWarning, stacklevel=stacklevel)


def check_one_class(model, codes, stacklevel: int = 3) -> None:
    """Warn (:class:`OneClassWarning`) if the raw ``codes`` ``[n, K]`` of one unconditioned sample hold one
    class of ``model``'s classification target and ``n >= ONE_CLASS_MIN_ROWS`` (``stacklevel`` as
    :func:`warnings.warn` counts it from here: 3 names the caller of ``sample``)."""
    tally = ClassTally(model)
    tally.update(codes)
    tally.finish(stacklevel + 1)
