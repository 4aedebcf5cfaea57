"""One training-state convention for every model: a :class:`TrainState` of plain parameter dicts.

* Parameters are the plain nested dict of a network's ``nnx.Param`` leaves (:func:`split_params`):
  a pytree that optax, ``jax.jit``, orbax and ``state.npz`` (``tree_to_arrays``) take as is, and
  that ``nnx.merge(graphdef, params)`` turns back into the module.
* A :class:`TrainState` holds ``params``, the optimiser state, the step count and, for models that
  keep one, an exponential moving average of the parameters (``ema``, else ``None``).
* Constraints on the parameters (WGAN's weight clipping, TVAE's clamp on ``sigma``) are optax
  transformations chained into the optimiser (:mod:`tabdiff_jax.transforms`), so one update is
  always :func:`apply_gradients`.

Models with two networks keep one ``TrainState`` per network (the GANs' ``GANState(generator,
critic)``) or one ``TrainState`` whose ``params`` is a dict of networks (TVAE's ``{"encoder": ...,
"decoder": ...}``), whichever their updates need: the GAN's networks have separate optimisers and
step counts, the VAE's share one loss and one optimiser.

Example:
  >>> graphdef, params = split_params(model)
  >>> state = init_train_state(params, optimizer, ema_decay=0.999)
  >>> grads = jax.grad(loss)(state.params)
  >>> state = apply_gradients(state, grads, optimizer, ema_decay=0.999)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

PyTree = Any


class TrainState(NamedTuple):
    """Training state pytree.

    Attributes:
      params: the parameters (a plain nested dict per network, :func:`split_params`).
      opt_state: the optimiser's state.
      step: int32 scalar, the number of updates made.
      ema: exponential moving average of ``params`` (same structure), or ``None``.
    """

    params: PyTree
    opt_state: optax.OptState
    step: jax.Array
    ema: Optional[PyTree] = None


def split_params(model: nnx.Module) -> tuple[Any, dict]:
    """``(graphdef, params)`` with ``params`` the plain nested dict of the model's ``nnx.Param`` arrays.

    ``nnx.merge(graphdef, params)`` rebuilds the module. Raises if the model holds variables other
    than ``nnx.Param`` (none of this package's networks do).
    """
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(state)


def init_train_state(params: PyTree, optimizer: optax.GradientTransformation,
                     ema_decay: Optional[float] = None) -> TrainState:
    """A fresh :class:`TrainState` at step 0 holding copies of ``params``.

    The compiled steps donate their state, so the caller's arrays stay valid. With ``ema_decay``
    the state carries an EMA, starting at the initial parameters.
    """
    params = jax.tree.map(jnp.array, params)
    ema = jax.tree.map(jnp.array, params) if ema_decay else None
    return TrainState(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32), ema=ema)


def global_norm(tree: PyTree) -> jax.Array:
    """The l2 norm of all the leaves of ``tree`` together (``optax.global_norm``, which optax 0.2.8 deprecates)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def ema_update(ema: PyTree, params: PyTree, step: jax.Array, decay: float) -> PyTree:
    """``ema <- d ema + (1 - d) params`` with the warm-up ``d = min(decay, (1 + step) / (10 + step))``.

    ``step`` is the number of updates before this one (0 for the first); the warm-up lets the
    average forget its starting point quickly. Computed by ``optax.incremental_update``.
    """
    stepf = jnp.asarray(step).astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + stepf) / (10.0 + stepf))
    return optax.incremental_update(params, ema, 1.0 - d)


def apply_gradients(state: TrainState, grads: PyTree, optimizer: optax.GradientTransformation,
                    ema_decay: Optional[float] = None) -> TrainState:
    """One optimiser update of ``state`` by ``grads``; the EMA too when ``ema_decay`` is given and kept.

    ``optimizer`` must be the one ``state.opt_state`` was made by (constraints chained into it).
    """
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema_decay and ema is not None:
        ema = ema_update(ema, params, state.step, ema_decay)
    return TrainState(params=params, opt_state=opt_state, step=state.step + 1, ema=ema)
