"""tabdiff_jax: synthetic mixed-type tables with JAX.

Estimators (fit a DataFrame, sample a DataFrame): :class:`TabDDPM`, :class:`TableDiffusion`,
:class:`GAN`, :class:`CGAN`, :class:`WGAN`, :class:`WGANGP`, :class:`CTGAN`, :class:`DPGAN`,
:class:`TVAE`, :class:`SMOTE`, and the marginal mechanisms :class:`MST`, :class:`AIM`;
:func:`load` reads any saved model back. The shared
:class:`Preprocessor`, :func:`evaluate` for utility / fidelity / privacy, and :mod:`datasets`.
The pure-functional cores live in the subpackages: ``diffusion`` (schedules, Gaussian and multinomial
diffusion, TabDDPM's and TableDiffusion's losses, denoisers and samplers), ``gan``, ``vae``, ``privacy``
(DP-SGD), ``preprocess``; shared plumbing in ``training``, ``sharding``, ``table``.

Names are imported on first use, so ``import tabdiff_jax`` is cheap and one model's import does
not pay for the others.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Preprocessor": "tabdiff_jax.preprocess",
    "EncodedTable": "tabdiff_jax.table",
    "TableLayout": "tabdiff_jax.table",
    "Report": "tabdiff_jax.evaluate",
    "load": "tabdiff_jax.models.base",
    "Synthesizer": "tabdiff_jax.models.base",
    "TabDDPM": "tabdiff_jax.models.tabddpm",
    "TabDiff": "tabdiff_jax.models.tabdiff",
    "TableDiffusion": "tabdiff_jax.models.tablediffusion",
    "SMOTE": "tabdiff_jax.models.smote",
    "TVAE": "tabdiff_jax.models.tvae",
    "GAN": "tabdiff_jax.models.gan",
    "CGAN": "tabdiff_jax.models.gan",
    "WGAN": "tabdiff_jax.models.gan",
    "WGANGP": "tabdiff_jax.models.gan",
    "CTGAN": "tabdiff_jax.models.gan",
    "DPGAN": "tabdiff_jax.models.dpgan",
    "MST": "tabdiff_jax.models.marginal",
    "AIM": "tabdiff_jax.models.marginal",
    "DataError": "tabdiff_jax.errors",
    "ConfigError": "tabdiff_jax.errors",
    "TabdiffError": "tabdiff_jax.errors",
}
_SUBMODULES = ("datasets", "evaluate")

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"tabdiff_jax.{name}")
    raise AttributeError(f"module 'tabdiff_jax' has no attribute {name!r}")


def __dir__():
    return __all__
