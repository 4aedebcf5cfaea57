"""Generators with the common fit / sample / save / load API; importing this registers them all."""

from tabdiff_jax.models.base import MODEL_REGISTRY, Synthesizer, load, register

__all__ = ["MODEL_REGISTRY", "Synthesizer", "load", "register"]
