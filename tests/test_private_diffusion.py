"""Private TabDDPM: DP-SGD through the shared loop (tabdiff_jax.privacy.loop), its per-example loss and records."""

import json
import math
import warnings

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from dp_accounting import rdp
from flax import nnx

from tabdiff_jax.cli import main
from tabdiff_jax.diffusion import tabddpm as dm
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.models.base import load
from tabdiff_jax.models.tabddpm import TabDDPM
from tabdiff_jax.privacy import clipped_grad_sum, make_nonprivate_step, make_private_step
from tabdiff_jax.privacy.preprocessing import PrivacyWarning
from tabdiff_jax.runs import differences, fit_record
from tabdiff_jax.state import split_params

TINY = {"hidden_dims": (16, 16), "dim_t": 8, "num_timesteps": 8, "batch_size": 32, "log_every": 5}
PUBLIC_BOUNDS = {"x": (0.0, 20.0), "k": (0.0, 9.0)}
PUBLIC_CATEGORIES = {"c": ["a", "b", "c"], "label": ["no", "yes"]}


def _table(n=240, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    x = np.clip(rng.normal(8, 2, size=n) + (c == "a") * 4, 0, 20).round(2)
    return pd.DataFrame({"x": x, "k": rng.integers(0, 10, size=n), "c": c,
                         "label": np.where(x + rng.normal(0, 1, n) > 9, "yes", "no")})


def _denoiser_and_batch(b=8):
    config = dm.DiffusionConfig(num_numeric=2, categorical_sizes=(3, 2), num_classes=2, num_timesteps=8)
    graphdef, params = split_params(dm.make_denoiser(config, hidden_dims=(16, 16), dim_t=8, rngs=nnx.Rngs(0)))
    k = jax.random.split(jax.random.key(1), 4)
    batch = dm.TableBatch(jax.random.normal(k[0], (b, 2)),
                          jnp.stack([jax.random.randint(k[1], (b,), 0, 3), jax.random.randint(k[2], (b,), 0, 2)], 1),
                          jax.random.randint(k[3], (b,), 0, 2))
    return config, graphdef, params, batch


def test_tabddpm_private_loss_is_per_row_and_ghost_clipping_matches_vmap():
    config, graphdef, params, batch = _denoiser_and_batch()
    loss_fn = dm.make_private_loss(config)
    keys = jax.random.split(jax.random.key(2), 8)
    mask = jnp.arange(8) < 6
    f = jax.jit(lambda p: [clipped_grad_sum(loss_fn, p, batch, keys, mask, l2_clip=0.5, clipping=m, graphdef=graphdef)
                           for m in ("ghost", "vmap")])
    (gs, gst, g_losses), (vs, vst, v_losses) = f(params)
    # row i's loss depends on row i and keys[i] only: one batched pass (ghost) gives each row's loss
    # computed on that row alone (vmap over batches of one row)
    np.testing.assert_allclose(np.asarray(g_losses), np.asarray(v_losses), rtol=1e-5)
    assert 0 < int(gst.num_clipped) <= 6 and int(gst.batch_size) == 6  # clipping is exercised, padding skipped
    np.testing.assert_allclose(np.asarray(gst.norms), np.asarray(vst.norms), rtol=1e-5, atol=1e-6)
    for a, c in zip(jax.tree.leaves(gs), jax.tree.leaves(vs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # two compiles of the step; the default run has the generic case in test_privacy_dpsgd.py
def test_private_step_without_noise_and_with_a_huge_clip_is_the_mean_gradient_step():
    config, graphdef, params, batch = _denoiser_and_batch()
    loss_fn = dm.make_private_loss(config)
    mask, key = jnp.arange(8) < 6, jax.random.key(3)
    opt = optax.sgd(1.0)
    dp = make_private_step(loss_fn, opt, l2_clip=1e6, noise_multiplier=0.0, expected_batch_size=6.0,
                           graphdef=graphdef)
    plain = make_nonprivate_step(loss_fn, opt, graphdef=graphdef)
    a, _ = dp.step(dp.init(params), batch, mask, key)
    b, _ = plain.step(plain.init(params), batch, mask, key)
    moved = [float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(b.params), jax.tree.leaves(params))]
    assert max(moved) > 1e-3  # the step did something
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_private_label_frequencies_are_a_calibrated_gaussian_mechanism():
    from tabdiff_jax.privacy.loop import private_frequencies

    labels = np.repeat([0, 1, 2], [60_000, 30_000, 10_000])
    freqs, rec = private_frequencies(labels, 3, 0.5, 1e-6, jax.random.key(0))
    again, _ = private_frequencies(labels, 3, 0.5, 1e-6, jax.random.key(0))
    np.testing.assert_array_equal(freqs, again)  # reproducible from the key
    assert freqs.sum() == pytest.approx(1.0) and np.allclose(freqs, [0.6, 0.3, 0.1], atol=1e-3)
    # the Gaussian mechanism (sensitivity 1) at this sigma spends at most, and about, the target
    eps = _independent_epsilon(rec["noise_multiplier"], 1.0, 1, 1e-6)
    assert 0.99 * 0.5 <= eps <= 0.5
    few, _ = private_frequencies(np.array([0, 1]), 2, 0.01, 1e-6, jax.random.key(1))
    assert few.min() >= 0 and few.sum() == pytest.approx(1.0)  # clipped at 0 and normalised


def _independent_epsilon(sigma, q, steps, delta):
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps))
    return acc.get_epsilon(delta)


def test_cli_private_tabddpm_spends_at_most_its_target_calibrated_as_dp_accounting(capsys, tmp_path):
    df = _table()
    data, run = tmp_path / "t.csv", tmp_path / "run"
    df.to_csv(data, index=False)
    argv = ["fit", str(data), "--model", "tabddpm", "--target", "label", "--out", str(run), "--no-progress",
            "--epsilon", "2", "--steps", "12", "--batch-size", "32", "--numeric", "minmax",
            "--public-bounds", "x=0:20", "--public-bounds", "k=0:9", "--public-categories", "c=a,b,c",
            "--public-categories", "label=no,yes"]
    for key, value in TINY.items():
        if key != "batch_size":
            argv += ["--option", f"{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)  # public bounds and categories: nothing learned outside
        code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())
    assert f"privacy: epsilon {info['epsilon_spent']:.3f} spent of 2 (delta 1e-05); nothing learned" in out
    assert info["private"] and info["preprocessing"]["private"] and not info["preprocessing"]["data_dependent"]
    assert info["steps"] == info["planned_steps"] == 12 and info["clipping"] == "ghost"
    n, q, sigma = 240, info["sampling_rate"], info["noise_multiplier"]
    assert q == pytest.approx(32 / n) and info["epsilon"] == 2.0 and info["delta"] == 1e-5
    # the label frequencies of sampling take 2% of the budget, DP-SGD the rest (basic composition)
    label = info["released"]["label_frequencies"]
    assert label["epsilon"] == pytest.approx(0.04) and label["delta"] == pytest.approx(2e-7)
    assert info["dpsgd_epsilon"] == pytest.approx(1.96) and info["dpsgd_delta"] == pytest.approx(0.98e-5)
    assert info["accountant_delta"] + info["truncation_delta"] == pytest.approx(0.98e-5, rel=1e-12)
    # never past the target, and tight: dp_accounting (called here directly) agrees on the epsilon
    # spent, and 2% less noise would overspend
    spent = _independent_epsilon(sigma, q, 12, info["accountant_delta"])
    assert label["epsilon"] + spent == pytest.approx(info["epsilon_spent"], rel=1e-9)
    assert 0.99 * 2.0 <= info["epsilon_spent"] <= 2.0
    assert _independent_epsilon(0.98 * sigma, q, 12, info["accountant_delta"]) > 1.96
    sample = load(run).sample(20, seed=0)
    assert list(sample.columns) == list(df.columns) and set(sample.label) <= {"no", "yes"}


@pytest.mark.parametrize("options, name", [
    ({"epsilon": 0}, "epsilon"), ({"epsilon": -1.0}, "epsilon"), ({"epsilon": math.nan}, "epsilon"),
    ({"epsilon": math.inf}, "epsilon"), ({"epsilon": 1.0, "delta": 0}, "delta"),
    ({"epsilon": 1.0, "delta": -1e-5}, "delta"), ({"epsilon": 1.0, "delta": math.nan}, "delta"),
    ({"epsilon": 1.0, "delta": 1.0}, "delta"), ({"epsilon": 1.0, "max_grad_norm": 0.0}, "max_grad_norm"),
    ({"epsilon": 1.0, "clipping": "exact"}, "clipping"), ({"epsilon": 1.0, "accountant": "moments"}, "accountant"),
    ({"epsilon": 1.0, "dropout": 0.1}, "dropout"),
])
def test_bad_privacy_options_are_refused_naming_the_option(options, name):
    with pytest.raises(ConfigError, match=name):
        TabDDPM(**options)


def test_delta_of_1_over_n_is_refused_at_fit_and_epochs_only_plan_private_runs():
    df = _table(n=100)
    with pytest.raises(ConfigError, match=r"delta must be below 1/n"):
        TabDDPM(epsilon=1.0, delta=0.01, **TINY).fit(df, target="label", progress=False)
    with pytest.raises(ConfigError, match="epochs"):
        TabDDPM(**TINY).fit(df, target="label", progress=False, epochs=2)
    with pytest.raises(ConfigError, match="epochs and steps"):
        TabDDPM(epsilon=1.0, **TINY).fit(df, target="label", progress=False, epochs=2, steps=10)


def test_resume_keeps_the_length_of_a_private_tabddpm_run_only():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "x"]})
    for config, fixed in (({}, False), ({"epsilon": 1.0}, True), ({"epsilon": None}, False)):
        saved = fit_record("tabddpm", {**config, "steps": 10}, df, {"epochs": None})
        longer = fit_record("tabddpm", {**config, "steps": 20}, df, {"epochs": 3})
        diffs = differences(saved, longer)
        assert (diffs == ["steps 10 -> 20", "epochs null -> 3"]) if fixed else not diffs, (config, diffs)


def _params(model):
    return [np.asarray(v) for v in jax.tree.leaves(model._params)]


@pytest.mark.slow
def test_private_fit_is_reproducible_by_seed_and_warns_about_learned_quantiles():
    df = _table()
    with pytest.warns(PrivacyWarning, match="outside the"):
        a = TabDDPM(epsilon=1.0, steps=10, **TINY).fit(df, target="label", seed=4, progress=False)
    assert "x" in a.fit_info["preprocessing"]["data_dependent"] and not a.fit_info["preprocessing"]["private"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        b = TabDDPM(epsilon=1.0, steps=10, **TINY).fit(df, target="label", seed=4, progress=False)
        c = TabDDPM(epsilon=1.0, steps=10, **TINY).fit(df, target="label", seed=5, progress=False)
    for x, y in zip(_params(a), _params(b)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(_params(a), _params(c)))
    pd.testing.assert_frame_equal(a.sample(30, seed=1), b.sample(30, seed=1))


@pytest.mark.slow
def test_resumed_private_run_equals_uninterrupted_and_keeps_its_length(tmp_path):
    df = _table()
    fit = dict(target="label", seed=0, progress=False, public_bounds=PUBLIC_BOUNDS,
               public_categories=PUBLIC_CATEGORIES)
    opts = dict(epsilon=3.0, steps=16, ema_decay=0.9, preprocessor={"numeric": "minmax"}, **TINY)
    full = TabDDPM(**opts).fit(df, **fit)
    part = TabDDPM(**opts).fit(df, run_dir=tmp_path, stop_after_steps=7, **fit)
    assert part.fit_info["steps"] == 7 and part.fit_info["epsilon_spent"] < full.fit_info["epsilon_spent"]
    with pytest.raises(ConfigError, match="steps 16 -> 20"):
        TabDDPM(**{**opts, "steps": 20}).fit(df, run_dir=tmp_path, resume=True, **fit)
    resumed = TabDDPM(**opts).fit(df, run_dir=tmp_path, resume=True, **fit)
    assert resumed.fit_info["steps"] == 16 and resumed.fit_info["sampled_from"] == "ema"
    assert resumed.fit_info["epsilon_spent"] == full.fit_info["epsilon_spent"] <= 3.0
    for a, b in zip(_params(full), _params(resumed)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ private TabDiff
def assert_tabdiff_ghost_clipping_matches_vmap(net, config, *, rows: int, real: int, rtol_norms: float,
                                               rtol_grads: float):
    """Book-keeping ("ghost") and vmap clipping of TabDiff's DP-SGD loss on ``net`` agree (losses, norms, clipped
    sums) on a random batch of ``rows`` rows of which ``real`` count, the schedule exponents kept fixed."""
    from tabdiff_jax.diffusion import tabdiff as td

    graphdef, params = split_params(net)
    frozen = {k: v for k, v in params.items() if k != "denoiser"}  # rho, k: not layers, kept fixed
    k = jax.random.split(jax.random.key(1), 3)
    codes = [jax.random.randint(key, (rows,), 0, size) for key, size in zip(k[1:], config.categorical_sizes)]
    batch = td.TableBatch(jax.random.normal(k[0], (rows, config.num_numeric)), jnp.stack(codes, 1))
    keys, mask = jax.random.split(jax.random.key(2), rows), jnp.arange(rows) < real
    loss_fn = td.dpsgd_loss_fn(config)
    f = jax.jit(lambda p: [clipped_grad_sum(loss_fn, p, batch, keys, mask, l2_clip=0.5, clipping=m, graphdef=graphdef,
                                            static_state=(frozen,)) for m in ("ghost", "vmap")])
    (gs, gst, gl), (vs, vst, vl) = f({"denoiser": params["denoiser"]})
    assert 0 < int(gst.num_clipped) <= real
    np.testing.assert_allclose(np.asarray(gl), np.asarray(vl), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gst.norms), np.asarray(vst.norms), rtol=rtol_norms, atol=1e-6)
    for a, c in zip(jax.tree.leaves(gs), jax.tree.leaves(vs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=rtol_grads, atol=1e-5)


@pytest.mark.slow
def test_tabdiff_loss_ghost_clipping_with_a_frozen_schedule_matches_vmap():
    from tabdiff_jax.diffusion import tabdiff as td

    config = td.TabDiffConfig(num_numeric=2, categorical_sizes=(3, 2))
    net = td.make_network(config, hidden_dims=(16, 16), dim_t=8, rngs=nnx.Rngs(0))
    assert_tabdiff_ghost_clipping_matches_vmap(net, config, rows=8, real=6, rtol_norms=1e-5, rtol_grads=1e-5)


@pytest.mark.slow
def test_private_tabdiff_spends_at_most_its_target_and_keeps_its_schedule(tmp_path):
    from tabdiff_jax.models.tabdiff import TabDiff

    df = _table()
    with pytest.raises(ConfigError, match="dropout"):
        TabDiff(epsilon=1.0, dropout=0.1)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        TabDiff(epsilon=1.0, max_grad_norm=-1.0)
    opts = dict(epsilon=2.0, steps=10, batch_size=32, hidden_dims=(16, 16), dim_t=8, num_sample_steps=4,
                preprocessor={"numeric": "minmax"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)
        model = TabDiff(**opts).fit(df, target="label", seed=0, progress=False, run_dir=tmp_path / "run",
                                    public_bounds=PUBLIC_BOUNDS, public_categories=PUBLIC_CATEGORIES)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["private"] and info["steps"] == 10 and info["clipping"] == "ghost"
    assert info["preprocessing"]["private"] and not info["schedule_learned"]
    label = info["released"]["label_frequencies"]  # the label prior of sampling: 2% of the budget, as TabDDPM
    assert label["epsilon"] == pytest.approx(0.04) and info["dpsgd_epsilon"] == pytest.approx(1.96)
    spent = _independent_epsilon(info["noise_multiplier"], info["sampling_rate"], 10, info["accountant_delta"])
    assert label["epsilon"] + spent == pytest.approx(info["epsilon_spent"], rel=1e-9)
    assert 0.99 * 2.0 <= info["epsilon_spent"] <= 2.0
    fresh = TabDiff(**opts)._build(model._layout, jax.random.key(0))[2]
    np.testing.assert_array_equal(np.asarray(model._params["rho_raw"]), np.asarray(fresh["rho_raw"]))
    sample = load(tmp_path / "run").sample(20, seed=0)
    assert list(sample.columns) == list(df.columns) and set(sample.label) <= {"no", "yes"}
