"""Closed-form checks of the noise schedules."""

import numpy as np
import pytest

from tabdiff_jax.diffusion.schedules import (
    cosine_alpha_bar,
    cosine_betas,
    linear_betas,
    log1mexp_np,
    make_schedule,
    schedule_from_betas,
    tablediffusion_betas,
)
from tabdiff_jax.errors import ConfigError


@pytest.mark.parametrize("T", [20, 100, 1000])
def test_cosine_alpha_bar_matches_closed_form(T):
    s = make_schedule(T, "cosine")
    t = np.arange(T)
    expected = cosine_alpha_bar((t + 1) / T)
    betas = np.asarray(s.betas, np.float64)
    unclipped = np.cumprod(cosine_betas(T) < 0.999).astype(bool)  # before the first clipped beta
    np.testing.assert_allclose(np.asarray(s.alpha_bar)[unclipped], expected[unclipped], rtol=2e-5, atol=1e-7)
    assert unclipped.sum() >= T - 2
    assert np.all(betas <= 0.999 + 1e-7) and np.all(np.diff(np.asarray(s.alpha_bar)) < 0)


def test_cosine_first_beta_value():
    # beta_0 = 1 - f(1/T)/f(0) with f(u) = cos^2((u + s)/(1 + s) pi/2).
    T, s = 1000, 0.008
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    assert cosine_betas(T)[0] == pytest.approx(1 - f(1 / T) / f(0), rel=1e-12)


def test_linear_betas_and_cumprod():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    b100 = linear_betas(100)  # rescaled by 1000 / T
    assert b100[0] == pytest.approx(1e-3) and b100[-1] == pytest.approx(0.2)
    s = make_schedule(100, "linear")
    np.testing.assert_allclose(np.asarray(s.alpha_bar), np.cumprod(1 - b100), rtol=1e-5)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_derived_quantities(kind):
    T = 1000
    s = make_schedule(T, kind)
    a = {k: np.asarray(v, np.float64) for k, v in s._asdict().items()}
    abar = np.cumprod(1 - np.asarray(cosine_betas(T) if kind == "cosine" else linear_betas(T)))
    np.testing.assert_allclose(a["log_1m_alpha_bar"], np.log1p(-abar), rtol=1e-4)
    np.testing.assert_allclose(np.exp(a["log_alpha_bar"]), abar, rtol=1e-5)
    np.testing.assert_allclose(np.exp(a["log_1m_alphas"]), a["betas"], rtol=1e-5)
    prev = np.concatenate([[1.0], abar[:-1]])
    var = a["betas"] * (1 - prev) / (1 - abar)
    np.testing.assert_allclose(a["posterior_variance"], var, rtol=1e-4, atol=1e-12)
    assert a["posterior_variance"][0] == 0.0
    assert a["posterior_log_variance_clipped"][0] == a["posterior_log_variance_clipped"][1]
    for v in a.values():
        assert np.all(np.isfinite(v))


def test_tablediffusion_betas():
    b = tablediffusion_betas(4)
    np.testing.assert_allclose(b, [0.1, 0.1 + (1 - np.cos(np.pi / 4)) / 2, 0.6, 0.1 + (1 - np.cos(3 * np.pi / 4)) / 2])


def test_log1mexp_np_both_regimes():
    a = np.array([-1e-12, -1e-5, -0.3, -np.log(2), -1.0, -20.0, -50.0])
    expected = np.array([np.log(1e-12), np.log(-np.expm1(-1e-5)), np.log(1 - np.exp(-0.3)), np.log(0.5),
                         np.log(1 - np.exp(-1.0)), np.log1p(-np.exp(-20.0)), -np.exp(-50.0)])
    np.testing.assert_allclose(log1mexp_np(a), expected, rtol=1e-9)


def test_errors():
    with pytest.raises(ConfigError, match="schedule"):
        make_schedule(10, "quadratic")
    with pytest.raises(ConfigError, match="num_timesteps"):
        make_schedule(0)
    with pytest.raises(ConfigError, match="betas"):
        schedule_from_betas([0.5, 1.0])
