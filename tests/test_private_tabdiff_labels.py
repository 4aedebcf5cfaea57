"""Private TabDiff releases its label prior as TabDDPM (2% of the budget) and samples classes from it."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.models.base import load
from tabdiff_jax.models.tabdiff import TabDiff
from tabdiff_jax.privacy.preprocessing import PrivacyWarning

TINY = dict(steps=4, batch_size=32, hidden_dims=(16, 16), dim_t=8, num_sample_steps=3, log_every=2,
            preprocessor={"numeric": "minmax"})
FIT = dict(target="label", seed=0, progress=False, public_bounds={"x": (0.0, 20.0)},
           public_categories={"c": ["a", "b", "c"], "label": ["no", "yes"]})


def _table(n=300, seed=0):
    """Two classes at exactly 80/20."""
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.repeat(["no", "yes"], [int(0.8 * n), n - int(0.8 * n)]))
    c = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    x = np.clip(rng.normal(8, 2, size=n) + (label == "yes") * 4, 0, 20).round(2)
    return pd.DataFrame({"x": x, "c": c, "label": label})


def _fit(epsilon, **fit):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)  # public bounds and categories: nothing learned outside
        return TabDiff(epsilon=epsilon, **TINY).fit(_table(), **{**FIT, **fit})


@pytest.fixture(scope="module")
def loose():
    """A barely trained model with a huge budget: its released prior is the training shares."""
    return _fit(1e4)


def test_the_label_prior_takes_two_percent_of_the_budget_and_dpsgd_the_rest(tmp_path):
    model = _fit(1.0, run_dir=tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    for record in (model.fit_info, info):
        label = record["released"]["label_frequencies"]
        assert label["epsilon"] == pytest.approx(0.02) and label["delta"] == pytest.approx(0.02 * 1e-5)
        assert record["dpsgd_epsilon"] == pytest.approx(0.98) and record["dpsgd_delta"] == pytest.approx(0.98e-5)
        assert record["epsilon_spent"] <= 1.0
    probs = model._class_probs
    assert probs.shape == (2,) and probs.min() >= 0 and probs.sum() == pytest.approx(1.0)
    saved = json.loads((tmp_path / "run" / "model.json").read_text())
    assert saved["state"]["class_probs"] == pytest.approx(list(probs))


def test_sampled_classes_follow_the_released_prior(loose):
    np.testing.assert_allclose(loose._class_probs, [0.8, 0.2], atol=0.01)  # almost no noise at 2% of 1e4
    shares = loose.sample(4000, seed=1)["label"].value_counts(normalize=True)
    assert shares.get("no", 0.0) == pytest.approx(0.8, abs=0.03)
    assert shares.get("yes", 0.0) == pytest.approx(0.2, abs=0.03)


@pytest.mark.slow  # 15-40 s on 2 cores; the default run keeps the cheaper checks of this file
def test_rows_depend_on_seed_and_index_only_and_survive_save_and_load(loose, tmp_path):
    big = loose.sample(300, seed=2)
    head = loose.sample(40, seed=2)
    pd.testing.assert_frame_equal(big.iloc[:40].reset_index(drop=True), head.reset_index(drop=True))
    pd.testing.assert_frame_equal(loose.sample(40, seed=2, chunk_size=16), head)
    assert not big.equals(loose.sample(300, seed=3))
    loose.save(tmp_path / "m")
    again = load(tmp_path / "m")
    np.testing.assert_array_equal(again._class_probs, loose._class_probs)
    pd.testing.assert_frame_equal(again.sample(40, seed=2), head)
    # a model saved before the prior was kept (no class_probs) loads and diffuses the target
    path = tmp_path / "m" / "model.json"
    info = json.loads(path.read_text())
    del info["state"]["class_probs"]
    path.write_text(json.dumps(info))
    old = load(tmp_path / "m")
    assert old._class_probs is None
    assert set(old.sample(20, seed=2)["label"]) <= {"no", "yes"}


def test_a_condition_on_the_target_or_another_column_is_honoured(loose):
    yes = loose.sample(200, seed=4, condition={"label": "yes"})
    assert (yes["label"] == "yes").all()
    a = loose.sample(400, seed=4, condition={"c": "a"})
    assert (a["c"] == "a").all()  # the class is then inpainted given the condition, not drawn from the prior
