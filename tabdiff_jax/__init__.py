"""tabdiff_jax: synthetic mixed-type tables with JAX."""

__version__ = "0.1.0"
