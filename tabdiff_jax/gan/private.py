"""DP-GAN (Xie et al. 2018): the critic trained with DP-SGD, the generator as post-processing.

Only the critic reads training rows, so only its gradients are clipped and noised. Each critic
update draws a Poisson batch of real rows (fixed capacity, mask), pairs row ``i`` with a fresh
generated row, and hands the per-pair loss ``loss(D(real_i), D(fake_i))`` to the privacy module's
DP-SGD step (:func:`tabdiff_jax.privacy.make_private_step`): per-example clipping to ``l2_clip``
(book-keeping "ghost" clipping by default), Gaussian noise ``sigma * l2_clip``, division by the
expected batch size. A real row appears in at most one pair, so the sensitivity is ``l2_clip``.
The generator update (:func:`tabdiff_jax.gan.train.make_generator_update`) reads only the critic.

The number of private steps of a run is ``epochs * steps_per_epoch * n_critic``; the noise
multiplier is calibrated to the target ``(epsilon, delta)`` for that many steps
(:func:`tabdiff_jax.privacy.plan_privacy`).

Conditional DP-GAN (DP-CGAN, Torkzadehmahani et al. 2019; DPGAN's default on a categorical target):
the generator and the critic see a one-hot condition on one categorical column. In a critic update
each pair is conditioned on its real row's own class (the fake partner generated for that class, the
column's block set to it), so pair ``i`` still depends on row ``i`` alone and the sensitivity stays
``l2_clip``. Which classes the generator trains on and generates with comes from the column's class
counts released once by the Gaussian mechanism (:func:`private_class_sampler`) at ``SHARE_BUDGET``
(5%) of epsilon and of delta; DP-SGD gets the rest, and the two compose by basic composition.
Training-by-sampling of CTGAN (real rows drawn per category) is refused: it reads the rows of each
category outside the Poisson sampling that the accounting assumes.

Data parallelism (``mesh=``): the padded Poisson batch and its generated partners are split by rows
over the devices; the capacity is rounded up to a multiple of the device count (a larger capacity
only makes truncation rarer; ``q`` and the expected batch size, hence the accounting, are unchanged).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.gan import conditional as cond_lib
from tabdiff_jax.gan import losses
from tabdiff_jax.gan.train import GANConfig, critic_optimizer, make_conditions, make_generate_fn
from tabdiff_jax.privacy import (
    PrivacyPlan,
    calibrate_noise_multiplier,
    make_private_step,
    poisson_sample,
)
from tabdiff_jax.sharding import constrain_rows, round_up
from tabdiff_jax.table import TableLayout


SHARE_BUDGET = 0.05  # the part of epsilon and delta spent on the condition column's class shares


def check_private_config(config: GANConfig, *, conditional, dropout: float) -> None:
    """Options that DP-SGD on the critic cannot honour (ConfigError naming the option)."""
    if config.pac != 1:
        raise ConfigError("pac must be 1 for DPGAN: per-example clipping needs one real row per critic input")
    if config.gradient_penalty:
        raise ConfigError("gradient_penalty must be 0 for DPGAN (the penalty reads real rows outside the clipped loss)")
    if conditional not in (None, "column"):
        raise ConfigError("conditional must be None or 'column' for DPGAN: CTGAN's training-by-sampling reads "
                          "the private rows of every category")
    if dropout:
        raise ConfigError("dropout must be 0 for DPGAN's critic")


def private_capacity(plan: PrivacyPlan, mesh=None) -> int:
    """The plan's padded batch capacity rounded up to a multiple of the mesh's device count."""
    return round_up(plan.capacity, mesh)


def private_class_sampler(codes: np.ndarray, layout: TableLayout, block: int, key: jax.Array, *, epsilon: float,
                          delta: float, release: bool = True) -> tuple[cond_lib.ConditionSampler, dict]:
    """A :class:`~tabdiff_jax.gan.conditional.ConditionSampler` of one categorical block whose class shares
    are the Gaussian mechanism's: counts of ``codes`` (the block's column, ``[n]``) plus ``N(0, s^2)``, ``s``
    calibrated to ``(epsilon, delta)`` (one count changes by 1 per row added or removed: L2 sensitivity 1),
    negative counts set to 0. Training conditions draw ``~ log(1 + count)`` (CTGAN's log-frequency),
    generation ``~ count``; the sampler holds no row index (DP-GAN's critic draws Poisson batches).

    ``release=False`` (nothing will be trained) reads no row: uniform shares, nothing spent.

    Returns:
      ``(sampler, info)``, ``info`` the record for ``fit_info`` (epsilon, delta, noise std, noisy counts).
    """
    size = int(layout.categorical_sizes[block])
    dummy = np.zeros((1, layout.num_categorical), np.int32)
    sampler = cond_lib.build_condition_sampler(dummy, layout, (block,))
    if not release:
        counts, info = np.ones(size), {"epsilon": 0.0, "delta": 0.0}
    else:
        sigma = calibrate_noise_multiplier(epsilon, delta, 1.0, 1)
        noise = np.asarray(jax.random.normal(key, (size,), jnp.float32), np.float64) * sigma
        counts = np.maximum(np.bincount(np.asarray(codes), minlength=size)[:size] + noise, 0.0)
        counts = counts if counts.sum() > 0 else np.ones(size)
        info = {"epsilon": float(epsilon), "delta": float(delta), "noise_std": float(sigma),
                "noisy_counts": [round(float(c), 1) for c in counts]}
    with np.errstate(divide="ignore"):
        train, sample = np.log(np.log1p(counts) / np.log1p(counts).sum()), np.log(counts / counts.sum())
    pad = lambda a: jnp.asarray(np.pad(a, (0, sampler.train_logits.shape[1] - size), constant_values=-np.inf)[None],
                                jnp.float32)
    return sampler.replace(train_logits=pad(train), sample_logits=pad(sample)), {"column_shares": info}


def make_critic_example_loss(loss: str, classifier_loss: float = 0.0):
    """Per-example critic loss ``(critic, batch, keys) -> [B]`` for the DP-SGD step.

    ``batch = {"real": [B, dim], "fake": [B, dim]}``; row ``i`` depends on ``real[i]`` and
    ``fake[i]`` only (the critic never mixes rows). With ``classifier_loss > 0`` (AC-GAN) the batch
    also holds ``"rows"`` (the real rows without the condition vector) and ``"label"`` (their class), and
    each row's loss adds ``classifier_loss`` times its own classification cross-entropy: one row's whole
    contribution is still one clipped gradient.
    """

    def loss_fn(critic, batch, keys):
        del keys
        out = losses.critic_loss(loss, critic(batch["real"]), critic(batch["fake"]))
        if classifier_loss > 0:
            out = out + classifier_loss * losses.classifier_cross_entropy(critic, batch["rows"], batch["label"])
        return out

    return loss_fn


def make_private_critic_update(gen_def, critic_def, layout: TableLayout, config: GANConfig,
                               critic_tx: optax.GradientTransformation, *, plan: PrivacyPlan, num_rows: int,
                               l2_clip: float, clipping: str = "ghost", mesh=None):
    """DP-SGD critic update with the signature of :func:`tabdiff_jax.gan.train.make_critic_update`.

    Args:
      plan: the privacy plan (noise multiplier, sampling rate, padded batch capacity).
      num_rows: rows of the private table (static).
      l2_clip: per-example clipping norm.
      clipping: ``"ghost"`` (book-keeping clipping) or ``"vmap"``.
      mesh: a ``data`` mesh to split the batch's rows over, or ``None``.

    Metrics: ``critic_loss``, ``grad_norm`` (mean per-example norm before clipping),
    ``clipped_fraction``, ``batch_size`` (realised Poisson batch).
    """
    capacity = private_capacity(plan, mesh)
    generate = make_generate_fn(gen_def, layout, config, mesh)
    aux = config.classifier_loss > 0
    private = make_private_step(make_critic_example_loss(config.loss, config.classifier_loss),
                                critic_optimizer(critic_tx, config),
                                l2_clip=l2_clip, noise_multiplier=plan.noise_multiplier,
                                expected_batch_size=plan.expected_batch_size,
                                clipping=clipping, graphdef=critic_def, jit=False, mesh=mesh)

    def critic_update(critic, gen_params, data, sampler, key):
        k_batch, k_gen, k_step = jax.random.split(key, 3)
        batch = poisson_sample(k_batch, num_rows, plan.sampling_rate, capacity)
        real = constrain_rows(jnp.take(data, batch.indices, axis=0), mesh)
        conditions = None
        if sampler is not None:  # each pair conditioned on its real row's own class (DP-CGAN)
            (offset,), (size,) = sampler.dense_offsets, sampler.sizes
            category = jnp.argmax(real[:, offset:offset + size], axis=-1).astype(jnp.int32)
            conditions = make_conditions(sampler, jnp.zeros_like(category), category)
        _, fake = generate(gen_params, k_gen, capacity, conditions, sampler)
        if conditions is not None:
            vector = constrain_rows(conditions.vector, mesh)
            real, fake = jnp.concatenate([real, vector], -1), jnp.concatenate([fake, vector], -1)
        inputs = {"real": real, "fake": jax.lax.stop_gradient(fake)}
        if aux:
            if conditions is None:
                raise ConfigError("classifier_loss needs a conditioned column (conditional='column')")
            inputs.update(rows=real[:, :-vector.shape[-1]], label=category)
        critic, m = private.step(critic, inputs, batch.mask, k_step)  # weight clipping is in the optimiser
        metrics = {"critic_loss": m["loss"], "grad_norm": m["grad_norm"], "clipped_fraction": m["clipped_fraction"],
                   "batch_size": m["batch_size"].astype(jnp.float32)}
        return critic, metrics

    return critic_update
