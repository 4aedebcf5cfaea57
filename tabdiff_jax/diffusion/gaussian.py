"""Gaussian diffusion for the numeric block: forward process, posterior, loss and reverse steps.

Every function takes a :class:`~tabdiff_jax.diffusion.schedules.Schedule`, integer timesteps ``t``
(0-indexed, see :mod:`tabdiff_jax.diffusion.schedules`) of shape ``[*batch]`` and arrays of shape
``[*batch, d]``: written for any leading batch shape, so one example (``t`` a scalar, ``x``
``[d]``) and a batch (``t`` ``[n]``, ``x`` ``[n, d]``) use the same code.

Example:
  >>> s = make_schedule(100)
  >>> x_t = q_sample(s, x0, t, noise)          # forward
  >>> loss = eps_mse(eps_pred, noise)           # training target
  >>> x_prev = p_sample(s, x_t, t, eps_pred, z) # one ancestral step
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tabdiff_jax.diffusion.schedules import Schedule, extract
from tabdiff_jax.errors import ConfigError

VARIANCES = ("fixedlarge", "fixedsmall")


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Draw ``x_t ~ q(x_t | x_0)`` given standard normal ``noise`` of the shape of ``x0``."""
    return extract(schedule.sqrt_alpha_bar, t, x0) * x0 + extract(schedule.sqrt_1m_alpha_bar, t, x0) * noise


def predict_x0_from_eps(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """Invert :func:`q_sample`: ``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
    return (x_t - extract(schedule.sqrt_1m_alpha_bar, t, x_t) * eps) / extract(schedule.sqrt_alpha_bar, t, x_t)


def q_posterior_mean_variance(
    schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``q(x_{t-1} | x_t, x_0)``: mean, variance and clipped log-variance (each ``[*batch, d]``).

    At ``t = 0`` the mean is ``x_0`` and the variance 0 (its log is clipped to step 1's, as DDPM).
    """
    mean = extract(schedule.posterior_mean_coef1, t, x_t) * x0 + extract(schedule.posterior_mean_coef2, t, x_t) * x_t
    var = jnp.broadcast_to(extract(schedule.posterior_variance, t, x_t), x_t.shape)
    log_var = jnp.broadcast_to(extract(schedule.posterior_log_variance_clipped, t, x_t), x_t.shape)
    return mean, var, log_var


def eps_mse(eps_pred: jax.Array, noise: jax.Array) -> jax.Array:
    """The eps-prediction loss: mean over the last axis of ``(eps_pred - noise)^2``, shape ``[*batch]``.

    With no numeric columns (``d = 0``) the loss is 0.
    """
    if eps_pred.shape[-1] == 0:
        return jnp.zeros(eps_pred.shape[:-1], eps_pred.dtype)
    return jnp.mean(jnp.square(eps_pred - noise), axis=-1)


def reverse_log_variance(schedule: Schedule, t: jax.Array, x: jax.Array, variance: str = "fixedlarge") -> jax.Array:
    """Log-variance of the model's reverse step ``p(x_{t-1} | x_t)``, broadcastable to ``x``.

    "fixedlarge" is TabDDPM's choice: ``beta_t`` for ``t >= 1`` and the posterior variance of step 1
    at ``t = 0``; "fixedsmall" is the clipped posterior variance.
    """
    if variance == "fixedlarge":
        log_var = jnp.concatenate([schedule.posterior_log_variance_clipped[1:2], schedule.log_1m_alphas[1:]])
    elif variance == "fixedsmall":
        log_var = schedule.posterior_log_variance_clipped
    else:
        raise ConfigError(f"variance must be one of {VARIANCES}, got {variance!r}")
    return extract(log_var, t, x)


def p_sample(
    schedule: Schedule,
    x_t: jax.Array,
    t: jax.Array,
    eps_pred: jax.Array,
    noise: jax.Array,
    variance: str = "fixedlarge",
    clip_x0: float | None = None,
) -> jax.Array:
    """One ancestral step ``x_{t-1} ~ p(x_{t-1} | x_t)`` from the predicted noise.

    Args:
      schedule: the schedule.
      x_t: current state ``[*batch, d]``.
      t: timesteps ``[*batch]`` (no noise is added where ``t == 0``).
      eps_pred: the denoiser's noise prediction ``[*batch, d]``.
      noise: standard normal ``[*batch, d]``.
      variance: "fixedlarge" (TabDDPM) or "fixedsmall".
      clip_x0: if given, clip the predicted ``x_0`` to ``[-clip_x0, clip_x0]``.

    Returns:
      ``x_{t-1}``, shape ``[*batch, d]``.
    """
    x0 = predict_x0_from_eps(schedule, x_t, t, eps_pred)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
    mean, _, _ = q_posterior_mean_variance(schedule, x0, x_t, t)
    log_var = reverse_log_variance(schedule, t, x_t, variance)
    nonzero = (t != 0).astype(x_t.dtype).reshape(t.shape + (1,) * (x_t.ndim - t.ndim))
    return mean + nonzero * jnp.exp(0.5 * log_var) * noise


def skip_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """An evenly spaced increasing subsequence of ``0 .. T - 1`` with ``num_steps`` entries, ending at ``T - 1``.

    Raises:
      ConfigError: ``num_steps`` not in ``1 .. T``.
    """
    if not 1 <= int(num_steps) <= int(num_timesteps):
        raise ConfigError(f"num_sample_steps must be in 1..{num_timesteps}, got {num_steps!r}")
    steps = np.round(np.linspace(0, num_timesteps - 1, int(num_steps))).astype(np.int32)
    return np.unique(steps)


def _alpha_bar_at(schedule: Schedule, s: jax.Array, x: jax.Array) -> jax.Array:
    """``alpha_bar[s]`` broadcast to ``x``, with ``alpha_bar[-1] = 1`` (the clean data)."""
    return jnp.where(s.reshape(s.shape + (1,) * (x.ndim - s.ndim)) < 0, 1.0,
                     extract(schedule.alpha_bar, jnp.maximum(s, 0), x)).astype(x.dtype)


def ddim_step(
    schedule: Schedule,
    x_t: jax.Array,
    t: jax.Array,
    s: jax.Array,
    eps_pred: jax.Array,
    noise: jax.Array,
    eta: float = 0.0,
    clip_x0: float | None = None,
) -> jax.Array:
    """DDIM (Song et al. 2021) jump from timestep ``t`` to an earlier ``s`` (``s = -1``: clean data).

    ``eta = 0`` is deterministic (``noise`` unused); ``eta = 1`` with ``s = t - 1`` has the variance
    of the ancestral step with the "fixedsmall" variance.

    Returns:
      ``x_s``, shape ``[*batch, d]``.
    """
    abar_t = extract(schedule.alpha_bar, t, x_t)
    abar_s = _alpha_bar_at(schedule, s, x_t)
    x0 = predict_x0_from_eps(schedule, x_t, t, eps_pred)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps_pred = (x_t - jnp.sqrt(abar_t) * x0) / jnp.sqrt(1.0 - abar_t)
    sigma = eta * jnp.sqrt((1.0 - abar_s) / (1.0 - abar_t)) * jnp.sqrt(jnp.maximum(1.0 - abar_t / abar_s, 0.0))
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_s - sigma**2, 0.0)) * eps_pred
    return jnp.sqrt(abar_s) * x0 + direction + sigma * noise
