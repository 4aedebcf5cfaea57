"""TabDDPM's mixed model: Gaussian diffusion on the numbers, multinomial on the categories.

One denoiser sees ``[x_num_t | one-hot(x_cat_t)]`` and returns ``[eps_pred | logits]``. The loss
of a row is ``mean_j (eps_pred_j - eps_j)^2 + w * mean_b L_t^b`` where ``L_t^b`` is the
multinomial variational-bound term of block ``b`` (KL for ``t >= 1``, decoder NLL at ``t = 0``)
and ``w = T`` by default, TabDDPM's ``kl / p(t)`` with ``t`` uniform (an unbiased estimate of the
sum over all steps); the reference's constant prior term ``KL(q(x_T | x_0) || uniform)`` has no
gradient and is left out. ``t`` is drawn uniformly per row. A classification target is not diffused:
it is the label condition ``y``; a regression target is one of the numeric columns.

Layers: :class:`DiffusionConfig` (static), the loss functions (:func:`per_example_losses`, batched,
and :func:`per_example_loss`, one row, for DP-SGD), and the compiled training step
(:func:`make_train_step`) over a :class:`tabdiff_jax.state.TrainState` (with an EMA when ``ema_decay``).

Example:
  >>> config = DiffusionConfig(num_numeric=3, categorical_sizes=(4, 2), num_timesteps=100)
  >>> model = make_denoiser(config, rngs=nnx.Rngs(0))
  >>> graphdef, params = split_params(model)
  >>> opt = make_annealed_adamw(lr=2e-3)
  >>> state = init_train_state(params, opt, ema_decay=0.999)
  >>> step = make_train_step(graphdef, opt, config, batch_size=256, ema_decay=0.999)
  >>> state, metrics = step(state, data, jax.random.key(0))   # data: a TableBatch on the device
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tabdiff_jax import validate
from tabdiff_jax.blocks import onehot
from tabdiff_jax.diffusion import gaussian, multinomial
from tabdiff_jax.diffusion.denoiser import (
    DEFAULT_DIM_T,
    DEFAULT_HIDDEN_DIMS,
    TabDDPMDenoiser,
    apply_denoiser,
)
from tabdiff_jax.diffusion.multinomial import BlockSpec
from tabdiff_jax.diffusion.schedules import SCHEDULES, Schedule, make_schedule
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.sharding import constrain_rows
from tabdiff_jax.state import TrainState, apply_gradients, global_norm
from tabdiff_jax.table import TableLayout


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """Static description of a mixed diffusion model (hashable; jitted functions specialise on it).

    Attributes:
      num_numeric: columns of the numeric block (a regression target included).
      categorical_sizes: categories of each diffused categorical block (classification target excluded).
      num_classes: classes of the label condition ``y`` (0: no condition).
      num_timesteps: ``T``.
      schedule: "cosine" (TabDDPM) or "linear".
      multinomial_weight: weight of the mean multinomial term; None means ``T`` (TabDDPM).
    """

    num_numeric: int
    categorical_sizes: tuple[int, ...] = ()
    num_classes: int = 0
    num_timesteps: int = 1000
    schedule: str = "cosine"
    multinomial_weight: Optional[float] = None

    def __post_init__(self):
        object.__setattr__(self, "categorical_sizes", tuple(int(k) for k in self.categorical_sizes))
        if self.num_numeric < 0 or self.num_numeric + len(self.categorical_sizes) == 0:
            raise ConfigError("the table needs at least one numeric column or categorical block besides the target")
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {self.num_classes}")
        if int(self.num_timesteps) < 1:
            raise ConfigError(f"num_timesteps must be >= 1, got {self.num_timesteps}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")

    @classmethod
    def from_layout(cls, layout: TableLayout, **kwargs) -> "DiffusionConfig":
        """The config of a table layout: a classification target becomes the label condition."""
        i = layout.target_categorical_index
        num_classes = layout.categorical_sizes[i] if (i is not None and layout.task == "classification") else 0
        feats = layout.without_target() if num_classes else layout
        return cls(num_numeric=feats.num_numeric, categorical_sizes=feats.categorical_sizes,
                   num_classes=num_classes, **kwargs)

    @property
    def spec(self) -> BlockSpec:
        return BlockSpec(self.categorical_sizes)

    @property
    def weight(self) -> float:
        return float(self.num_timesteps if self.multinomial_weight is None else self.multinomial_weight)

    @property
    def num_blocks(self) -> int:
        return len(self.categorical_sizes)

    @property
    def d_in(self) -> int:
        """Width of the denoiser input and output: numbers plus the one-hot blocks."""
        return self.num_numeric + self.spec.onehot_dim

    def make_schedule(self) -> Schedule:
        return make_schedule(self.num_timesteps, self.schedule)


class TableBatch(NamedTuple):
    """Rows of an encoded table: ``x_num`` float32 ``[n, num_numeric]``, ``x_cat`` int32 ``[n, B]``,
    ``y`` int32 ``[n]`` (class labels) or None."""

    x_num: jax.Array
    x_cat: jax.Array
    y: Optional[jax.Array] = None


def make_denoiser(config: DiffusionConfig, *, hidden_dims: Sequence[int] = DEFAULT_HIDDEN_DIMS,
                  dim_t: int = DEFAULT_DIM_T, dropout_rate: float = 0.0, matmul_dtype: Optional[str] = None,
                  rngs: nnx.Rngs) -> TabDDPMDenoiser:
    """The TabDDPM MLP sized for ``config`` (``matmul_dtype="bfloat16"``: mixed-precision matmuls)."""
    return TabDDPMDenoiser(config.d_in, config.d_in, num_classes=config.num_classes, hidden_dims=hidden_dims,
                           dim_t=dim_t, dropout_rate=dropout_rate, matmul_dtype=matmul_dtype, rngs=rngs)


def denoiser_input(config: DiffusionConfig, x_num_t: jax.Array, x_cat_t: jax.Array) -> jax.Array:
    """``[x_num_t | one-hot(x_cat_t)]``, float32 ``[*batch, d_in]``."""
    return jnp.concatenate([x_num_t, onehot(x_cat_t, config.spec.sizes, x_num_t.dtype)], axis=-1)


def forward_noise(config: DiffusionConfig, x_num, x_cat, t, key):
    """Draw the forward process at ``t``: returns ``(x_num_t, x_cat_t, noise)``."""
    k_num, k_cat = jax.random.split(key)
    schedule = config.make_schedule()
    noise = jax.random.normal(k_num, x_num.shape, x_num.dtype)
    x_num_t = gaussian.q_sample(schedule, x_num, t, noise)
    x_cat_t = multinomial.q_sample(k_cat, schedule, x_cat, t, config.spec) if config.num_blocks else x_cat
    return x_num_t, x_cat_t, noise


def loss_terms(config: DiffusionConfig, model_out, noise, x_cat, x_cat_t, t) -> tuple[jax.Array, jax.Array]:
    """Per-row Gaussian MSE and mean multinomial bound term (unweighted), each ``[*batch]``."""
    eps_pred, logits = model_out[..., : config.num_numeric], model_out[..., config.num_numeric:]
    loss_gauss = gaussian.eps_mse(eps_pred, noise)
    if config.num_blocks:
        terms = multinomial.vb_terms(config.make_schedule(), logits, x_cat, x_cat_t, t, config.spec)
        loss_multi = jnp.mean(terms, axis=-1)
    else:
        loss_multi = jnp.zeros_like(loss_gauss)
    return loss_gauss, loss_multi


def per_example_losses(params, graphdef, x_num, x_cat, y, t, key, config: DiffusionConfig,
                       *, with_terms: bool = False, time_table: bool = False):
    """Loss of each row of a batch for given timesteps: float32 ``[n]``.

    Args:
      params, graphdef: the split denoiser (:func:`tabdiff_jax.diffusion.denoiser.split_params`).
      x_num: float32 ``[n, num_numeric]``; x_cat: int32 ``[n, B]``; y: int32 ``[n]`` or None.
      t: int32 ``[n]`` in ``0 .. T - 1``.
      key: PRNG key for the forward noise (and dropout, if the denoiser has any).
      config: the diffusion config.
      with_terms: also return ``(loss_gauss, loss_multi)`` ``[n]`` each (``loss_multi`` unweighted).
      time_table: embed the ``T`` timesteps once when the batch has more rows than ``T``
        (:func:`tabdiff_jax.diffusion.denoiser.apply_denoiser`); the mean-loss gradient only, not
        per-example ones.
    """
    k_noise, k_drop = jax.random.split(key)
    x_num_t, x_cat_t, noise = forward_noise(config, x_num, x_cat, t, k_noise)
    out = apply_denoiser(graphdef, params, denoiser_input(config, x_num_t, x_cat_t), t, y, dropout_key=k_drop,
                         num_timesteps=config.num_timesteps if time_table else None)
    loss_gauss, loss_multi = loss_terms(config, out, noise, x_cat, x_cat_t, t)
    loss = loss_gauss + config.weight * loss_multi
    return (loss, (loss_gauss, loss_multi)) if with_terms else loss


def per_example_loss(params, graphdef, x_num, x_cat_codes, y, t, key, config: DiffusionConfig) -> jax.Array:
    """Loss of ONE row (for per-example gradients: ``jax.vmap(jax.grad(per_example_loss), ...)``).

    Args:
      x_num: float32 ``[num_numeric]``; x_cat_codes: int32 ``[B]``; y: int32 scalar or None;
      t: int32 scalar; key: this row's PRNG key. Other arguments as :func:`per_example_losses`.

    Returns:
      float32 scalar.
    """
    y1 = None if y is None else jnp.reshape(y, (1,))
    return per_example_losses(params, graphdef, x_num[None], x_cat_codes[None], y1, jnp.reshape(t, (1,)),
                              key, config)[0]


def make_private_loss(config: DiffusionConfig):
    """TabDDPM's loss in DP-SGD's form ``loss_fn(model, batch, keys) -> [B]`` (:mod:`tabdiff_jax.privacy.dpsgd`).

    Row ``i`` draws its timestep ``t_i ~ Uniform{0..T-1}`` and its forward noise from ``keys[i]``
    alone, so its loss depends on that row and key only: what per-example clipping needs, and what
    makes the book-keeping ("ghost") and ``vmap`` gradients agree. The denoiser then runs once on the
    whole ``batch`` (a :class:`TableBatch`) without dropout and without the shared time table, both
    of which would tie rows together.
    """

    def draw(key, x_num, x_cat):
        k_t, k_noise = jax.random.split(key)
        t = jax.random.randint(k_t, (1,), 0, config.num_timesteps)
        x_num_t, x_cat_t, noise = forward_noise(config, x_num[None], x_cat[None], t, k_noise)
        return t[0], x_num_t[0], x_cat_t[0], noise[0]

    def loss_fn(model, batch: TableBatch, keys):
        t, x_num_t, x_cat_t, noise = jax.vmap(draw)(keys, batch.x_num, batch.x_cat)
        out = model(denoiser_input(config, x_num_t, x_cat_t), t, batch.y)
        loss_gauss, loss_multi = loss_terms(config, out, noise, batch.x_cat, x_cat_t, t)
        return loss_gauss + config.weight * loss_multi

    return loss_fn


def batch_loss(params, graphdef, batch: TableBatch, key, config: DiffusionConfig):
    """Mean loss of a batch with ``t ~ Uniform{0..T-1}`` per row: ``(loss, metrics)``."""
    k_t, k_loss = jax.random.split(key)
    n = batch.x_num.shape[0]
    t = jax.random.randint(k_t, (n,), 0, config.num_timesteps)
    loss, (lg, lm) = per_example_losses(params, graphdef, batch.x_num, batch.x_cat, batch.y, t, k_loss, config,
                                        with_terms=True, time_table=True)
    loss = jnp.mean(loss)
    return loss, {"loss": loss, "loss_gauss": jnp.mean(lg), "loss_multi": jnp.mean(lm)}


def make_annealed_adamw(lr: float = 2e-3, weight_decay: float = 1e-4, num_steps: Optional[int] = None,
                        grad_clip: Optional[float] = None) -> optax.GradientTransformation:
    """AdamW; with ``num_steps``, the learning rate decays linearly to 0 (TabDDPM's annealing)."""
    lr = validate.positive_float("lr", lr)
    weight_decay = validate.positive_float("weight_decay", weight_decay, allow_zero=True)
    schedule = optax.linear_schedule(lr, 0.0, int(num_steps)) if num_steps else lr
    opt = optax.adamw(schedule, weight_decay=weight_decay)
    return optax.chain(optax.clip_by_global_norm(grad_clip), opt) if grad_clip else opt


def draw_batch(data: TableBatch, key, batch_size: int) -> TableBatch:
    """``batch_size`` rows drawn uniformly with replacement (on the device, no host round-trip)."""
    idx = jax.random.randint(key, (batch_size,), 0, data.x_num.shape[0])
    return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)


def make_train_step(graphdef, optimizer: optax.GradientTransformation, config: DiffusionConfig, *,
                    batch_size: Optional[int] = None, ema_decay: Optional[float] = None, mesh=None):
    """One compiled training step.

    With a ``mesh`` (:func:`tabdiff_jax.sharding.data_mesh`), the drawn batch is split by rows over
    its ``data`` axis (data parallelism; parameters replicated); ``None`` is single-device code.

    Returns:
      ``step(state, data, key) -> (state, metrics)``, a single ``jax.jit`` with the state donated.
      With ``batch_size``, ``data`` is the whole training set (a :class:`TableBatch` on the device)
      and the batch is drawn inside the step from ``key``; without, ``data`` is the batch itself.
      ``metrics``: loss, loss_gauss, loss_multi (unweighted), grad_norm (scalars).
    """

    def step(state: TrainState, data: TableBatch, key):
        k_batch, k_loss = jax.random.split(key)
        batch = draw_batch(data, k_batch, batch_size) if batch_size else data
        batch = constrain_rows(batch, mesh)
        grads, metrics = jax.grad(batch_loss, has_aux=True)(state.params, graphdef, batch, k_loss, config)
        metrics["grad_norm"] = global_norm(grads)
        return apply_gradients(state, grads, optimizer, ema_decay), metrics

    return jax.jit(step, donate_argnums=(0,))
