"""MST and AIM (tabdiff_jax.marginal, tabdiff_jax.models.marginal): zCDP accounting against
dp-accounting, budgets that add up to the target, the private quantile step, the graphical model's
marginals and its row-wise sampler, a planted dependency recovered, save / load, errors."""

import itertools
import math
import warnings

import jax
import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.marginal import zcdp
from tabdiff_jax.marginal.graphical import GraphModel, draw_codes


# ----------------------------------------------------------------------------- accounting
@pytest.mark.parametrize("rho,delta", [(0.01, 1e-5), (0.0306, 1e-5), (0.55, 1e-6), (2.0, 1e-9)])
def test_rho_to_epsilon_matches_dp_accounting(rho, delta):
    """rho-zCDP = RDP of every order alpha at alpha * rho: a Gaussian mechanism with noise multiplier
    1 / sqrt(2 rho) has exactly that curve, and dp-accounting's RDP conversion (the same CKS bound,
    minimised over a grid of orders) must agree with the exact minimum from above, within the grid."""
    import dp_accounting

    top = 1 + 3 * math.sqrt(math.log(1 / delta) / rho)  # beyond the optimal order
    orders = list(np.linspace(1.01, top, 20000))
    acc = dp_accounting.rdp.RdpAccountant(orders=orders)
    acc.compose(dp_accounting.GaussianDpEvent(1.0 / math.sqrt(2.0 * rho)))
    theirs, ours = acc.get_epsilon(delta), zcdp.cdp_epsilon(rho, delta)
    assert ours <= theirs + 1e-9 and theirs - ours < 1e-3
    assert zcdp.cdp_delta(rho, ours) <= delta * (1 + 1e-9)
    assert zcdp.cdp_delta(rho, ours * 0.999) > delta  # the smallest epsilon, not just a valid one
    assert zcdp.cdp_rho(ours, delta) == pytest.approx(rho, rel=1e-9)  # cdp_rho inverts it


def test_closed_forms_and_the_ledger():
    assert zcdp.gaussian_rho(2.0) == 1 / 8 and zcdp.gaussian_rho(3.0, sensitivity=2.0) == pytest.approx(2 / 9)
    assert zcdp.gaussian_rho(zcdp.gaussian_sigma(0.3)) == pytest.approx(0.3, rel=1e-12)
    assert zcdp.exponential_rho(2.0) == 0.5 and zcdp.exponential_rho(zcdp.exponential_epsilon(0.07)) == pytest.approx(0.07)
    ledger = zcdp.Ledger(1.0)
    ledger.spend("measure:a", 0.6)
    with pytest.raises(RuntimeError, match="select:b would spend"):
        ledger.spend("select:b", 0.5)
    assert ledger.summary()["by_kind"] == {"measure": 0.6}
    for bad in ({"epsilon": 0.0}, {"epsilon": -1}, {"delta": 0.0}, {"delta": 1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            zcdp.cdp_rho(**{"epsilon": 1.0, "delta": 1e-5, **bad})


# ------------------------------------------------------------------------ graphical model
def _loop_model(seed=0):
    rng = np.random.default_rng(seed)
    shape = (3, 4, 2, 5)
    cliques = [(0, 1), (1, 2), (2, 3), (0, 3)]  # a cycle: the elimination adds a fill-in edge
    return GraphModel(shape, cliques, [rng.normal(size=[shape[a] for a in c]) for c in cliques], 100.0)


def test_marginals_equal_the_brute_force_joint():
    model = _loop_model()
    log_p = np.zeros(model.shape)
    for idx in itertools.product(*[range(s) for s in model.shape]):
        log_p[idx] = sum(p[tuple(idx[a] for a in c)] for c, p in zip(model.cliques, model.potentials))
    joint = np.exp(log_p - log_p.max())
    joint /= joint.sum()
    np.testing.assert_allclose(model.marginal((3, 0)), joint.sum(axis=(1, 2)).T, atol=1e-12)
    np.testing.assert_allclose(model.marginal((2,)), joint.sum(axis=(0, 1, 3)), atol=1e-12)
    np.testing.assert_allclose(model.marginal((0, 1, 2, 3)), joint, atol=1e-12)


def test_calibrated_beliefs_give_the_eliminated_marginals():
    """Junction-tree calibration (one collect and one distribute pass) against variable elimination, on
    random structures: chains, cycles, a 3-way clique, disconnected parts; every 1- and 2-way marginal in
    both axis orders, and the brute-force joint of the loop model."""
    rng = np.random.default_rng(0)
    for _ in range(12):
        d = int(rng.integers(3, 7))
        shape = tuple(int(k) for k in rng.integers(2, 5, d))
        pairs = list(itertools.combinations(range(d), 2))
        k = int(rng.integers(1, d + 1)) if _ % 2 else int(rng.integers(1, len(pairs) + 1))  # sparse / dense
        cliques = [pairs[i] for i in rng.choice(len(pairs), k, replace=False)]
        if rng.random() < 0.4:
            cliques.append(tuple(sorted(int(a) for a in rng.choice(d, 3, replace=False))))
        model = GraphModel(shape, cliques, [2 * rng.normal(size=[shape[a] for a in c]) for c in cliques], 1.0)
        calibrated = model.calibrate()
        for c in [(a,) for a in range(d)] + pairs + [p[::-1] for p in pairs]:
            np.testing.assert_allclose(calibrated.marginal(c), model.marginal(c), atol=1e-10)
    loop = _loop_model()
    np.testing.assert_allclose(loop.calibrate().marginal((0, 1, 2, 3)), loop.marginal((0, 1, 2, 3)), atol=1e-12)
    # a pair in no clique: along the tree path of a chain; across two unconnected parts: independent
    for cliques, pair in (([(0, 1), (1, 2), (2, 3)], (3, 0)), ([(0, 1), (2, 3)], (0, 2))):
        model = GraphModel((3, 4, 2, 5), cliques, [rng.normal(size=[(3, 4, 2, 5)[a] for a in c]) for c in cliques])
        assert not any(set(pair) <= set(scope) for scope, _ in model.calibrate().beliefs.values())
        np.testing.assert_allclose(model.calibrate().marginal(pair), model.marginal(pair), atol=1e-12)


def test_row_wise_sampler_reproduces_the_model_marginals():
    """Frequencies of 20,000 ancestral samples vs every 2-way marginal: within 4.5 binomial standard
    deviations (+ 1/n) in every cell; and row i depends only on its own uniforms."""
    model = _loop_model(1)
    n = 20_000
    u = np.asarray(jax.random.uniform(jax.random.key(0), (n, 4), dtype=jax.numpy.float32), np.float64)
    codes = draw_codes(model.sampler_tables(), model.shape, u)
    for a, b in itertools.combinations(range(4), 2):
        p = model.marginal((a, b))
        freq = np.zeros_like(p)
        np.add.at(freq, (codes[:, a], codes[:, b]), 1.0 / n)
        assert np.all(np.abs(freq - p) <= 4.5 * np.sqrt(p * (1 - p) / n) + 1.0 / n), (a, b)
    np.testing.assert_array_equal(draw_codes(model.sampler_tables(), model.shape, u[123:130]), codes[123:130])


# ------------------------------------------------------------------------------ mechanisms
def _codes(n=400, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, n)
    return np.stack([a, (a + 1) % 3, rng.integers(0, 4, n), rng.integers(0, 2, n)], axis=1), (3, 3, 4, 2)


def test_aim_budget_adds_up_to_the_target():
    from tabdiff_jax.marginal.aim import run_aim

    codes, shape = _codes()
    rho = zcdp.cdp_rho(1.0, 1e-5)
    _, ledger, record = run_aim(codes, shape, rho, jax.random.key(1), rounds=10, round_iters=10, iters=20)
    assert abs(ledger.spent - rho) < 1e-9 and ledger.spent <= rho * (1 + 1e-12)
    assert all(r <= rho for _, r in ledger.steps) and record["rounds"] == len(record["selected"]) >= 1
    kinds = ledger.summary()["by_kind"]
    assert set(kinds) == {"measure", "select"}
    with pytest.raises(ConfigError, match="rounds"):
        run_aim(codes, shape, rho, jax.random.key(1), rounds=3)


# --------------------------------------------------------------------------- estimators
def _table(n=1500, seed=0):
    """b is a relabelled copy of a (a planted tree edge); c independent; x depends on c."""
    rng = np.random.default_rng(seed)
    a = rng.choice(["p", "q", "r"], n)
    c = rng.choice(["lo", "hi"], n)
    return pd.DataFrame({
        "a": a,
        "b": pd.Series(a).map({"p": "P", "q": "Q", "r": "R"}).to_numpy(),
        "c": c,
        "x": np.round(rng.normal(size=n) + 3.0 * (c == "hi"), 3),
        "age": rng.integers(20, 60, n).astype(np.int64),
    })


@pytest.fixture(scope="module")
def mst_fitted():
    from tabdiff_jax import MST

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bounds of x and categories learned from the data (audited)
        return MST(epsilon=50.0, delta=1e-5, bins=8, iters=200).fit(
            _table(), public_bounds={"age": (18, 65)}, progress=False, seed=0)


def test_mst_recovers_a_planted_tree_dependency(mst_fitted):
    info = mst_fitted.fit_info
    names = ["a", "b", "c", "x", "age"]
    assert [0, 1] in [sorted(e) for e in info["edges"]]  # the pair a-b is selected
    rows = mst_fitted.sample(3000, seed=0)
    assert list(rows.columns) == names and rows["age"].dtype == np.int64 and rows["x"].dtype == np.float64
    assert (rows["b"] == rows["a"].str.upper()).mean() > 0.97
    assert rows["age"].between(18, 65).all()
    hi = rows["c"] == "hi"
    assert rows.loc[hi, "x"].mean() - rows.loc[~hi, "x"].mean() > 2.0  # the x-c edge too


def test_mst_budget_adds_up_to_the_target(mst_fitted):
    info = mst_fitted.fit_info
    rho = zcdp.cdp_rho(50.0, 1e-5)
    steps = info["rho_by_step"]
    assert abs(info["rho_spent"] - rho) < 1e-9 * rho and info["rho_spent"] <= rho * (1 + 1e-12)
    for kind in ("measure1", "select", "measure2"):  # the mechanism's budget in thirds
        assert steps[kind] == pytest.approx((rho - steps["quantile"]) / 3, rel=1e-9)
    assert len(info["edges"]) == 4


def test_private_quantile_step_is_accounted(mst_fitted):
    info = mst_fitted.fit_info
    rho = zcdp.cdp_rho(50.0, 1e-5)
    assert info["rho"] == pytest.approx(rho, rel=1e-12)
    assert info["rho_by_step"]["quantile"] == pytest.approx(0.1 * rho, rel=1e-9)  # quantile_share of x's bins
    assert abs(sum(info["rho_by_step"].values()) - rho) < 1e-9 * rho and info["rho_spent"] <= rho * (1 + 1e-12)
    assert info["epsilon_spent"] == pytest.approx(50.0, rel=1e-6)
    assert info["bins"]["x"]["source"].startswith("private quantiles")
    assert info["bins"]["age"] == {"bins": 8, "source": "public bounds, equal width"}
    assert not info["preprocessing"]["private"] and "x" in info["preprocessing"]["data_dependent"]


def test_save_load_samples_the_same_rows(mst_fitted, tmp_path):
    import tabdiff_jax

    mst_fitted.save(tmp_path / "m")
    loaded = tabdiff_jax.load(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.sample(200, seed=4), mst_fitted.sample(200, seed=4))
    assert not list(tmp_path.glob("**/*.pkl"))


def test_bad_options_name_the_option():
    from tabdiff_jax import AIM, MST

    for cls, bad, word in ((MST, {"epsilon": -1.0}, "epsilon"), (AIM, {"delta": 1.5}, "delta"),
                           (MST, {"bins": 1}, "bins"), (AIM, {"rounds": 0}, "rounds"),
                           (AIM, {"max_model_size": 0}, "max_model_size"), (MST, {"steps": 3}, "unknown option")):
        with pytest.raises(ConfigError, match=word):
            cls(**bad)
    with pytest.raises(ConfigError, match="steps"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MST().fit(_table(50), progress=False, steps=3)


def test_junction_tree_size_equals_mbis_measure():
    """AIM's model-size filter: the NumPy-free measure agrees with mbi's (networkx) on random structures."""
    from tabdiff_jax.marginal.common import mbi
    from tabdiff_jax.marginal.graphical import junction_tree_mb

    hypothetical_model_size = mbi().junction_tree.hypothetical_model_size
    rng = np.random.default_rng(0)
    shape = (32, 9, 32, 16, 7, 2, 42, 5)
    domain = mbi().Domain(tuple(range(len(shape))), shape)
    pairs = list(itertools.combinations(range(len(shape)), 2))
    for _ in range(20):
        chosen = [pairs[i] for i in rng.choice(len(pairs), rng.integers(1, 14), replace=False)]
        cliques = [(a,) for a in range(len(shape))] + chosen
        assert junction_tree_mb(cliques, shape) == pytest.approx(hypothetical_model_size(domain, cliques), rel=1e-12)
