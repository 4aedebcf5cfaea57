"""Noise schedules: betas and every quantity derived from them, as a NamedTuple of arrays.

Timesteps are 0-indexed as in the TabDDPM reference: ``t = 0 .. T - 1``, and index ``t`` of every
array describes the transition *into* ``x_{t+1}`` in the paper's 1-indexed notation, so
``alpha_bar[t] = prod_{s <= t} (1 - betas[s])`` and ``q(x_t | x_0)`` uses ``alpha_bar[t]``.

The quantities are computed in float64 with NumPy (exact cumulative sums of logs, a stable
``log(1 - exp(a))``) and stored as float32 JAX arrays.

Example:
  >>> s = make_schedule(1000, "cosine")
  >>> s.alpha_bar.shape
  (1000,)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError

SCHEDULES = ("cosine", "linear")


class Schedule(NamedTuple):
    """Per-timestep constants of a variance-preserving diffusion; every field is float32 ``[T]``.

    Attributes:
      betas: ``beta_t``, the variance added at step ``t``.
      alphas: ``1 - beta_t``.
      alpha_bar: ``prod_{s<=t} alpha_s``.
      alpha_bar_prev: ``alpha_bar[t - 1]`` with ``alpha_bar_prev[0] = 1``.
      log_alphas: ``log alpha_t``.
      log_1m_alphas: ``log(1 - alpha_t) = log beta_t``.
      log_alpha_bar: ``log alpha_bar_t``.
      log_1m_alpha_bar: ``log(1 - alpha_bar_t)``.
      sqrt_alpha_bar: ``sqrt(alpha_bar_t)``.
      sqrt_1m_alpha_bar: ``sqrt(1 - alpha_bar_t)``.
      posterior_variance: variance of ``q(x_{t-1} | x_t, x_0)`` (0 at ``t = 0``).
      posterior_log_variance_clipped: its log, with the ``t = 0`` entry replaced by ``t = 1``'s (DDPM).
      posterior_mean_coef1: coefficient of ``x_0`` in the posterior mean.
      posterior_mean_coef2: coefficient of ``x_t`` in the posterior mean.
    """

    betas: jax.Array
    alphas: jax.Array
    alpha_bar: jax.Array
    alpha_bar_prev: jax.Array
    log_alphas: jax.Array
    log_1m_alphas: jax.Array
    log_alpha_bar: jax.Array
    log_1m_alpha_bar: jax.Array
    sqrt_alpha_bar: jax.Array
    sqrt_1m_alpha_bar: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])


def _check_steps(num_timesteps) -> int:
    return validate.positive_int("num_timesteps", num_timesteps)


def cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's continuous ``alpha_bar(u)`` for ``u = t / T`` in [0, 1] (float64)."""
    u = np.asarray(u, np.float64)
    f = lambda v: np.cos((v + s) / (1.0 + s) * np.pi / 2.0) ** 2
    return f(u) / f(0.0)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule: ``beta_t = min(1 - abar((t+1)/T) / abar(t/T), max_beta)``, float64 ``[T]``."""
    T = _check_steps(num_timesteps)
    u = np.arange(T + 1, dtype=np.float64) / T
    abar = cosine_alpha_bar(u, s)
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al.'s linear schedule, rescaled by ``1000 / T`` so any ``T`` covers the same range."""
    T = _check_steps(num_timesteps)
    scale = 1000.0 / T
    return np.linspace(scale * beta_start, scale * beta_end, T, dtype=np.float64)


def tablediffusion_betas(num_timesteps: int) -> np.ndarray:
    """TableDiffusion's (Truda 2023) noise levels ``beta_t = (1 - cos(pi t / T)) / 2 + 0.1``.

    ``t = 0 .. T - 1`` as in the reference code's ``range(T)``: float64 ``[T]``, increasing from 0.1.
    These are noise *scales* of TableDiffusion's few-step process, not a variance-preserving
    schedule; use them directly rather than through :func:`make_schedule`.
    """
    T = _check_steps(num_timesteps)
    t = np.arange(T, dtype=np.float64)
    return (1.0 - np.cos(np.pi * t / T)) / 2.0 + 0.1


def log1mexp_np(a: np.ndarray) -> np.ndarray:
    """``log(1 - exp(a))`` for ``a <= 0`` in float64, stable at both ends (Maechler 2012)."""
    a = np.asarray(a, np.float64)
    with np.errstate(divide="ignore"):
        return np.where(a > -np.log(2.0), np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


def schedule_from_betas(betas) -> Schedule:
    """Every derived quantity of a beta sequence (float64 maths, float32 result)."""
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or betas.size == 0:
        raise ConfigError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not np.all((betas > 0) & (betas < 1)):
        raise ConfigError("betas must lie strictly between 0 and 1")
    alphas = 1.0 - betas
    log_alphas = np.log(alphas)
    log_alpha_bar = np.cumsum(log_alphas)
    alpha_bar = np.exp(log_alpha_bar)
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    # posterior_variance[0] is 0; DDPM clips its log with the next entry (log of a single step).
    clipped = np.concatenate([posterior_variance[1:2], posterior_variance[1:]]) if betas.size > 1 else betas
    arrays = dict(
        betas=betas,
        alphas=alphas,
        alpha_bar=alpha_bar,
        alpha_bar_prev=alpha_bar_prev,
        log_alphas=log_alphas,
        log_1m_alphas=np.log(betas),
        log_alpha_bar=log_alpha_bar,
        log_1m_alpha_bar=log1mexp_np(log_alpha_bar),
        sqrt_alpha_bar=np.sqrt(alpha_bar),
        sqrt_1m_alpha_bar=np.sqrt(1.0 - alpha_bar),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.log(clipped),
        posterior_mean_coef1=betas * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
        posterior_mean_coef2=(1.0 - alpha_bar_prev) * np.sqrt(alphas) / (1.0 - alpha_bar),
    )
    with jax.ensure_compile_time_eval():  # concrete arrays even when first built inside a jit trace
        return Schedule(**{k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()})


@functools.lru_cache(maxsize=32)
def _cached_schedule(num_timesteps: int, kind: str) -> Schedule:
    betas = cosine_betas(num_timesteps) if kind == "cosine" else linear_betas(num_timesteps)
    return schedule_from_betas(betas)


def make_schedule(num_timesteps: int = 1000, kind: str = "cosine") -> Schedule:
    """The schedule of ``kind`` ("cosine" or "linear") with ``num_timesteps`` steps (cached).

    Raises:
      ConfigError: unknown ``kind`` or a non-positive ``num_timesteps``.
    """
    if kind not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    return _cached_schedule(_check_steps(num_timesteps), kind)


def extract(values: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """``values[t]`` shaped to broadcast against ``x``: ``t`` ``[*batch]``, ``x`` ``[*batch, ...]``."""
    v = jnp.take(values, t, axis=0)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)).astype(x.dtype)
