"""GAN-family and TVAE estimators end to end on a toy mixed table."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.evaluate.columns import prepare
from tabdiff_jax.evaluate.detection import detection_auc
from tabdiff_jax.evaluate.fidelity import shape_scores
from tabdiff_jax.models.base import load
from tabdiff_jax.models.gan import CGAN, CTGAN, GAN, WGAN, WGANGP
from tabdiff_jax.models.dpgan import DPGAN
from tabdiff_jax.models.tvae import TVAE

SMALL = dict(batch_size=50, generator_dims=(32, 32), critic_dims=(32, 32), noise_dim=8)
MODELS = {
    "gan": (GAN, dict(SMALL, epochs=150)),
    "cgan": (CGAN, dict(SMALL, epochs=150)),
    "wgan": (WGAN, dict(SMALL, epochs=150, n_critic=2, generator_lr=5e-4, critic_lr=5e-4)),
    "wgan-gp": (WGANGP, dict(SMALL, epochs=150, n_critic=2, generator_lr=5e-4, critic_lr=5e-4)),
    # 64-wide nets: with SMALL's 32 the detection AUC of seed 0 did not move (0.966 vs 0.967)
    "ctgan": (CTGAN, dict(SMALL, epochs=150, generator_lr=1e-3, critic_lr=1e-3, generator_dims=(64, 64),
                          critic_dims=(64, 64))),
    "dpgan": (DPGAN, dict(SMALL, epochs=150, epsilon=20.0, delta=1e-3, l2_clip=1.0)),
    "tvae": (TVAE, dict(epochs=60, batch_size=50, encoder_dims=(32,), decoder_dims=(32,), latent_dim=8)),
}
FAST = ("ctgan", "tvae")  # the others run with -m slow (each compiles its own epoch)
# What training must gain over the untrained model: (mean shape score up by, detection AUC down by).
# Measured (fit seed s, sample seed s + 1; AVX-512 and --xla_cpu_max_isa=AVX2 gave the same bits):
# ctgan, seeds 0-4, 6, 7: shape gain 0.002-0.118 (a GAN's last iterate: shape alone is no signal
#   here, so it only must not fall), AUC drop 0.097-0.269;
# tvae, seeds 0-4: shape gain 0.172-0.301, AUC drop 0.344-0.394.
# gan, cgan, wgan-gp (slow), seeds 0-2: shape gain >= 0.154, AUC drop >= 0.164.
# Not tested for learning, because no threshold separates them from their untrained selves over seeds:
# wgan (weight clipping, 150 epochs): shape gain -0.034-0.047, AUC drop 0.016-0.051; dpgan at epsilon 20:
# seed 0 gains (0.12, 0.092), seeds 1-2 collapse (shape -0.34, AUC -0.01) -- a DP-GAN that learns is
# issue 17's work. Their privacy records, resume and sampling are tested below and in test_sampling_contract.
GAINS = {"ctgan": (-0.03, 0.04), "tvae": (0.1, 0.2), "gan": (0.08, 0.08), "cgan": (0.08, 0.08),
         "wgan-gp": (0.08, 0.08)}


def toy_table(n=600, seed=0):
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n, p=[0.6, 0.3, 0.1])
    x = np.where(colour == "red", rng.normal(0.0, 1.0, n), rng.normal(5.0, 1.0, n))
    count = np.clip(np.round(x + rng.normal(0, 1, n)) + 3, 0, 12).astype(np.int64)
    label = np.where(x + rng.normal(0, 1.0, n) > 2.0, "yes", "no")
    return pd.DataFrame({"x": x, "colour": colour, "count": count, "label": label})


def quality(real, synthetic):
    """(mean shape score, detection AUC) from the project's evaluation suite."""
    from threadpoolctl import threadpool_limits

    columns, tables = prepare(real, {"synthetic": synthetic})
    shape = float(np.mean([s["score"] for s in shape_scores(tables["real"], tables["synthetic"], columns).values()]))
    with threadpool_limits(1):  # OpenMP oversubscription makes the detector 50x slower on a busy machine
        auc = detection_auc(tables["real"], tables["synthetic"], columns, max_rows=600, folds=3, max_iter=30)["auc"]
    return shape, auc


def fit(name, epochs=None, **kw):
    cls, options = MODELS[name]
    options = {**options, **kw, **({} if epochs is None else {"epochs": epochs})}
    fit_keys = ("run_dir", "public_bounds", "public_categories", "target", "resume")
    fit_kwargs = {k: options.pop(k) for k in fit_keys if k in options}
    fit_kwargs.setdefault("target", "label")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(**options).fit(toy_table(), progress=False, seed=0, **fit_kwargs)


@pytest.fixture(scope="module")
def trained():
    """``trained(name)``: the model fitted once with its MODELS options."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = fit(name)
        return cache[name]

    return get


@pytest.mark.parametrize("name", [pytest.param(m, marks=() if m in FAST else pytest.mark.slow) for m in GAINS])
def test_training_beats_untrained_self(name, trained):
    real = toy_table()
    syn = trained(name).sample(600, seed=1)
    assert list(syn.columns) == list(real.columns) and syn.dtypes.equals(real.dtypes)
    shape_t, auc_t = quality(real, syn)
    shape_u, auc_u = quality(real, fit(name, epochs=0).sample(600, seed=1))
    shape_gain, auc_drop = GAINS[name]
    assert shape_t > shape_u + shape_gain, (shape_t, shape_u)
    assert auc_t < auc_u - auc_drop, (auc_t, auc_u)


def test_cgan_condition_fixes_the_column_and_roundtrips(tmp_path):
    model = fit("cgan", epochs=1)
    out = model.sample(300, seed=3, condition={"label": "yes"})
    assert (out["label"] == "yes").all() and len(out) == 300
    # without a condition the label is drawn from the training frequencies
    free = model.sample(2000, seed=3)["label"].eq("yes").mean()
    assert abs(free - toy_table()["label"].eq("yes").mean()) < 0.05
    with pytest.raises(ConfigError, match="maybe.*known values"):
        model.sample(10, condition={"label": "maybe"})
    # a column outside the condition vector: met by rejection sampling
    assert (model.sample(10, condition={"colour": "red"})["colour"] == "red").all()
    model.save(tmp_path)
    again = load(tmp_path)
    pd.testing.assert_frame_equal(again.sample(50, seed=4, condition={"label": "no"}),
                                  model.sample(50, seed=4, condition={"label": "no"}))


def test_ctgan_condition_on_any_categorical_column(trained):
    model = trained("ctgan")
    out = model.sample(200, seed=0, condition={"colour": "blue"})
    assert (out["colour"] == "blue").all()
    final = model.fit_info["history"][-1][1]
    assert {"critic_loss", "gradient_penalty", "generator_loss", "condition_loss"} <= set(final)
    # the conditional loss taught the generator to honour the condition vector
    assert final["condition_loss"] < 0.5  # measured 5e-5-2e-3 over 8 seeds and both net widths


def test_cgan_on_chosen_column_and_errors():
    model = fit("cgan", epochs=0, condition_column="colour")
    assert (model.sample(100, condition={"colour": "green"})["colour"] == "green").all()
    with pytest.raises(ConfigError, match="condition_column"):
        fit("cgan", epochs=0, condition_column="x")
    with pytest.raises(ConfigError, match="condition_column"):
        fit("cgan", epochs=0, target=None)  # no target, no column
    # no conditional vector: rejection sampling
    assert (fit("gan", epochs=0).sample(5, condition={"label": "yes"})["label"] == "yes").all()


def test_options_are_validated():
    with pytest.raises(ConfigError, match="unknown option"):
        GAN(epsilon=1.0)
    with pytest.raises(ConfigError, match="pac"):
        WGANGP(batch_size=128, pac=10)
    with pytest.raises(ConfigError, match="conditional"):
        GAN(conditional="yes")
    with pytest.raises(ConfigError, match="pac must be 1"):
        DPGAN(pac=10, batch_size=500)
    with pytest.raises(ConfigError, match="conditional"):
        DPGAN(conditional="ctgan")
    with pytest.raises(ConfigError, match="epsilon"):
        DPGAN(epsilon=-1)
    with pytest.raises(ConfigError, match="categorical"):
        TVAE(categorical="mode")


def test_dpgan_records_privacy(tmp_path):
    epochs, steps = 2, 600 // 50
    fit("dpgan", epochs=epochs, run_dir=tmp_path)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["epsilon"] == 20.0 and info["delta"] == 1e-3
    assert 0.9 * 20.0 < info["epsilon_spent"] <= 20.0
    assert info["privacy"]["private_steps"] == info["privacy"]["planned_steps"] == epochs * steps
    assert info["privacy"]["noise_multiplier"] > 0.3
    assert "bounds" in info["privacy"]["learned_from_data"]["x"]
    assert "categories" in info["privacy"]["learned_from_data"]["colour"]
    # with a public domain nothing is learned from the private table outside the budget
    public = fit("dpgan", epochs=0, public_bounds={"x": (-5.0, 10.0), "count": (0, 12)},
                 public_categories={"colour": ["red", "green", "blue"], "label": ["no", "yes"]})
    assert public.fit_info["privacy"]["learned_from_data"] == {}
    assert public.fit_info["epsilon_spent"] == 0.0


def test_tvae_save_load_and_dtypes(trained, tmp_path):
    model = trained("tvae")
    model.save(tmp_path)
    again = load(tmp_path)
    a, b = model.sample(100, seed=7), again.sample(100, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert a.dtypes.equals(toy_table().dtypes)


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    straight = fit("gan", epochs=6)
    fit("gan", epochs=4, run_dir=tmp_path, checkpoint_every=2)
    resumed = fit("gan", epochs=6, run_dir=tmp_path, checkpoint_every=2, resume=True)
    pd.testing.assert_frame_equal(straight.sample(200, seed=5), resumed.sample(200, seed=5))
