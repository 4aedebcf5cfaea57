"""Pure GAN core: losses, Gumbel-softmax activation, conditional vectors, compiled epochs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.gan import conditional as C
from tabdiff_jax.gan import losses
from tabdiff_jax.gan.nets import Critic, Generator, activate, gumbel_softmax
from tabdiff_jax.gan.sampling import make_sample_fn
from tabdiff_jax.gan.train import GANConfig, init_gan, make_epoch_fn
from tabdiff_jax.sampling import row_keys
from tabdiff_jax.table import EncodedTable, TableLayout, split_onehot, to_dense

LAYOUT = TableLayout(("x", "y"), ("c", "d"), (3, 4), ("category", "category"))


def toy_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.choice(3, n, p=[0.7, 0.25, 0.05]), rng.integers(0, 4, n)], 1).astype(np.int32)
    num = np.stack([np.tanh(rng.normal(size=n) + codes[:, 0]), rng.uniform(-1, 1, n)], 1).astype(np.float32)
    return codes, to_dense(EncodedTable(jnp.asarray(num), jnp.asarray(codes), LAYOUT))


@pytest.mark.parametrize("pac", [1, 4])
def test_gradient_penalty_closed_form_linear_critic(pac):
    # D(pack) = w . pack + b has gradient w everywhere: the penalty is (||w|| - 1)^2.
    dim, batch = 5, 8
    w = jax.random.normal(jax.random.key(0), (pac * dim,)) * 0.7
    critic = lambda x: x.reshape(batch // pac, pac * dim) @ w + 0.3
    real = jax.random.normal(jax.random.key(1), (batch, dim))
    fake = jax.random.normal(jax.random.key(2), (batch, dim))
    gp = losses.gradient_penalty(critic, real, fake, jax.random.key(3), pac)
    np.testing.assert_allclose(gp, (jnp.linalg.norm(w) - 1.0) ** 2, rtol=1e-5)


def test_gradient_penalty_zero_for_unit_norm_critic_and_nonlinear_positive():
    w = jnp.array([0.6, 0.8])
    real, fake = jnp.ones((4, 2)), jnp.zeros((4, 2))
    assert float(losses.gradient_penalty(lambda x: x @ w, real, fake, jax.random.key(0))) < 1e-10
    assert float(losses.gradient_penalty(lambda x: jnp.sum(x ** 3, -1), real, fake, jax.random.key(0))) > 0.01


def test_critic_and_generator_losses():
    r, f = jnp.array([2.0, -1.0]), jnp.array([0.5, 3.0])
    np.testing.assert_allclose(losses.critic_loss("wasserstein", r, f), f - r)
    np.testing.assert_allclose(losses.generator_loss("wasserstein", f), -f)
    sig = jax.nn.sigmoid
    np.testing.assert_allclose(losses.critic_loss("bce", r, f), -jnp.log(sig(r)) - jnp.log(1 - sig(f)), rtol=1e-5)
    np.testing.assert_allclose(losses.generator_loss("bce", f), -jnp.log(sig(f)), rtol=1e-5)
    with pytest.raises(ConfigError, match="loss"):
        losses.critic_loss("hinge", r, f)


def test_condition_cross_entropy_matches_manual():
    blocks = [jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), jnp.array([[3.0, 1.0], [0.5, -0.5]])]
    ce = losses.condition_cross_entropy(blocks, jnp.array([0, 1]), jnp.array([1, 1]))
    expected = [-jax.nn.log_softmax(blocks[0][0])[1], -jax.nn.log_softmax(blocks[1][1])[1]]
    np.testing.assert_allclose(ce, expected, rtol=1e-6)


def test_gumbel_hard_rows_are_valid_onehot_and_follow_softmax():
    logits = jnp.log(jnp.array([0.6, 0.3, 0.1]))
    draws = gumbel_softmax(jax.random.key(0), jnp.broadcast_to(logits, (20000, 3)), tau=0.2, hard=True)
    assert set(np.unique(np.asarray(draws))) <= {0.0, 1.0}
    np.testing.assert_array_equal(draws.sum(-1), 1.0)
    np.testing.assert_allclose(draws.mean(0), [0.6, 0.3, 0.1], atol=0.015)


def test_activate_soft_and_hard_blocks():
    raw = jax.random.normal(jax.random.key(0), (64, LAYOUT.dense_dim)) * 3
    soft = activate(raw, LAYOUT, jax.random.key(1), numeric_activation="tanh", tau=0.2)
    hard = activate(raw, LAYOUT, jax.random.key(1), numeric_activation="identity", hard=True)
    np.testing.assert_allclose(soft[:, :2], jnp.tanh(raw[:, :2]), rtol=1e-6)
    np.testing.assert_array_equal(hard[:, :2], raw[:, :2])
    for s_block, h_block in zip(split_onehot(soft[:, 2:], LAYOUT), split_onehot(hard[:, 2:], LAYOUT)):
        np.testing.assert_allclose(s_block.sum(-1), 1.0, rtol=1e-5)
        assert bool(jnp.all((h_block == 0) | (h_block == 1)))
        np.testing.assert_array_equal(h_block.sum(-1), 1.0)
        # the same Gumbel noise: the hard choice is the soft sample's argmax
        np.testing.assert_array_equal(jnp.argmax(h_block, -1), jnp.argmax(s_block, -1))


def test_condition_sampler_training_by_sampling():
    codes, _ = toy_data()
    s = C.build_condition_sampler(codes, LAYOUT, (0, 1), log_frequency=True)
    block_id, category = C.sample_condition(s, jax.random.key(0), 20000)
    rows = C.sample_rows(s, jax.random.key(1), block_id, category)
    picked = codes[np.asarray(rows), np.asarray(block_id)]
    np.testing.assert_array_equal(picked, np.asarray(category))
    # the block is uniform and the categories follow log(1 + count)
    assert abs(float(jnp.mean(block_id == 0)) - 0.5) < 0.02
    counts = np.bincount(codes[:, 0], minlength=3)
    expected = np.log1p(counts) / np.log1p(counts).sum()
    observed = np.bincount(np.asarray(category)[np.asarray(block_id) == 0], minlength=3)
    np.testing.assert_allclose(observed / observed.sum(), expected, atol=0.02)
    vec = C.condition_vector(s, block_id, category)
    assert vec.shape == (20000, 7)
    np.testing.assert_array_equal(vec.sum(-1), 1.0)
    np.testing.assert_array_equal(jnp.argmax(vec, -1), jnp.where(block_id == 0, category, 3 + category))


def test_condition_sampler_errors():
    codes, _ = toy_data(50)
    with pytest.raises(ConfigError, match="blocks"):
        C.build_condition_sampler(codes, LAYOUT, ())
    with pytest.raises(ConfigError, match="condition_column"):
        C.category_blocks(LAYOUT, "x")
    s = C.build_condition_sampler(codes, LAYOUT, (1,))
    with pytest.raises(ConfigError, match="'c' is not a conditioning column"):
        C.fixed_condition(s, LAYOUT, "c", 0, 4)
    with pytest.raises(ConfigError, match="out of range"):
        C.fixed_condition(s, LAYOUT, "d", 4, 4)


def test_critic_packing_and_dropout():
    critic = Critic(3, (8,), pac=2, dropout=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (6, 3))
    assert critic(x).shape == (3,)
    np.testing.assert_array_equal(critic(x), critic(x))  # no dropout without a key
    assert not np.allclose(critic(x, dropout_key=jax.random.key(1)), critic(x, dropout_key=jax.random.key(2)))
    gen = Generator(4, (8, 8), 5, residual=True, rngs=nnx.Rngs(0))
    assert gen(jnp.ones((2, 4))).shape == (2, 5)


def test_config_validation():
    with pytest.raises(ConfigError, match="pac"):
        GANConfig(batch_size=10, pac=3)
    with pytest.raises(ConfigError, match="n_critic"):
        GANConfig(n_critic=0)
    with pytest.raises(ConfigError, match="numeric_activation"):
        GANConfig(numeric_activation="relu")


@pytest.fixture(scope="module")
def wgan_run():
    """A small WGAN (weight clipping, RMSprop, 5 critic steps) trained for 2 epochs."""
    codes, data = toy_data()
    config = GANConfig(loss="wasserstein", weight_clip=0.01, n_critic=5, batch_size=40, noise_dim=4)
    tx = optax.rmsprop(5e-3)
    gen_def, critic_def, state = init_gan(jax.random.key(0), LAYOUT, config, tx, tx, generator_dims=(16,),
                                          critic_dims=(16,))
    traces = []
    fn = make_epoch_fn(gen_def, critic_def, LAYOUT, config, tx, tx, steps_per_epoch=3)
    epoch = jax.jit(lambda *a: (traces.append(1), fn(*a))[1])
    start = state
    for e in range(2):
        state, metrics = epoch(state, data, None, jax.random.key(e))
    assert len(traces) == 1  # one compiled epoch, reused
    return start, state, metrics, gen_def, config


def test_wgan_weights_stay_within_clip(wgan_run):
    start, state, metrics, *_ = wgan_run
    leaves = jax.tree.leaves(state.critic.params)
    assert max(float(jnp.max(jnp.abs(p))) for p in leaves) <= 0.01 + 1e-7
    # training moved them (the clip is not vacuous: the update is large enough to hit it)
    assert any(float(jnp.max(jnp.abs(a - b))) > 1e-4 for a, b in zip(leaves, jax.tree.leaves(start.critic.params)))
    assert any(bool(jnp.any(jnp.abs(p) == 0.01)) for p in leaves)
    assert int(state.step) == 6 and set(metrics) == {"critic_loss", "generator_loss"}
    assert int(state.critic.step) == 6 * 5  # n_critic critic updates per generator update


def test_sample_fn_hard_rows(wgan_run):
    _, state, _, gen_def, config = wgan_run
    sample = make_sample_fn(gen_def, LAYOUT, config)
    rows = sample(state.generator.params, None, row_keys(jax.random.key(0), 0, 32))
    assert rows.shape == (32, LAYOUT.dense_dim)
    # row i depends only on its key: a shorter call gives the same first rows
    np.testing.assert_allclose(np.asarray(sample(state.generator.params, None, row_keys(jax.random.key(0), 0, 4))),
                               np.asarray(rows[:4]), rtol=1e-5, atol=1e-6)
    for block in split_onehot(rows[:, 2:], LAYOUT):
        np.testing.assert_array_equal(block.sum(-1), 1.0)
