"""Accounting: calibration round trip, RDP vs PLD, budget tracking, validation, Opacus agreement."""

import math

import pytest

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.privacy.accounting import (
    BudgetTracker,
    calibrate_noise_multiplier,
    check_delta,
    compute_epsilon,
    plan_privacy,
    steps_for_epochs,
    truncation_delta,
)

Q, STEPS, DELTA = 1024 / 32561, 320, 1e-5


@pytest.mark.parametrize("target", [0.5, 1.0, 5.0])
def test_calibrated_sigma_gives_back_epsilon_within_one_percent(target):
    sigma = calibrate_noise_multiplier(target, DELTA, Q, STEPS)
    eps = compute_epsilon(sigma, Q, STEPS, DELTA)
    assert target * 0.99 <= eps <= target
    # and it is (nearly) the smallest such sigma
    assert compute_epsilon(sigma * 0.99, Q, STEPS, DELTA) > target


def test_calibration_with_pld():
    sigma = calibrate_noise_multiplier(1.0, DELTA, Q, 100, accountant="pld")
    eps = compute_epsilon(sigma, Q, 100, DELTA, accountant="pld")
    assert 0.99 <= eps <= 1.0


@pytest.mark.parametrize("sigma,steps", [(0.8, 50), (1.2, 300), (3.0, 1000)])
def test_rdp_is_an_upper_bound_on_pld(sigma, steps):
    rdp = compute_epsilon(sigma, Q, steps, DELTA, accountant="rdp")
    pld = compute_epsilon(sigma, Q, steps, DELTA, accountant="pld")
    assert rdp >= pld > 0


def test_epsilon_is_monotone_and_has_edge_cases():
    eps = [compute_epsilon(1.0, Q, t, DELTA) for t in (1, 10, 100)]
    assert eps[0] < eps[1] < eps[2]
    assert compute_epsilon(1.0, Q, 0, DELTA) == 0.0
    assert compute_epsilon(0.0, Q, 10, DELTA) == math.inf
    assert compute_epsilon(2.0, Q, 100, DELTA) < compute_epsilon(1.0, Q, 100, DELTA)


def test_budget_tracker_stops_before_exceeding():
    tracker = BudgetTracker(1.0, DELTA, noise_multiplier=1.5, sampling_rate=Q)
    t = tracker.max_steps
    assert 1 < t < 100
    assert tracker.epsilon_spent(t) <= 1.0 < tracker.epsilon_spent(t + 1)
    assert not tracker.would_exceed(t - 1)  # step t is still affordable
    assert tracker.would_exceed(t) and tracker.stop_fn(t, None)
    none = BudgetTracker(1e-3, DELTA, noise_multiplier=0.3, sampling_rate=0.5)
    assert none.max_steps == 0 and none.stop_fn(0, None)


def test_plan_privacy_splits_delta_and_meets_the_target():
    plan = plan_privacy(32561, 1024, 1.0, 1e-5, epochs=10)
    assert plan.steps == math.ceil(10 * 32561 / 1024)
    assert plan.sampling_rate == pytest.approx(1024 / 32561)
    assert plan.expected_batch_size == pytest.approx(1024)
    assert 0 < plan.truncation_delta <= 1e-3 * 1e-5
    assert plan.accountant_delta + plan.truncation_delta == pytest.approx(1e-5)
    assert 0.99 <= plan.planned_epsilon <= 1.0
    assert plan.capacity > 1024 and plan.capacity % 8 == 0
    tracker = BudgetTracker(1.0, plan.accountant_delta, noise_multiplier=plan.noise_multiplier,
                            sampling_rate=plan.sampling_rate)
    assert tracker.max_steps >= plan.steps
    assert truncation_delta(10, 1e-12, 1.0) == pytest.approx((1 + math.e) * 1e-11)


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_epsilon=0.0), "epsilon"),
    (dict(target_epsilon=-1.0), "epsilon"),
    (dict(target_epsilon=float("inf")), "epsilon"),
    (dict(delta=0.0), "delta"),
    (dict(delta=1e-3), "delta"),  # >= 1/n for n = 1000
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2000), "batch_size"),
    (dict(epochs=0.0), "epochs"),
    (dict(accountant="moments"), "accountant"),
])
def test_plan_validation(kwargs, match):
    args = dict(num_examples=1000, batch_size=100, target_epsilon=1.0, delta=1e-5, epochs=1.0)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        plan_privacy(**args)


def test_other_validation():
    with pytest.raises(ConfigError, match="delta"):
        check_delta(1e-4, 20_000)
    with pytest.raises(ConfigError, match="noise_multiplier"):
        compute_epsilon(-1.0, 0.1, 10, 1e-5)
    with pytest.raises(ConfigError, match="sampling_rate"):
        compute_epsilon(1.0, 0.0, 10, 1e-5)
    with pytest.raises(ConfigError, match="steps"):
        compute_epsilon(1.0, 0.1, -1, 1e-5)
    with pytest.raises(ConfigError):
        plan_privacy(1000, 100, 1.0, 1e-5)  # neither epochs nor steps
    assert steps_for_epochs(1000, 100, 2.5) == (0.1, 25)


@pytest.mark.bench
@pytest.mark.parametrize("sigma,q,steps", [(1.1, 0.01, 1000), (0.8, 1024 / 32561, 160)])
def test_epsilon_agrees_with_opacus(sigma, q, steps):
    accountants = pytest.importorskip("opacus.accountants")
    opacus = accountants.RDPAccountant()
    opacus.history = [(sigma, q, steps)]
    theirs = opacus.get_epsilon(DELTA)
    ours = compute_epsilon(sigma, q, steps, DELTA)
    # Same RDP bound and RDP-to-DP conversion; the grids of Renyi orders differ (a few percent),
    # and on Opacus' own grid only the numerics of fractional orders do (well under 1%).
    assert ours == pytest.approx(theirs, rel=0.03)
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    assert compute_epsilon(sigma, q, steps, DELTA, orders=orders) == pytest.approx(theirs, rel=2e-3)
