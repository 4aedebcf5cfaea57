"""Options shared by every estimator: fit's seed reaches the preprocessor, ``preprocessor=None``."""

import jax
import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.models.base import Synthesizer, preprocessor_seed


class _PreprocessOnly(Synthesizer):
    """A model whose training does nothing: fit runs only the shared preprocessing."""

    model_name = "preprocess-only"
    preprocessor_options = {"numeric": "mode_specific"}

    def _fit(self, df, encoded, key, **_):
        self.fit_key = key


def _bimodal(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(-2.0, 1.0, n // 2), rng.normal(3.0, 0.5, n - n // 2)])
    return pd.DataFrame({"x": x, "c": rng.choice(["a", "b"], n)})


def _mixture(model):
    p = model.preprocessor.params
    return np.concatenate([np.asarray(p.means).ravel(), np.asarray(p.log_weights).ravel()])


def test_mode_specific_mixture_follows_fit_seed():
    df = _bimodal()
    a, b, c = (_PreprocessOnly().fit(df, seed=s, progress=False) for s in (0, 1, 0))
    np.testing.assert_array_equal(_mixture(a), _mixture(c))
    assert not np.array_equal(_mixture(a), _mixture(b))
    assert a.preprocessor.seed == c.preprocessor.seed != b.preprocessor.seed
    # the model's own stream is fit's key itself, not shortened by the preprocessor's seed
    np.testing.assert_array_equal(jax.random.key_data(a.fit_key), jax.random.key_data(jax.random.key(0)))


def test_explicit_preprocessor_seed_wins_over_fit_seed():
    df = _bimodal()
    a, b = (_PreprocessOnly(preprocessor={"seed": 7}).fit(df, seed=s, progress=False) for s in (0, 1))
    assert a.preprocessor.seed == b.preprocessor.seed == 7
    np.testing.assert_array_equal(_mixture(a), _mixture(b))


def test_preprocessor_seed_is_a_nonnegative_int32_that_depends_on_the_key():
    seeds = {preprocessor_seed(jax.random.key(s)) for s in range(20)}
    assert len(seeds) == 20 and all(0 <= s < 2**31 for s in seeds)


def test_preprocessor_none_means_default_options():
    model = _PreprocessOnly(preprocessor=None).fit(_bimodal(), seed=0, progress=False)
    assert model.preprocessor.numeric == "mode_specific"


def _tiny(name):
    from tabdiff_jax.models.gan import CTGAN, GAN
    from tabdiff_jax.models.dpgan import DPGAN
    from tabdiff_jax.models.tabddpm import TabDDPM
    from tabdiff_jax.models.tablediffusion import TableDiffusion
    from tabdiff_jax.models.tvae import TVAE

    gan = dict(epochs=1, batch_size=50, generator_dims=(8,), critic_dims=(8,), noise_dim=4, preprocessor=None)
    return {
        "tvae": lambda: TVAE(epochs=1, batch_size=50, encoder_dims=(8,), decoder_dims=(8,), latent_dim=2,
                             preprocessor=None),
        "tabddpm": lambda: TabDDPM(steps=2, batch_size=50, num_timesteps=4, hidden_dims=(8,), dim_t=8,
                                   preprocessor=None),
        "tablediffusion": lambda: TableDiffusion(epsilon=None, steps=2, batch_size=50, hidden_dims=(8,),
                                                 num_timesteps=2, preprocessor=None),
        "gan": lambda: GAN(**gan),
        "ctgan": lambda: CTGAN(**{**gan, "pac": 1}),
        "dpgan": lambda: DPGAN(**gan, epsilon=5.0, delta=1e-3),
    }[name]()


@pytest.mark.parametrize("name", ["tvae", "tabddpm", "tablediffusion", "gan", "ctgan", "dpgan"])
def test_every_model_accepts_preprocessor_none(name):
    """``preprocessor=None`` is every model's documented default; passing it explicitly must fit."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DPGAN warns that its preprocessor saw the data
        model = _tiny(name).fit(_bimodal(100), seed=0, progress=False)
    assert model.fitted and model.preprocessor is not None
    assert len(model.sample(5, seed=1)) == 5
