"""TVAE's pure core: :mod:`tabdiff_jax.vae.core`; the estimator is :class:`tabdiff_jax.models.tvae.TVAE`."""
