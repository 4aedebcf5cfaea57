"""TabDiff's sampler corrections: the multistep (DPM-Solver++(2M)) correction against Heun's and Euler.

Independent paths: the extrapolation weights against their closed form on a geometric grid; the order of
convergence of the deterministic sampler on the Gaussian oracle of test_tabdiff.py, measured against a
fine-grid reference from the same starting noise (second order: halving the step divides the error by
about 4; Euler: by 2); the law of the stochastic sampler's rows at 50 steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tabdiff_jax.diffusion import tabdiff_sampler as tds
from tabdiff_jax.errors import ConfigError
from test_tabdiff import CFG, PI, _check_categories, _oracle


def test_multistep_weights_closed_form_on_a_geometric_grid():
    # sigma halves every step: h = h_prev = log 2, so c = h / (2 h_prev) = 1/2; none at the first step (no
    # history) nor at the last (sigma_next = 0: first order, the denoised value itself)
    sigma_hat = jnp.asarray([[8.0, 80.0], [4.0, 40.0], [2.0, 20.0], [1.0, 10.0]])
    sigma_next = jnp.asarray([[4.0, 40.0], [2.0, 20.0], [1.0, 10.0], [0.0, 0.0]])
    c = np.asarray(tds.multistep_weights(sigma_hat, sigma_next))
    np.testing.assert_allclose(c, [[0, 0], [0.5, 0.5], [0.5, 0.5], [0, 0]], atol=1e-6)
    # uneven steps: h = log(4/1) after h_prev = log(8/4): c = log 4 / (2 log 2) = 1
    c = np.asarray(tds.multistep_weights(jnp.asarray([[8.0], [4.0]]), jnp.asarray([[4.0], [1.0]])))
    np.testing.assert_allclose(c[:, 0], [0.0, 1.0], atol=1e-6)


def _mean_error(correction, steps, ref, n):
    g, p = _oracle()
    x, _ = tds.sample(p, g, CFG, jax.random.key(0), n, steps=steps, correction=correction, stochastic=False,
                      chunk_size=n)
    return float(np.abs(x - ref).mean())


@pytest.mark.slow  # seven compiled samplers: about 60 s on 2 cores
def test_multistep_is_second_order_euler_first_order():
    """Measured (x86-64, 256 rows, reference Heun at 300 steps): error ratios 15 -> 30 -> 60 steps multistep
    4.82, 4.61; Heun 4.65, 4.42; Euler 1.97, 1.98; at 60 steps multistep's error 1.04x Heun's, with half the
    network calls."""
    g, p = _oracle()
    n = 256
    ref, _ = tds.sample(p, g, CFG, jax.random.key(0), n, steps=300, correction="heun", stochastic=False,
                        chunk_size=n)
    ms = [_mean_error("multistep", s, ref, n) for s in (15, 30, 60)]
    euler = [_mean_error("none", s, ref, n) for s in (15, 30, 60)]
    assert all(3.2 < a / b < 6.0 for a, b in zip(ms, ms[1:])), ms
    assert all(1.7 < a / b < 2.3 for a, b in zip(euler, euler[1:])), euler
    assert ms[-1] < euler[-1] / 8
    assert ms[-1] < 2 * _mean_error("heun", 60, ref, n)


def test_multistep_sampler_recovers_gaussian_and_categories():
    g, p = _oracle()
    n = 4000
    x_num, x_cat = tds.sample(p, g, CFG, jax.random.key(0), n, steps=50, correction="multistep", chunk_size=n)
    sd = np.array([0.5, 1.0])
    np.testing.assert_array_less(np.abs(x_num.mean(0) - [2.0, -1.0]), 5 * sd / np.sqrt(n) + 0.01)
    np.testing.assert_allclose(x_num.std(0), sd, rtol=0.06)
    _check_categories(x_cat, PI)


def test_correction_names():
    assert [tds.correction_name(c) for c in (True, False, None, "heun", "multistep", "none")] == \
        ["heun", "none", "none", "heun", "multistep", "none"]
    with pytest.raises(ConfigError, match="correction"):
        tds.correction_name("rk4")
    from tabdiff_jax.models.tabdiff import TabDiff

    with pytest.raises(ConfigError, match="correction"):
        TabDiff(correction="second")


@pytest.mark.parametrize("correction", ["multistep", "none"])
def test_single_call_path_draws_the_rows_of_the_general_path(correction):
    """Without given cells the sampler runs its single-call path (the churn of the next step done at the end of
    each step, the update as per-column coefficients); ``single_call=False`` (and given cells) the general one.
    Same key, same draws: the same rows up to float rounding (a rounding can flip a category draw that sits on
    a boundary, so 99% of the rows, not all, are asked to agree)."""
    from flax import nnx

    from tabdiff_jax.diffusion import tabdiff as td
    from tabdiff_jax.state import split_params

    g, p = split_params(td.make_network(CFG, hidden_dims=(32, 32), rngs=nnx.Rngs(3)))
    n = 400
    fast, general = (tds.make_chunk_sampler(g, CFG, n, 20, correction, single_call=single)(
        p, jax.random.key(5), jnp.uint32(0), None) for single in (True, False))
    fast, general = [tuple(np.asarray(a) for a in out) for out in (fast, general)]
    same = np.all(fast[1] == general[1], axis=1) & np.all(np.isclose(fast[0], general[0], rtol=1e-4, atol=1e-4), axis=1)
    assert same.mean() >= 0.99, same.mean()
    assert len(np.unique(fast[1][:, 1])) > 1  # the draws are not degenerate


def test_unmask_law_by_frequencies():
    # a masked block stays masked with probability `stay`, else takes category c with softmax(logits)_c;
    # an unmasked block is kept
    n, stay = 200_000, 0.3
    pi = np.array([0.1, 0.6, 0.3])
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(pi, jnp.float32)), (n, 3))
    cfg = tds.td.TabDiffConfig(num_numeric=1, categorical_sizes=(3,))
    codes = jnp.where(jnp.arange(n)[:, None] < n // 2, 3, 1).astype(jnp.int32)  # half masked (code 3), half "1"
    u = jax.random.uniform(jax.random.key(0), (n, 1))
    out = np.asarray(tds.unmask(logits, codes, u, jnp.asarray([stay]), cfg))[:, 0]
    assert np.all(out[n // 2:] == 1)
    freq = np.bincount(out[: n // 2], minlength=4) / (n // 2)
    want = np.concatenate([(1 - stay) * pi, [stay]])
    np.testing.assert_array_less(np.abs(freq - want), 5 * np.sqrt(want * (1 - want) / (n // 2)))
    np.testing.assert_allclose(np.asarray(tds.stay_masked(jnp.asarray([0.2, 0.5]), jnp.asarray([0.6, 1.0]))),
                               [0.4 / 0.8, 0.0], rtol=1e-6)
