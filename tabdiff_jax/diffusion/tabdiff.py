"""TabDiff (Shi et al., ICLR 2025): continuous-time mixed-type diffusion with learned per-column schedules.

Numbers follow a Gaussian process ``x_t = x_0 + sigma_j(t) eps`` with the power-mean (EDM) schedule
``sigma_j(t) = (s_min^(1/rho_j) + t (s_max^(1/rho_j) - s_min^(1/rho_j)))^rho_j``, one learned exponent
``rho_j = softplus(raw_j) + rho_offset`` per column. Each categorical block is masked (absorbing-state
diffusion: an extra ``[MASK]`` state, index ``K_b``) with probability ``1 - alpha_b(t)``, ``alpha_b(t) =
exp(-sigma_b(t))`` and the log-linear schedule ``sigma_b(t) = -log(1 - ((1 - e_max - e_min) t^k_b + e_min))``,
``k_b = softplus(raw_b) + k_offset`` learned per block.

One denoiser (:class:`~tabdiff_jax.diffusion.denoiser.TabDDPMDenoiser`, no label input) sees
``[c_in x_t | one-hot with mask]`` and the time (``1000 t`` by default; or, as the official code,
``log(sigma_ref(t)) / 4`` of the rho = 7 schedule: :attr:`TabDiffConfig.time_input`); with EDM preconditioning (``sigma_data``) it returns
``D(x_t) = c_skip x_t + c_out F`` for the numbers and one logit per real category (``backbone="transformer"``:
the column-tokenised :class:`~tabdiff_jax.diffusion.transformer.ColumnTransformer` instead, same input and
output). The loss of a row:

* numbers: ``mean_j (sigma^2 + s_d^2) / (sigma s_d)^2 (D_j - x_j)^2`` (EDM's weighting);
* categories: ``mean_b [x_b masked] sigma_b'(t) / expm1(sigma_b(t)) (-log p(x_b))``, the masked-diffusion
  ELBO (zero for unmasked blocks), ``t ~ U(0, 1)`` per row.

With ``cond_prob > 0`` (classifier-free guidance's training), a row's ``guided_block`` (the classification
target) is given clean with that probability, from the row's key (:func:`_row_given`): never masked, so its
ELBO term is zero, and the network learns the other columns given it at every noise level.

The schedules learn through the loss: ``rho`` through ``sigma`` (the noisy input, the preconditioning and
the weight), ``k`` through the ELBO weight and the masks, drawn by Gumbel-max with a straight-through
softmax (temperature 0.01; the forward values are exact 0/1 masks) as the official ``q_xt(..., 'soft')``.

Example:
  >>> config = TabDiffConfig(num_numeric=3, categorical_sizes=(4, 2))
  >>> net = make_network(config, rngs=nnx.Rngs(0)); graphdef, params = split_params(net)
  >>> losses = row_losses(net, x_num, x_cat, jax.random.split(key, n), config)   # [n]
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tabdiff_jax import validate
from tabdiff_jax.blocks import block_index, block_log_softmax, onehot
from tabdiff_jax.diffusion.denoiser import DEFAULT_DIM_T, DEFAULT_HIDDEN_DIMS, TabDDPMDenoiser
from tabdiff_jax.diffusion.tabddpm import TableBatch, draw_batch  # noqa: F401  (re-exported)
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.sharding import constrain_rows
from tabdiff_jax.state import TrainState, apply_gradients, global_norm
from tabdiff_jax.table import TableLayout

REF_RHO = 7.0  # the fixed schedule whose noise level conditions the network (official Precond)
ST_TAU = 0.01  # temperature of the straight-through mask softmax
T_FLOOR = 1e-6  # training times are drawn in [T_FLOOR, 1): t^k stays differentiable in k
TIME_INPUTS, BACKBONES = ("t", "log_sigma"), ("mlp", "transformer")  # BACKBONES: the denoiser of TabDiffNetwork


@dataclasses.dataclass(frozen=True)
class TabDiffConfig:
    """Static description of a TabDiff model (hashable: a ``jax.jit`` static argument).

    Attributes:
      num_numeric: numeric columns (a regression target is one of them).
      categorical_sizes: categories of each block (a classification target is one of them), without the mask.
      sigma_min, sigma_max: end points of the numbers' noise levels (EDM's 0.002 and 80).
      rho_init, rho_offset: ``rho = softplus(raw) + rho_offset``, ``raw`` starting at ``rho_init``.
      eps_min, eps_max: the masking probability runs from ``eps_min`` (t = 0) to ``1 - eps_max`` (t = 1).
      k_init, k_offset: ``k = softplus(raw) + k_offset``, ``raw`` starting at ``k_init``.
      sigma_data: EDM preconditioning's data scale (1: quantile-normal numbers).
      learn_schedule: train ``rho`` and ``k`` (False: held at their initial values).
      cat_weight: weight of the categorical loss (the numeric one's is an argument: it may be annealed).
      time_input: what the network's sinusoidal time embedding reads: "t" (``1000 t``, the range of
        TabDDPM's timesteps) or "log_sigma" (``log(sigma_ref(t)) / 4``, the official EDM conditioning).
      guided_block: the categorical block classifier-free guidance conditions on (the classification
        target), or None.
      cond_prob: in training, each row's ``guided_block`` is given clean (never masked, its loss term
        dropped) with this probability (the row's own key), so the network also learns p(rest | block).
    """

    num_numeric: int
    categorical_sizes: tuple[int, ...] = ()
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho_init: float = 7.0
    rho_offset: float = 5.0
    eps_min: float = 1e-5
    eps_max: float = 1e-3
    k_init: float = -6.0
    k_offset: float = 1.0
    sigma_data: float = 1.0
    learn_schedule: bool = True
    cat_weight: float = 1.0
    time_input: str = "t"
    guided_block: Optional[int] = None
    cond_prob: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "categorical_sizes", tuple(int(k) for k in self.categorical_sizes))
        if self.num_numeric < 0 or self.num_numeric + len(self.categorical_sizes) == 0:
            raise ConfigError("the table needs at least one numeric column or categorical block")
        if not 0.0 < float(self.sigma_min) < float(self.sigma_max):
            raise ConfigError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not (0.0 <= self.eps_min and 0.0 < self.eps_max and self.eps_min + self.eps_max < 1.0):
            raise ConfigError(f"need eps_min >= 0, eps_max > 0, eps_min + eps_max < 1, got {self.eps_min}, {self.eps_max}")
        if self.time_input not in TIME_INPUTS:
            raise ConfigError(f"time_input must be one of {TIME_INPUTS}, got {self.time_input!r}")
        if self.rho_offset <= 0 or self.k_offset <= 0 or self.sigma_data <= 0:
            raise ConfigError("rho_offset, k_offset and sigma_data must be positive")
        if not 0.0 <= float(self.cond_prob) < 1.0:
            raise ConfigError(f"cond_prob must be in [0, 1), got {self.cond_prob}")
        if self.guided_block is not None and not 0 <= int(self.guided_block) < self.num_blocks:
            raise ConfigError(f"guided_block {self.guided_block} is not one of the {self.num_blocks} categorical blocks")

    @classmethod
    def from_layout(cls, layout: TableLayout, **kwargs) -> "TabDiffConfig":
        """Every column of ``layout`` is modelled, the target included."""
        return cls(num_numeric=layout.num_numeric, categorical_sizes=layout.categorical_sizes, **kwargs)

    @property
    def num_blocks(self) -> int:
        return len(self.categorical_sizes)

    @property
    def masked_sizes(self) -> tuple[int, ...]:
        """Block sizes with the ``[MASK]`` state (the last index of each block)."""
        return tuple(k + 1 for k in self.categorical_sizes)

    @property
    def d_in(self) -> int:
        return self.num_numeric + sum(self.masked_sizes)

    @property
    def d_out(self) -> int:
        return self.num_numeric + sum(self.categorical_sizes)


# ------------------------------------------------------------------------------------ schedules
def rho_of(raw: jax.Array, config: TabDiffConfig) -> jax.Array:
    """Per-column exponent ``softplus(raw) + rho_offset``."""
    return jax.nn.softplus(raw) + config.rho_offset


def k_of(raw: jax.Array, config: TabDiffConfig) -> jax.Array:
    """Per-block exponent ``softplus(raw) + k_offset``."""
    return jax.nn.softplus(raw) + config.k_offset


def power_mean_sigma(t: jax.Array, rho: jax.Array, sigma_min: float, sigma_max: float) -> jax.Array:
    """``(s_min^(1/rho) + t (s_max^(1/rho) - s_min^(1/rho)))^rho``; ``t [..., 1]`` with ``rho [d]`` -> ``[..., d]``."""
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (lo + t * (hi - lo)) ** rho


def power_mean_inverse(sigma: jax.Array, rho: jax.Array, sigma_min: float, sigma_max: float) -> jax.Array:
    """The ``t`` at which :func:`power_mean_sigma` equals ``sigma``."""
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (sigma ** (1.0 / rho) - lo) / (hi - lo)


def log_linear_sigma(t: jax.Array, k: jax.Array, eps_min: float, eps_max: float) -> jax.Array:
    """Total masking noise ``-log(1 - ((1 - e_max - e_min) t^k + e_min))`` (``1 - exp(-sigma)`` is the mask rate)."""
    return -jnp.log1p(-((1.0 - eps_max - eps_min) * t ** k + eps_min))


def log_linear_rate(t: jax.Array, k: jax.Array, eps_min: float, eps_max: float) -> jax.Array:
    """``d sigma / dt = (1 - e_max - e_min) k t^(k-1) / (1 - ((1 - e_max - e_min) t^k + e_min))``."""
    c = 1.0 - eps_max - eps_min
    return c * k * t ** (k - 1.0) / (1.0 - (c * t ** k + eps_min))


def reference_sigma(t: jax.Array, config: TabDiffConfig) -> jax.Array:
    """The rho = 7 power-mean noise level of ``t`` (the network's time input is ``log(.) / 4`` of it)."""
    return power_mean_sigma(t, jnp.float32(REF_RHO), config.sigma_min, config.sigma_max)


def time_input(t: jax.Array, config: TabDiffConfig) -> jax.Array:
    """The network's time input of times ``t`` (see :attr:`TabDiffConfig.time_input`)."""
    if config.time_input == "log_sigma":
        return jnp.log(reference_sigma(t, config)) / 4.0
    return 1000.0 * t


# -------------------------------------------------------------------------------------- network
class TabDiffNetwork(nnx.Module):
    """The joint denoiser plus the learned schedule exponents (``rho_raw [d]``, ``k_raw [B]``).

    ``backbone``: "mlp" (TabDDPM's MLP, ``hidden_dims``; ``numeric_embedding``: None or the options of the
    numbers' :class:`~tabdiff_jax.diffusion.denoiser.PeriodicEmbedding`) or "transformer" (:class:`~tabdiff_jax.
    diffusion.transformer.ColumnTransformer`, ``transformer`` its options: ``d_token``, ``layers``, ``heads``)."""

    def __init__(self, config: TabDiffConfig, *, hidden_dims: Sequence[int] = DEFAULT_HIDDEN_DIMS,
                 dim_t: int = DEFAULT_DIM_T, dropout_rate: float = 0.0, matmul_dtype: Optional[str] = None,
                 backbone: str = "mlp", transformer: Optional[dict] = None, numeric_embedding=None, rngs: nnx.Rngs):
        validate.in_choices("backbone", backbone, BACKBONES)
        if backbone == "transformer":  # (it embeds each number itself: numeric_embedding is the MLP's)
            from tabdiff_jax.diffusion.transformer import ColumnTransformer

            self.denoiser = ColumnTransformer(config.num_numeric, config.masked_sizes, dim_t=dim_t,
                                              dropout_rate=dropout_rate, matmul_dtype=matmul_dtype, rngs=rngs,
                                              **(transformer or {}))
        else:
            embed = dict(numeric_embedding, count=config.num_numeric) if numeric_embedding and config.num_numeric else None
            self.denoiser = TabDDPMDenoiser(config.d_in, config.d_out, hidden_dims=hidden_dims, dim_t=dim_t, rngs=rngs,
                                            dropout_rate=dropout_rate, matmul_dtype=matmul_dtype, numeric_embedding=embed)
        self.rho_raw = nnx.Param(jnp.full((config.num_numeric,), config.rho_init, jnp.float32))
        self.k_raw = nnx.Param(jnp.full((config.num_blocks,), config.k_init, jnp.float32))

    def exponents(self, config: TabDiffConfig) -> tuple[jax.Array, jax.Array]:
        """``(rho [d], k [B])`` (gradients stopped unless ``config.learn_schedule``)."""
        rho, k = rho_of(self.rho_raw[...], config), k_of(self.k_raw[...], config)
        if not config.learn_schedule:
            rho, k = jax.lax.stop_gradient(rho), jax.lax.stop_gradient(k)
        return rho, k


def make_network(config: TabDiffConfig, **kwargs) -> TabDiffNetwork:
    """The network sized for ``config`` (keyword options of :class:`TabDiffNetwork`)."""
    return TabDiffNetwork(config, **kwargs)


def precondition(sigma: jax.Array, sigma_data: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """EDM's ``(c_in, c_skip, c_out)`` for noise levels ``sigma``."""
    s2, d2 = sigma ** 2, sigma_data ** 2
    return jax.lax.rsqrt(s2 + d2), d2 / (s2 + d2), sigma * sigma_data * jax.lax.rsqrt(s2 + d2)


def masked_onehot(codes: jax.Array, config: TabDiffConfig) -> jax.Array:
    """Codes ``[..., B]`` in ``0..K_b`` (``K_b``: masked) -> one-hot blocks of width ``K_b + 1``."""
    return onehot(codes, config.masked_sizes)


def split_output(out: jax.Array, config: TabDiffConfig) -> tuple[jax.Array, jax.Array]:
    """Network output -> ``(F [.., d], logits [.., sum K_b])``."""
    return out[..., : config.num_numeric], out[..., config.num_numeric:]


def denoise(net: TabDiffNetwork, config: TabDiffConfig, x_num_t, cat_in, t, sigma, *, dropout_key=None,
            time_rows=None):
    """``(D(x_t) [n, d], logits [n, sum K_b])`` for noisy numbers, masked one-hots ``cat_in``, times ``t [n]``
    (with ``time_rows [n]``: ``t`` holds ``K`` shared times, row ``i`` at ``t[time_rows[i]]``) and per-column
    noise levels ``sigma [n, d]``."""
    c_in, c_skip, c_out = precondition(sigma, config.sigma_data)
    extra = {} if time_rows is None else {"time_rows": time_rows}
    out = net.denoiser(jnp.concatenate([c_in * x_num_t, cat_in], axis=-1), time_input(t, config),
                       dropout_key=dropout_key, **extra)
    f, logits = split_output(out, config)
    return c_skip * x_num_t + c_out * f, logits


# --------------------------------------------------------------------------------- forward, loss
def straight_through_mask(move_chance: jax.Array, gumbel: jax.Array) -> jax.Array:
    """Bernoulli(``move_chance``) masks by Gumbel-max (exact 0/1 values) with the gradient of the
    tempered softmax (temperature :data:`ST_TAU`); ``gumbel [..., 2]`` for (keep, mask)."""
    logp = jnp.stack([jnp.log1p(-move_chance), jnp.log(move_chance)], axis=-1) + gumbel
    soft = jax.nn.softmax(logp / ST_TAU, axis=-1)[..., 1]
    hard = (logp[..., 1] > logp[..., 0]).astype(soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))  # exactly ``hard`` in the forward pass


COND_DRAW = 0x434F4E44  # fold_in constant of a row's "guided block given" draw ("COND")


def _row_draws(config: TabDiffConfig, key):
    """One row's randomness: ``t`` (scalar), the numbers' noise ``[d]``, Gumbel noise ``[B, 2]``."""
    k_t, k_eps, k_g = jax.random.split(key, 3)
    t = jax.random.uniform(k_t, (), minval=T_FLOOR, maxval=1.0)
    return t, jax.random.normal(k_eps, (config.num_numeric,)), jax.random.gumbel(k_g, (config.num_blocks, 2))


def _row_given(config: TabDiffConfig, key):
    """Whether a row's guided block is given clean (probability ``cond_prob``), from its own key: a draw
    separate from :func:`_row_draws`, whose values do not change with ``cond_prob``."""
    return jax.random.uniform(jax.random.fold_in(key, COND_DRAW), ()) < config.cond_prob


def stratified_times(key, strata: int) -> jax.Array:
    """``K = strata`` times in ``[T_FLOOR, 1)``, one uniform draw in each of ``K`` equal strata."""
    u = jax.random.uniform(key, (int(strata),))
    return T_FLOOR + (1.0 - T_FLOOR) * (jnp.arange(int(strata), dtype=jnp.float32) + u) / int(strata)


def row_losses(net: TabDiffNetwork, x_num, x_cat, keys, config: TabDiffConfig, num_weight=1.0, *,
               with_terms: bool = False, times: Optional[jax.Array] = None, shared_times: Optional[jax.Array] = None):
    """Loss of each row ``[n]``; row ``i`` depends only on row ``i`` and ``keys[i]`` (DP-SGD's contract).

    Args:
      net: the network (``nnx.merge(graphdef, params)``).
      x_num: float32 ``[n, d]``; x_cat: int32 ``[n, B]`` (codes ``0..K_b - 1``).
      keys: one PRNG key per row (its time, noise, masks and dropout).
      num_weight: weight of the numeric term (traced: the trainer may anneal it).
      with_terms: also return the unweighted ``(numeric, categorical)`` terms ``[n]`` each.
      times: fixed times ``[n]`` instead of the drawn ones (tests).
      shared_times: ``[K]`` times instead of the drawn ones, row ``i`` at ``shared_times[i % K]`` (the time
        MLP runs on ``K`` rows; not for DP-SGD's per-example losses, whose rows draw their own).
    """
    t, eps, gumbel = jax.vmap(lambda k: _row_draws(config, k))(keys)
    t = t if times is None else jnp.asarray(times, jnp.float32)
    time_rows = None
    if shared_times is not None:
        time_rows = jnp.arange(x_num.shape[0]) % shared_times.shape[0]
        t = shared_times[time_rows]
    drop_key = jax.random.fold_in(keys[0], 7) if net.denoiser.dropout_rate > 0 else None
    rho, k = net.exponents(config)
    sigma = power_mean_sigma(t[:, None], rho, config.sigma_min, config.sigma_max)  # [n, d]
    x_num_t = x_num + eps * sigma
    if config.num_blocks:
        tk = t[:, None]
        sig_cat = log_linear_sigma(tk, k, config.eps_min, config.eps_max)  # [n, B]
        rate = log_linear_rate(tk, k, config.eps_min, config.eps_max)
        masked = straight_through_mask(-jnp.expm1(-sig_cat), gumbel)  # [n, B], exact 0 / 1 values
        if config.cond_prob > 0 and config.guided_block is not None:  # given clean: never masked, no loss term
            given = jax.vmap(lambda k: _row_given(config, k))(keys)  # [n]
            keep = jnp.asarray(np.arange(config.num_blocks) == config.guided_block)[None, :] & given[:, None]
            masked = jnp.where(keep, 0.0, masked)
        mask_code = jnp.asarray(config.categorical_sizes, jnp.int32)
        keep_oh = masked_onehot(x_cat, config)
        mask_oh = masked_onehot(jnp.broadcast_to(mask_code, x_cat.shape), config)
        spread = masked[:, block_index(config.masked_sizes)]  # each block's mask over its one-hot columns
        cat_in = keep_oh * (1.0 - spread) + mask_oh * spread
    else:
        cat_in = jnp.zeros((x_num.shape[0], 0), jnp.float32)
    d_x, logits = denoise(net, config, x_num_t, cat_in, t if time_rows is None else shared_times, sigma,
                          dropout_key=drop_key, time_rows=time_rows)
    if config.num_numeric:
        weight = (sigma ** 2 + config.sigma_data ** 2) / (sigma * config.sigma_data) ** 2
        loss_num = jnp.mean(weight * (d_x - x_num) ** 2, axis=-1)
    else:
        loss_num = jnp.zeros(x_num.shape[:1], jnp.float32)
    if config.num_blocks:
        logp = block_log_softmax(logits, config.categorical_sizes)
        nll = -_block_pick(logp, x_cat, config.categorical_sizes)  # [n, B]
        elbo_w = rate / jnp.expm1(sig_cat)
        loss_cat = jnp.mean(jax.lax.stop_gradient(masked) * elbo_w * nll, axis=-1)
    else:
        loss_cat = jnp.zeros_like(loss_num)
    loss = num_weight * loss_num + config.cat_weight * loss_cat
    return (loss, (loss_num, loss_cat)) if with_terms else loss


def _block_pick(values: jax.Array, codes: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """``values[..., offset_b + codes_b]`` of each block: ``[..., B]``."""
    member = jnp.asarray(np.eye(len(sizes), dtype=np.float32)[block_index(sizes)])  # [sum K, B]
    return (onehot(codes, sizes, values.dtype) * values) @ member


def per_example_loss(params, graphdef, config: TabDiffConfig, batch_row, key) -> jax.Array:
    """Loss of ONE row ``(x_num [d], x_cat [B])`` from its ``key`` (``jax.vmap(jax.grad(...))``-able)."""
    net = nnx.merge(graphdef, params)
    x_num, x_cat = batch_row[0], batch_row[1]
    return row_losses(net, x_num[None], x_cat[None], key[None], config)[0]


def dpsgd_loss_fn(config: TabDiffConfig):
    """``loss_fn(model, batch, keys) -> [B]`` in :mod:`tabdiff_jax.privacy.dpsgd`'s form (batch: a :class:`TableBatch`)."""
    return lambda net, batch, keys: row_losses(net, batch.x_num, batch.x_cat, keys, config)


SHARED_TIMES_DRAW = 0x54494D45  # fold_in constant of a batch's shared times ("TIME")


def batch_loss(params, graphdef, batch: TableBatch, key, config: TabDiffConfig, num_weight=1.0, time_strata: int = 0):
    """Mean loss of a batch: ``(loss, metrics)``; ``time_strata = K > 0``: the rows share ``K`` stratified times
    (each row's still uniform on ``[T_FLOOR, 1)``: the same loss in expectation), else each row draws its own."""
    net = nnx.merge(graphdef, params)
    keys = jax.random.split(key, batch.x_num.shape[0])
    shared = stratified_times(jax.random.fold_in(key, SHARED_TIMES_DRAW), time_strata) if time_strata else None
    loss, (ln, lc) = row_losses(net, batch.x_num, batch.x_cat, keys, config, num_weight, with_terms=True,
                                shared_times=shared)
    loss = jnp.mean(loss)
    return loss, {"loss": loss, "loss_num": jnp.mean(ln), "loss_cat": jnp.mean(lc)}


def make_train_step(graphdef, optimizer: optax.GradientTransformation, config: TabDiffConfig, *,
                    batch_size: Optional[int] = None, ema_decay: Optional[float] = None,
                    num_steps: Optional[int] = None, anneal_num_weight: bool = True, mesh=None, time_strata: int = 0):
    """One compiled step ``step(state, data, key) -> (state, metrics)`` (state donated); ``time_strata``: see
    :func:`batch_loss`.

    ``data`` is the whole training set when ``batch_size`` is given (the batch is drawn inside), else the
    batch. With ``anneal_num_weight`` and ``num_steps`` the numeric loss weight falls linearly from 1 to 0
    over the run (the official ``closs_weight_schedule = "anneal"``). With a ``mesh``, rows are split over
    its ``data`` axis.
    """

    def step(state: TrainState, data: TableBatch, key):
        k_batch, k_loss = jax.random.split(key)
        batch = draw_batch(data, k_batch, batch_size) if batch_size else data
        batch = constrain_rows(batch, mesh)
        w = 1.0
        if anneal_num_weight and num_steps:
            w = 1.0 - state.step.astype(jnp.float32) / float(num_steps)
        grads, metrics = jax.grad(batch_loss, has_aux=True)(state.params, graphdef, batch, k_loss, config, w,
                                                            time_strata)
        metrics["grad_norm"] = global_norm(grads)
        return apply_gradients(state, grads, optimizer, ema_decay), metrics

    return jax.jit(step, donate_argnums=(0,))
