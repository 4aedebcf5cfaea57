"""MST (McKenna, Miklau & Sheldon 2021; winner of the 2018 NIST synthetic-data challenge).

Given a table of codes (every column discrete) and a zCDP budget ``rho``, split in thirds:

1. measure every 1-way marginal with Gaussian noise (``rho / 3`` in all);
2. select ``d - 1`` pairs forming a maximum spanning tree: Kruskal's algorithm where each edge is
   drawn by the exponential mechanism (``rho / 3`` over the ``d - 1`` draws) among the pairs that join
   two components, scored by the L1 error of the pair's marginal under the model fitted to the
   1-way measurements (sensitivity 1);
3. measure the selected pairs with Gaussian noise (``rho / 3``),

then fit the graphical model to all measurements with mbi (:class:`~.common.Estimator`). The
domain compression of the reference code (merging rare values of a column after step 1) is not
done. Each release is written to a :class:`~.zcdp.Ledger` whose total is the target ``rho``.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Optional

import jax
import numpy as np

from tabdiff_jax.marginal.common import (
    Estimator,
    data_marginal,
    exponential_mechanism,
    gaussian_noise,
    split_key,
)
from tabdiff_jax.marginal.graphical import GraphModel
from tabdiff_jax.marginal.zcdp import Ledger, exponential_epsilon, gaussian_rho


def _measure(est: Estimator, ledger: Ledger, codes, shape, cliques, rho: float, key, what: str) -> None:
    """Gaussian measurements of ``cliques`` that cost ``rho`` together (equal noise on each)."""
    sigma = math.sqrt(len(cliques) / (2.0 * rho))
    for k, clique in enumerate(cliques):
        x = data_marginal(codes, shape, clique)
        est.add(clique, x + gaussian_noise(split_key(key, k), x.size, sigma), sigma)
        ledger.spend(f"{what}:{clique}", gaussian_rho(sigma))


def spanning_tree(key: jax.Array, weights: dict, d: int, rho: float, ledger: Ledger) -> list[tuple[int, int]]:
    """``d - 1`` edges of a spanning tree over ``0 .. d - 1``, each picked by the exponential mechanism
    (score ``weights[edge]``, sensitivity 1) among edges that join two components; ``rho`` in all."""
    parent = list(range(d))

    def root(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    edges, chosen = list(weights), []
    epsilon = exponential_epsilon(rho / (d - 1))
    for step in range(d - 1):
        open_edges = [e for e in edges if root(e[0]) != root(e[1])]
        pick = open_edges[exponential_mechanism(split_key(key, step), [weights[e] for e in open_edges], epsilon, 1.0)]
        ledger.spend(f"select:{pick}", rho / (d - 1))
        parent[root(pick[0])] = root(pick[1])
        chosen.append(pick)
    return chosen


def run_mst(codes: np.ndarray, shape, rho: float, key: jax.Array, *, iters: int = 3000,
            log: Optional[Callable[[str], None]] = None) -> tuple[GraphModel, Ledger, dict]:
    """Fit MST to ``codes`` ``[n, d]`` (``shape[a]`` values in column ``a``) under ``rho``-zCDP.

    Returns ``(model, ledger, record)``; ``record`` lists the selected pairs.
    """
    d = len(shape)
    ledger = Ledger(rho)
    est = Estimator(shape)
    one_way = [(a,) for a in range(d)]
    if d == 1:
        _measure(est, ledger, codes, shape, one_way, rho, split_key(key, 0), "measure1")
        return est.fit(iters, warm=False, final=True), ledger, {"edges": []}
    _measure(est, ledger, codes, shape, one_way, rho / 3.0, split_key(key, 0), "measure1")
    product = est.fit(min(iters, 1000), warm=False)  # 1-way cliques only: a product of marginals
    weights = {}
    for a, b in itertools.combinations(range(d), 2):
        estimate = np.outer(product.marginal((a,)), product.marginal((b,))).reshape(-1) * product.total
        weights[(a, b)] = float(np.abs(data_marginal(codes, shape, (a, b)) - estimate).sum())
    edges = spanning_tree(split_key(key, 1), weights, d, rho / 3.0, ledger)
    if log:
        log(f"MST: selected {len(edges)} pairs")
    remaining = ledger.remaining  # rho / 3 up to rounding: the last step spends exactly what is left
    _measure(est, ledger, codes, shape, sorted(tuple(sorted(e)) for e in edges), remaining, split_key(key, 2),
             "measure2")
    return est.fit(iters, final=True), ledger, {"edges": [list(map(int, e)) for e in edges]}
