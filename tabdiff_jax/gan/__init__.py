"""The pure-functional core of the GAN family.

* :mod:`~tabdiff_jax.gan.nets`: generator / critic MLPs, Gumbel-softmax output activation;
* :mod:`~tabdiff_jax.gan.losses`: non-saturating and Wasserstein losses, gradient penalty, weight
  clipping, CTGAN's conditional cross-entropy;
* :mod:`~tabdiff_jax.gan.conditional`: conditional vectors and training-by-sampling;
* :mod:`~tabdiff_jax.gan.train`: compiled critic / generator updates and epochs;
* :mod:`~tabdiff_jax.gan.sampling`: row-keyed sampling from a trained generator;
* :mod:`~tabdiff_jax.gan.private`: DP-GAN's critic update on the privacy module's DP-SGD step.

The softmax arithmetic over all one-hot blocks at once is shared with TVAE and the diffusion
models: :mod:`tabdiff_jax.blocks`.

Options, optimisers, (de)serialisation and epoch timing are shared by every model: :mod:`tabdiff_jax.training`.

The estimators are in :mod:`tabdiff_jax.models.gan` and :mod:`tabdiff_jax.models.tvae`.
"""

import importlib

# Imported on first use, so that TVAE (which shares gan.nets' output activation) does not import
# the GAN training code.
_LAZY = {
    "ConditionSampler": "conditional", "build_condition_sampler": "conditional",
    "clip_weights": "losses", "critic_loss": "losses", "generator_loss": "losses", "gradient_penalty": "losses",
    "Critic": "nets", "Generator": "nets", "activate": "nets", "gumbel_softmax": "nets",
    "GANConfig": "train", "GANState": "train", "critic_optimizer": "train", "init_gan": "train",
    "make_epoch_fn": "train",
    "make_sample_fn": "sampling",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tabdiff_jax.gan.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tabdiff_jax.gan' has no attribute {name!r}")
