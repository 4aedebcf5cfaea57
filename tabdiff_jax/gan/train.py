"""Compiled GAN training: one critic update, one generator update, one epoch as a ``lax.scan``.

The factories close over everything static (network definitions, optimisers, layout, the
:class:`GANConfig`) and return pure functions of a :class:`GANState` (one
:class:`~tabdiff_jax.state.TrainState` per network), the data on the device and an explicit PRNG key::

    gen_def, critic_def, state = init_gan(key, layout, config, gen_tx, critic_tx, ...)
    epoch = jax.jit(make_epoch_fn(gen_def, critic_def, layout, config, gen_tx, critic_tx,
                                  steps_per_epoch=n // config.batch_size))
    state, metrics = epoch(state, data, sampler, key)   # data: [n, layout.dense_dim]

An epoch is ``steps_per_epoch`` generator updates, each after ``n_critic`` critic updates
(CTGAN's definition; real rows drawn with replacement, or by training-by-sampling when a
:class:`~tabdiff_jax.gan.conditional.ConditionSampler` is given). The critic update is pluggable
(``critic_update=``) so that DP-GAN can swap in the privacy module's DP-SGD step.

Data parallelism (``mesh=``, a ``data`` mesh from :func:`tabdiff_jax.sharding.auto_mesh`): every
batch of rows (real rows, generator noise, conditions, generated rows) is split by rows over the
devices, parameters and optimiser states stay replicated, and XLA all-reduces the gradients. The
batch must be a multiple of ``pac`` times the device count (each device then holds whole packs).
The random numbers are drawn from the same keys with the same shapes, so the result equals the
single-device computation up to float rounding.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.gan import conditional as cond_lib
from tabdiff_jax.gan import losses
from tabdiff_jax.gan.nets import NUMERIC_ACTIVATIONS, Critic, Generator, activate, apply
from tabdiff_jax.sharding import check_divisible, constrain_rows
from tabdiff_jax.state import (
    TrainState,
    apply_gradients,
    init_train_state,
    split_params,
)
from tabdiff_jax.table import TableLayout
from tabdiff_jax.transforms import clip_params


@dataclasses.dataclass(frozen=True)
class GANConfig:
    """Static settings of GAN training (hashable; a change recompiles).

    Attributes:
      loss: ``"bce"`` (non-saturating GAN) or ``"wasserstein"``.
      gradient_penalty: weight lambda of the WGAN-GP penalty (0: none).
      weight_clip: keep the critic's weights in ``[-c, c]`` (WGAN), or ``None``: a
        :func:`~tabdiff_jax.transforms.clip_params` chained into the critic's optimiser
        (:func:`critic_optimizer`).
      n_critic: critic updates per generator update.
      pac: rows per critic input (PacGAN); must divide ``batch_size``.
      batch_size: rows per update.
      noise_dim: generator noise dimension.
      tau: Gumbel-softmax temperature.
      numeric_activation: ``"tanh"`` or ``"identity"`` for the numeric block.
      condition_loss: weight of CTGAN's conditional cross-entropy in the generator loss.
      impose_condition: overwrite the conditioned block of generated rows with the condition
        (CGAN: the label is an input of the generator, not an output).
      classifier_loss: weight of AC-GAN's auxiliary loss (Odena et al. 2017; 0: none): the critic's classifier
        of the conditioned column (:meth:`~tabdiff_jax.gan.nets.Critic.classify`) learns on real rows (under
        DP-GAN inside each row's clipped loss) and the generator's rows are pushed towards their condition.
      generator_ema: decay of an exponential moving average of the generator's parameters kept in
        ``GANState.generator.ema`` (:func:`~tabdiff_jax.state.ema_update`, with its warm-up), or ``None``.
        Averaging damps the GAN's oscillation (Yazici et al. 2019); under DP-GAN it is post-processing.
    """

    loss: str = "bce"
    gradient_penalty: float = 0.0
    weight_clip: Optional[float] = None
    n_critic: int = 1
    pac: int = 1
    batch_size: int = 128
    noise_dim: int = 32
    tau: float = 0.2
    numeric_activation: str = "tanh"
    condition_loss: float = 0.0
    impose_condition: bool = False
    generator_ema: Optional[float] = None
    classifier_loss: float = 0.0

    def __post_init__(self):
        if self.loss not in losses.LOSSES:
            raise ConfigError(f"loss must be one of {losses.LOSSES}, got {self.loss!r}")
        if self.numeric_activation not in NUMERIC_ACTIVATIONS:
            raise ConfigError(f"numeric_activation must be one of {NUMERIC_ACTIVATIONS}, "
                              f"got {self.numeric_activation!r}")
        for name in ("n_critic", "pac", "batch_size", "noise_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.pac:
            raise ConfigError(f"batch_size ({self.batch_size}) must be a multiple of pac ({self.pac})")
        if self.gradient_penalty < 0:
            raise ConfigError(f"gradient_penalty must be >= 0, got {self.gradient_penalty}")
        if self.weight_clip is not None and self.weight_clip <= 0:
            raise ConfigError(f"weight_clip must be > 0 or None, got {self.weight_clip}")
        if self.tau <= 0:
            raise ConfigError(f"tau must be > 0, got {self.tau}")
        if not self.classifier_loss >= 0:
            raise ConfigError(f"classifier_loss must be >= 0, got {self.classifier_loss!r}")
        if self.generator_ema is not None and not 0.0 < self.generator_ema < 1.0:
            raise ConfigError(f"generator_ema must be in (0, 1) or None, got {self.generator_ema!r}")


class GANState(NamedTuple):
    """One :class:`~tabdiff_jax.state.TrainState` per network, each with its own optimiser and step count
    (``critic.step`` counts critic updates, ``n_critic`` per generator update); :attr:`step` is the generator's."""

    generator: TrainState
    critic: TrainState

    @property
    def step(self) -> jax.Array:
        """Generator updates made (int32 scalar)."""
        return self.generator.step


def critic_optimizer(critic_tx: optax.GradientTransformation, config: GANConfig) -> optax.GradientTransformation:
    """``critic_tx`` then WGAN's weight clipping to ``[-weight_clip, weight_clip]`` (if set); :func:`init_gan`
    and every critic update (DP-GAN's too) apply it to the ``critic_tx`` they are given."""
    if config.weight_clip is None:
        return critic_tx
    clip = clip_params(-config.weight_clip, config.weight_clip)
    if config.classifier_loss > 0:  # the auxiliary classifier is not a Lipschitz critic: not clipped
        clip = optax.masked(clip, losses.critic_mask)
    return optax.chain(critic_tx, clip)


def init_gan(key: jax.Array, layout: TableLayout, config: GANConfig, generator_tx: optax.GradientTransformation,
             critic_tx: optax.GradientTransformation, *, generator_dims: Sequence[int], critic_dims: Sequence[int],
             cond_dim: int = 0, residual: bool = False, dropout: float = 0.0,
             label_block: Optional[tuple[int, int]] = None, classifier_dims: Optional[Sequence[int]] = None):
    """Both networks and the initial :class:`GANState` (critic weights clipped, optimiser :func:`critic_optimizer`;
    with ``config.generator_ema`` the generator's state carries the average, starting at its initial weights).
    ``config.classifier_loss > 0``: the critic has a classifier of ``label_block`` (dense offset, size) of widths
    ``classifier_dims`` (default: ``critic_dims``).

    Returns:
      ``(generator_def, critic_def, state)``.
    """
    k_gen, k_critic = jax.random.split(key)
    generator = Generator(config.noise_dim, generator_dims, layout.dense_dim, cond_dim=cond_dim, residual=residual,
                          rngs=nnx.Rngs(params=k_gen))
    classifier = None
    if config.classifier_loss > 0:  # AC-GAN
        if label_block is None:
            raise ConfigError("classifier_loss needs a conditioned column (conditional='column')")
        classifier = (layout.dense_dim, *label_block, tuple(critic_dims if classifier_dims is None else classifier_dims))
    critic = Critic(layout.dense_dim + cond_dim, critic_dims, pac=config.pac, dropout=dropout, classifier=classifier,
                    rngs=nnx.Rngs(params=k_critic))
    gen_def, gen_params = split_params(generator)
    critic_def, critic_params = split_params(critic)
    if config.weight_clip is not None:  # not the classifier's weights
        critic_params = jax.tree.map(lambda p, m: losses.clip_weights(p, config.weight_clip) if m else p,
                                     critic_params, losses.critic_mask(critic_params))
    state = GANState(init_train_state(gen_params, generator_tx, config.generator_ema),
                     init_train_state(critic_params, critic_optimizer(critic_tx, config)))
    return gen_def, critic_def, state


class Conditions(NamedTuple):
    """A batch of conditions: one-hot ``vector [b, cond_dim]`` (the critic's input), its ``index``
    ``[b]`` (the generator's), and the ``(block_id, category)`` pairs ``[b]``."""

    vector: jax.Array
    index: jax.Array
    block_id: jax.Array
    category: jax.Array


def make_conditions(sampler: cond_lib.ConditionSampler, block_id: jax.Array, category: jax.Array) -> Conditions:
    """:class:`Conditions` from ``(block_id, category)`` arrays ``[b]``."""
    index = jnp.asarray(sampler.cond_offsets, jnp.int32)[block_id] + category
    return Conditions(cond_lib.condition_vector(sampler, block_id, category), index, block_id, category)


def draw_conditions(sampler: Optional[cond_lib.ConditionSampler], key: jax.Array, batch: int,
                    training: bool = True, mesh=None) -> Optional[Conditions]:
    """Conditions for a batch (``None`` without a sampler); split by rows over ``mesh`` if given."""
    if sampler is None:
        return None
    return constrain_rows(make_conditions(sampler, *cond_lib.sample_condition(sampler, key, batch, training=training)),
                          mesh)


def check_batch(config: GANConfig, mesh) -> None:
    """ConfigError unless whole packs of ``config.batch_size`` split evenly over ``mesh``."""
    if mesh is not None:
        check_divisible(config.batch_size // config.pac, mesh, name="batch_size / pac")


def make_generate_fn(gen_def, layout: TableLayout, config: GANConfig, mesh=None):
    """``generate(gen_params, key, batch, conditions=None, sampler=None, hard=False, impose=None) -> (raw, rows)``.

    ``raw`` are the generator outputs ``[batch, dense_dim]``, ``rows`` the activated rows (soft
    Gumbel-softmax blocks, or hard one-hot with ``hard=True``). With ``impose`` (default:
    ``config.impose_condition``) the conditioned block of ``rows`` is set to the condition. With a
    ``mesh`` the rows are split over its devices (``batch`` must be a multiple of its size).
    """

    def generate(gen_params, key, batch: int, conditions: Optional[Conditions] = None,
                 sampler: Optional[cond_lib.ConditionSampler] = None, hard: bool = False,
                 impose: Optional[bool] = None):
        k_noise, k_gumbel = jax.random.split(key)
        z = constrain_rows(jax.random.normal(k_noise, (batch, config.noise_dim), jnp.float32), mesh)
        conditions = constrain_rows(conditions, mesh)
        raw = apply(gen_def, gen_params, z, None if conditions is None else conditions.index)
        rows = activate(raw, layout, k_gumbel, numeric_activation=config.numeric_activation, tau=config.tau, hard=hard)
        impose = config.impose_condition if impose is None else impose
        if conditions is not None and impose:
            rows = cond_lib.impose_condition(sampler, rows, conditions.block_id, conditions.category)
        return constrain_rows((raw, rows), mesh)

    return generate


def _with_condition(rows: jax.Array, conditions: Optional[Conditions]) -> jax.Array:
    return rows if conditions is None else jnp.concatenate([rows, conditions.vector], axis=-1)


def _real_rows(data, sampler, conditions, key, batch, mesh=None):
    if conditions is None:
        return constrain_rows(data[jax.random.randint(key, (batch,), 0, data.shape[0])], mesh)
    return constrain_rows(data[cond_lib.sample_rows(sampler, key, conditions.block_id, conditions.category)], mesh)


def _make_critic_step(critic_def, config: GANConfig, critic_tx: optax.GradientTransformation, mesh=None):
    """``step(critic: TrainState, real, fake, conditions, key) -> (critic, metrics)``."""
    critic_tx = critic_optimizer(critic_tx, config)

    def loss_fn(critic_params, real, fake, conditions, key):
        k_real, k_fake, k_gp, k_gp_drop = jax.random.split(key, 4)
        real_in, fake_in = _with_condition(real, conditions), _with_condition(fake, conditions)
        real_scores = apply(critic_def, critic_params, real_in, dropout_key=k_real)
        fake_scores = apply(critic_def, critic_params, fake_in, dropout_key=k_fake)
        loss = jnp.mean(losses.critic_loss(config.loss, real_scores, fake_scores))
        metrics = {"critic_loss": loss}
        if config.classifier_loss > 0 and conditions is not None:  # AC-GAN: the classifier learns on real rows
            ce = jnp.mean(losses.classifier_cross_entropy(nnx.merge(critic_def, critic_params), real,
                                                          conditions.category))
            loss = loss + config.classifier_loss * ce
            metrics["classifier_loss"] = ce
        if config.gradient_penalty > 0:
            critic_fn = lambda x: apply(critic_def, critic_params, x, dropout_key=k_gp_drop)
            penalty = losses.gradient_penalty(critic_fn, real_in, fake_in, k_gp, config.pac)
            loss = loss + config.gradient_penalty * penalty
            metrics["gradient_penalty"] = penalty
        return loss, metrics

    def step(critic: TrainState, real, fake, conditions, key):
        real, fake, conditions = constrain_rows((real, fake, conditions), mesh)
        grads, metrics = jax.grad(loss_fn, has_aux=True)(critic.params, real, jax.lax.stop_gradient(fake),
                                                         conditions, key)
        return apply_gradients(critic, grads, critic_tx), metrics

    return step


def make_critic_update(gen_def, critic_def, layout: TableLayout, config: GANConfig,
                       critic_tx: optax.GradientTransformation, *, mesh=None):
    """Critic update ``(critic: TrainState, gen_params, data, sampler, key) -> (critic, metrics)``
    on a fresh batch of real and generated rows (split by rows over ``mesh`` if given)."""
    check_batch(config, mesh)
    generate = make_generate_fn(gen_def, layout, config, mesh)
    step = _make_critic_step(critic_def, config, critic_tx, mesh)

    def critic_update(critic: TrainState, gen_params, data, sampler, key):
        k_cond, k_rows, k_gen, k_loss = jax.random.split(key, 4)
        conditions = draw_conditions(sampler, k_cond, config.batch_size, mesh=mesh)
        real = _real_rows(data, sampler, conditions, k_rows, config.batch_size, mesh)
        _, fake = generate(gen_params, k_gen, config.batch_size, conditions, sampler)
        return step(critic, real, fake, conditions, k_loss)

    return critic_update


def _make_generator_loss(critic_def, config: GANConfig):
    """``loss(raw, fake, critic, conditions, sampler, key) -> (loss, metrics)`` of generated rows."""

    def loss_fn(raw, fake, critic_params, conditions, sampler, key):
        scores = apply(critic_def, critic_params, _with_condition(fake, conditions), dropout_key=key)
        loss = jnp.mean(losses.generator_loss(config.loss, scores))
        metrics = {"generator_loss": loss}
        if conditions is not None and config.condition_loss > 0:
            ce = jnp.mean(losses.condition_cross_entropy(cond_lib.raw_condition_blocks(sampler, raw),
                                                         conditions.block_id, conditions.category))
            loss = loss + config.condition_loss * ce
            metrics["condition_loss"] = ce
        if conditions is not None and config.classifier_loss > 0:  # AC-GAN: rows classified as their condition
            ce = jnp.mean(losses.classifier_cross_entropy(nnx.merge(critic_def, critic_params), fake,
                                                          conditions.category))
            loss = loss + config.classifier_loss * ce
            metrics["generated_classifier_loss"] = ce
        return loss, metrics

    return loss_fn


def make_generator_update(gen_def, critic_def, layout: TableLayout, config: GANConfig,
                          generator_tx: optax.GradientTransformation, *, mesh=None):
    """Generator update ``(generator: TrainState, critic_params, sampler, key) -> (generator, metrics)``.

    Touches no training row: under DP-GAN it is post-processing of the private critic. With a
    ``mesh`` the generated batch is split by rows over its devices.
    """
    check_batch(config, mesh)
    generate = make_generate_fn(gen_def, layout, config, mesh)
    output_loss = _make_generator_loss(critic_def, config)

    def loss_fn(gen_params, critic_params, sampler, key):
        k_cond, k_gen, k_drop = jax.random.split(key, 3)
        conditions = draw_conditions(sampler, k_cond, config.batch_size, mesh=mesh)
        raw, fake = generate(gen_params, k_gen, config.batch_size, conditions, sampler)
        return output_loss(raw, fake, critic_params, conditions, sampler, k_drop)

    def generator_update(generator: TrainState, critic_params, sampler, key):
        grads, metrics = jax.grad(loss_fn, has_aux=True)(generator.params, critic_params, sampler, key)
        return apply_gradients(generator, grads, generator_tx, config.generator_ema), metrics

    return generator_update


def make_epoch_fn(gen_def, critic_def, layout: TableLayout, config: GANConfig,
                  generator_tx: optax.GradientTransformation, critic_tx: optax.GradientTransformation, *,
                  steps_per_epoch: int, critic_update: Optional[Callable] = None, mesh=None):
    """One epoch as a compiled scan: ``epoch(state, data, sampler, key) -> (state, metrics)``.

    Each of the ``steps_per_epoch`` steps makes ``config.n_critic`` critic updates and one
    generator update. The last critic update and the generator update share one generated batch
    (one generator forward pass, as in PyTorch's DCGAN example: the critic sees it detached, the
    generator is then scored by the updated critic); the other critic updates draw their own.

    Args:
      steps_per_epoch: generator updates per epoch.
      critic_update: replaces the non-private critic update (the signature of
        :func:`make_critic_update`'s result, ``critic_tx`` chained with :func:`critic_optimizer`),
        e.g. a DP-SGD step; every critic update then draws
        its own generated rows and the generator update its own batch.
      mesh: a ``data`` mesh to split every batch's rows over (parameters replicated), or ``None``;
        ``batch_size / pac`` must then be a multiple of its size.

    Returns:
      A pure function; ``data`` is ``[n, layout.dense_dim]``, ``sampler`` a
      :class:`~tabdiff_jax.gan.conditional.ConditionSampler` or ``None``. Metrics are epoch means.
    """
    if steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    shared = critic_update is None
    critic_update = critic_update or make_critic_update(gen_def, critic_def, layout, config, critic_tx, mesh=mesh)
    generator_update = make_generator_update(gen_def, critic_def, layout, config, generator_tx, mesh=mesh)
    generate = make_generate_fn(gen_def, layout, config, mesh)
    critic_step = _make_critic_step(critic_def, config, critic_tx, mesh)
    output_loss = _make_generator_loss(critic_def, config)
    batch = config.batch_size

    def critic_updates(state: GANState, data, sampler, key, count):
        body = lambda critic, k: critic_update(critic, state.generator.params, data, sampler, k)
        return jax.lax.scan(body, state.critic, jax.random.split(key, count))

    def shared_step(state: GANState, data, sampler, key):
        k_pre, k_cond, k_rows, k_gen, k_critic, k_drop = jax.random.split(key, 6)
        critic, pre = state.critic, None
        if config.n_critic > 1:
            critic, pre = critic_updates(state, data, sampler, k_pre, config.n_critic - 1)
        conditions = draw_conditions(sampler, k_cond, batch, mesh=mesh)
        (raw, fake), pullback = jax.vjp(lambda g: generate(g, k_gen, batch, conditions, sampler),
                                        state.generator.params)
        real = _real_rows(data, sampler, conditions, k_rows, batch, mesh)
        critic, critic_metrics = critic_step(critic, real, fake, conditions, k_critic)
        if pre is not None:  # mean over all n_critic updates
            critic_metrics = jax.tree.map(lambda a, b: (jnp.sum(a) + b) / config.n_critic, pre, critic_metrics)
        grads_out, gen_metrics = jax.grad(output_loss, argnums=(0, 1), has_aux=True)(
            raw, fake, critic.params, conditions, sampler, k_drop)
        (gen_grads,) = pullback(grads_out)
        generator = apply_gradients(state.generator, gen_grads, generator_tx, config.generator_ema)
        return GANState(generator, critic), {**critic_metrics, **gen_metrics}

    def separate_step(state: GANState, data, sampler, key):
        k_critic, k_gen = jax.random.split(key)
        critic, critic_metrics = critic_updates(state, data, sampler, k_critic, config.n_critic)
        generator, gen_metrics = generator_update(state.generator, critic.params, sampler, k_gen)
        return GANState(generator, critic), {**jax.tree.map(jnp.mean, critic_metrics), **gen_metrics}

    one_step = shared_step if shared else separate_step

    def epoch(state: GANState, data: jax.Array, sampler, key: jax.Array):
        state, metrics = jax.lax.scan(lambda st, k: one_step(st, data, sampler, k), state,
                                      jax.random.split(key, steps_per_epoch))
        return state, jax.tree.map(jnp.mean, metrics)

    return epoch
