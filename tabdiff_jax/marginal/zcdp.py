"""Zero-concentrated differential privacy (zCDP): the accounting of the marginal mechanisms.

A mechanism is ``rho``-zCDP (Bun & Steinke 2016) when its Renyi divergence of every order
``alpha > 1`` between neighbouring tables is at most ``alpha rho``. The pieces used here:

* Gaussian mechanism, L2 sensitivity ``s``, noise ``N(0, sigma^2)``: ``rho = s^2 / (2 sigma^2)``;
* exponential mechanism with parameter ``epsilon`` (scores of sensitivity ``Delta`` scaled by
  ``epsilon / (2 Delta)``): ``rho = epsilon^2 / 8`` (Cesar & Rogers 2021, bounded range);
* composition adds the ``rho`` of each step.

The conversion to ``(epsilon, delta)``-DP is the exact one of Canonne, Kamath & Steinke (2020,
Proposition 12): ``delta = min over alpha > 1 of exp((alpha - 1)(alpha rho - epsilon)) / (alpha - 1)
* (1 - 1 / alpha)^alpha``; :func:`cdp_rho` is its inverse in ``rho`` (the budget a mechanism may
spend for a target ``(epsilon, delta)``). The minimising ``alpha`` is found by bisection on the
derivative (the objective is convex in ``alpha``), ``rho`` and ``epsilon`` by bisection on the
monotone ``delta``; every bisection errs on the safe side.
"""

from __future__ import annotations

import math

from tabdiff_jax.errors import ConfigError

_ITERS = 200  # bisection steps: far below float precision


def gaussian_rho(sigma: float, sensitivity: float = 1.0) -> float:
    """``rho`` of the Gaussian mechanism: ``sensitivity^2 / (2 sigma^2)``."""
    return float(sensitivity) ** 2 / (2.0 * float(sigma) ** 2)


def gaussian_sigma(rho: float, sensitivity: float = 1.0) -> float:
    """The noise scale whose Gaussian mechanism costs exactly ``rho``."""
    return float(sensitivity) / math.sqrt(2.0 * float(rho))


def exponential_rho(epsilon: float) -> float:
    """``rho`` of the exponential mechanism with parameter ``epsilon``: ``epsilon^2 / 8``."""
    return float(epsilon) ** 2 / 8.0


def exponential_epsilon(rho: float) -> float:
    """The exponential mechanism's ``epsilon`` that costs exactly ``rho``: ``sqrt(8 rho)``."""
    return math.sqrt(8.0 * float(rho))


def _bisect(below, lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` after ``_ITERS`` halvings of the bracket of the point where ``below(x)`` (true at
    ``lo``, false at ``hi``) turns false."""
    for _ in range(_ITERS):
        mid = (lo + hi) / 2.0
        if below(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def cdp_delta(rho: float, epsilon: float) -> float:
    """The smallest ``delta`` for which ``rho``-zCDP implies ``(epsilon, delta)``-DP (CKS 2020)."""
    rho, epsilon = float(rho), float(epsilon)
    if rho < 0 or epsilon < 0:
        raise ConfigError(f"cdp_delta needs rho >= 0 and epsilon >= 0, got rho={rho}, epsilon={epsilon}")
    if rho == 0:
        return 0.0
    # d/d alpha of the log is negative below the optimum, which lies below hi; lo avoids alpha -> 1
    lo, hi = _bisect(lambda a: (2.0 * a - 1.0) * rho - epsilon + math.log1p(-1.0 / a) < 0,
                     1.01, (epsilon + 1.0) / (2.0 * rho) + 2.0)
    alpha = (lo + hi) / 2.0  # any alpha > 1 gives a valid bound: an inexact optimum only raises delta
    log_delta = (alpha - 1.0) * (alpha * rho - epsilon) + alpha * math.log1p(-1.0 / alpha) - math.log(alpha - 1.0)
    return min(math.exp(min(log_delta, 0.0)), 1.0)


def cdp_epsilon(rho: float, delta: float) -> float:
    """The smallest ``epsilon`` with ``cdp_delta(rho, epsilon) <= delta``."""
    rho, delta = float(rho), float(delta)
    if rho < 0 or not 0 < delta <= 1:
        raise ConfigError(f"cdp_epsilon needs rho >= 0 and delta in (0, 1], got rho={rho}, delta={delta}")
    hi = rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta)) + 1.0  # the classic bound is above
    return _bisect(lambda e: cdp_delta(rho, e) > delta, 0.0, hi)[1]


def cdp_rho(epsilon: float, delta: float) -> float:
    """The largest ``rho`` whose zCDP guarantee implies ``(epsilon, delta)``-DP.

    Raises:
      ConfigError: ``epsilon`` not positive or ``delta`` not in (0, 1) (naming the option).
    """
    epsilon, delta = float(epsilon), float(delta)
    if not epsilon > 0 or not math.isfinite(epsilon):
        raise ConfigError(f"epsilon must be a positive number, got {epsilon!r}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    # rho >= epsilon gives delta >= ... > target for any useful delta
    return _bisect(lambda r: cdp_delta(r, epsilon) <= delta, 0.0, epsilon + 1.0)[0]


class Ledger:
    """The steps of a mechanism and the ``rho`` each spent, against a target ``rho``.

    ``spend`` refuses a step that would pass the target by more than rounding (``1e-12`` relative).
    """

    def __init__(self, target_rho: float):
        self.target = float(target_rho)
        self.steps: list[tuple[str, float]] = []

    @property
    def spent(self) -> float:
        return math.fsum(r for _, r in self.steps)

    @property
    def remaining(self) -> float:
        return max(self.target - self.spent, 0.0)

    def spend(self, what: str, rho: float) -> float:
        rho = float(rho)
        if rho < 0 or self.spent + rho > self.target * (1 + 1e-12):
            raise RuntimeError(f"privacy ledger: {what} would spend {rho:.6g} with {self.remaining:.6g} of "
                               f"{self.target:.6g} left")
        self.steps.append((what, rho))
        return rho

    def summary(self) -> dict:
        """Totals per kind of step (the part of ``what`` before any ``:``), JSON-able."""
        out: dict[str, float] = {}
        for what, rho in self.steps:
            kind = what.split(":")[0]
            out[kind] = out.get(kind, 0.0) + rho
        return {"target_rho": self.target, "spent_rho": self.spent, "steps": len(self.steps), "by_kind": out}
