"""TabDiff's stochastic sampler with its second-order correction, as one compiled ``lax.scan`` per chunk.

``S`` steps over the time grid ``t_i = i / (S - 1)``, ``i = S-1 .. 0`` (then to noise level 0). Step ``i``:

1. churn: the numbers' noise is raised to ``sigma_hat = (1 + gamma) sigma_i`` (``gamma = min(1/S,
   sqrt(2) - 1)``) by fresh Gaussian noise, at the time ``t_hat`` of the column whose ``sigma_hat`` is
   reached first; each unmasked category is masked again with probability ``1 - alpha(t_hat) / alpha(t_i)``;
2. Euler step of the probability-flow ODE for the numbers from ``sigma_hat`` to ``sigma_{i-1}``;
3. unmasking (MDLM's posterior): a masked block stays masked with probability ``(1 - alpha_s) / (1 - alpha_t)``,
   else takes category ``c`` with the denoiser's ``p(c)``;
4. the second-order correction of the numbers (``correction``, all steps but the last):

   - ``"heun"`` (the paper's): Heun's correction, the slope at the Euler point averaged with the first (a
     second network evaluation per step);
   - ``"multistep"``: the denoised estimate extrapolated from this step's and the previous step's
     evaluations along ``lambda = -log sigma`` (per column), ``D + (D - D_prev) h / (2 h_prev)``, as in
     DPM-Solver++(2M) (Lu et al. 2022); first order at the first and the last step. Second order at no
     extra network evaluation;
   - ``"none"``: Euler.

So ``S`` steps cost ``2 S - 1`` network evaluations with Heun's correction, ``S`` otherwise. Every random
number of row ``i`` comes from ``fold_in(key, i)`` (:func:`tabdiff_jax.sampling.row_keys`).

On a CPU a step's passes over the ``[rows, columns]`` state cost about as much as its elementwise arithmetic
is cheap (each pass is a separate kernel), so the plain sampler (one network call per step, no given cells)
runs the same step in a single-call form: the churn of step ``i + 1`` is done at the end of step ``i`` (with
step ``i + 1``'s draw), the carried state is the network's preconditioned input ``c_in (x + r z)``, and the
Euler / 2M update is written as per-column coefficients of that input, the network output and the previous
denoised value: one pass after the network where the textbook form takes four. The unmasking draws ``stay``
against one uniform per block and the category from the block's ``exp(logit - max)`` (:func:`unmask`),
without a "stay" column. Same draws, same rows up to float rounding (``tests/test_tabdiff_multistep.py``).

Inpainting (``known``): given categorical cells are never masked; given numbers start at
``x + sigma_max eps`` and are replaced after each step by ``x + sigma_{i-1} eps'`` (the forward process
at the next noise level: exact at the end), the official "x_t" imputation.

Target last (``target_last``, with a categorical ``config.guided_block``: the classification target): the
target block is held masked through every step but the last, so the other columns are drawn with the target
unknown and the target at the end from the denoiser's ``p(y | x)`` at the last noise level (an order of
unmasking, as any-order masked diffusion allows: the same law with an exact denoiser). Rows that give the
target keep it.

Classifier-free guidance (``guidance = w > 0``, the config's ``guided_block``: the classification target):
in the rows whose target is given, every denoiser call is made twice, with the target (conditional) and
with it masked (unconditional), and combined (:func:`guide`): numbers ``(1 + w) D_c - w D_u``, each block's
``log_softmax((1 + w) logp_c - w logp_u)``. Here, unlike the official code (a separate target-only model),
one joint network trained with ``cond_prob`` gives both calls. Other rows make the plain call.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tabdiff_jax.blocks import block_exps, block_log_softmax
from tabdiff_jax.diffusion import tabdiff as td
from tabdiff_jax.diffusion.multinomial import draw_categorical
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.sampling import check_chunk_size, row_keys, sample_rows, step_uniforms
from tabdiff_jax.sharding import constrain_rows

DEFAULT_STEPS = 50
CORRECTIONS = ("heun", "multistep", "none")
DEFAULT_CORRECTION = "multistep"  # Heun's quality at half its network calls (benchmarks/tabdiff_adult.py)


def correction_name(correction) -> str:
    """``"heun" | "multistep" | "none"`` from a name or a bool (``True``: ``"heun"``, ``False``/``None``: ``"none"``)."""
    if correction is None or isinstance(correction, (bool, np.bool_)):
        return "heun" if correction else "none"
    if isinstance(correction, str) and correction in CORRECTIONS:
        return correction
    raise ConfigError(f"correction must be one of {CORRECTIONS} (or True / False), got {correction!r}")


def multistep_weights(sigma_hat: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """The 2M extrapolation weight ``c = h / (2 h_prev)`` per step and column (visiting order ``[S, d]``):
    ``h = log(sigma_hat / sigma_next)`` of this step, ``h_prev = log(sigma_hat_prev / sigma_hat)`` between the
    previous and this step's evaluation; 0 at the first step (no history) and where ``sigma_next = 0`` (last)."""
    safe_next = jnp.where(sigma_next > 0, sigma_next, 1.0)
    h = jnp.log(sigma_hat / safe_next)
    h_prev = jnp.log(sigma_hat[:-1] / sigma_hat[1:])
    c = h[1:] / (2.0 * jnp.where(h_prev > 0, h_prev, jnp.inf))
    c = jnp.concatenate([jnp.zeros_like(h[:1]), c])
    return jnp.where(sigma_next > 0, c, 0.0)


class KnownCells(NamedTuple):
    """Given cells per row (encoded space): ``numeric [n, d]`` float32, ``numeric_mask [n, d]`` bool,
    ``codes [n, B]`` int32, ``codes_mask [n, B]`` bool."""

    numeric: np.ndarray
    numeric_mask: np.ndarray
    codes: np.ndarray
    codes_mask: np.ndarray


def sampler_grid(config: td.TabDiffConfig, rho: jax.Array, k: jax.Array, steps: int, stochastic: bool = True):
    """The step table, in visiting order (``i = S-1 .. 0``): a dict of ``t_hat [S]``, ``sigma_cur, sigma_hat,
    sigma_next [S, d]`` (numbers) and ``cat_cur, cat_hat, cat_next [S, B]`` (masking noise)."""
    t = jnp.linspace(0.0, 1.0, steps, dtype=jnp.float32)
    num = td.power_mean_sigma(t[:, None], rho, config.sigma_min, config.sigma_max)  # [S, d]
    cat = td.log_linear_sigma(t[:, None], k, config.eps_min, config.eps_max)  # [S, B]
    num_next = jnp.concatenate([jnp.zeros_like(num[:1]), num[:-1]])
    cat_next = jnp.concatenate([jnp.zeros_like(cat[:1]), cat[:-1]])
    t_hat, num_hat = t, num
    if stochastic and config.num_numeric:
        gamma = min(1.0 / steps, float(np.sqrt(2.0) - 1.0))
        num_hat = num * (1.0 + gamma)
        t_hat = jnp.min(td.power_mean_inverse(num_hat, rho, config.sigma_min, config.sigma_max), axis=-1)
        over = t_hat > 1.0  # no churn where it would leave the schedule
        t_hat = jnp.where(over, t, t_hat)
        num_hat = jnp.where(over[:, None], num, num_hat)
    cat_hat = td.log_linear_sigma(t_hat[:, None], k, config.eps_min, config.eps_max)
    grid = dict(t_hat=t_hat, sigma_cur=num, sigma_hat=num_hat, sigma_next=num_next, cat_cur=cat, cat_hat=cat_hat,
                cat_next=cat_next)
    return {name: v[::-1] for name, v in grid.items()}


BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # the largest float32 uniform


def stay_masked(alpha_t, alpha_s) -> jax.Array:
    """Per block, the chance ``(1 - alpha_s) / (1 - alpha_t)`` that a block masked at ``t`` is still masked at
    ``s < t`` (MDLM's posterior; the same for every row): 0 at the data (``alpha_s = 1``)."""
    return jnp.where(alpha_t < 1.0, (1.0 - alpha_s) / jnp.where(alpha_t < 1.0, 1.0 - alpha_t, 1.0), 1.0)


def unmask(logits: jax.Array, codes: jax.Array, u: jax.Array, stay: jax.Array, config: td.TabDiffConfig):
    """One unmasking step from one uniform ``u [n, B]`` per block: a masked block stays masked if ``u < stay``
    (:func:`stay_masked`), else takes category ``c`` with the denoiser's ``p(c)`` (softmax of the block's
    ``logits``), drawn by the inverse CDF at ``(u - stay) / (1 - stay)`` (uniform given ``u >= stay``).
    Unmasked blocks are kept. The draw reads each block's ``exp(logit - max)``, as TabDDPM's step reads its
    posterior (one fused pass over the blocks on a CPU, and no column for "stay" in the draw)."""
    mask_code = jnp.asarray(config.categorical_sizes, codes.dtype)
    go = u >= stay
    u_cat = jnp.minimum((u - stay) / jnp.where(stay < 1.0, 1.0 - stay, 1.0), BELOW_ONE)
    return draw_categorical(block_exps(logits, config.categorical_sizes), jnp.where(go, u_cat, 0.0),
                            take=(codes == mask_code) & go, current=codes)


def guide(d_cond, logits_cond, d_uncond, logits_uncond, w: float, sizes: tuple[int, ...], rows=None):
    """Classifier-free guidance: ``((1 + w) d_c - w d_u, log_softmax_b((1 + w) logp_c - w logp_u))``, the
    second per categorical block (``logp``: each call's block log-probabilities); ``rows [n]`` (bool):
    only those rows are guided, the others keep the conditional call. ``w = 0``: the conditional call."""
    if w == 0:
        return d_cond, logits_cond
    d = (1.0 + w) * d_cond - w * d_uncond
    logp = block_log_softmax((1.0 + w) * block_log_softmax(logits_cond, sizes)
                             - w * block_log_softmax(logits_uncond, sizes), sizes)
    if rows is None:
        return d, logp
    return jnp.where(rows[:, None], d, d_cond), jnp.where(rows[:, None], logp, logits_cond)


@functools.lru_cache(maxsize=16)
def make_chunk_sampler(graphdef, config: td.TabDiffConfig, chunk_size: int, steps: int = DEFAULT_STEPS,
                       correction: str = DEFAULT_CORRECTION, stochastic: bool = True, inpaint: bool = False, mesh=None,
                       guidance: float = 0.0, target_last: bool = False, single_call: bool = True):
    """Compile the sampler for one chunk: ``chunk(params, key, start, known) -> (x_num [m, d], x_cat [m, B])``.

    ``known`` is a :class:`KnownCells` of the chunk's rows (used only when ``inpaint``). ``guidance > 0``
    (with ``inpaint`` and ``config.guided_block``) guides the rows whose guided block is given.
    """
    d, nb = config.num_numeric, config.num_blocks
    if steps < 2:
        raise ConfigError(f"steps must be >= 2, got {steps}")
    correction = correction_name(correction)
    stochastic, correction = stochastic and d > 0, correction if d > 0 else "none"  # as the official code
    mask_code = jnp.asarray(config.categorical_sizes, jnp.int32)
    n_normal = 2 * d if inpaint else d
    gb = config.guided_block
    guided = float(guidance) > 0 and inpaint and gb is not None
    hold = bool(target_last) and gb is not None  # the target stays masked until the last step
    onehot_block = np.repeat(np.arange(nb), config.masked_sizes).astype(np.int32)  # the block of each column
    onehot_code = np.concatenate([np.arange(k) for k in config.masked_sizes] or [np.zeros(0)]).astype(np.int32)

    def row_noise(rk, i):
        u = step_uniforms(rk, i + 1, n_normal + nb)
        z = jnp.sqrt(2.0) * jax.lax.erf_inv(u[:n_normal])
        return z[:d], z[d:], 0.5 * (u[n_normal:] + 1.0)

    def chunk(params, key, start, known: Optional[KnownCells]):
        keys = constrain_rows(row_keys(key, start, chunk_size), mesh)
        net = nnx.merge(graphdef, params)
        rho, k = net.exponents(config)
        grid = sampler_grid(config, rho, k, steps, stochastic)
        if correction == "multistep":
            grid["extrapolate"] = multistep_weights(grid["sigma_hat"], grid["sigma_next"])
        # the churn's noise scale per step and column: sigma_cur -> sigma_hat by adding raise_by z
        grid["raise_by"] = jnp.sqrt(jnp.maximum(grid["sigma_hat"] ** 2 - grid["sigma_cur"] ** 2, 0.0))
        fn = net.denoiser.conditioned(None)

        def network(x_in, cat_codes, t):  # (F, logits) of the preconditioned numbers x_in = c_in x
            # the masked one-hots in one pass: each column compares its block's code with its own category
            hot = (cat_codes[:, onehot_block] == onehot_code).astype(x_in.dtype)
            out = fn(jnp.concatenate([x_in, hot], axis=-1), td.time_input(t, config))
            return td.split_output(out, config)

        def plain(x, cat_codes, t, sigma):
            c_in, c_skip, c_out = td.precondition(sigma, config.sigma_data)
            f, logits = network(c_in * x, cat_codes, t)
            return c_skip * x + c_out * f, logits

        def denoise(x, cat_codes, t, sigma):
            if not guided:
                return plain(x, cat_codes, t, sigma)
            d_c, l_c = plain(x, cat_codes, t, sigma)
            d_u, l_u = plain(x, cat_codes.at[:, gb].set(mask_code[gb]), t, sigma)  # the target masked
            return guide(d_c, l_c, d_u, l_u, float(guidance), config.categorical_sizes, known.codes_mask[:, gb])

        init = jax.vmap(lambda rk: jax.random.normal(jax.random.fold_in(rk, 0), (d,)))(keys)
        x_num = init * grid["sigma_cur"][0]
        x_cat = jnp.broadcast_to(mask_code, (chunk_size, nb))
        if inpaint:
            x_num = jnp.where(known.numeric_mask, known.numeric + x_num, x_num)
            x_cat = jnp.where(known.codes_mask, known.codes, x_cat)

        def churn_categories(x_cat, u, g):  # one uniform per block: masks again if below the churn probability
            if not nb:
                return x_cat, u
            churn = -jnp.expm1(g["cat_cur"] - g["cat_hat"])
            again = (u < churn) & (x_cat != mask_code)
            x_cat_hat = jnp.where(again, mask_code, x_cat)
            u_again = jnp.minimum(u / jnp.where(churn > 0, churn, 1.0), BELOW_ONE)  # uniform given `again`
            if inpaint:
                x_cat_hat = jnp.where(known.codes_mask, known.codes, x_cat_hat)
            return x_cat_hat, jnp.where(again, u_again, u)

        def unmask_step(logits, x_cat_hat, u_draw, g, last: bool):
            if not nb:
                return x_cat_hat
            x_cat_next = unmask(logits, x_cat_hat, u_draw, stay_masked(jnp.exp(-g["cat_hat"]), jnp.exp(-g["cat_next"])),
                                config)
            return x_cat_next.at[:, gb].set(mask_code[gb]) if hold and not last else x_cat_next

        def step(carry, inp, last: bool):
            x_num, x_cat, den_prev = carry
            i, g = inp
            noise, noise_known, u = jax.vmap(row_noise, (0, None))(keys, i)
            s_hat, s_next = g["sigma_hat"], g["sigma_next"]
            x_cat_hat, u_draw = churn_categories(x_cat, u, g)
            x_hat = x_num + g["raise_by"] * noise
            den, logits = denoise(x_hat, x_cat_hat, g["t_hat"], s_hat)
            extrapolated = den + g["extrapolate"] * (den - den_prev) if correction == "multistep" else den
            slope = (x_hat - extrapolated) / s_hat
            x_next = x_hat + (s_next - s_hat) * slope
            if correction == "heun" and not last:
                den2, _ = denoise(x_next, x_cat_hat, g["t_next"], s_next)
                x_next = x_hat + (s_next - s_hat) * (0.5 * slope + 0.5 * (x_next - den2) / s_next)
            x_cat_next = unmask_step(logits, x_cat_hat, u_draw, g, last)
            if inpaint:
                x_next = jnp.where(known.numeric_mask, known.numeric + s_next * noise_known, x_next)
                x_cat_next = jnp.where(known.codes_mask, known.codes, x_cat_next)
            return (x_next, x_cat_next, den if correction == "multistep" else den_prev), None

        def churned(x, i, g):  # (c_in (x + r z), u) of step i's draw: the numbers raised to sigma_hat, preconditioned
            z, _, u = jax.vmap(row_noise, (0, None))(keys, i)
            return td.precondition(g["sigma_hat"], config.sigma_data)[0] * (x + g["raise_by"] * z), u

        def fast_step(carry, inp, last: bool):
            # One network call, no given cells: the same step with the churn of step i + 1 done at the end of
            # step i (its draw made here), so the carried state is the preconditioned, churned input
            # x_in = c_in (x + r z) and the update is per-column coefficients of (x_in, F, D_prev): one pass
            # over the rows after the network instead of four (the state is what a CPU step spends on).
            x_in, x_cat, den_prev, u = carry
            i, g, g_next = inp
            x_cat_hat, u_draw = churn_categories(x_cat, u, g)
            f, logits = network(x_in, x_cat_hat, g["t_hat"])
            c_in, c_skip, c_out = td.precondition(g["sigma_hat"], config.sigma_data)
            h = (g["sigma_next"] - g["sigma_hat"]) / g["sigma_hat"]  # x_next = x_hat + h (x_hat - D'),
            c = g["extrapolate"] if correction == "multistep" else 0.0  # D' = D + c (D - D_prev)
            x_next = ((1.0 + h - h * (1.0 + c) * c_skip) / c_in) * x_in - (h * (1.0 + c) * c_out) * f
            if correction == "multistep":
                x_next = x_next + (h * c) * den_prev
                den_prev = (c_skip / c_in) * x_in + c_out * f
            x_cat_next = unmask_step(logits, x_cat_hat, u_draw, g, last)
            if last:
                return (x_next, x_cat_next, den_prev, u), None
            x_in_next, u_next = churned(x_next, i + 1, g_next)
            return (x_in_next, x_cat_next, den_prev, u_next), None

        # the time each step's Euler point sits at (the correction's network input): the next grid time
        t_grid = jnp.linspace(0.0, 1.0, steps, dtype=jnp.float32)[::-1]
        grid["t_next"] = jnp.concatenate([t_grid[1:], jnp.zeros((1,), jnp.float32)])
        body = {name: v[:-1] for name, v in grid.items()}
        last_row = {name: v[-1] for name, v in grid.items()}
        idx = jnp.arange(steps, dtype=jnp.uint32)
        den0 = x_num if correction == "multistep" else jnp.zeros((), x_num.dtype)  # no history carried otherwise
        if inpaint or guided or correction == "heun" or not single_call:
            carry, _ = jax.lax.scan(lambda c, inp: step(c, inp, False), (x_num, x_cat, den0), (idx[:-1], body))
            carry, _ = step(carry, (idx[-1], last_row), True)
        else:
            after = {name: v[1:] for name, v in grid.items()}
            x_in, u = churned(x_num, 0, {name: v[0] for name, v in grid.items()})
            carry, _ = jax.lax.scan(lambda c, inp: fast_step(c, inp, False), (x_in, x_cat, den0, u),
                                    (idx[:-1], body, after))
            carry, _ = fast_step(carry, (idx[-1], last_row, None), True)
        return carry[0], jnp.minimum(carry[1], mask_code - 1)

    return jax.jit(chunk)


def sample(params, graphdef, config: td.TabDiffConfig, key, n: int, *, steps: int = DEFAULT_STEPS,
           correction=DEFAULT_CORRECTION, stochastic: bool = True, known=None, chunk_size: Optional[int] = None,
           postprocess=None, start: int = 0, guidance: float = 0.0, target_last: bool = False):
    """Rows ``start .. start + n - 1``: ``(x_num [n, d], x_cat [n, B])`` NumPy arrays, or ``postprocess``'s results.

    Args:
      known: optional given cells for the ``n`` rows (attributes ``numeric``, ``numeric_mask``, ``codes``,
        ``codes_mask``; e.g. :class:`KnownCells` or :class:`tabdiff_jax.conditioning.Known`), kept exactly.
      steps: sampling steps ``S`` (``2 S - 1`` network evaluations with ``correction="heun"``, else ``S``).
      correction: ``"multistep"`` (the default), ``"heun"`` (the paper's, or ``True``) or ``"none"`` (or ``False``).
      postprocess: optional jnp function ``(x_num, x_cat) -> pytree`` run on the device (decoding).
      guidance: classifier-free guidance weight ``w >= 0`` of the rows whose ``config.guided_block`` is
        given in ``known`` (0: no guidance; ``w > 0`` doubles their network calls).
      target_last: hold ``config.guided_block`` (the classification target) masked until the last step: the
        other columns drawn first, the target from ``p(y | x)`` at the end (ignored without a categorical target).
    """
    steps, guidance = int(steps), float(guidance)
    if not (np.isfinite(guidance) and guidance >= 0.0):
        raise ConfigError(f"guidance must be >= 0, got {guidance}")
    if steps < 2:
        raise ConfigError(f"steps must be an integer >= 2, got {steps}")
    chunk_size = check_chunk_size(chunk_size)
    correction = correction_name(correction)
    n = int(n)
    per_row = None
    if known is not None:
        per_row = KnownCells(np.asarray(known.numeric, np.float32), np.asarray(known.numeric_mask, bool),
                             np.asarray(known.codes, np.int32), np.asarray(known.codes_mask, bool))
        want = [(n, config.num_numeric), (n, config.num_numeric), (n, config.num_blocks), (n, config.num_blocks)]
        if [a.shape for a in per_row] != want:
            raise ConfigError(f"known: expected arrays of shapes {want}, got {[a.shape for a in per_row]}")
    if per_row is None or config.guided_block is None or not per_row.codes_mask[:, config.guided_block].any():
        guidance = 0.0  # no row gives the target: the plain calls (the same rows, half the cost)

    def make_chunk(size, mesh):
        fn = make_chunk_sampler(graphdef, config, size, steps, correction, bool(stochastic), known is not None,
                                mesh, guidance, bool(target_last))
        if postprocess is not None:
            fn = _with_postprocess(fn, postprocess)
        return lambda first, part: fn(params, key, first, part)

    return sample_rows(make_chunk, n, start=start, chunk_size=chunk_size, per_row=per_row)


@functools.lru_cache(maxsize=16)
def _with_postprocess(fn, postprocess):
    return jax.jit(lambda *args: postprocess(*fn(*args)))
