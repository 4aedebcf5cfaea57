"""Multinomial diffusion (Hoogeboom et al. 2021) for categorical blocks, entirely in log space.

Each categorical block ``b`` has its own number of categories ``K_b``; the forward process is
``q(x_t | x_0) = Cat(alpha_bar_t x_0 + (1 - alpha_bar_t) / K_b)``. Distributions over all blocks
are *flat* log-probability vectors ``[*batch, D]`` (``D = sum K_b``), in the layout of the
denoiser's one-hot input and logit output (:func:`tabdiff_jax.table.to_onehot`); samples are
integer codes ``[*batch, B]``. Per-block reductions and broadcasts work on the blocks' static
slices of the flat vector (unrolled when the function is traced: no gather, which XLA runs slowly
on CPUs), and the element-wise work is on ``D`` entries, not ``B * K_max``.

Impossible categories have log-probability :data:`NEG`, a large finite negative number whose
``exp`` is exactly 0 in float32: unlike ``-inf`` it keeps ``0 * (NEG - NEG)`` and the gradients
free of NaN. ``log(1 - exp(a))`` goes through the stable :func:`log1mexp` (the reference
implementation's NaNs with many categories came from ``log(x + 1e-40)``).

Timesteps are 0-indexed as in :mod:`tabdiff_jax.diffusion.schedules`.

Example:
  >>> spec = BlockSpec((3, 5))
  >>> codes_t = q_sample(key, schedule, codes0, t, spec)                  # forward, codes [n, 2]
  >>> terms = vb_terms(schedule, logits, codes0, codes_t, t, spec)       # [n, 2] KL / NLL per block
  >>> codes_prev = sample(key, p_posterior(schedule, logits, codes_t, t, spec), spec)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tabdiff_jax.diffusion.schedules import Schedule, extract
from tabdiff_jax.errors import ConfigError

NEG = -1e4
"""Log-probability of an impossible category; ``exp(NEG) == 0`` in float32."""


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """Static description of the categorical blocks: hashable, so jitted functions specialise on it.

    Attributes:
      sizes: number of categories ``K_b`` of each block.
    """

    sizes: tuple[int, ...]

    def __post_init__(self):
        sizes = tuple(int(k) for k in self.sizes)
        if any(k < 1 for k in sizes):
            raise ConfigError(f"categorical_sizes must be >= 1, got {self.sizes}")
        object.__setattr__(self, "sizes", sizes)

    @property
    def num_blocks(self) -> int:
        return len(self.sizes)

    @property
    def k_max(self) -> int:
        return max(self.sizes, default=1)

    @property
    def onehot_dim(self) -> int:
        return int(sum(self.sizes))

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """Start of each block in the flat vector, int32 ``[B]``."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int32) if self.sizes else np.zeros(0, np.int32)

    @functools.cached_property
    def position_block(self) -> np.ndarray:
        """Block of each flat position, int32 ``[D]``."""
        return np.repeat(np.arange(self.num_blocks), self.sizes).astype(np.int32)

    @functools.cached_property
    def log_sizes(self) -> np.ndarray:
        """``log K_b`` per block, float32 ``[B]``."""
        return np.log(np.asarray(self.sizes, np.float64)).astype(np.float32)

    @functools.cached_property
    def log_sizes_flat(self) -> np.ndarray:
        """``log K_b`` at every flat position of block ``b``, float32 ``[D]``."""
        return self.log_sizes[self.position_block]

    @functools.cached_property
    def gather_index(self) -> np.ndarray:
        """Flat position of slot ``[b, k]`` of the padded view (clamped inside the block), int32 ``[B, K_max]``."""
        k = np.minimum(np.arange(self.k_max)[None, :], np.asarray(self.sizes).reshape(-1, 1) - 1)
        return (self.offsets.reshape(-1, 1) + k).astype(np.int32)

    @functools.cached_property
    def mask(self) -> np.ndarray:
        """True on the real slots of the padded view, bool ``[B, K_max]``."""
        return np.arange(self.k_max)[None, :] < np.asarray(self.sizes, np.int32).reshape(-1, 1)


# ---------------------------------------------------------------------------------- block algebra
def log1mexp(a: jax.Array) -> jax.Array:
    """``log(1 - exp(a))`` for ``a < 0``, stable everywhere, with finite gradients (Maechler 2012)."""
    near_zero = a > -jnp.log(2.0).astype(a.dtype)
    a1 = jnp.where(near_zero, a, -1.0)  # each branch only sees arguments where it is stable
    a2 = jnp.where(near_zero, -1.0, a)
    return jnp.where(near_zero, jnp.log(-jnp.expm1(a1)), jnp.log1p(-jnp.exp(a2)))


def _slices(spec: BlockSpec):
    return zip(spec.offsets.tolist(), spec.sizes)


def expand(per_block: jax.Array, spec: BlockSpec) -> jax.Array:
    """``[*batch, B]`` -> ``[*batch, D]``: each block's value at each of its positions."""
    if not spec.sizes:
        return jnp.zeros(per_block.shape[:-1] + (0,), per_block.dtype)
    return jnp.concatenate([jnp.broadcast_to(per_block[..., b:b + 1], per_block.shape[:-1] + (k,))
                            for b, k in enumerate(spec.sizes)], axis=-1)


def to_padded(flat: jax.Array, spec: BlockSpec, fill: float = NEG) -> jax.Array:
    """Flat ``[*batch, D]`` -> padded view ``[*batch, B, K_max]`` (``fill`` in the padding)."""
    return jnp.where(spec.mask, jnp.take(flat, spec.gather_index, axis=-1), jnp.asarray(fill, flat.dtype))


def _per_block(reduce, x: jax.Array, spec: BlockSpec) -> jax.Array:
    if not spec.sizes:
        return jnp.zeros(x.shape[:-1] + (0,), x.dtype)
    return jnp.stack([reduce(x[..., start:start + k], axis=-1) for start, k in _slices(spec)], axis=-1)


def block_max(x: jax.Array, spec: BlockSpec) -> jax.Array:
    """Per-block maximum ``[*batch, D] -> [*batch, B]``."""
    return _per_block(jnp.max, x, spec)


def block_sum(x: jax.Array, spec: BlockSpec) -> jax.Array:
    """Per-block sum ``[*batch, D] -> [*batch, B]`` (exact float32 sums)."""
    return _per_block(jnp.sum, x, spec)


def block_logsumexp(x: jax.Array, spec: BlockSpec) -> jax.Array:
    """Per-block ``log sum exp`` ``[*batch, D] -> [*batch, B]``, shifted by the block maximum."""
    m = jax.lax.stop_gradient(block_max(x, spec))
    return m + jnp.log(block_sum(jnp.exp(x - expand(m, spec)), spec))


def normalize(log_unnormed: jax.Array, spec: BlockSpec) -> jax.Array:
    """Per-block log-softmax of flat ``[*batch, D]`` (each block's probabilities sum to 1)."""
    return log_unnormed - expand(block_logsumexp(log_unnormed, spec), spec)


def log_onehot(codes: jax.Array, spec: BlockSpec) -> jax.Array:
    """Codes ``[*batch, B]`` -> flat log one-hot ``[*batch, D]`` (0 at the code, NEG elsewhere)."""
    return jnp.where(_hits(codes, spec), 0.0, NEG).astype(jnp.float32)


def onehot_flat(codes: jax.Array, spec: BlockSpec, dtype=jnp.float32) -> jax.Array:
    """Codes ``[*batch, B]`` -> the concatenated one-hot vector ``[*batch, D]``."""
    return _hits(codes, spec).astype(dtype)


def _hits(codes, spec):
    """``[*batch, D]`` bool: position ``d`` holds its block's code (static slices: no gather)."""
    if not spec.sizes:
        return jnp.zeros(codes.shape[:-1] + (0,), bool)
    return jnp.concatenate([codes[..., b:b + 1] == jnp.arange(k, dtype=codes.dtype)
                            for b, k in enumerate(spec.sizes)], axis=-1)


# ------------------------------------------------------------------------------- the process
def q_pred(schedule: Schedule, log_x0: jax.Array, t: jax.Array, spec: BlockSpec) -> jax.Array:
    """``log q(x_t | x_0) = log(alpha_bar_t x_0 + (1 - alpha_bar_t) / K)``, flat ``[*batch, D]``.

    ``log_x0`` are log-probabilities (log one-hot for data, a prediction for the model).
    """
    a = extract(schedule.log_alpha_bar, t, log_x0)
    b = extract(schedule.log_1m_alpha_bar, t, log_x0)
    return jnp.logaddexp(log_x0 + a, b - spec.log_sizes_flat)


def _onehot_mix(codes: jax.Array, log_a: jax.Array, log_1m_a: jax.Array, spec: BlockSpec) -> jax.Array:
    """``log(a onehot(codes) + (1 - a) / K)`` flat; ``log_a``, ``log_1m_a`` ``[*batch, 1]``.

    The transcendental work is per block: an element takes one of two values.
    """
    miss = log_1m_a - spec.log_sizes  # [*batch, B]
    hit = jnp.logaddexp(log_a, miss)
    return jnp.where(_hits(codes, spec), expand(hit, spec), expand(miss, spec))


def q_posterior(
    schedule: Schedule,
    log_x0: jax.Array,
    codes_t: jax.Array,
    t: jax.Array,
    spec: BlockSpec,
    s: jax.Array | None = None,
) -> jax.Array:
    """``log q(x_s | x_t, x_0)``, normalised per block, flat ``[*batch, D]``.

    Args:
      schedule: the schedule.
      log_x0: log-probabilities of ``x_0``, flat ``[*batch, D]`` (log one-hot, or a prediction).
      codes_t: the current state ``x_t`` as codes ``[*batch, B]``.
      t: timesteps ``[*batch]``.
      spec: the blocks.
      s: earlier timesteps ``[*batch]`` (``-1``: the data); default ``t - 1``. ``s < t - 1`` is
        the posterior of a skipped step, whose transition has ``alpha = alpha_bar_t / alpha_bar_s``.

    ``q(x_s | x_t, x_0) \\propto q(x_s | x_0) q(x_t | x_s)``; at ``s = -1`` the prior is ``x_0``
    itself, so the result is the Bayes posterior of ``x_0`` given ``x_t`` and ``log_x0``.
    """
    col = lambda v: v.reshape(v.shape + (1,))
    if s is None:
        s = t - 1
        log_a, log_1m_a = jnp.take(schedule.log_alphas, t), jnp.take(schedule.log_1m_alphas, t)
    else:
        log_abar_s = jnp.where(s >= 0, jnp.take(schedule.log_alpha_bar, jnp.maximum(s, 0)), 0.0)
        log_a = jnp.minimum(jnp.take(schedule.log_alpha_bar, t) - log_abar_s, -1e-12)
        log_1m_a = log1mexp(log_a)
    log_trans = _onehot_mix(codes_t, col(log_a), col(log_1m_a), spec)
    log_prior = jnp.where(col(s) >= 0, q_pred(schedule, log_x0, jnp.maximum(s, 0), spec), log_x0)
    return normalize(log_prior + log_trans, spec)


def p_posterior(schedule, logits, codes_t, t, spec, s=None) -> jax.Array:
    """The model's reverse distribution: :func:`q_posterior` with ``x_0`` predicted by flat ``logits``."""
    return q_posterior(schedule, normalize(logits, spec), codes_t, t, spec, s)


def posterior_probs(
    schedule: Schedule,
    logits: jax.Array,
    codes_t: jax.Array,
    t: jax.Array,
    spec: BlockSpec,
    s: jax.Array | None = None,
) -> list[jax.Array]:
    """The model's reverse distribution in probability space, for sampling: one array per block.

    The same distribution as ``exp(p_posterior(...))``, computed on each block's static slice of
    the flat logits: ``softmax(logits_b)`` mixed with the uniform (the prior ``q(x_s | x_0)``)
    times the transition ``q(x_t | x_s)``, *unnormalised* (each block's total is positive; a
    sampler does not need it to be 1). No log, gather or padded view: on a CPU the sampler's step
    costs about a third of the log-space path's, which training keeps for its stable gradients.

    Args:
      logits: flat logits ``[*batch, D]``.
      codes_t: current codes ``[*batch, B]``.
      t: timesteps, broadcastable to ``[*batch]`` (the sampler passes one scalar).
      s: earlier timesteps (``-1``: the data); default ``t - 1``.

    Returns:
      ``[p_b]`` with ``p_b`` float32 ``[*batch, K_b]`` proportional to ``p(x_s = k | x_t)``.
    """
    t = jnp.asarray(t)
    batch = codes_t.shape[:-1]
    if s is None:
        s = t - 1
        a, one_m_a = jnp.take(schedule.alphas, t), jnp.take(schedule.betas, t)
    else:
        s = jnp.asarray(s)
        log_a = jnp.minimum(jnp.take(schedule.log_alpha_bar, t)
                            - jnp.where(s >= 0, jnp.take(schedule.log_alpha_bar, jnp.maximum(s, 0)), 0.0), 0.0)
        a, one_m_a = jnp.exp(log_a), -jnp.expm1(log_a)
    abar_s = jnp.where(s >= 0, jnp.take(schedule.alpha_bar, jnp.maximum(s, 0)), 1.0)
    one_m_abar_s = jnp.where(s >= 0, jnp.exp(jnp.take(schedule.log_1m_alpha_bar, jnp.maximum(s, 0))), 0.0)
    col = lambda v: jnp.broadcast_to(v, batch)[..., None].astype(logits.dtype)
    a, one_m_a, abar_s, one_m_abar_s = col(a), col(one_m_a), col(abar_s), col(one_m_abar_s)
    out = []
    for b, (start, k) in enumerate(_slices(spec)):
        prior = abar_s * jax.nn.softmax(logits[..., start:start + k], axis=-1) + one_m_abar_s / k
        hit = codes_t[..., b:b + 1] == jnp.arange(k, dtype=codes_t.dtype)
        out.append(prior * jnp.where(hit, a + one_m_a / k, one_m_a / k))
    return out


# blocks of at most this many categories are drawn with a running sum over their static columns
# (XLA fuses it into one loop; its cumsum is a log-depth scan of many small ops on a CPU); larger
# ones, or tables with more categories in all than UNROLL_TOTAL, use cumsum (bounded compile time)
UNROLL_BLOCK, UNROLL_TOTAL = 64, 1024


def draw_categorical(probs: list[jax.Array], u: jax.Array) -> jax.Array:
    """Inverse-CDF draw from unnormalised per-block probabilities with one uniform per block.

    Args:
      probs: ``[p_b]``, each ``[*batch, K_b]``, non-negative with a positive total.
      u: uniforms in ``[0, 1)``, ``[*batch, B]``.

    Returns:
      codes ``[*batch, B]`` int32: block ``b`` takes the first ``k`` whose cumulative mass exceeds
      ``u_b`` times the total (categories of mass 0 are never drawn).
    """
    unroll = sum(p.shape[-1] for p in probs) <= UNROLL_TOTAL
    codes = []
    for b, p in enumerate(probs):
        k = p.shape[-1]
        if unroll and k <= UNROLL_BLOCK:
            mass = [p[..., 0]]
            for j in range(1, k):
                mass.append(mass[-1] + p[..., j])
            threshold = u[..., b] * mass[-1]  # the running total itself, as cumsum's last entry
            code = sum((m <= threshold).astype(jnp.int32) for m in mass[:-1]) if k > 1 \
                else jnp.zeros(threshold.shape, jnp.int32)
        else:
            c = jnp.cumsum(p, axis=-1)
            code = jnp.minimum(jnp.sum(c <= u[..., b:b + 1] * c[..., -1:], axis=-1), k - 1)
        codes.append(code)
    return jnp.stack(codes, axis=-1).astype(jnp.int32)


def kl(log_p: jax.Array, log_q: jax.Array, spec: BlockSpec) -> jax.Array:
    """``KL(p || q)`` per block: flat ``[*batch, D]`` -> ``[*batch, B]`` (nats)."""
    return block_sum(jnp.exp(log_p) * (log_p - log_q), spec)


def log_likelihood(codes: jax.Array, log_p: jax.Array, spec: BlockSpec) -> jax.Array:
    """``log p`` of each block's category in ``codes`` ``[*batch, B]`` -> ``[*batch, B]``."""
    return jnp.take_along_axis(log_p, codes + spec.offsets, axis=-1)


def kl_prior(schedule: Schedule, codes0: jax.Array, spec: BlockSpec) -> jax.Array:
    """``KL(q(x_{T-1} | x_0) || Uniform(K_b))`` per block, ``[*batch, B]`` (constant in the model)."""
    t_last = jnp.full(codes0.shape[:-1], schedule.num_timesteps - 1, jnp.int32)
    log_qt = q_pred(schedule, log_onehot(codes0, spec), t_last, spec)
    return kl(log_qt, jnp.broadcast_to(-spec.log_sizes_flat, log_qt.shape), spec)


def gumbel_argmax(log_p: jax.Array, gumbel: jax.Array, spec: BlockSpec) -> jax.Array:
    """``argmax(log_p + gumbel)`` within each block: flat ``[*batch, D]`` -> codes ``[*batch, B]``."""
    return jnp.argmax(to_padded(log_p + gumbel, spec, -jnp.inf), axis=-1).astype(jnp.int32)


def sample(key: jax.Array, log_p: jax.Array, spec: BlockSpec) -> jax.Array:
    """Gumbel-max draw from each block of flat ``log_p`` ``[*batch, D]`` -> codes ``[*batch, B]``."""
    return gumbel_argmax(log_p, jax.random.gumbel(key, log_p.shape, log_p.dtype), spec)


def q_sample(key: jax.Array, schedule: Schedule, codes0: jax.Array, t: jax.Array, spec: BlockSpec) -> jax.Array:
    """Draw ``x_t ~ q(x_t | x_0)``: codes ``[*batch, B]`` -> codes ``[*batch, B]``.

    Uses the mixture form of the forward process: keep ``x_0`` with probability ``alpha_bar_t``,
    else a uniform category (two uniforms per block instead of a Gumbel per category).
    """
    u = jax.random.uniform(key, codes0.shape + (2,))
    abar = extract(schedule.alpha_bar, t, codes0.astype(jnp.float32))
    sizes = jnp.asarray(spec.sizes, jnp.int32)
    uniform = jnp.minimum((u[..., 1] * sizes).astype(jnp.int32), sizes - 1)
    return jnp.where(u[..., 0] < abar, codes0, uniform).astype(jnp.int32)


def vb_terms(
    schedule: Schedule,
    logits: jax.Array,
    codes0: jax.Array,
    codes_t: jax.Array,
    t: jax.Array,
    spec: BlockSpec,
) -> jax.Array:
    """The variational-bound term of step ``t`` per block, ``[*batch, B]``.

    ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` for ``t >= 1`` and the decoder NLL
    ``-log p(x_0 | x_1)`` (the ``L_0`` term) at ``t = 0``.

    The same log-space formulas as ``kl(q_posterior(log_onehot(x_0)), p_posterior(logits))``,
    evaluated block by block on static slices ``[*batch, K_b]`` (each log-softmax, mixture and KL
    inside its block; no flat concatenations): the training step's forward and backward pass
    over the categories run about 2.5x faster on a CPU than through the flat vectors.

    Args:
      logits: the denoiser's flat logits ``[*batch, D]`` (a prediction of ``x_0``).
      codes0, codes_t: codes of ``x_0`` and ``x_t``, ``[*batch, B]``.
      t: timesteps ``[*batch]``.
    """
    col = lambda v: v[..., None]
    s = jnp.maximum(t - 1, 0)
    log_a, log_1m_a = col(jnp.take(schedule.log_alphas, t)), col(jnp.take(schedule.log_1m_alphas, t))
    log_abar_s = col(jnp.take(schedule.log_alpha_bar, s))
    log_1m_abar_s = col(jnp.take(schedule.log_1m_alpha_bar, s))
    prior_on, first = col(t >= 1), t == 0  # at t = 0 the prior of x_{-1} = x_0 is x_0 itself
    terms = []
    for b, (start, k) in enumerate(_slices(spec)):
        log_softmax = functools.partial(normalize, spec=BlockSpec((k,)))  # within this one block
        cats = jnp.arange(k, dtype=codes_t.dtype)
        hit_t, hit_0 = codes_t[..., b:b + 1] == cats, codes0[..., b:b + 1] == cats
        log_k = float(np.log(k))
        miss = log_1m_a - log_k  # log q(x_t | x_{t-1}) = log(a [x_t = x_{t-1}] + (1 - a) / K)
        log_trans = jnp.where(hit_t, jnp.logaddexp(log_a, miss), miss)
        floor = log_1m_abar_s - log_k  # log((1 - abar_{t-1}) / K)
        log_x0 = log_softmax(logits[..., start:start + k])
        log_model = log_softmax(jnp.where(prior_on, jnp.logaddexp(log_x0 + log_abar_s, floor), log_x0) + log_trans)
        prior_true = jnp.where(prior_on, jnp.where(hit_0, jnp.logaddexp(log_abar_s, floor), floor),
                               jnp.where(hit_0, 0.0, NEG))
        log_true = log_softmax(prior_true + log_trans)
        kl_b = jnp.sum(jnp.exp(log_true) * (log_true - log_model), axis=-1)
        nll_b = -jnp.sum(jnp.where(hit_0, log_model, 0.0), axis=-1)
        terms.append(jnp.where(first, nll_b, kl_b))
    return jnp.stack(terms, axis=-1)

