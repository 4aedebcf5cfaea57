"""The model registry: names -> estimator classes, each model's module imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tabdiff_jax.errors import ConfigError

if TYPE_CHECKING:
    from tabdiff_jax.models.base import Synthesizer

MODEL_REGISTRY: dict[str, type[Synthesizer]] = {}

# Where each model lives: imported on first use only, so that `tabdiff-jax fit --model smote` does not
# import (or compile anything of) the GAN family, and one model's import cost is not everyone's.
MODEL_MODULES: dict[str, str] = {
    "tabddpm": "tabdiff_jax.models.tabddpm",
    "tabdiff": "tabdiff_jax.models.tabdiff",
    "tablediffusion": "tabdiff_jax.models.tablediffusion",
    "smote": "tabdiff_jax.models.smote",
    "tvae": "tabdiff_jax.models.tvae",
    "gan": "tabdiff_jax.models.gan",
    "cgan": "tabdiff_jax.models.gan",
    "wgan": "tabdiff_jax.models.gan",
    "wgan-gp": "tabdiff_jax.models.gan",
    "ctgan": "tabdiff_jax.models.gan",
    "dpgan": "tabdiff_jax.models.dpgan",
    "mst": "tabdiff_jax.models.marginal",
    "aim": "tabdiff_jax.models.marginal",
}
MODEL_ALIASES = {"wgangp": "wgan-gp", "wgan_gp": "wgan-gp", "dp-gan": "dpgan", "dp_gan": "dpgan", "table-diffusion": "tablediffusion"}


def register(name: str):
    """Class decorator: make a model available to :func:`load` and ``tabdiff-jax fit --model NAME``."""

    def wrap(cls):
        cls.model_name = name
        MODEL_REGISTRY[name] = cls
        return cls

    return wrap


def get_model_class(name: str) -> type[Synthesizer]:
    """The registered class for ``name``.

    Raises:
      ConfigError: no model of that name exists.
    """
    import importlib

    key = str(name).lower()
    key = MODEL_ALIASES.get(key, key)
    if key not in MODEL_REGISTRY and key in MODEL_MODULES:
        importlib.import_module(MODEL_MODULES[key])
    cls = MODEL_REGISTRY.get(key)
    if cls is None:
        raise ConfigError(f"--model {name!r} does not exist; available: {', '.join(sorted(MODEL_MODULES))}")
    return cls
