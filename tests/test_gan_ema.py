"""The generator's moving average (``generator_ema``): the closed form of a known sequence, training untouched,
sampling, saving and resuming with it."""

import warnings

import jax
import numpy as np
import optax
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.gan.train import GANConfig, init_gan, make_critic_update, make_epoch_fn
from tabdiff_jax.models.base import load
from tabdiff_jax.models.gan import GAN
from test_gan_core import LAYOUT, toy_data
from test_gan_models import toy_table


def closed_form_average(sequence, decay):
    """``sum_s w_s p_s`` of params ``p_0..p_T`` (``p_0`` the initial ones) under ``ema_update``'s weights:
    ``w_0 = prod_t d_t``, ``w_s = (1 - d_{s-1}) prod_{t >= s} d_t`` with ``d_t = min(decay, (1 + t) / (10 + t))``."""
    T = len(sequence) - 1
    d = np.array([min(decay, (1.0 + t) / (10.0 + t)) for t in range(T)])
    w = [np.prod(d)] + [(1.0 - d[s - 1]) * np.prod(d[s:]) for s in range(1, T + 1)]
    assert abs(sum(w) - 1.0) < 1e-9
    return jax.tree.map(lambda *ps: sum(wi * np.asarray(p, np.float64) for wi, p in zip(w, ps)), *sequence)


@pytest.mark.parametrize("private_path", [pytest.param(False, marks=pytest.mark.slow), True])
def test_generator_ema_is_the_closed_form_average_and_leaves_training_unchanged(private_path):
    # private_path: a critic update passed in (DP-GAN's route: separate generator batch)
    _, data = toy_data()
    tx = optax.adam(5e-2)
    runs = {}
    for ema in (None, 0.5):  # 0.5: the warm-up (1 + t) / (10 + t) for t < 8, the decay after
        config = GANConfig(loss="wasserstein", weight_clip=0.05, batch_size=40, noise_dim=4, generator_ema=ema)
        gen_def, critic_def, state = init_gan(jax.random.key(0), LAYOUT, config, tx, tx, generator_dims=(8,),
                                              critic_dims=(8,))
        update = make_critic_update(gen_def, critic_def, LAYOUT, config, tx) if private_path else None
        epoch = jax.jit(make_epoch_fn(gen_def, critic_def, LAYOUT, config, tx, tx, steps_per_epoch=1,
                                      critic_update=update))
        sequence = [jax.device_get(state.generator.params)]
        for e in range(12):  # one generator update per call: every intermediate is seen
            state, _ = epoch(state, data, None, jax.random.key(e))
            sequence.append(jax.device_get(state.generator.params))
        runs[ema] = (state, sequence)
    (plain, plain_seq), (averaged, seq) = runs[None], runs[0.5]
    assert plain.generator.ema is None
    for a, b in zip(jax.tree.leaves(plain_seq), jax.tree.leaves(seq)):  # the average does not feed back
        np.testing.assert_array_equal(a, b)
    want = closed_form_average(seq, 0.5)
    for got, w in zip(jax.tree.leaves(averaged.generator.ema), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)
    # the params moved: the average is not the last iterate
    assert max(float(np.max(np.abs(w - last))) for w, last in zip(jax.tree.leaves(want),
                                                                  jax.tree.leaves(seq[-1]))) > 1e-2


def test_generator_ema_must_be_a_decay():
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ConfigError, match="generator_ema"):
            GAN(generator_ema=bad)
        with pytest.raises(ConfigError, match="generator_ema"):
            GANConfig(generator_ema=bad)


SMALL = dict(batch_size=50, generator_dims=(16,), critic_dims=(16,), noise_dim=4, generator_ema=0.9)


def _fit(epochs, cls=GAN, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(**SMALL, epochs=epochs).fit(toy_table(), target="label", progress=False, seed=0, **kw)


@pytest.mark.slow
def test_model_samples_from_the_average_and_saves_it(tmp_path):
    model = _fit(3)
    assert model.fit_info["sampled_from"] == "ema"
    model.save(tmp_path)
    pd.testing.assert_frame_equal(model.sample(100, seed=3), load(tmp_path).sample(100, seed=3))


@pytest.mark.slow
def test_resume_with_generator_ema_equals_uninterrupted(tmp_path):
    straight = _fit(6)
    _fit(4, run_dir=tmp_path)
    resumed = _fit(6, run_dir=tmp_path, resume=True)
    pd.testing.assert_frame_equal(straight.sample(200, seed=5), resumed.sample(200, seed=5))
