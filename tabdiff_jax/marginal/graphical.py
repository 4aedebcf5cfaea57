"""The estimated graphical model, outside mbi: exact marginals and a row-addressable sampler in NumPy.

mbi (private-pgm) fits a Markov random field ``p(x) ∝ exp(sum_C theta_C(x_C))`` to the noisy
marginals; this module holds its log-potentials as plain arrays (:class:`GraphModel`) and answers
what the mechanisms and the sampler need without compiling anything per query:

* :meth:`GraphModel.marginal` of any set of attributes by variable elimination in log space
  (greedy min-size order; each product and sum is one NumPy broadcast and ``logaddexp`` reduce), so
  AIM scores its candidate marginals without a new XLA program per candidate (mbi's own
  ``project`` of an unmeasured clique compiles one each time);
* :meth:`GraphModel.sampler_tables`: a greedy elimination order and, for each attribute in the
  reverse order, its conditional CDF given its neighbours that come before it (the neighbours at
  elimination time, which form a clique of the triangulated graph); ancestral sampling then draws
  row ``i`` from its own uniforms only (:func:`draw_codes`).

Attributes are the integers ``0 .. d - 1`` (mbi's attribute names too).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
from scipy.special import logsumexp


def _aligned(vars_: tuple, table: np.ndarray, target: tuple) -> np.ndarray:
    """``table`` over ``vars_`` with axes reordered and expanded to broadcast over ``target``."""
    order = sorted(range(len(vars_)), key=lambda k: target.index(vars_[k]))
    t = np.transpose(table, order)
    shape = [1] * len(target)
    for k in order:
        shape[target.index(vars_[k])] = table.shape[k]
    return t.reshape(shape)


def _product(factors: list, shape: Sequence[int]) -> tuple:
    """The log-space product of ``[(vars, log table)]``: ``(vars, table)`` over their union (sorted)."""
    union = tuple(sorted(set().union(*[f[0] for f in factors])))
    out = np.zeros([shape[a] for a in union])
    for vars_, table in factors:
        out = out + _aligned(vars_, table, union)
    return union, out


def greedy_order(cliques: Sequence[tuple], shape: Sequence[int], keep: Sequence[int] = ()) -> tuple[list, dict]:
    """A min-size elimination order of the attributes not in ``keep``, and each one's neighbours
    (the other attributes of its factor) at the time it is eliminated."""
    sets = [frozenset(c) for c in cliques] + [frozenset([a]) for a in range(len(shape))]
    left = [a for a in range(len(shape)) if a not in set(keep)]
    order, neighbours = [], {}
    while left:
        costs = {b: math.prod(shape[v] for v in frozenset().union(*[s for s in sets if b in s])) for b in left}
        a = min(left, key=lambda b: (costs[b], b))
        touching = [s for s in sets if a in s]
        merged = frozenset().union(*touching)
        sets = [s for s in sets if a not in s] + [merged - {a}]
        neighbours[a] = tuple(sorted(merged - {a}))
        order.append(a)
        left.remove(a)
    return order, neighbours


def junction_tree_mb(cliques: Sequence[tuple], shape: Sequence[int]) -> float:
    """Size in MB (float64 cells) of the maximal cliques of the triangulation by :func:`greedy_order`
    (mbi's ``hypothetical_model_size`` measure, whose greedy order is the same, without networkx)."""
    order, neighbours = greedy_order(cliques, shape)
    sets = {frozenset((a, *neighbours[a])) for a in order}
    maximal = [c for c in sets if not any(c < other for other in sets)]
    return sum(math.prod(shape[a] for a in c) for c in maximal) * 8 / 2**20


@dataclasses.dataclass
class GraphModel:
    """A fitted Markov random field: ``shape[a]`` values per attribute, log-potentials per clique.

    Attributes:
      shape: domain size of each attribute ``0 .. d - 1``.
      cliques: the cliques (sorted tuples of attributes) of the potentials.
      potentials: log-potential tables, one per clique, axes in the clique's order.
      total: the estimated number of rows.
    """

    shape: tuple
    cliques: list
    potentials: list
    total: float = 1.0

    def marginal(self, attrs: Sequence[int]) -> np.ndarray:
        """The probability table of ``attrs`` (axes in that order), summing to 1."""
        attrs = tuple(int(a) for a in attrs)
        factors = [(tuple(c), np.asarray(p, np.float64)) for c, p in zip(self.cliques, self.potentials)]
        order, _ = greedy_order(self.cliques, self.shape, keep=attrs)
        for a in order:
            touching = [f for f in factors if a in f[0]]
            if not touching:
                continue
            union, table = _product(touching, self.shape)
            factors = [f for f in factors if a not in f[0]]
            factors.append((tuple(v for v in union if v != a), logsumexp(table, axis=union.index(a))))
        factors.append((attrs, np.zeros([self.shape[a] for a in attrs])))
        union, table = _product(factors, self.shape)
        log_p = _aligned(union, table, attrs).reshape([self.shape[a] for a in attrs])
        log_p = log_p - logsumexp(log_p)
        return np.exp(log_p)

    def calibrate(self) -> "Calibrated":
        """The log beliefs of every elimination clique after one collect and one distribute pass of sum-product
        over the junction tree of :func:`greedy_order` (each potential in the clique of its first-eliminated
        attribute): the marginal of any set inside one of them is then a sum of one table."""
        order, neighbours = greedy_order(self.cliques, self.shape)
        pos = {a: i for i, a in enumerate(order)}
        scopes = {a: tuple(sorted((a, *neighbours[a]))) for a in order}
        parent = {a: min(neighbours[a], key=pos.get) if neighbours[a] else None for a in order}
        up = {a: np.zeros([self.shape[v] for v in scopes[a]]) for a in order}
        for c, table in zip(self.cliques, self.potentials):
            home = min(c, key=pos.get)
            up[home] = up[home] + _aligned(tuple(c), np.asarray(table, np.float64), scopes[home])
        sent = {}
        for a in order:  # collect: each clique sends its sum over ``a`` to its parent
            if parent[a] is not None:
                sent[a] = logsumexp(up[a], axis=scopes[a].index(a))
                up[parent[a]] = up[parent[a]] + _aligned(neighbours[a], sent[a], scopes[parent[a]])
        beliefs = {}
        for a in reversed(order):  # distribute: the parent's belief over the separator, less what was sent
            b = parent[a]
            if b is None:
                beliefs[a] = up[a]
                continue
            drop = tuple(k for k, v in enumerate(scopes[b]) if v not in neighbours[a])
            down = (logsumexp(beliefs[b], axis=drop) if drop else beliefs[b]) - _aligned(neighbours[a], sent[a], tuple(
                v for v in scopes[b] if v in neighbours[a]))
            beliefs[a] = up[a] + _aligned(neighbours[a], down, scopes[a])
        return Calibrated(self, {a: (scopes[a], beliefs[a]) for a in order}, parent)

    def sampler_tables(self) -> list[tuple[int, tuple, np.ndarray]]:
        """``[(attribute, parents, cdf [prod(parent sizes), shape[attribute]])]`` in sampling order."""
        calibrated, tables = self.calibrate(), []
        for a in reversed(list(calibrated.beliefs)):  # the elimination order's cliques: ``a`` and its neighbours
            parents = tuple(v for v in calibrated.beliefs[a][0] if v != a)
            joint = calibrated.marginal(parents + (a,)).reshape(-1, self.shape[a])
            mass = joint.sum(axis=1, keepdims=True)
            cond = np.where(mass > 0, joint / np.where(mass > 0, mass, 1.0), 1.0 / self.shape[a])
            cdf = np.cumsum(cond, axis=1)
            cdf /= cdf[:, -1:]
            tables.append((a, parents, cdf))
        return tables

    # ------------------------------------------------------------------ persistence
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {"shape": [int(s) for s in self.shape], "cliques": [[int(a) for a in c] for c in self.cliques],
                "total": float(self.total)}
        return meta, {f"potential_{k}": np.asarray(p, np.float64) for k, p in enumerate(self.potentials)}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict) -> "GraphModel":
        cliques = [tuple(c) for c in meta["cliques"]]
        pots = [np.asarray(arrays[f"potential_{k}"], np.float64) for k in range(len(cliques))]
        return cls(tuple(meta["shape"]), cliques, pots, float(meta["total"]))

    @classmethod
    def from_mbi(cls, model, shape: Sequence[int]) -> "GraphModel":
        """From an mbi ``MarkovRandomField`` over attributes ``0 .. d - 1``."""
        pots = model.potentials
        cliques = [tuple(int(a) for a in c) for c in pots.cliques]
        tables = []
        for c in pots.cliques:
            factor = pots[c]
            tables.append(np.asarray(factor.transpose(tuple(c)).values, np.float64))
        return cls(tuple(int(s) for s in shape), cliques, tables, float(model.total))


def _project(scope: tuple, table: np.ndarray, keep) -> tuple:
    """``(kept scope, log table summed over the rest)``."""
    drop = tuple(k for k, v in enumerate(scope) if v not in keep)
    return tuple(v for v in scope if v in keep), (logsumexp(table, axis=drop) if drop else table)


@dataclasses.dataclass
class Calibrated:
    """A :class:`GraphModel`'s calibrated clique beliefs (:meth:`GraphModel.calibrate`): ``beliefs[node] = (scope,
    log table)`` for each elimination clique, ``parent[node]`` its neighbour towards the root (None: a root)."""

    model: GraphModel
    beliefs: dict
    parent: dict
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def marginal(self, attrs: Sequence[int]) -> np.ndarray:
        """As :meth:`GraphModel.marginal`: a sum of the smallest belief holding ``attrs``; a pair held by no
        belief by a pass along the tree path between two cliques holding one each; else by elimination."""
        attrs = tuple(int(a) for a in attrs)
        holding = [st for st in self.beliefs.values() if set(attrs) <= set(st[0])]
        if holding:
            kept, log_p = _project(*min(holding, key=lambda st: st[1].size), attrs)
        elif len(attrs) == 2:
            kept, log_p = self._pair(*attrs)
        else:
            return self.model.marginal(attrs)
        log_p = np.transpose(log_p, [kept.index(a) for a in attrs])
        return np.exp(log_p - logsumexp(log_p))

    def _path(self, u, v) -> Optional[list]:
        up_u, up_v = [u], [v]
        while self.parent[up_u[-1]] is not None:
            up_u.append(self.parent[up_u[-1]])
        while self.parent[up_v[-1]] is not None:
            up_v.append(self.parent[up_v[-1]])
        if up_u[-1] != up_v[-1]:
            return None  # different trees: independent
        common = next(x for x in up_u if x in set(up_v))
        return up_u[:up_u.index(common) + 1] + up_v[:up_v.index(common)][::-1]

    def _conditional(self, node, before: frozenset, after: frozenset) -> tuple:
        """``(scope, P(after | before))`` over ``before | after`` of ``node``'s belief (cached: pairs share edges)."""
        key = (node, before, after)
        if key not in self._cache:
            scope, belief = _project(*self.beliefs[node], before | after)  # only what a step needs
            edge_vars, edge = _project(scope, belief, before)
            self._cache[key] = scope, np.exp(belief - _aligned(edge_vars, edge, scope))
        return self._cache[key]

    def _pair(self, a: int, b: int) -> tuple:
        """``(scope, log table)`` of ``{a, b}``: carrying the smaller attribute ``a`` from a clique holding it to
        one holding ``b``, ``P(a, S_next) = sum P(a, S_prev) P(C | S_prev)`` at each clique ``C`` on the way."""
        if self.model.shape[a] > self.model.shape[b]:
            a, b = b, a
        smallest = lambda x: min((n for n, st in self.beliefs.items() if x in st[0]),  # noqa: E731
                                 key=lambda n: self.beliefs[n][1].size)
        path = self._path(smallest(a), smallest(b))
        if path is None:
            pa, pb = (_project(*self.beliefs[smallest(x)], (x,))[1] for x in (a, b))
            return (a, b), pa[:, None] + pb[None, :]
        sep = lambda x, y: set(self.beliefs[x if self.parent[x] == y else y][0]) - {x if self.parent[x] == y else y}  # noqa: E731
        vars_, table = _project(*self.beliefs[path[0]], {a} | sep(path[0], path[1]))
        table = np.exp(table - table.max())  # probabilities from here: each step is one einsum, nothing materialised
        letter = {v: chr(97 + k) for k, v in enumerate(sorted(set().union(*(self.beliefs[n][0] for n in path))))}
        for k in range(1, len(path)):
            before = sep(path[k - 1], path[k])
            after = {b} if k == len(path) - 1 else sep(path[k], path[k + 1])
            scope, cond = self._conditional(path[k], frozenset(before), frozenset(after))
            out = tuple(sorted({a} | after))
            spec = f"{''.join(letter[v] for v in vars_)},{''.join(letter[v] for v in scope)}->{''.join(letter[v] for v in out)}"
            vars_, table = out, np.einsum(spec, table, cond, optimize=True)
            table = table / table.sum()
        return vars_, np.log(table)


def draw_codes(tables: list, shape: Sequence[int], uniforms: np.ndarray) -> np.ndarray:
    """Ancestral sampling: codes ``[n, d]`` from uniforms ``[n, >= d]`` in [0, 1) (column ``a`` drives
    attribute ``a``); each row depends on its own uniforms only."""
    n = uniforms.shape[0]
    codes = np.zeros((n, len(shape)), np.int64)
    for a, parents, cdf in tables:
        if parents:
            row = np.ravel_multi_index(tuple(codes[:, p] for p in parents), [shape[p] for p in parents])
        else:
            row = np.zeros(n, np.int64)
        codes[:, a] = (cdf[row, :-1] <= uniforms[:, a:a + 1]).sum(axis=1)
    return codes
