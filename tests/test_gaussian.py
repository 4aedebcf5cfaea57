"""Gaussian diffusion: forward statistics, posterior closed form, reverse and DDIM steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tabdiff_jax.diffusion import gaussian
from tabdiff_jax.diffusion.schedules import make_schedule
from tabdiff_jax.errors import ConfigError

S = make_schedule(100, "cosine")


@pytest.mark.parametrize("t", [0, 37, 99])
def test_q_sample_mean_and_variance(t):
    n, x0 = 200_000, jnp.array([1.5, -2.0, 0.0])
    noise = jax.random.normal(jax.random.key(t), (n, 3))
    xt = np.asarray(gaussian.q_sample(S, jnp.broadcast_to(x0, (n, 3)), jnp.full((n,), t), noise), np.float64)
    abar = float(S.alpha_bar[t])
    mean, var = np.sqrt(abar) * np.asarray(x0), 1 - abar
    se_mean, se_var = np.sqrt(var / n), var * np.sqrt(2 / n)
    np.testing.assert_array_less(np.abs(xt.mean(0) - mean), 5 * se_mean)
    np.testing.assert_array_less(np.abs(xt.var(0) - var), 5 * se_var)


def test_posterior_matches_bayes_closed_form():
    # q(x_{t-1} | x_0) = N(sqrt(abar') x0, 1 - abar'), q(x_t | x_{t-1}) = N(sqrt(alpha) x_{t-1}, beta):
    # the posterior precision is the sum of precisions, the mean the precision-weighted average.
    rng = np.random.default_rng(0)
    t = np.array([1, 5, 50, 99])
    x0, xt = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    betas = np.asarray(S.betas, np.float64)
    abar = np.cumprod(1 - betas)
    ap, al, be = abar[t - 1][:, None], (1 - betas[t])[:, None], betas[t][:, None]
    prec = 1 / (1 - ap) + al / be
    var = 1 / prec
    mean = var * (np.sqrt(ap) * x0 / (1 - ap) + np.sqrt(al) * xt / be)
    m, v, lv = gaussian.q_posterior_mean_variance(S, jnp.asarray(x0, jnp.float32), jnp.asarray(xt, jnp.float32),
                                                 jnp.asarray(t))
    np.testing.assert_allclose(m, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v, np.broadcast_to(var, (4, 2)), rtol=1e-4)
    np.testing.assert_allclose(lv, np.log(np.broadcast_to(var, (4, 2))), rtol=1e-4, atol=1e-5)


def test_posterior_at_t0_is_x0():
    x0, xt = jnp.array([[0.3, -1.0]]), jnp.array([[5.0, 2.0]])
    m, v, _ = gaussian.q_posterior_mean_variance(S, x0, xt, jnp.array([0]))
    np.testing.assert_allclose(m, x0, atol=1e-6)
    assert float(v.max()) == 0.0


def test_predict_x0_inverts_q_sample():
    x0 = jax.random.normal(jax.random.key(0), (8, 3))
    eps = jax.random.normal(jax.random.key(1), (8, 3))
    t = jnp.arange(8) * 12
    xt = gaussian.q_sample(S, x0, t, eps)
    np.testing.assert_allclose(gaussian.predict_x0_from_eps(S, xt, t, eps), x0, atol=2e-3)


def test_p_sample_with_true_noise():
    x0 = jax.random.normal(jax.random.key(0), (4, 3))
    eps = jax.random.normal(jax.random.key(1), (4, 3))
    z = jax.random.normal(jax.random.key(2), (4, 3))
    t = jnp.array([0, 3, 30, 90])
    xt = gaussian.q_sample(S, x0, t, eps)
    out = gaussian.p_sample(S, xt, t, eps, jnp.zeros_like(z))
    mean, _, _ = gaussian.q_posterior_mean_variance(S, x0, xt, t)
    np.testing.assert_allclose(out, mean, atol=1e-4)
    np.testing.assert_allclose(out[0], x0[0], atol=1e-4)  # t = 0: the data, no noise
    noisy = gaussian.p_sample(S, xt, t, eps, z)
    np.testing.assert_allclose(noisy[0], out[0], atol=1e-6)
    for variance, table in [("fixedlarge", np.asarray(S.betas)), ("fixedsmall", np.asarray(S.posterior_variance))]:
        d = gaussian.p_sample(S, xt, t, eps, z, variance) - out
        np.testing.assert_allclose(d[1:], np.sqrt(table[np.asarray(t[1:])])[:, None] * z[1:], rtol=1e-3, atol=1e-6)


def test_ddim_eta0_is_exact_with_true_noise():
    # With the true eps, a deterministic DDIM jump lands on q_sample(x0, s, eps).
    x0 = jax.random.normal(jax.random.key(0), (5, 2))
    eps = jax.random.normal(jax.random.key(1), (5, 2))
    t, s = jnp.array([99, 50, 10, 1, 0]), jnp.array([70, 20, 0, -1, -1])
    xt = gaussian.q_sample(S, x0, t, eps)
    out = gaussian.ddim_step(S, xt, t, s, eps, jnp.ones_like(eps) * 100.0, eta=0.0)
    expected = jnp.where((s >= 0)[:, None], gaussian.q_sample(S, x0, jnp.maximum(s, 0), eps), x0)
    np.testing.assert_allclose(out, expected, atol=2e-3)


def test_ddim_eta1_variance_is_posterior_variance():
    t = jnp.array([5, 40, 99])
    xt, eps = jnp.ones((3, 1)), jnp.zeros((3, 1))
    z = jnp.ones((3, 1))
    d = gaussian.ddim_step(S, xt, t, t - 1, eps, z, eta=1.0) - gaussian.ddim_step(S, xt, t, t - 1, eps, 0 * z, eta=1.0)
    np.testing.assert_allclose(np.asarray(d[:, 0]) ** 2, np.asarray(S.posterior_variance)[np.asarray(t)], rtol=1e-3)


def test_single_example_equals_batch_under_vmap():
    x0 = jax.random.normal(jax.random.key(0), (6, 4))
    eps = jax.random.normal(jax.random.key(1), (6, 4))
    t = jnp.arange(6) * 15
    batched = jax.jit(gaussian.q_sample)(S, x0, t, eps)
    single = jax.vmap(gaussian.q_sample, (None, 0, 0, 0))(S, x0, t, eps)
    np.testing.assert_allclose(batched, single, rtol=1e-6)


def test_eps_mse_and_skip_timesteps():
    assert float(gaussian.eps_mse(jnp.ones((2, 3)), jnp.zeros((2, 3)))[0]) == 1.0
    assert gaussian.eps_mse(jnp.zeros((2, 0)), jnp.zeros((2, 0))).shape == (2,)
    ts = gaussian.skip_timesteps(1000, 50)
    assert ts[0] == 0 and ts[-1] == 999 and len(ts) == 50 and np.all(np.diff(ts) > 0)
    with pytest.raises(ConfigError, match="num_sample_steps"):
        gaussian.skip_timesteps(10, 11)
    with pytest.raises(ConfigError, match="variance"):
        gaussian.p_sample(S, jnp.zeros((1, 1)), jnp.array([1]), jnp.zeros((1, 1)), jnp.zeros((1, 1)), "learned")
