"""Multinomial diffusion: the library's fast paths against closed forms and the log-space reference."""

import jax
import jax.numpy as jnp
import multinomial_reference as log_space
import numpy as np
import pytest

from tabdiff_jax import blocks
from tabdiff_jax.diffusion import multinomial as mn
from tabdiff_jax.diffusion.schedules import make_schedule
from tabdiff_jax.table import TableLayout, to_onehot

S = make_schedule(50, "cosine")
SPEC = mn.BlockSpec((3, 5, 2))
ABAR = np.cumprod(1 - np.asarray(S.betas, np.float64))


def _blocks(flat_log_p, spec=SPEC):
    """Flat log-probs -> list of per-block probability arrays (float64)."""
    p = np.exp(np.asarray(flat_log_p, np.float64))
    return [p[..., o:o + k] for o, k in zip(spec.offsets, spec.sizes)]


def _mix(a, onehot, K):
    return a * onehot + (1 - a) / K


def test_log1mexp_accuracy_and_gradients():
    a = jnp.array([-1e-7, -1e-4, -0.5, -0.6931, -0.7, -5.0, -30.0, -90.0])
    a64 = np.asarray(a, np.float64)
    want = np.where(a64 > -np.log(2), np.log(-np.expm1(a64)), np.log1p(-np.exp(a64)))
    np.testing.assert_allclose(log_space.log1mexp(a), want, rtol=1e-5, atol=1e-30)
    assert np.all(np.isfinite(jax.vmap(jax.grad(log_space.log1mexp))(a)))


def test_block_algebra_against_numpy():
    x = jax.random.normal(jax.random.key(0), (4, SPEC.onehot_dim)) * 30
    lse = np.asarray(blocks.block_logsumexp(x, SPEC.sizes))
    for b, blk in enumerate(_blocks(x)):
        np.testing.assert_allclose(lse[:, b], np.log(blk.sum(-1)), rtol=1e-5)
    for blk in _blocks(log_space.normalize(x, SPEC)):
        np.testing.assert_allclose(blk.sum(-1), 1.0, rtol=1e-5)
    padded = log_space.to_padded(x, SPEC)
    assert padded.shape == (4, 3, 5) and float(padded[0, 2, 4]) == mn.NEG
    np.testing.assert_array_equal(padded[:, 1], x[:, 3:8])
    codes = jnp.array([[2, 4, 1], [0, 0, 0]])
    layout = TableLayout(categorical_names=("a", "b", "c"), categorical_sizes=SPEC.sizes,
                         categorical_roles=("category",) * 3)
    np.testing.assert_array_equal(blocks.onehot(codes, SPEC.sizes), to_onehot(codes, layout))
    np.testing.assert_array_equal(np.exp(log_space.log_onehot(codes, SPEC)), to_onehot(codes, layout))
    np.testing.assert_allclose(log_space.log_likelihood(codes, x[:2], SPEC), [[x[0, 2], x[0, 7], x[0, 9]], [x[1, 0], x[1, 3], x[1, 8]]])


@pytest.mark.parametrize("t", [0, 10, 49])
def test_q_pred_closed_form(t):
    codes = jnp.array([[2, 4, 1], [0, 1, 0]])
    log_q = log_space.q_pred(S, log_space.log_onehot(codes, SPEC), jnp.array([t, t]), SPEC)
    for b, (p, K) in enumerate(zip(_blocks(log_q), SPEC.sizes)):
        np.testing.assert_allclose(p, _mix(ABAR[t], np.eye(K)[np.asarray(codes[:, b])], K), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)


def _bayes_posterior(x0, xt, t, s, K):
    """q(x_s | x_t, x_0) in float64 from the transition matrices (one-hot x0, code xt)."""
    ab_s = 1.0 if s < 0 else ABAR[s]
    prior = np.eye(K)[x0] if s < 0 else _mix(ab_s, np.eye(K)[x0], K)
    like = _mix(ABAR[t] / ab_s, np.eye(K)[xt], K)  # q(x_t = xt | x_s = j) for each j
    return prior * like / np.sum(prior * like)


@pytest.mark.parametrize("t,s", [(1, None), (7, None), (49, None), (0, None), (30, 10), (20, -1), (49, 48)])
def test_q_posterior_matches_bayes_and_normalises(t, s):
    rng = np.random.default_rng(t)
    codes0 = jnp.asarray(rng.integers(0, SPEC.sizes, size=(4, 3)), jnp.int32)
    codes_t = jnp.asarray(rng.integers(0, SPEC.sizes, size=(4, 3)), jnp.int32)
    tt, ss = jnp.full((4,), t), (None if s is None else jnp.full((4,), s))
    post = jax.jit(log_space.q_posterior, static_argnums=4)(S, log_space.log_onehot(codes0, SPEC), codes_t, tt, SPEC, ss)
    s_eff = t - 1 if s is None else s
    for b, (p, K) in enumerate(zip(_blocks(post), SPEC.sizes)):
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
        for i in range(4):
            expected = _bayes_posterior(int(codes0[i, b]), int(codes_t[i, b]), t, s_eff, K)
            np.testing.assert_allclose(p[i], expected, rtol=2e-4, atol=1e-7)


def test_skip_posterior_with_previous_step_equals_one_step():
    log_x0 = log_space.normalize(jax.random.normal(jax.random.key(3), (6, SPEC.onehot_dim)), SPEC)  # a soft prediction
    codes_t = jax.random.randint(jax.random.key(4), (6, 3), 0, 2)
    t = jnp.array([1, 2, 10, 25, 40, 49])
    post = jax.jit(log_space.q_posterior, static_argnums=4)
    a = post(S, log_x0, codes_t, t, SPEC)
    b = post(S, log_x0, codes_t, t, SPEC, t - 1)
    np.testing.assert_allclose(np.exp(a), np.exp(b), atol=2e-5)


def test_kl_zero_for_equal_and_closed_form_otherwise():
    lp = log_space.normalize(jax.random.normal(jax.random.key(0), (5, SPEC.onehot_dim)), SPEC)
    lq = log_space.normalize(jax.random.normal(jax.random.key(1), (5, SPEC.onehot_dim)), SPEC)
    np.testing.assert_allclose(log_space.kl(lp, lp, SPEC), 0.0, atol=1e-6)
    k = np.asarray(log_space.kl(lp, lq, SPEC))
    assert k.shape == (5, 3) and np.all(k > 0)
    for b, (p, q) in enumerate(zip(_blocks(lp), _blocks(lq))):
        np.testing.assert_allclose(k[:, b], np.sum(p * np.log(p / q), -1), rtol=1e-4, atol=1e-6)


def test_vb_terms_zero_for_perfect_prediction_and_nll_at_t0():
    codes0 = jnp.array([[2, 4, 1], [0, 1, 0], [1, 3, 1]])
    t = jnp.array([5, 30, 49])
    vb_terms = jax.jit(mn.vb_terms, static_argnums=5)
    codes_t = mn.q_sample(jax.random.key(0), S, codes0, t, SPEC)
    perfect = 30.0 * blocks.onehot(codes0, SPEC.sizes)  # logits with (almost) all mass on x0
    np.testing.assert_allclose(vb_terms(S, perfect, codes0, codes_t, t, SPEC), 0.0, atol=1e-5)
    logits = jax.random.normal(jax.random.key(1), (3, SPEC.onehot_dim))
    t0 = jnp.zeros((3,), jnp.int32)
    nll = np.asarray(vb_terms(S, logits, codes0, codes0, t0, SPEC))
    # at t = 0: p(x_0 = j | x_1) is proportional to softmax(logits)_j q(x_1 | x_0 = j)
    for b, (p, K) in enumerate(zip(_blocks(log_space.normalize(logits, SPEC)), SPEC.sizes)):
        for i in range(3):
            c = int(codes0[i, b])
            post = p[i] * _mix(1 - float(S.betas[0]), np.eye(K)[c], K)
            np.testing.assert_allclose(nll[i, b], -np.log(post[c] / post.sum()), rtol=1e-4, atol=1e-6)


def test_vb_terms_equal_the_flat_posterior_composition():
    """The per-block training loss = KL of the flat log-space posteriors (and the flat L_0), values and gradients."""
    schedule = make_schedule(1000, "cosine")
    spec = mn.BlockSpec((9, 16, 7, 2, 42, 1))
    n = 64
    codes0 = jnp.stack([jax.random.randint(jax.random.key(i), (n,), 0, k) for i, k in enumerate(spec.sizes)], 1)
    t = jax.random.randint(jax.random.key(7), (n,), 0, 1000).at[:6].set(jnp.array([0, 0, 1, 2, 998, 999]))
    codes_t = mn.q_sample(jax.random.key(8), schedule, codes0, t, spec)
    logits = 4.0 * jax.random.normal(jax.random.key(9), (n, spec.onehot_dim))

    def flat(logits):
        log_true = log_space.q_posterior(schedule, log_space.log_onehot(codes0, spec), codes_t, t, spec)
        log_model = log_space.p_posterior(schedule, logits, codes_t, t, spec)
        nll = -log_space.log_likelihood(codes0, log_model, spec)
        return jnp.where((t == 0)[:, None], nll, log_space.kl(log_true, log_model, spec))

    per_block = lambda lg: mn.vb_terms(schedule, lg, codes0, codes_t, t, spec)
    np.testing.assert_allclose(jax.jit(per_block)(logits), jax.jit(flat)(logits), rtol=1e-5, atol=1e-6)
    g_blocks = jax.jit(jax.grad(lambda lg: jnp.sum(per_block(lg))))(logits)
    g_flat = jax.jit(jax.grad(lambda lg: jnp.sum(flat(lg))))(logits)
    np.testing.assert_allclose(g_blocks, g_flat, rtol=1e-4, atol=1e-6)


def _check_freq(codes, probs):
    n = codes.shape[0]
    freq = np.bincount(np.asarray(codes), minlength=len(probs)) / n
    np.testing.assert_array_less(np.abs(freq - probs), 5 * np.sqrt(probs * (1 - probs) / n) + 1e-12)


def test_gumbel_and_q_sample_frequencies():
    n = 40_000
    probs = [np.array([0.2, 0.5, 0.3]), np.array([0.1, 0.1, 0.1, 0.1, 0.6]), np.array([0.9, 0.1])]
    log_p = jnp.log(jnp.asarray(np.concatenate(probs), jnp.float32))
    codes = jax.jit(log_space.sample, static_argnums=2)(jax.random.key(0), jnp.broadcast_to(log_p, (n, 10)), SPEC)
    for b, p in enumerate(probs):
        _check_freq(codes[:, b], p)
    codes0 = jnp.broadcast_to(jnp.array([2, 0, 1]), (n, 3))
    ct = jax.jit(mn.q_sample, static_argnums=4)(jax.random.key(1), S, codes0, jnp.full((n,), 20), SPEC)
    for b, K in enumerate(SPEC.sizes):
        _check_freq(ct[:, b], _mix(ABAR[20], np.eye(K)[int(codes0[0, b])], K))


def test_kl_prior_small_at_T():
    kp = log_space.kl_prior(S, jnp.array([[2, 4, 1]]), SPEC)
    assert kp.shape == (1, 3) and np.all(np.asarray(kp) >= 0) and np.all(np.asarray(kp) < 1e-3)


def test_no_nan_with_many_blocks_of_50_at_T1000():
    """25 blocks (compiling is per block: 100 took 24 s); test_diffusion's slow twin runs 100 through the network."""
    schedule = make_schedule(1000, "cosine")
    spec = mn.BlockSpec((50,) * 25)
    codes0 = jax.random.randint(jax.random.key(0), (8, 25), 0, 50)
    t = jnp.array([0, 1, 2, 10, 500, 990, 998, 999])
    codes_t = mn.q_sample(jax.random.key(1), schedule, codes0, t, spec)
    logits = 20.0 * jax.random.normal(jax.random.key(2), (8, spec.onehot_dim))

    def loss(logits):
        return jnp.sum(mn.vb_terms(schedule, logits, codes0, codes_t, t, spec))

    value, grad = jax.jit(jax.value_and_grad(loss))(logits)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    post = jax.jit(lambda c0, ct: log_space.q_posterior(schedule, log_space.log_onehot(c0, spec), ct, t, spec))(codes0, codes_t)
    sums = np.exp(np.asarray(post, np.float64)).reshape(8, 25, 50).sum(-1)
    assert np.all(np.isfinite(np.asarray(post)))
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


@pytest.mark.parametrize("t,s", [(1, None), (0, None), (49, None), (30, 10), (20, -1), (7, 6)])
def test_probability_space_posterior_equals_log_space(t, s):
    """The sampler's posterior (probability space, static slices) against p_posterior (log space)."""
    n = 6
    logits = 4.0 * jax.random.normal(jax.random.key(t), (n, SPEC.onehot_dim))
    codes_t = jax.random.randint(jax.random.key(100 + t), (n, 3), 0, 2)
    tt = jnp.full((n,), t)
    ss = None if s is None else jnp.full((n,), s)
    log_p = log_space.p_posterior(S, logits, codes_t, tt, SPEC, ss)
    # the sampler passes one scalar timestep for the whole chunk
    probs = jax.jit(mn.posterior_probs, static_argnums=4)(S, logits, codes_t, jnp.int32(t), SPEC,
                                                           None if s is None else jnp.int32(s))
    for p, ref in zip(probs, _blocks(log_p)):
        assert np.all(np.asarray(p) >= 0)
        np.testing.assert_allclose(np.asarray(p, np.float64) / np.asarray(p, np.float64).sum(-1, keepdims=True), ref,
                                   rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("unrolled", [True, False], ids=["running-sum", "cumsum"])
def test_inverse_cdf_draw_frequencies_and_zero_mass(unrolled, monkeypatch):
    if not unrolled:
        monkeypatch.setattr(mn, "UNROLL_TOTAL", 0)
    n = 40_000
    probs = [np.array([0.2, 0.5, 0.3]), np.array([0.1, 0.0, 0.2, 0.1, 0.6]), np.array([0.0, 1.0])]
    scaled = [jnp.broadcast_to(jnp.asarray(p * c, jnp.float32), (n, len(p))) for p, c in zip(probs, (1.0, 3e-6, 7.0))]
    u = jax.random.uniform(jax.random.key(0), (n, 3))
    codes = np.asarray(jax.jit(mn.draw_categorical)(scaled, u))
    for b, p in enumerate(probs):
        _check_freq(codes[:, b], p)  # unnormalised totals (3e-6, 7) do not matter
    assert not np.any(codes[:, 1] == 1) and np.all(codes[:, 2] == 1)  # mass 0 is never drawn
    edge = mn.draw_categorical([jnp.asarray([[0.0, 0.5, 0.5]])] * 2, jnp.asarray([[0.0, 0.99999994]]))
    np.testing.assert_array_equal(edge, [[1, 2]])  # u = 0 skips a leading zero; u -> 1 stays in range


def test_running_sum_draw_equals_cumsum_draw(monkeypatch):
    """The unrolled running sum (small blocks) and cumsum (large tables) pick the same codes."""
    sizes = (1, 2, 7, 42, 64, 65, 150)
    keys = jax.random.split(jax.random.key(3), len(sizes) + 1)
    probs = [jax.random.uniform(k, (5000, size)) ** 3 for k, size in zip(keys, sizes)]
    u = jax.random.uniform(keys[-1], (5000, len(sizes)))
    unrolled = np.asarray(jax.jit(mn.draw_categorical)(probs, u))
    monkeypatch.setattr(mn, "UNROLL_TOTAL", 0)
    reference = np.asarray(jax.jit(mn.draw_categorical)(probs, u))
    assert np.all((unrolled >= 0) & (unrolled < np.array(sizes)))
    # the two summation orders may round a boundary differently: all but a handful of draws agree
    assert np.mean(unrolled == reference) > 0.9995, np.mean(unrolled == reference)
    assert np.array_equal(unrolled[:, 0], np.zeros(5000))
