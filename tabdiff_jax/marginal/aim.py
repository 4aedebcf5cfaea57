"""AIM (McKenna, Mullins, Sheldon & Miklau 2022): adaptive, iterative selection of marginals.

On a table of codes with zCDP budget ``rho`` and a workload of weighted cliques (default: every
pair of columns, weight 1):

* candidates are the workload's downward closure, each weighted by ``sum_w weight_w |c ∩ w|``;
* every 1-way marginal is measured first, with the round's noise ``sigma``;
* each round spends ``rho_t = 1 / (2 sigma^2) + epsilon^2 / 8`` (``T = 16 d`` planned rounds,
  ``0.9`` of the round's budget for the measurement, ``0.1`` for the selection): the exponential
  mechanism (sensitivity the largest weight) picks the candidate with the largest
  ``weight (||x_c - x̂_c||_1 - sqrt(2 / pi) sigma |c|)`` among those whose junction tree stays
  within ``max_model_size * rho_used / rho`` MB (or that the model already covers), it is measured,
  and the model refitted (warm start); when the fitted marginal moved less than the expected noise
  (``sqrt(2 / pi) sigma |c|`` in L1), ``sigma`` halves and ``epsilon`` doubles (annealing);
* when what is left is less than two rounds' worth, the last round spends exactly all of it.

The estimated marginals ``x̂_c`` of the candidates come from the model's potentials in NumPy: one
sum-product calibration of its junction tree per round, each candidate a sum of the smallest clique
belief holding it (:meth:`~.graphical.GraphModel.calibrate`; variable elimination otherwise): no compiled
program per candidate, and no pass over the whole model per candidate.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.marginal.common import (
    Estimator,
    data_marginal,
    exponential_mechanism,
    gaussian_noise,
    split_key,
)
from tabdiff_jax.marginal.graphical import GraphModel
from tabdiff_jax.marginal.zcdp import Ledger, exponential_rho, gaussian_rho


def pair_workload(d: int) -> list[tuple[tuple, float]]:
    """Every pair of columns, weight 1 (AIM's workload here by default)."""
    return [(c, 1.0) for c in itertools.combinations(range(d), 2)]


def candidates_of(workload: Sequence[tuple[tuple, float]]) -> dict[tuple, float]:
    """The downward closure of the workload's cliques, each weighted by its overlap with the workload."""
    closure = set()
    for clique, _ in workload:
        for r in range(1, len(clique) + 1):
            closure.update(itertools.combinations(sorted(clique), r))
    return {c: float(sum(w * len(set(c) & set(wc)) for wc, w in workload)) for c in sorted(closure, key=len)}


def run_aim(codes: np.ndarray, shape, rho: float, key: jax.Array, *, workload=None, rounds: Optional[int] = None,
            max_model_size: float = 10.0, round_iters: int = 100, iters: int = 1000,
            log: Optional[Callable[[str], None]] = None) -> tuple[GraphModel, Ledger, dict]:
    """Fit AIM to ``codes`` ``[n, d]`` under ``rho``-zCDP; returns ``(model, ledger, record)``.

    ``record`` holds the selected cliques, the rounds and the time of each round (``round_seconds``).

    Raises:
      ConfigError: ``rounds`` below the number of columns (the 1-way measurements would not fit).
    """
    d = len(shape)
    rounds = 16 * d if rounds is None else int(rounds)
    if rounds < d:
        raise ConfigError(f"rounds must be at least the number of columns ({d}), got {rounds}")
    candidates = candidates_of(pair_workload(d) if workload is None else workload)
    for a in range(d):  # every 1-way marginal is measured first, whatever the workload
        candidates.setdefault((a,), 0.0)
    answers = {c: data_marginal(codes, shape, c) for c in candidates}
    ledger, est = Ledger(rho), Estimator(shape)
    sigma = math.sqrt(rounds / (2.0 * 0.9 * rho))
    epsilon = math.sqrt(8.0 * 0.1 * rho / rounds)
    for a in range(d):
        y = answers[(a,)] + gaussian_noise(split_key(key, a), answers[(a,)].size, sigma)
        est.add((a,), y, sigma)
        ledger.spend(f"measure:{(a,)}", gaussian_rho(sigma))
    model = est.fit(round_iters, warm=False)
    selected, times, annealed = [], [], 0
    if d == 1:  # nothing to select: what is left measures the one column again
        left = ledger.remaining
        sigma = math.sqrt(1.0 / (2.0 * left))
        est.add((0,), answers[(0,)] + gaussian_noise(split_key(key, 2), answers[(0,)].size, sigma), sigma)
        ledger.spend("measure:(0,)", left)
        return est.fit(iters, final=True), ledger, {"selected": [], "rounds": 0, "annealed": 0, "round_seconds": []}
    t, done = 0, False
    while not done:
        t0 = time.perf_counter()
        t += 1
        left = ledger.remaining
        if left < 2.0 * (gaussian_rho(sigma) + exponential_rho(epsilon)):  # the last round takes all of it
            sigma = math.sqrt(1.0 / (2.0 * 0.9 * left))
            epsilon = math.sqrt(8.0 * 0.1 * left)
            done = True
        used_after = ledger.spent + gaussian_rho(sigma) + exponential_rho(epsilon)
        limit = max_model_size * used_after / rho
        model_cliques = est.cliques()
        free = {s for c in model_cliques for r in range(1, len(c) + 1) for s in itertools.combinations(c, r)}
        pool = [c for c in candidates if c in free or est.model_size_mb(model_cliques + [c]) <= limit]
        scores, calibrated = [], model.calibrate()
        for c in pool:
            x_hat = calibrated.marginal(c).reshape(-1) * model.total
            bias = math.sqrt(2.0 / math.pi) * sigma * answers[c].size
            scores.append(candidates[c] * (np.abs(answers[c] - x_hat).sum() - bias))
        k_sel, k_noise = split_key(key, 2 * (d + t)), split_key(key, 2 * (d + t) + 1)
        pick = pool[exponential_mechanism(k_sel, np.array(scores), epsilon, max(abs(w) for w in candidates.values()))]
        ledger.spend(f"select:{t}", exponential_rho(epsilon))
        if done:  # exactly what is left: no rounding can pass the target
            sigma = math.sqrt(1.0 / (2.0 * ledger.remaining))
        n_cells = answers[pick].size
        est.add(pick, answers[pick] + gaussian_noise(k_noise, n_cells, sigma), sigma)
        ledger.spend(f"measure:{pick}", gaussian_rho(sigma))
        before = calibrated.marginal(pick).reshape(-1) * model.total
        model = est.fit(round_iters)
        after = model.marginal(pick).reshape(-1) * model.total
        if not done and np.abs(after - before).sum() <= math.sqrt(2.0 / math.pi) * sigma * n_cells:
            sigma, epsilon, annealed = sigma / 2.0, epsilon * 2.0, annealed + 1
        selected.append(list(map(int, pick)))
        times.append(round(time.perf_counter() - t0, 3))
        if log:
            log(f"AIM round {t}: {pick}, {ledger.spent / rho:.1%} of rho spent, {times[-1]:.1f} s")
    model = est.fit(iters, final=True)
    return model, ledger, {"selected": selected, "rounds": t, "annealed": annealed, "round_seconds": times}
