"""DP-GAN's critic update obeys the DP-SGD contract of tabdiff_jax.privacy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tabdiff_jax.gan.nets import Critic
from tabdiff_jax.gan.private import make_critic_example_loss, make_private_critic_update
from tabdiff_jax.gan.train import GANConfig, init_gan, make_generate_fn
from tabdiff_jax.privacy import PrivacyPlan, clipped_grad_sum, poisson_sample
from tabdiff_jax.table import TableLayout

LAYOUT = TableLayout(("x",), ("c",), (3,), ("category",))
DIM = LAYOUT.dense_dim


def critic_and_batch(batch=12, seed=0):
    critic = Critic(DIM, (16, 8), rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(critic)
    k1, k2 = jax.random.split(jax.random.key(seed + 1))
    data = {"real": jax.random.normal(k1, (batch, DIM)), "fake": jax.random.normal(k2, (batch, DIM))}
    keys = jax.random.split(jax.random.key(9), batch)
    return graphdef, params, data, keys


@pytest.mark.parametrize("loss", ["bce", "wasserstein"])
def test_ghost_clipping_of_the_critic_matches_vmap(loss):
    graphdef, params, data, keys = critic_and_batch()
    mask = jnp.arange(12) < 10
    loss_fn = make_critic_example_loss(loss)
    ghost, ghost_stats, _ = clipped_grad_sum(loss_fn, params, data, keys, mask, l2_clip=0.5, clipping="ghost",
                                             graphdef=graphdef)
    vmap, vmap_stats, _ = clipped_grad_sum(loss_fn, params, data, keys, mask, l2_clip=0.5, clipping="vmap",
                                           graphdef=graphdef)
    np.testing.assert_allclose(ghost_stats.norms, vmap_stats.norms, rtol=1e-4)
    assert int(ghost_stats.num_clipped) > 0  # the test exercises clipping
    for a, b in zip(jax.tree.leaves(ghost), jax.tree.leaves(vmap)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_rows_are_independent_and_removing_one_moves_the_sum_by_at_most_c():
    graphdef, params, data, keys = critic_and_batch()
    loss_fn = make_critic_example_loss("bce")
    model = nnx.merge(graphdef, params)
    base = loss_fn(model, data, keys)
    changed = {"real": data["real"].at[3].set(50.0), "fake": data["fake"]}
    other = loss_fn(model, changed, keys)
    np.testing.assert_array_equal(np.delete(np.asarray(base), 3), np.delete(np.asarray(other), 3))
    full = jnp.ones(12, bool)
    l2_clip = 0.3
    total, _, _ = clipped_grad_sum(loss_fn, params, data, keys, full, l2_clip=l2_clip, graphdef=graphdef)
    for drop in (0, 5, 11):
        part, _, _ = clipped_grad_sum(loss_fn, params, data, keys, full.at[drop].set(False), l2_clip=l2_clip,
                                      graphdef=graphdef)
        diff = jnp.sqrt(sum(jnp.sum(jnp.square(a - b)) for a, b in zip(jax.tree.leaves(total), jax.tree.leaves(part))))
        assert float(diff) <= l2_clip * (1 + 1e-5)
    # padded rows never contribute, whatever they hold
    mask = jnp.arange(12) < 8
    a, _, _ = clipped_grad_sum(loss_fn, params, data, keys, mask, l2_clip=l2_clip, graphdef=graphdef)
    junk = {"real": data["real"].at[9].set(jnp.nan), "fake": data["fake"].at[10].set(1e6)}
    b, _, _ = clipped_grad_sum(loss_fn, params, junk, keys, mask, l2_clip=l2_clip, graphdef=graphdef)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_private_update_without_noise_or_clipping_is_sgd_on_sum_over_expected_batch():
    config = GANConfig(loss="wasserstein", weight_clip=None, batch_size=8, noise_dim=3)
    tx = optax.sgd(0.1)
    gen_def, critic_def, state = init_gan(jax.random.key(0), LAYOUT, config, tx, tx, generator_dims=(8,),
                                          critic_dims=(8,))
    n, capacity, expected = 40, 24, 8.0
    plan = PrivacyPlan(target_epsilon=1.0, delta=1e-5, noise_multiplier=0.0, sampling_rate=expected / n, steps=1,
                       expected_batch_size=expected, capacity=capacity, accountant_delta=1e-5, truncation_delta=0.0,
                       planned_epsilon=1.0, accountant="rdp")
    data = jax.random.normal(jax.random.key(5), (n, DIM))
    update = make_private_critic_update(gen_def, critic_def, LAYOUT, config, tx, plan=plan, num_rows=n, l2_clip=1e6)
    key = jax.random.key(11)
    critic, metrics = jax.jit(update)(state.critic, state.generator.params, data, None, key)
    params = critic.params
    assert int(critic.step) == int(state.critic.step) + 1
    # the same batch and fake rows, by hand
    k_batch, k_gen, _ = jax.random.split(key, 3)
    batch = poisson_sample(k_batch, n, plan.sampling_rate, capacity)
    _, fake = make_generate_fn(gen_def, LAYOUT, config)(state.generator.params, k_gen, capacity)
    real = data[batch.indices]

    def summed(p):
        critic = nnx.merge(critic_def, p)
        per_row = critic(fake) - critic(real)
        return jnp.sum(jnp.where(batch.mask, per_row, 0.0))

    grads = jax.grad(summed)(state.critic.params)
    expected_params = jax.tree.map(lambda p, g: p - 0.1 * g / expected, state.critic.params, grads)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected_params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert float(metrics["batch_size"]) == float(jnp.sum(batch.mask)) > 0
