"""The pure-functional core of the GAN family .

* :mod:`~tabdiff_jax.gan.nets`: generator / critic MLPs, Gumbel-softmax output activation;
* :mod:`~tabdiff_jax.gan.losses`: non-saturating and Wasserstein losses, gradient penalty, weight
  clipping, CTGAN's conditional cross-entropy;
* :mod:`~tabdiff_jax.gan.conditional`: conditional vectors and training-by-sampling;
* :mod:`~tabdiff_jax.gan.train`: compiled critic / generator updates and epochs, sampling;
* :mod:`~tabdiff_jax.gan.private`: DP-GAN's critic update on the privacy module's DP-SGD step;
* :mod:`~tabdiff_jax.gan.blocks`: softmax arithmetic over all one-hot blocks at once.

Options, optimisers, (de)serialisation and epoch timing are shared by every model: :mod:`tabdiff_jax.training`.

The estimators are in :mod:`tabdiff_jax.models.gan` and :mod:`tabdiff_jax.models.tvae`.
"""

from tabdiff_jax.gan.conditional import ConditionSampler, build_condition_sampler
from tabdiff_jax.gan.losses import (
    clip_weights,
    critic_loss,
    generator_loss,
    gradient_penalty,
)
from tabdiff_jax.gan.nets import Critic, Generator, activate, gumbel_softmax
from tabdiff_jax.gan.train import (
    GANConfig,
    GANState,
    init_gan,
    make_epoch_fn,
    make_sample_fn,
)

__all__ = [
    "ConditionSampler", "Critic", "GANConfig", "GANState", "Generator", "activate", "build_condition_sampler",
    "clip_weights", "critic_loss", "generator_loss", "gradient_penalty", "gumbel_softmax", "init_gan",
    "make_epoch_fn", "make_sample_fn",
]
