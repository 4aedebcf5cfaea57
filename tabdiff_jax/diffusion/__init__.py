"""The diffusion cores: pure functions of arrays, PRNG keys and parameter pytrees.

* :mod:`~tabdiff_jax.diffusion.schedules`: noise schedules (cosine, linear, TableDiffusion's);
* :mod:`~tabdiff_jax.diffusion.gaussian`: the Gaussian process of the numbers (q_sample, posterior, DDIM);
* :mod:`~tabdiff_jax.diffusion.multinomial`: multinomial diffusion of the categories (per-block ops);
* :mod:`~tabdiff_jax.diffusion.denoiser`: TabDDPM's MLP denoiser (NNX) and its pure ``apply_denoiser``;
* :mod:`~tabdiff_jax.diffusion.transformer`: a column-tokenised transformer denoiser (TabDiff's ``backbone="transformer"``);
* :mod:`~tabdiff_jax.diffusion.tabddpm`: TabDDPM's mixed loss and compiled train step;
* :mod:`~tabdiff_jax.diffusion.samplers`: TabDDPM's compiled reverse process (ancestral / skipping);
* :mod:`~tabdiff_jax.diffusion.tablediffusion`: TableDiffusion's network, all-levels loss and sampler.

The estimators over these cores are in :mod:`tabdiff_jax.models`. Import the submodule you need:
this package imports nothing itself, so that one core does not pay for another.
"""
