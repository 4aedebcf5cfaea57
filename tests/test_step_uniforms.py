"""The samplers' per-row, per-step noise (``sampling.step_uniforms``): counter-mode threefry under the row's key.

Checked against a NumPy Threefry-2x32 written from the Random123 specification (itself checked on the
specification's known-answer vectors), and by its law: uniform on (-1, 1), independent words.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from tabdiff_jax.sampling import OPEN_LOW, row_keys, step_uniforms

ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)


def _threefry2x32(key, x0, x1):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), NumPy uint32 arithmetic."""
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    ks = (k0, k1, np.uint32(k0 ^ k1 ^ np.uint32(0x1BD11BDA)))
    x0, x1 = np.asarray(x0, np.uint32) + ks[0], np.asarray(x1, np.uint32) + ks[1]
    for group in range(5):
        for r in ROTATIONS[4 * (group % 2): 4 * (group % 2) + 4]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + ks[(group + 1) % 3]
        x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def test_the_reference_threefry_gives_the_specification_known_answers():
    # Random123's kat_vectors for threefry2x32_20
    assert tuple(int(v[0]) for v in _threefry2x32((0, 0), [0], [0])) == (0x6B200159, 0x99BA4EFE)
    assert tuple(int(v[0]) for v in _threefry2x32((0xFFFFFFFF, 0xFFFFFFFF), [0xFFFFFFFF], [0xFFFFFFFF])) == (
        0x1CB996FC, 0xBB002BE7)
    assert tuple(int(v[0]) for v in _threefry2x32((0x13198A2E, 0x03707344), [0x243F6A88], [0x85A308D3])) == (
        0xC4923A9C, 0x483DF7A0)


@pytest.mark.parametrize("count", [1, 6, 15])
def test_step_uniforms_are_the_threefry_words_of_the_step_counters(count):
    """Step s of a row hashes the counters s W .. s W + W - 1 (W = count rounded up to even) under the
    row's key, both words of each hash kept, and maps the top 23 bits of each word to [OPEN_LOW, 1)."""
    keys = row_keys(jax.random.key(7), 1000, 4)
    steps = np.array([1, 2, 50], np.uint32)
    got = np.asarray(jax.vmap(lambda k: jax.vmap(lambda s: step_uniforms(k, s, count))(steps))(keys))
    width = count + count % 2
    for r, k in enumerate(np.asarray(jax.random.key_data(keys))):
        for j, s in enumerate(steps):
            counters = (np.uint32(s) * np.uint32(width) + np.arange(width, dtype=np.uint32)).astype(np.uint32)
            y0, y1 = _threefry2x32(k, counters[: width // 2], counters[width // 2:])
            words = np.concatenate([y0, y1])[:count]
            unit = (words >> np.uint32(9)).astype(np.float64) / 2.0**23  # [0, 1), 23 bits
            want = np.maximum(OPEN_LOW, np.float32(OPEN_LOW) + np.float32(1.0 - OPEN_LOW) * unit.astype(np.float32))
            np.testing.assert_allclose(got[r, j], want, rtol=0, atol=2e-7)


def test_step_uniforms_are_uniform_on_the_open_interval_and_their_words_independent():
    keys = row_keys(jax.random.key(3), 0, 4000)
    u = np.asarray(jax.vmap(lambda k: jax.vmap(lambda s: step_uniforms(k, s, 5))(jnp.arange(1, 11)))(keys))
    assert u.shape == (4000, 10, 5) and u.min() > -1.0 and u.max() < 1.0
    assert stats.kstest(u.ravel(), stats.uniform(-1, 2).cdf).pvalue > 1e-3  # 200,000 values
    z = np.sqrt(2.0) * np.asarray(jax.lax.erf_inv(jnp.asarray(u[:, :, 0].ravel())))
    assert np.all(np.isfinite(z)) and stats.kstest(z, "norm").pvalue > 1e-3
    flat = u.reshape(4000, -1)  # words of one hash, of neighbouring counters, of neighbouring steps and rows
    corr = np.corrcoef(flat, rowvar=False)
    off_diagonal = corr[~np.eye(corr.shape[0], dtype=bool)]
    assert np.abs(off_diagonal).max() < 5.0 / np.sqrt(4000)
    assert np.abs(np.corrcoef(u[:-1, 0, 0], u[1:, 0, 0])[0, 1]) < 5.0 / np.sqrt(4000)  # neighbouring rows


def test_step_uniforms_of_another_prng_take_jax_random_uniform():
    key = jax.random.key(0, impl="rbg")
    u = np.asarray(step_uniforms(key, 3, 9))
    want = np.asarray(jax.random.uniform(jax.random.fold_in(key, 3), (9,), minval=OPEN_LOW, maxval=1.0))
    np.testing.assert_array_equal(u, want)
    legacy = jax.random.PRNGKey(5)  # a raw uint32 threefry key takes the counter route too
    np.testing.assert_array_equal(np.asarray(step_uniforms(legacy, 4, 3)),
                                  np.asarray(step_uniforms(jax.random.wrap_key_data(legacy), 4, 3)))
