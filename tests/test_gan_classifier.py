"""AC-GAN's auxiliary classifier (``classifier_loss``): what it reads, its loss in the critic's clipped per-row loss
(ghost clipping against vmap), its term in the generator's loss, WGAN's clipping leaving it out, that it learns,
and the model options."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.gan.nets import Critic
from tabdiff_jax.gan.private import make_critic_example_loss
from tabdiff_jax.gan.train import GANConfig, _make_generator_loss, init_gan, make_conditions, make_epoch_fn
from tabdiff_jax.gan import conditional as cond_lib
from tabdiff_jax.privacy import clipped_grad_sum
from tabdiff_jax.table import TableLayout

# numbers x, y; blocks c (3 categories, dense columns 2-4) and d (4 categories, columns 5-8): the label is d
LAYOUT = TableLayout(("x", "y"), ("c", "d"), (3, 4), ("category", "category"))
LABEL = (5, 4)  # (dense offset, size) of d


def critic_with_classifier(seed=0, cond_dim=4):
    critic = Critic(LAYOUT.dense_dim + cond_dim, (16, 8), classifier=(LAYOUT.dense_dim, *LABEL, (12,)),
                    rngs=nnx.Rngs(seed))
    return critic


def test_classify_reads_every_column_but_the_label_block():
    critic = critic_with_classifier()
    rows = jax.random.normal(jax.random.key(1), (6, LAYOUT.dense_dim))
    logits = critic.classify(rows)
    assert logits.shape == (6, 4)
    moved_label = rows.at[:, 5:9].set(jax.random.normal(jax.random.key(2), (6, 4)) * 10.0)
    np.testing.assert_array_equal(critic.classify(moved_label), logits)
    for column in (0, 1, 2, 4):  # any other column changes it
        assert not np.allclose(critic.classify(rows.at[:, column].add(3.0)), logits)
    with pytest.raises(ConfigError, match="classifier"):
        Critic(LAYOUT.dense_dim, (8,), rngs=nnx.Rngs(0)).classify(rows)


def private_batch(batch=12, seed=0):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed + 1), 4)
    rows = jax.random.normal(k1, (batch, LAYOUT.dense_dim))
    label = jax.random.randint(k3, (batch,), 0, 4)
    vector = jax.nn.one_hot(label, 4)
    return {"real": jnp.concatenate([rows, vector], -1),
            "fake": jnp.concatenate([jax.random.normal(k2, (batch, LAYOUT.dense_dim)), vector], -1),
            "rows": rows, "label": label}


def test_per_row_loss_adds_the_rows_own_cross_entropy():
    critic = critic_with_classifier()
    batch = private_batch()
    keys = jax.random.split(jax.random.key(0), 12)
    plain = make_critic_example_loss("wasserstein")(critic, batch, keys)
    with_aux = make_critic_example_loss("wasserstein", 0.3)(critic, batch, keys)
    logits = np.asarray(critic.classify(batch["rows"]), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -logp[np.arange(12), np.asarray(batch["label"])]
    np.testing.assert_allclose(np.asarray(with_aux) - np.asarray(plain), 0.3 * ce, rtol=1e-5, atol=1e-6)
    # row i's loss reads row i only
    changed = dict(batch, rows=batch["rows"].at[4].set(9.0), label=batch["label"].at[7].set(0))
    other = make_critic_example_loss("wasserstein", 0.3)(critic, changed, keys)
    same = np.setdiff1d(np.arange(12), [4, 7])
    np.testing.assert_array_equal(np.asarray(other)[same], np.asarray(with_aux)[same])


def test_ghost_clipping_with_the_classifier_matches_vmap():
    graphdef, params = nnx.split(critic_with_classifier())
    batch = private_batch()
    keys = jax.random.split(jax.random.key(9), 12)
    mask = jnp.arange(12) < 10
    loss_fn = make_critic_example_loss("wasserstein", 0.5)
    ghost, ghost_stats, _ = clipped_grad_sum(loss_fn, params, batch, keys, mask, l2_clip=0.5, clipping="ghost",
                                             graphdef=graphdef)
    vmap, vmap_stats, _ = clipped_grad_sum(loss_fn, params, batch, keys, mask, l2_clip=0.5, clipping="vmap",
                                           graphdef=graphdef)
    np.testing.assert_allclose(ghost_stats.norms, vmap_stats.norms, rtol=1e-4)
    assert int(ghost_stats.num_clipped) > 0
    for a, b in zip(jax.tree.leaves(ghost), jax.tree.leaves(vmap)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the classifier's own weights get gradient (it is trained inside the clipped loss)
    grads = nnx.State(ghost) if not isinstance(ghost, nnx.State) else ghost
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads["classifier"]))


def toy_labelled(n=600, seed=0):
    """d is a deterministic function of c and the sign of x: a classifier can reach accuracy 1."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 3, n)
    x = rng.uniform(-1, 1, n)
    d = np.where(x > 0, c, 3)
    num = np.stack([x, rng.uniform(-1, 1, n)], 1).astype(np.float32)
    dense = np.concatenate([num, np.eye(3)[c], np.eye(4)[d]], 1).astype(np.float32)
    return jnp.asarray(dense), d


def label_sampler():
    dummy = np.zeros((1, 2), np.int32)
    return cond_lib.build_condition_sampler(dummy, LAYOUT, (1,))


def test_weight_clipping_leaves_the_classifier_out_and_the_classifier_learns():
    data, labels = toy_labelled()
    sampler = label_sampler()
    config = GANConfig(loss="wasserstein", weight_clip=0.05, batch_size=100, noise_dim=4, impose_condition=True,
                       classifier_loss=1.0)
    tx = optax.adam(1e-2)
    gen_def, critic_def, state = init_gan(jax.random.key(0), LAYOUT, config, tx, tx, generator_dims=(16,),
                                          critic_dims=(16,), cond_dim=4, label_block=LABEL, classifier_dims=(32,))
    from tabdiff_jax.gan.private import make_private_critic_update
    from tabdiff_jax.privacy import PrivacyPlan

    n = int(data.shape[0])
    plan = PrivacyPlan(target_epsilon=1.0, delta=1e-5, noise_multiplier=0.0, sampling_rate=100 / n, steps=1,
                       expected_batch_size=100.0, capacity=160, accountant_delta=1e-5, truncation_delta=0.0,
                       planned_epsilon=1.0, accountant="rdp")
    update = make_private_critic_update(gen_def, critic_def, LAYOUT, config, tx, plan=plan, num_rows=n,
                                        l2_clip=1e3)
    epoch = jax.jit(make_epoch_fn(gen_def, critic_def, LAYOUT, config, tx, tx, steps_per_epoch=6,
                                  critic_update=update))

    def accuracy(params):
        logits = nnx.merge(critic_def, params).classify(data)
        return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))

    before = accuracy(state.critic.params)
    for e in range(40):
        state, metrics = epoch(state, data, sampler, jax.random.key(e))
    params = nnx.State(state.critic.params) if not isinstance(state.critic.params, nnx.State) else state.critic.params
    critic_leaves = [leaf for k, v in params.items() if k != "classifier" for leaf in jax.tree.leaves(v)]
    assert max(float(jnp.max(jnp.abs(p))) for p in critic_leaves) <= 0.05 + 1e-6
    assert max(float(jnp.max(jnp.abs(p))) for p in jax.tree.leaves(params["classifier"])) > 0.2
    assert before < 0.5 and accuracy(state.critic.params) > 0.9
    assert np.isfinite(float(metrics["generated_classifier_loss"]))


def test_generator_loss_adds_the_generated_rows_cross_entropy():
    config0 = GANConfig(loss="wasserstein", batch_size=8, noise_dim=4, impose_condition=True)
    config = GANConfig(loss="wasserstein", batch_size=8, noise_dim=4, impose_condition=True, classifier_loss=0.7)
    tx = optax.adam(1e-3)
    _, critic_def, state = init_gan(jax.random.key(0), LAYOUT, config, tx, tx, generator_dims=(8,), critic_dims=(8,),
                                    cond_dim=4, label_block=LABEL)
    sampler = label_sampler()
    category = jnp.arange(8) % 4
    conditions = make_conditions(sampler, jnp.zeros_like(category), category)
    fake = jax.random.uniform(jax.random.key(3), (8, LAYOUT.dense_dim))
    raw = jnp.zeros_like(fake)
    args = (raw, fake, state.critic.params, conditions, sampler, None)
    plain, _ = _make_generator_loss(critic_def, config0)(*args)
    total, metrics = _make_generator_loss(critic_def, config)(*args)
    logits = np.asarray(nnx.merge(critic_def, state.critic.params).classify(fake), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.mean(logp[np.arange(8), np.asarray(category)])
    assert float(metrics["generated_classifier_loss"]) == pytest.approx(ce, rel=1e-5)
    assert float(total) - float(plain) == pytest.approx(0.7 * ce, rel=1e-4)


def test_options_are_checked_and_a_dpgan_with_the_classifier_fits_saves_and_loads(tmp_path):
    from tabdiff_jax.models.base import load
    from tabdiff_jax.models.gan import GAN
    from tabdiff_jax.models.dpgan import DPGAN
    from test_dpgan_learns import toy_private_table

    with pytest.raises(ConfigError, match="classifier_loss"):
        GAN(classifier_loss=0.5)  # unconditional: nothing to classify
    with pytest.raises(ConfigError, match="classifier_loss"):
        GANConfig(classifier_loss=-1.0)
    with pytest.raises(ConfigError, match="classifier_labels"):
        DPGAN(classifier_loss=0.0, classifier_labels=True)
    with pytest.raises(ConfigError, match="classifier_loss"):
        init_gan(jax.random.key(0), LAYOUT, GANConfig(classifier_loss=1.0), optax.sgd(0.1), optax.sgd(0.1),
                 generator_dims=(4,), critic_dims=(4,))
    model = DPGAN(epochs=2, epsilon=5.0, delta=1e-4, batch_size=200, generator_dims=(16,), critic_dims=(16,),
                  noise_dim=8, classifier_loss=0.1, classifier_dims=(8,), classifier_labels=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(toy_private_table(n=800), target="label", seed=0, progress=False,
                  public_bounds={"x": (-5.0, 8.0)},
                  public_categories={"colour": ["red", "blue"], "label": ["no", "yes"]})
        assert 0.9 * 5.0 < model.fit_info["epsilon_spent"] <= 5.0
        model.save(tmp_path / "m")
        a, b = model.sample(300, seed=1), load(tmp_path / "m").sample(300, seed=1)
        given = model.sample(200, seed=2, condition={"label": "yes"})
    assert set(a["label"]) <= {"no", "yes"}
    assert a.equals(b)  # the classifier (the critic's weights and its label shift) saved and loaded with the model
    # the drawn labels keep the released class shares (the shift calibrates the classifier to them)
    counts = np.asarray(model.fit_info["privacy"]["column_shares"]["noisy_counts"], float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        big = model.sample(4000, seed=5)
    released = counts[1] / counts.sum()  # "yes" (categories in the public order no, yes)
    assert abs((big["label"] == "yes").mean() - released) < 4 * np.sqrt(released * (1 - released) / 4000) + 0.01
    assert (given["label"] == "yes").all()
    # on a regression target (no class to condition on) DP-GAN runs without the classifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = toy_private_table(n=400).drop(columns="label")
        reg = DPGAN(epochs=1, epsilon=5.0, delta=1e-3, batch_size=100, generator_dims=(8,), critic_dims=(8,),
                    noise_dim=4).fit(table.assign(y=table["x"] * 2.0), target="y", seed=0, progress=False)
        assert len(reg.sample(50, seed=0)) == 50


def test_labels_are_drawn_from_the_classifier_and_a_given_class_is_kept():
    from tabdiff_jax.gan.sampling import make_sample_fn
    from tabdiff_jax.sampling import row_keys

    config = GANConfig(loss="wasserstein", batch_size=8, noise_dim=4, impose_condition=True, classifier_loss=1.0)
    tx = optax.sgd(0.1)
    gen_def, critic_def, state = init_gan(jax.random.key(0), LAYOUT, config, tx, tx, generator_dims=(8,),
                                          critic_dims=(8,), cond_dim=4, label_block=LABEL, classifier_dims=(8,))
    # a classifier whose classes depend strongly on the first number: a known p(label | row) per row
    params = jax.tree.map(lambda p: p * 6.0, state.critic.params)
    sampler = label_sampler()
    sample = jax.jit(make_sample_fn(gen_def, LAYOUT, config, critic_def=critic_def))
    n = 20_000
    keys = row_keys(jax.random.key(5), 0, n)
    rows = sample(state.generator.params, sampler, keys, None, None, params)
    labels = np.argmax(np.asarray(rows[:, 5:9]), -1)
    probs = np.asarray(jax.nn.softmax(nnx.merge(critic_def, params).classify(rows), -1), np.float64)
    assert probs.max(-1).mean() < 0.95 and probs.std(0).max() > 0.05  # not a constant, not deterministic
    # calibration: in each bin of p(class 0), the drawn share of class 0 matches the mean probability
    for k in range(4):
        hit, p = labels == k, probs[:, k]
        assert abs(hit.mean() - p.mean()) < 4 * np.sqrt(p.mean() * (1 - p.mean()) / n)
        for lo, hi in ((0.0, 0.2), (0.2, 0.5), (0.5, 1.0)):
            inside = (p >= lo) & (p < hi)
            if inside.sum() > 500:
                se = np.sqrt(p[inside].mean() * (1 - p[inside].mean()) / inside.sum())
                assert abs(hit[inside].mean() - p[inside].mean()) < 4 * se + 1e-3
    # without the classifier the rows keep the class they were generated for; the other columns are the same
    plain = sample(state.generator.params, sampler, keys, None, None, None)
    np.testing.assert_array_equal(np.delete(np.asarray(plain), np.s_[5:9], 1), np.delete(np.asarray(rows), np.s_[5:9], 1))
    # a fixed class is kept
    fixed = sample(state.generator.params, sampler, keys[:500], 0, 2, params)
    assert (np.argmax(np.asarray(fixed[:, 5:9]), -1) == 2).all()
    # row i depends on key i only
    part = sample(state.generator.params, sampler, keys[100:300], None, None, params)
    np.testing.assert_array_equal(np.asarray(part), np.asarray(rows[100:300]))


def test_label_bias_makes_the_mean_probabilities_the_shares():
    from tabdiff_jax.gan.sampling import label_bias

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5000, 3)) * 2.0 + np.array([1.5, 0.0, -1.0])  # means far from the shares below
    shares = np.array([0.2, 0.5, 0.3])
    b = label_bias(logits, shares)
    z = logits + b
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose((p / p.sum(1, keepdims=True)).mean(0), shares, atol=1e-5)
    before = np.exp(logits - logits.max(1, keepdims=True))
    assert np.abs((before / before.sum(1, keepdims=True)).mean(0) - shares).max() > 0.2  # it had work to do
    # a class of share 0 is never drawn; a shift of every logit by a constant changes nothing
    b0 = label_bias(logits, np.array([0.0, 0.6, 0.4]))
    assert b0[0] < -1e3
    np.testing.assert_allclose(label_bias(logits + 7.0, shares), b, atol=1e-4)
