"""Privacy accounting for DP-SGD with Poisson sampling, on Google's ``dp_accounting``.

One DP-SGD step with Poisson sampling rate ``q`` and noise multiplier ``sigma`` is the event
``PoissonSampled(q, Gaussian(sigma))``; a run is that event self-composed ``T`` times. Its epsilon
at a given delta comes from the RDP accountant (default: fast, slightly loose) or the PLD
accountant (tighter; a pessimistic discretisation keeps it an upper bound). The neighbouring
relation is add-or-remove-one-row, matching the division by the *expected* batch size.

* :func:`compute_epsilon` / :func:`calibrate_noise_multiplier`: epsilon of a plan, and the smallest
  sigma (by bisection) whose epsilon is at most a target.
* :func:`plan_privacy`: everything a private fit needs from ``(n, batch size, epochs or steps,
  epsilon, delta)``: sigma, ``q``, ``T``, the padded batch capacity and the delta spent on the
  (negligible) chance of truncating a Poisson batch (see :mod:`tabdiff_jax.privacy.sampling`).
* :class:`BudgetTracker`: the number of steps the budget allows, and the epsilon spent so far, so
  that a training loop stops *before* a step that would exceed the target.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import NamedTuple, Optional, Sequence

import dp_accounting
from dp_accounting import pld, rdp

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.privacy.sampling import (
    check_sampling,
    overflow_probability,
    poisson_capacity,
)

ACCOUNTANTS = ("rdp", "pld")
PLD_DISCRETIZATION = 1e-3  # pessimistic rounding of the privacy loss: an upper bound, 10x faster than 1e-4


def check_delta(delta: float, num_examples: Optional[int] = None) -> float:
    """Raises ConfigError unless ``0 < delta < 1`` and, given ``n``, ``delta < 1 / n``.

    ``delta >= 1/n`` would allow a mechanism that publishes one random row in the clear.
    """
    value = validate.probability("delta", delta)
    if num_examples is not None and value >= 1.0 / int(num_examples):
        raise ConfigError(f"delta must be below 1/n = {1.0 / int(num_examples):.3g} for n = {int(num_examples)} rows, got {delta!r}")
    return value


def dp_event(noise_multiplier: float, sampling_rate: float, steps: int) -> dp_accounting.DpEvent:
    """The ``dp_accounting`` event of ``steps`` Poisson-subsampled Gaussian steps."""
    step = dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    return dp_accounting.SelfComposedDpEvent(step, int(steps))


@contextlib.contextmanager
def _quiet_absl():
    """dp_accounting logs (absl WARNING) every fractional RDP order it drops; the bound stays valid."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.lru_cache(maxsize=4096)
def _epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float, accountant: str,
             orders: Optional[tuple]) -> float:
    if steps == 0:
        return 0.0
    if noise_multiplier == 0.0:
        return math.inf
    if accountant == "rdp":
        acc = rdp.RdpAccountant(orders=list(orders) if orders else None)
    else:
        acc = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    with _quiet_absl():
        acc.compose(dp_event(noise_multiplier, sampling_rate, steps))
        return float(acc.get_epsilon(delta))


def compute_epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float, *,
                    accountant: str = "rdp", orders: Optional[Sequence[float]] = None) -> float:
    """Epsilon of ``steps`` DP-SGD steps at ``delta`` (0 for no step, inf for ``sigma = 0``).

    Args:
      noise_multiplier: ``sigma`` (noise std / clipping norm).
      sampling_rate: Poisson rate ``q`` in (0, 1].
      steps: number of steps ``T >= 0``.
      delta: target delta in (0, 1).
      accountant: ``"rdp"`` (default) or ``"pld"``.
      orders: RDP orders (RDP only; ``None`` for ``dp_accounting``'s defaults).

    Raises:
      ConfigError: any argument out of range.
    """
    sigma = validate.positive_float("noise_multiplier", noise_multiplier, allow_zero=True)
    check_sampling(1, sampling_rate)
    delta = check_delta(delta)
    accountant = validate.in_choices("accountant", accountant, ACCOUNTANTS)
    return _epsilon(sigma, float(sampling_rate), validate.positive_int("steps", steps, 0), delta, accountant,
                    tuple(float(o) for o in orders) if orders is not None else None)


def calibrate_noise_multiplier(target_epsilon: float, delta: float, sampling_rate: float, steps: int, *,
                               accountant: str = "rdp", rtol: float = 1e-3, max_sigma: float = 1e4) -> float:
    """Smallest ``sigma`` (within ``rtol``) such that ``compute_epsilon(sigma, ...) <= target_epsilon``.

    Epsilon decreases with sigma, so a bracket is found by doubling and narrowed by bisection on
    ``log sigma`` until ``(1 - rtol) target <= epsilon <= target``. The returned sigma always
    satisfies the target (it is the upper end of the bracket).

    Raises:
      ConfigError: bad arguments, or no ``sigma <= max_sigma`` reaches the target.
    """
    target = validate.positive_float("target_epsilon", target_epsilon)
    steps = validate.positive_int("steps", steps, 0)
    if steps == 0:
        raise ConfigError("steps must be >= 1 to calibrate a noise multiplier")
    eps = lambda s: compute_epsilon(s, sampling_rate, steps, delta, accountant=accountant)
    hi = 1.0
    while eps(hi) > target:
        hi *= 2.0
        if hi > max_sigma:
            raise ConfigError(f"no noise multiplier up to {max_sigma:g} reaches epsilon {target:g} "
                              f"(q={sampling_rate:g}, steps={steps}, delta={delta:g}); lower the steps or raise epsilon")
    lo = hi / 2.0
    while eps(lo) <= target:
        hi, lo = lo, lo / 2.0
        if lo < 1e-6:
            return hi
    for _ in range(200):
        if eps(hi) >= (1.0 - rtol) * target:
            break
        mid = math.sqrt(lo * hi)
        if eps(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


def steps_for_epochs(num_examples: int, batch_size: int, epochs: float) -> tuple[float, int]:
    """``(q, T)`` for an expected ``batch_size`` and ``epochs`` passes: ``q = b / n``, ``T = ceil(epochs / q)``."""
    n, _ = check_sampling(num_examples, 1.0)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or not (1 <= int(batch_size) <= n):
        raise ConfigError(f"batch_size must be an integer in [1, n={n}], got {batch_size!r}")
    validate.positive_float("epochs", epochs)
    q = int(batch_size) / n
    return q, max(1, math.ceil(float(epochs) / q - 1e-9))


def truncation_delta(steps: int, overflow_prob: float, epsilon: float) -> float:
    """Extra delta of truncated Poisson batches: ``(1 + e^epsilon) * steps * P[overflow]``."""
    if overflow_prob == 0.0 or steps == 0:
        return 0.0
    return float(min(1.0, (1.0 + math.exp(min(epsilon, 700.0))) * steps * overflow_prob))


class PrivacyPlan(NamedTuple):
    """The privacy parameters of one DP-SGD run (all Python numbers, JSON-friendly).

    Attributes:
      target_epsilon, delta: the guarantee asked for (total, truncation included).
      noise_multiplier: calibrated ``sigma``.
      sampling_rate: Poisson rate ``q``.
      steps: planned number of steps ``T``.
      expected_batch_size: ``q n`` (the normaliser of the noisy sum).
      capacity: static size of the padded batches.
      accountant_delta: the part of ``delta`` given to the accountant.
      truncation_delta: the part of ``delta`` covering overflowing batches (tiny).
      planned_epsilon: accountant epsilon after ``T`` steps at ``accountant_delta`` (<= target).
      accountant: ``"rdp"`` or ``"pld"``.
    """

    target_epsilon: float
    delta: float
    noise_multiplier: float
    sampling_rate: float
    steps: int
    expected_batch_size: float
    capacity: int
    accountant_delta: float
    truncation_delta: float
    planned_epsilon: float
    accountant: str

    def to_json(self) -> dict:
        return dict(self._asdict())


def plan_privacy(num_examples: int, batch_size: int, target_epsilon: float, delta: float, *,
                 epochs: Optional[float] = None, steps: Optional[int] = None, accountant: str = "rdp",
                 truncation_share: float = 1e-3) -> PrivacyPlan:
    """Calibrate sigma and choose the batch capacity for a target ``(epsilon, delta)``.

    Args:
      num_examples: rows of the private table ``n``.
      batch_size: expected batch size ``q n``.
      target_epsilon: epsilon of the whole run.
      delta: delta of the whole run, ``0 < delta < 1/n``.
      epochs: passes over the data (``T = ceil(epochs n / batch_size)``); or give ``steps``.
      steps: number of steps (exclusive with ``epochs``).
      accountant: ``"rdp"`` or ``"pld"``.
      truncation_share: fraction of ``delta`` reserved for Poisson-batch truncation; the capacity is
        chosen so that the truncation delta stays below it.

    Raises:
      ConfigError: any argument out of range, or both/neither of ``epochs`` and ``steps``.
    """
    eps = validate.positive_float("epsilon", target_epsilon)
    n, _ = check_sampling(num_examples, 1.0)
    delta = check_delta(delta, n)
    validate.in_choices("accountant", accountant, ACCOUNTANTS)
    if (epochs is None) == (steps is None):
        raise ConfigError("give exactly one of epochs and steps")
    truncation_share = validate.probability("truncation_share", truncation_share)
    if epochs is not None:
        q, num_steps = steps_for_epochs(n, batch_size, epochs)
    else:
        q, _ = steps_for_epochs(n, batch_size, 1.0)
        num_steps = validate.positive_int("steps", steps)
    tail = min(1e-9, truncation_share * delta / (num_steps * (1.0 + math.exp(min(eps, 700.0)))))
    capacity = poisson_capacity(n, q, overflow_tail=tail)
    trunc = truncation_delta(num_steps, overflow_probability(n + 1, q, capacity), eps)
    acc_delta = delta - trunc
    sigma = calibrate_noise_multiplier(eps, acc_delta, q, num_steps, accountant=accountant)
    return PrivacyPlan(
        target_epsilon=eps, delta=delta, noise_multiplier=sigma, sampling_rate=q, steps=num_steps,
        expected_batch_size=q * n, capacity=capacity, accountant_delta=acc_delta, truncation_delta=trunc,
        planned_epsilon=compute_epsilon(sigma, q, num_steps, acc_delta, accountant=accountant),
        accountant=accountant,
    )


class BudgetTracker:
    """Epsilon spent after each step, and when to stop so that the target is never exceeded.

    Args:
      target_epsilon: the budget.
      delta: delta at which epsilon is measured (the accountant's share of delta).
      noise_multiplier: sigma of every step.
      sampling_rate: Poisson rate q.
      accountant: ``"rdp"`` or ``"pld"``.

    Example:
      >>> tracker = BudgetTracker(1.0, 1e-5, noise_multiplier=1.1, sampling_rate=0.01)
      >>> tracker.max_steps                     # steps allowed by the budget
      >>> run_training(..., stop_fn=tracker.stop_fn)
    """

    def __init__(self, target_epsilon: float, delta: float, *, noise_multiplier: float, sampling_rate: float,
                 accountant: str = "rdp", step_limit: int = 10_000_000):
        self.target_epsilon = validate.positive_float("target_epsilon", target_epsilon)
        self.delta = check_delta(delta)
        self.noise_multiplier = validate.positive_float("noise_multiplier", noise_multiplier, allow_zero=True)
        _, self.sampling_rate = check_sampling(1, sampling_rate)
        self.accountant = validate.in_choices("accountant", accountant, ACCOUNTANTS)
        self._step_limit = int(step_limit)
        self._max_steps: Optional[int] = None

    def epsilon_spent(self, steps: int) -> float:
        """Epsilon after ``steps`` steps (0 for 0 steps)."""
        return compute_epsilon(self.noise_multiplier, self.sampling_rate, steps, self.delta, accountant=self.accountant)

    @property
    def max_steps(self) -> int:
        """Largest ``T`` with ``epsilon_spent(T) <= target_epsilon`` (by doubling and bisection)."""
        if self._max_steps is None:
            ok = lambda t: self.epsilon_spent(t) <= self.target_epsilon
            if not ok(1):
                self._max_steps = 0
            else:
                lo, hi = 1, 2
                while hi <= self._step_limit and ok(hi):
                    lo, hi = hi, hi * 2
                if hi > self._step_limit and ok(self._step_limit):
                    lo = hi = self._step_limit
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if ok(mid) else (lo, mid)
                self._max_steps = lo
        return self._max_steps

    def would_exceed(self, steps_done: int) -> bool:
        """True if one more step after ``steps_done`` steps would spend more than the target."""
        return int(steps_done) + 1 > self.max_steps

    def stop_fn(self, step: int, state=None) -> bool:
        """``(step, state) -> bool`` for :func:`tabdiff_jax.training.run_training`."""
        del state
        return self.would_exceed(step)
