"""TabDiff's ``target_last`` sampling: the classification target held masked until the last step, then drawn
from the denoiser's ``p(y | x)``. Checked on an oracle whose target logits are a known function of the
numbers (the draw must be calibrated to the final rows), by a spy on the network's inputs, and through the
estimator (option, keyword, given targets, the sampling contract)."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.diffusion import tabdiff as td
from tabdiff_jax.diffusion import tabdiff_sampler as tds
from tabdiff_jax.errors import ConfigError
from test_tabdiff import _OracleDenoiser, _OracleNet, PI
from tabdiff_jax.state import split_params

# block 0 (3 categories) is the target; numbers N((2, -1), diag(0.25, 1))
CFG = td.TabDiffConfig(num_numeric=2, categorical_sizes=(3, 5), guided_block=0)
MU, SD, SLOPE = np.array([2.0, -1.0]), np.array([0.5, 1.0]), 1.5


class _LogisticTarget(_OracleDenoiser):
    """The Gaussian oracle, with the target's logits ``[0, s z, 2 s z]``, ``z = (x_0 - 2) / 0.5`` read off the
    call's (noisy) first number; records whether the target came in masked, per call."""

    def __call__(self, x_in, c_noise, dropout_key=None):
        out = super().__call__(x_in, c_noise, dropout_key)
        sigma = td.reference_sigma(jnp.reshape(c_noise, (-1, 1)) / 1000.0, CFG)
        z = (x_in[:, :1] * jnp.sqrt(sigma ** 2 + 1.0) - MU[0]) / SD[0]
        target = SLOPE * z * jnp.arange(3.0)[None, :]
        masked_in = x_in[:, 2 + 3]  # the target block's mask column in the masked one-hot
        jax.debug.callback(lambda m: _SEEN.append(np.asarray(m)), masked_in)
        return jnp.concatenate([out[:, :2], target, out[:, 5:]], axis=1)


_SEEN = []


class _Net(_OracleNet):
    def __init__(self):
        super().__init__(CFG, MU, np.diag(SD ** 2), PI)
        self.denoiser = _LogisticTarget(MU, np.diag(SD ** 2), self.denoiser.log_pi[...], sum(CFG.masked_sizes))


def _probs(x0):
    z = (x0 - MU[0]) / SD[0]
    logits = SLOPE * z[:, None] * np.arange(3.0)[None, :]
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _residual(x_num, x_cat):
    """The largest over categories c of |mean_i z_i (1[y_i = c] - p(c | x_i))| and of the plain mean, in
    units of its standard error: calibrated draws give O(1)."""
    p = _probs(x_num[:, 0])
    onehot = np.eye(3)[x_cat[:, 0]]
    z = (x_num[:, 0] - MU[0]) / SD[0]
    worst = 0.0
    for w in (np.ones_like(z), z):
        r = w[:, None] * (onehot - p)
        worst = max(worst, float(np.max(np.abs(r.mean(0)) / (r.std(0) / np.sqrt(len(z)) + 1e-12))))
    return worst


def test_target_last_draws_the_target_from_p_y_given_the_final_rows():
    g, p = split_params(_Net())
    n = 4000
    _SEEN.clear()
    x_num, x_cat = tds.sample(p, g, CFG, jax.random.key(0), n, steps=50, chunk_size=n, target_last=True)
    masked = np.stack(_SEEN)  # [calls, n]: 1 where the target came in masked
    assert masked.shape[0] == 50 and np.all(masked[:-1] == 1.0)  # every call but the last: target unknown
    assert _residual(x_num, x_cat) < 4.5  # calibrated to the rows it ends with
    np.testing.assert_allclose(x_num.std(0), SD, rtol=0.06)  # the numbers keep their law
    # the joint sampler unmasks the target at a random step, from noisy numbers: with this oracle (which
    # ignores the target when denoising the numbers) its draws are far less tied to the final rows
    _SEEN.clear()
    j_num, j_cat = tds.sample(p, g, CFG, jax.random.key(0), n, steps=50, chunk_size=n, target_last=False)
    assert np.any(np.stack(_SEEN)[:-1] == 0.0) and _residual(j_num, j_cat) > 8.0


def test_target_last_rows_do_not_depend_on_chunks_and_given_targets_are_kept():
    g, p = split_params(_Net())
    a = tds.sample(p, g, CFG, jax.random.key(3), 150, steps=8, chunk_size=64, target_last=True)
    b = tds.sample(p, g, CFG, jax.random.key(3), 150, steps=8, chunk_size=150, target_last=True)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_array_equal(a[1], b[1])
    n = 200
    known = tds.KnownCells(np.zeros((n, 2), np.float32), np.zeros((n, 2), bool),
                           np.tile([2, 0], (n, 1)).astype(np.int32), np.tile([True, False], (n, 1)))
    _, x_cat = tds.sample(p, g, CFG, jax.random.key(0), n, steps=8, known=known, target_last=True)
    assert np.all(x_cat[:, 0] == 2)


def _frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    return pd.DataFrame({"a": a, "b": rng.choice(["x", "y", "z"], n), "y": np.where(a > 0, "hi", "lo")})


def test_the_option_and_the_keyword_reach_the_sampler(monkeypatch):
    from tabdiff_jax.models.tabdiff import TabDiff

    with pytest.raises(ConfigError, match="target_last"):
        TabDiff(target_last="yes")
    model = TabDiff(steps=3, batch_size=64, hidden_dims=(16,), dim_t=8, num_sample_steps=3, target_last=True)
    model.fit(_frame(), target="y", progress=False)
    seen = []
    real = tds.sample

    class Stop(Exception):
        pass

    def spy(*args, **kw):
        seen.append(kw["target_last"])
        if len(seen) > 1:
            raise Stop  # the keyword reached the sampler: no second compilation needed
        return real(*args, **kw)

    monkeypatch.setattr(tds, "sample", spy)
    a = model.sample(40, seed=1)  # the option, end to end
    with pytest.raises(Stop):
        model.sample(40, seed=1, target_last=False)  # the keyword overrides it
    assert seen == [True, False] and list(a.columns) == ["a", "b", "y"] and len(a) == 40
    with pytest.raises(ConfigError, match="target_last"):
        model.sample(5, target_last="no")
