"""The reverse process of the mixed model as one compiled ``lax.scan``, in fixed-size chunks.

Every random number of row ``i`` comes from ``fold_in(key, i)`` (its starting noise, the noise of
each step, and its class label when one is drawn), so the rows do not depend on how ``n`` is cut
into chunks: sampling in chunks of 1,000 or of 100,000 gives the same table, and ``n`` = 1,000,000
runs with the memory of one chunk. The chunk function is compiled once per (model, chunk size,
sampler options); the last chunk is padded and trimmed.

Two samplers:

* ancestral (``num_sample_steps=None``): all ``T`` steps; TabDDPM's Gaussian step with the
  "fixedlarge" variance and the multinomial posterior ``p(x_{t-1} | x_t)`` (drawn in probability
  space by :func:`~tabdiff_jax.diffusion.multinomial.posterior_probs`: no logs, gathers or Gumbel noise per
  category, one uniform per block);
* skipping (``num_sample_steps=S < T``): ``S`` evenly spaced steps; DDIM for the numbers
  (``eta = 0`` deterministic) and the exact multi-step multinomial posterior for the categories.

Example:
  >>> batch = sample(params, graphdef, config, jax.random.key(0), 10_000, class_probs=freqs)
  >>> batch.x_num.shape, batch.x_cat.shape, batch.y.shape
  ((10000, 6), (10000, 8), (10000,))
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tabdiff_jax import validate
from tabdiff_jax.diffusion import gaussian, multinomial
from tabdiff_jax.diffusion.tabddpm import DiffusionConfig, TableBatch, denoiser_input
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.sampling import (  # noqa: F401
    OPEN_LOW,
    check_chunk_size,
    default_chunk_size,
    row_keys,
    sample_rows,
    step_uniforms,
)
from tabdiff_jax.sharding import constrain_rows
from tabdiff_jax.table import EncodedTable, TableLayout, merge_target


def timestep_pairs(num_timesteps: int, num_sample_steps: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Decreasing timesteps ``t`` visited by the sampler and the step ``s`` each one jumps to (-1: data)."""
    if num_sample_steps is None or int(num_sample_steps) == num_timesteps:
        ts = np.arange(num_timesteps - 1, -1, -1, dtype=np.int32)
    else:
        ts = gaussian.skip_timesteps(num_timesteps, num_sample_steps)[::-1].astype(np.int32)
    return ts, np.concatenate([ts[1:], [-1]]).astype(np.int32)


@functools.lru_cache(maxsize=16)
def make_chunk_sampler(graphdef, config: DiffusionConfig, chunk_size: int, num_sample_steps: Optional[int] = None,
                       eta: float = 0.0, variance: str = "fixedlarge", clip_x0: Optional[float] = None,
                       mesh=None, resample: int = 1):
    """Compile the reverse process for one chunk of ``chunk_size`` rows.

    With a ``mesh`` the chunk's rows are split over its ``data`` axis (each device runs the whole
    reverse process for its rows); rows depend only on their keys, so the output is the same.

    Returns:
      ``chunk(params, key, start, y, class_logits, known=None) -> TableBatch`` (device arrays).
      ``start`` is the global index of the chunk's first row (uint32 scalar); ``y`` int32
      ``[chunk_size]`` holds the class of each row, or -1 to draw it from ``class_logits`` float32
      ``[num_classes]``; ``known`` (inpainting) is ``(x_num, num_mask, x_cat, cat_mask)`` ``[chunk_size,
      ...]``: the given cells, which after every step (and at the start) are replaced by a draw of the
      forward process ``q(x_s | x_0 = given)`` at the step's noise level, and at the end by the given
      values (RePaint's replacement, Lugmayr et al. 2022). With ``resample = U > 1`` each step is
      done ``U`` times, the state diffused back from ``s`` to ``t`` in between (RePaint's resampling,
      jump length 1): the given and drawn cells harmonise, at ``U`` times the cost. Rows without a
      given cell are the unconditional rows (the given cells' noise is a stream of its own).
    """
    schedule = config.make_schedule()
    spec = config.spec
    ts, ss = timestep_pairs(config.num_timesteps, num_sample_steps)
    ancestral = num_sample_steps is None or int(num_sample_steps) == config.num_timesteps
    d, nb = config.num_numeric, config.num_blocks

    sizes = jnp.asarray(spec.sizes, jnp.int32)

    def row_init(rk):
        k_num, k_cat = jax.random.split(jax.random.fold_in(rk, 0))
        uniform = jnp.minimum((jax.random.uniform(k_cat, (nb,)) * sizes).astype(jnp.int32), sizes - 1)
        return jax.random.normal(k_num, (d,)), uniform

    def row_noise(rk, i):
        # one draw per row and step: uniforms on (-1, 1); the first d become standard normals by the
        # inverse CDF (as jax.random.normal does), the other nb uniforms on [0, 1) for the categories
        u = step_uniforms(rk, i + 1, d + nb)
        return jnp.sqrt(2.0) * jax.lax.erf_inv(u[:d]), 0.5 * (u[d:] + 1.0)

    def abar_at(level):  # alpha_bar of a level, 1 at -1 (the data)
        return jnp.where(level >= 0, jnp.take(schedule.alpha_bar, jnp.maximum(level, 0)), 1.0)

    def diffuse(row_keys_, x_num, x_cat, a, num_mask, cat_mask):
        # the masked cells drawn from the forward process sqrt(a) x + sqrt(1 - a) z (numbers), x with
        # probability a else a uniform category (codes); one draw of d + 2 nb uniforms per row
        u = jax.vmap(lambda rk: jax.random.uniform(rk, (d + 2 * nb,), minval=OPEN_LOW, maxval=1.0))(row_keys_)
        z = jnp.sqrt(2.0) * jax.lax.erf_inv(u[:, :d])
        x_num = jnp.where(num_mask, jnp.sqrt(a) * x_num + jnp.sqrt(1.0 - a) * z, x_num)
        keep, pick = 0.5 * (u[:, d:d + nb] + 1.0), 0.5 * (u[:, d + nb:] + 1.0)
        noised = jnp.where(keep < a, x_cat, jnp.minimum((pick * sizes).astype(jnp.int32), sizes - 1))
        return x_num, jnp.where(cat_mask, noised, x_cat)

    def impose(known, known_keys, x_num, x_cat, i, level):
        # the given cells drawn from q(x_level | x_0 = given): x_0 itself at level -1 (the data)
        g_num, num_mask, g_cat, cat_mask = known
        ks = jax.vmap(jax.random.fold_in, (0, None))(known_keys, i)
        g_num, g_cat = diffuse(ks, g_num, g_cat, abar_at(level), num_mask, cat_mask)
        return jnp.where(num_mask, g_num, x_num), jnp.where(cat_mask, g_cat, x_cat)

    def chunk(params, key, start, y, class_logits, known=None):
        keys = row_keys(jax.random.fold_in(key, 0), start, chunk_size)
        if config.num_classes:
            y_keys = row_keys(jax.random.fold_in(key, 1), start, chunk_size)
            drawn = jax.vmap(lambda k: jax.random.categorical(k, class_logits))(y_keys).astype(jnp.int32)
            y = jnp.where(y >= 0, y, drawn)
        else:
            y = None
        keys = constrain_rows(keys, mesh)
        x_num, x_cat = constrain_rows(jax.vmap(row_init)(keys), mesh)
        if known is not None:  # inpainting: its own stream of keys, so that unconditioned cells draw as before
            known = constrain_rows(known, mesh)
            known_keys = constrain_rows(row_keys(jax.random.fold_in(key, 2), start, chunk_size), mesh)
            resample_keys = constrain_rows(row_keys(jax.random.fold_in(key, 3), start, chunk_size), mesh)
            given = jnp.any(known[1], axis=1) | jnp.any(known[3], axis=1)  # rows with a given cell
            x_num, x_cat = impose(known, known_keys, x_num, x_cat, 0, ts[0])

        model = nnx.merge(graphdef, params)
        if hasattr(model, "conditioned"):  # the TabDDPM denoiser: label embedding once per chunk,
            denoise = model.conditioned(y)  # input projection folded into the first block
        else:  # any module called as model(x, t, y)
            denoise = lambda x, t: model(x, t[None], y)

        def reverse(x_num, x_cat, t, s, noise, uniform):
            # one timestep for the whole chunk: the time embedding and the schedule's coefficients are
            # computed once (scalars) and broadcast
            out = denoise(denoiser_input(config, x_num, x_cat), t)
            eps, logits = out[:, :d], out[:, d:]
            if ancestral:
                x_num = gaussian.p_sample(schedule, x_num, t, eps, noise, variance, clip_x0)
            else:
                x_num = gaussian.ddim_step(schedule, x_num, t, s, eps, noise, eta, clip_x0)
            if nb:  # in probability space, one uniform per block (the same law as the log-space posterior)
                probs = multinomial.posterior_probs(schedule, logits, x_cat, t, spec, None if ancestral else s)
                x_cat = multinomial.draw_categorical(probs, uniform)
            return x_num, x_cat

        def body(carry, inp):
            x_num, x_cat = carry
            i, t, s = inp
            x_num, x_cat = reverse(x_num, x_cat, t, s, *jax.vmap(row_noise, (0, None))(keys, i))
            if known is None:
                return (x_num, x_cat), None
            x_num, x_cat = impose(known, known_keys, x_num, x_cat, i + 1, s)

            def again(r, state):  # RePaint's resampling: back from s to t, the step once more
                rks = jax.vmap(jax.random.fold_in, (0, None))(resample_keys, i * resample + r)
                all_num, all_cat = jnp.ones_like(state[0], bool), jnp.ones_like(state[1], bool)
                new = diffuse(jax.vmap(jax.random.fold_in, (0, None))(rks, 0), *state,
                              abar_at(t) / abar_at(s), all_num, all_cat)
                new = reverse(*new, t, s, *jax.vmap(row_noise, (0, None))(rks, 0))
                new = impose(known, known_keys, *new, len(ts) + 1 + i * resample + r, s)
                return tuple(jnp.where(given[:, None], a, b) for a, b in zip(new, state))  # rows with none: as is

            return jax.lax.fori_loop(1, resample, again, (x_num, x_cat)) if resample > 1 else (x_num, x_cat), None

        steps = (jnp.arange(len(ts), dtype=jnp.uint32), jnp.asarray(ts), jnp.asarray(ss))
        (x_num, x_cat), _ = jax.lax.scan(body, (x_num, x_cat), steps)
        return TableBatch(x_num, x_cat, y)

    return jax.jit(chunk)


def sample(params, graphdef, config: DiffusionConfig, key, n: int, *, y=None, class_probs=None,
           chunk_size: Optional[int] = None, num_sample_steps: Optional[int] = None, eta: float = 0.0,
           variance: str = "fixedlarge", clip_x0: Optional[float] = None, postprocess=None, start: int = 0,
           known=None, resample: int = 1):
    """Generate rows ``start .. start + n - 1`` in chunks; returns a :class:`TableBatch` of NumPy arrays.

    Args:
      params, graphdef: the split denoiser.
      config: the diffusion config.
      key: PRNG key; row ``i`` depends only on ``key`` and ``i``.
      n: number of rows.
      y: class labels: an int (every row), an int array ``[n]`` (-1 entries are drawn), or None.
      class_probs: class frequencies ``[num_classes]`` to draw labels from (required when
        ``config.num_classes > 0`` and some label is not given).
      chunk_size: rows per compiled call (bounds the memory); None: :func:`default_chunk_size`.
      num_sample_steps: None for all ``T`` ancestral steps, else that many skipping steps.
      eta: DDIM stochasticity of the numbers when skipping.
      variance: "fixedlarge" (TabDDPM) or "fixedsmall" for the ancestral Gaussian step.
      clip_x0: clip the predicted numeric ``x_0`` to ``[-clip_x0, clip_x0]``.
      postprocess: optional jnp function ``TableBatch -> pytree`` run on the device on each chunk
        (e.g. decoding); its results are concatenated instead.
      start: global index of the first row (a row range of a larger sample).
      known: inpainting, ``(x_num, num_mask, x_cat, cat_mask)`` NumPy arrays ``[n, num_numeric]`` and
        ``[n, B]`` in the model's space (classification target removed: give it as ``y``); the
        masked cells are given (see :func:`make_chunk_sampler`).
      resample: with ``known``, RePaint's resampling: each step done this many times (1: none).

    Raises:
      ConfigError: bad ``n`` / ``chunk_size``, a label out of range or missing class_probs.
    """
    n = int(n)
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    chunk_size = check_chunk_size(chunk_size)
    if variance not in gaussian.VARIANCES:
        raise ConfigError(f"variance must be one of {gaussian.VARIANCES}, got {variance!r}")
    y_all = np.full(n, -1, np.int32)
    class_logits = jnp.zeros((max(config.num_classes, 1),), jnp.float32)
    if config.num_classes:
        if y is not None:
            y_given = np.broadcast_to(np.asarray(y, np.int64), (n,))
            if np.any(y_given >= config.num_classes) or np.any(y_given < -1):
                raise ConfigError(f"y must be class codes in 0..{config.num_classes - 1} (or -1 to draw)")
            y_all[:] = y_given
        if np.any(y_all < 0):
            if class_probs is None:
                raise ConfigError("class_probs is required to draw the class labels y")
            probs = np.asarray(class_probs, np.float64)
            if probs.shape != (config.num_classes,) or np.any(probs < 0) or probs.sum() <= 0:
                raise ConfigError(f"class_probs must be {config.num_classes} non-negative frequencies")
            with np.errstate(divide="ignore"):
                class_logits = jnp.asarray(np.maximum(np.log(probs / probs.sum()), -1e4), jnp.float32)
    elif y is not None:
        raise ConfigError("y was given but the model has no class condition")

    def make_chunk(size, mesh):
        fn = make_chunk_sampler(graphdef, config, size, num_sample_steps, float(eta), variance, clip_x0, mesh,
                                resample if known is not None else 1)
        if postprocess is not None:
            fn = _with_postprocess(fn, postprocess)
        if known is None:
            return lambda first, y_chunk: fn(params, key, first, y_chunk, class_logits)
        return lambda first, part: fn(params, key, first, part[0], class_logits, part[1])

    resample = validate.positive_int("resample", resample)
    if known is not None:
        known = (np.asarray(known[0], np.float32), np.asarray(known[1], bool), np.asarray(known[2], np.int32),
                 np.asarray(known[3], bool))
        if known[0].shape != (n, config.num_numeric) or known[2].shape != (n, config.num_blocks):
            raise ConfigError(f"known: expected arrays [{n}, {config.num_numeric}] and [{n}, {config.num_blocks}], "
                              f"got {known[0].shape} and {known[2].shape}")
    per_row = y_all if known is None else (y_all, known)
    return sample_rows(make_chunk, n, start=start, chunk_size=chunk_size, per_row=per_row)


@functools.lru_cache(maxsize=16)
def _with_postprocess(fn, postprocess):
    return jax.jit(lambda *args: postprocess(fn(*args)))


def to_encoded_table(batch: TableBatch, layout: TableLayout) -> EncodedTable:
    """Sampled rows -> the :class:`EncodedTable` of the full ``layout`` (class labels merged back)."""
    feats = EncodedTable(jnp.asarray(batch.x_num), jnp.asarray(batch.x_cat, jnp.int32), layout.without_target()
                         if batch.y is not None else layout)
    return merge_target(feats, batch.y, layout)
