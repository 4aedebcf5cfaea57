"""Pieces shared by MST and AIM: data marginals, the noisy primitives (keyed by JAX PRNG keys) and
the estimation step through mbi.

Randomness: every draw comes from an explicit ``jax.random`` key, in blocks of a fixed size so that
one compiled program serves every marginal size.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tabdiff_jax.marginal.graphical import GraphModel, junction_tree_mb


def mbi():
    """The ``mbi`` package, imported without its import-time advice (float32 mode, compilation
    cache), which concerns its own scripts, not this use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import mbi as module
    return module


def data_marginal(codes: np.ndarray, shape: Sequence[int], clique: Sequence[int]) -> np.ndarray:
    """Counts of the (sorted) ``clique``'s cells, flattened in C order, float64."""
    dims = [int(shape[a]) for a in clique]
    if not clique:
        return np.array([float(len(codes))])
    index = np.ravel_multi_index(tuple(codes[:, a] for a in clique), dims)
    return np.bincount(index, minlength=math.prod(dims)).astype(np.float64)


_BLOCK = 4096  # draws per compiled call: one program serves every marginal size


@functools.partial(jax.jit, static_argnames="kind")
def _block(key, index, *, kind):
    k = jax.random.fold_in(key, index)
    return jax.random.normal(k, (_BLOCK,)) if kind == "normal" else jax.random.gumbel(k, (_BLOCK,))


def _draws(key: jax.Array, size: int, kind: str) -> np.ndarray:
    blocks = [np.asarray(_block(key, jnp.uint32(b), kind=kind), np.float64) for b in range(-(-size // _BLOCK))]
    return np.concatenate(blocks)[:size]


def gaussian_noise(key: jax.Array, size: int, sigma: float) -> np.ndarray:
    """``size`` draws of ``N(0, sigma^2)`` (float64 on the host)."""
    return float(sigma) * _draws(key, size, "normal")


def exponential_mechanism(key: jax.Array, scores: np.ndarray, epsilon: float, sensitivity: float) -> int:
    """Index drawn with probability ``∝ exp(epsilon * score / (2 sensitivity))`` (Gumbel-max)."""
    scores = np.asarray(scores, np.float64)
    return int(np.argmax(0.5 * float(epsilon) / float(sensitivity) * scores + _draws(key, len(scores), "gumbel")))


# XLA's backend optimisation level 0 halves the compile time of the per-round programs (measured 16 s ->
# 7 s for 23 small cliques on a loaded 2-core machine; 100 steps ran as fast). On a large model its steps
# run about 1.8x slower (100 steps on a 13 MB junction tree: 12.2 vs 6.8 CPU s), so the final fit of
# many steps, and a round's on a model over ROUND_OPTIONS_MAX_MB (where 100 slower steps cost more than the
# compile saves: 27 MB, 100 steps 80 vs 53 s on a loaded machine, compile 8 vs 13 s), at the default level.
ROUND_OPTIONS = {"xla_backend_optimization_level": 0}
ROUND_OPTIONS_MAX_MB = 4.0


def _estimate(loss_fn, known_total, warm, *, domain, iters, method):
    """Initialise (warm: from ``warm``'s potentials), ``iters`` steps, finalise: one XLA program per
    clique structure (mbi's own ``estimate`` runs its set-up eagerly, a few dozen small compiles)."""
    state = method._init(domain, loss_fn, known_total, warm_start=warm)
    state = jax.lax.scan(lambda st, _: (method._step(st, loss_fn, known_total), None), state, None, length=iters)[0]
    return method._finalize(state, known_total)


class Estimator:
    """Fits mbi's Markov random field to the noisy measurements by mirror descent (warm-started from
    the previous fit), in one compiled program per set of measured cliques.

    Repeated measurements of one clique are merged into their inverse-variance weighted mean (the
    sufficient statistic of Gaussian measurements: the L2 loss differs by a constant), so that a
    round that measures a clique again reuses the compiled program.
    """

    def __init__(self, shape: Sequence[int]):
        self.shape = tuple(int(s) for s in shape)
        self._mbi = mbi()
        self.domain = self._mbi.Domain(tuple(range(len(self.shape))), self.shape)
        self.measured: dict[tuple, tuple[np.ndarray, float]] = {}  # clique -> (sum y / var, sum 1 / var)
        self.model = None
        self._compiled: dict = {}
        self._sizes: dict = {}

    def add(self, clique: Sequence[int], y: np.ndarray, sigma: float) -> None:
        clique = tuple(int(a) for a in clique)
        acc, prec = self.measured.get(clique, (0.0, 0.0))
        self.measured[clique] = (acc + np.asarray(y, np.float64) / sigma**2, prec + 1.0 / sigma**2)

    def measurements(self) -> list:
        m = self._mbi
        return [m.LinearMeasurement(np.asarray(acc / prec, np.float32), c, float(1.0 / math.sqrt(prec)))
                for c, (acc, prec) in self.measured.items()]

    def fit(self, iters: int, warm: bool = True, final: bool = False) -> GraphModel:
        """Refit to the measurements so far (``final``: compiled for fast steps rather than fast compile)."""
        m = self._mbi
        ms = self.measurements()
        total = m.estimation.minimum_variance_unbiased_total(ms)
        loss_fn = m.marginal_loss.from_linear_measurements(ms, self.domain)
        start = self._warm(loss_fn.cliques) if warm and self.model is not None else None
        key = (tuple(self.measured), None if start is None else start.cliques, int(iters), final)
        if key not in self._compiled:  # the structure is new: lower and compile once
            fn = functools.partial(_estimate, domain=self.domain, iters=int(iters), method=m.estimation.MirrorDescent())
            quick = not final and self.model_size_mb(list(self.measured)) <= ROUND_OPTIONS_MAX_MB
            self._compiled[key] = jax.jit(fn).lower(loss_fn, float(total), start).compile(
                compiler_options=ROUND_OPTIONS if quick else {})
        self.model = self._compiled[key](loss_fn, float(total), start)
        return GraphModel.from_mbi(self.model, self.shape)

    def _warm(self, cliques: Sequence[tuple]):
        """The last fit's potentials re-expressed over ``cliques`` (each old table added, broadcast, to a
        clique that contains it), built on the host: the compiled fit then depends only on ``cliques``."""
        m = self._mbi
        old = GraphModel.from_mbi(self.model, self.shape)
        tables = {tuple(c): np.zeros([self.shape[a] for a in c], np.float32) for c in cliques}
        for c, table in zip(old.cliques, old.potentials):
            home = next(t for t in tables if set(c) <= set(t))
            shape = [self.shape[a] if a in c else 1 for a in home]
            tables[home] = tables[home] + table.reshape(shape).astype(np.float32)
        factors = {c: m.Factor(self.domain.project(c), jnp.asarray(t)) for c, t in tables.items()}
        return m.CliqueVector(self.domain, tuple(tables), factors)

    def cliques(self) -> list:
        return [tuple(int(a) for a in c) for c in self.model.potentials.cliques] if self.model is not None else []

    def model_size_mb(self, cliques: Sequence[tuple]) -> float:
        """Size in MB of the junction tree of ``cliques`` (:func:`~.graphical.junction_tree_mb`; cached)."""
        key = frozenset(tuple(c) for c in cliques)
        if key not in self._sizes:
            self._sizes[key] = junction_tree_mb(list(key), self.shape)
        return self._sizes[key]


def split_key(key: jax.Array, what: int) -> jax.Array:
    """A key of its own for step ``what`` (folded in, so steps never share draws)."""
    return jax.random.fold_in(key, int(what))

