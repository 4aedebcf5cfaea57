"""Parameter constraints as optax transformations, chained into an optimiser.

A constraint applied after ``optax.apply_updates`` lives outside the optimiser and every training
step has to remember it. As a transformation placed last in an ``optax.chain``, it rewrites the
update so that the new parameters satisfy it: :func:`clip_params` turns ``u`` into
``clip(p + u) - p``. ``optax.masked`` restricts it to some leaves.

Example (WGAN's critic, and TVAE's clamp of ``sigma`` alone)::

    critic_tx = optax.chain(optax.rmsprop(5e-5), clip_params(-0.01, 0.01))
    tvae_tx = optax.chain(optax.adam(1e-3), optax.masked(clip_params(0.01, 1.0), {"sigma": True, "w": False}))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def clip_params(lower: float, upper: float) -> optax.GradientTransformation:
    """Keep every parameter in ``[lower, upper]``: the update ``u`` becomes ``clip(p + u, lower, upper) - p``.

    After ``optax.apply_updates`` the parameters equal ``clip(p + u)`` up to one float rounding
    (``p + (c - p)``); a parameter already at a bound and pushed beyond it stays exactly there.
    Stateless; needs ``params`` in ``update``.

    Raises:
      ValueError: ``lower > upper``, or ``update`` called without ``params``.
    """
    lower, upper = float(lower), float(upper)
    if lower > upper:
        raise ValueError(f"clip_params: lower ({lower}) must be <= upper ({upper})")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("clip_params needs the parameters: call update(updates, state, params)")
        clipped = jax.tree.map(lambda u, p: (jnp.clip(p + u, lower, upper) - p).astype(u.dtype), updates, params)
        return clipped, state

    return optax.GradientTransformation(init_fn, update_fn)
