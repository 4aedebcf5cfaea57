"""Helpers shared by the GAN family and TVAE: options, optimisers, parameter (de)serialisation, timing."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tabdiff_jax.errors import ConfigError, DataError

PyTree = Any
OPTIMIZERS = ("adam", "rmsprop")


def make_optimizer(name: str, learning_rate: float, *, betas: Sequence[float] = (0.5, 0.9),
                   weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam (``betas``) or RMSprop, with PyTorch-style L2 weight decay added to the gradient.

    Raises:
      ConfigError: unknown ``name`` or a non-positive ``learning_rate``.
    """
    if not float(learning_rate) > 0:
        raise ConfigError(f"learning rate must be > 0, got {learning_rate!r}")
    if float(weight_decay) < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if name == "adam":
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ConfigError(f"betas must lie in [0, 1), got {tuple(betas)}")
        opt = optax.adam(float(learning_rate), b1=b1, b2=b2)
    elif name == "rmsprop":
        # PyTorch's RMSprop defaults (decay 0.99, eps 1e-8, eps outside the square root).
        opt = optax.rmsprop(float(learning_rate), decay=0.99, eps=1e-8)
    else:
        raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if weight_decay:
        opt = optax.chain(optax.add_decayed_weights(float(weight_decay)), opt)
    return opt


def tree_to_arrays(tree: PyTree, prefix: str) -> dict[str, np.ndarray]:
    """Flatten a pytree of arrays into ``{prefix + path: np.ndarray}`` (for ``state.npz``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def arrays_to_tree(template: PyTree, arrays: dict[str, np.ndarray], prefix: str) -> PyTree:
    """Inverse of :func:`tree_to_arrays` into the structure of ``template``.

    Raises:
      DataError: an array is missing or has the wrong shape (the saved model does not match
        its configuration).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in flat:
        name = prefix + jax.tree_util.keystr(path)
        if name not in arrays:
            raise DataError(f"state.npz: missing array {name!r}")
        value = np.asarray(arrays[name])
        if value.shape != tuple(leaf.shape):
            raise DataError(f"state.npz: {name!r} has shape {value.shape}, expected {tuple(leaf.shape)}")
        leaves.append(jnp.asarray(value, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


class EpochTimer:
    """Wraps an epoch function to record wall-clock and process CPU seconds per epoch.

    The training loop pulls each epoch's metrics to the host (``log_every=1``), so the time
    between two calls is one epoch's compute. The first call includes compilation. CPU time
    (all threads of the process) is less sensitive than wall time to other load on the machine.
    """

    def __init__(self, fn):
        import time

        self._fn, self._stamps, self._cpu = fn, [], []
        self._wall_clock, self._cpu_clock = time.perf_counter, time.process_time

    def __call__(self, *args):
        self._stamps.append(self._wall_clock())
        self._cpu.append(self._cpu_clock())
        return self._fn(*args)

    def summary(self) -> dict:
        """``first_epoch_seconds`` and, from the second epoch on, the medians ``epoch_seconds``
        and ``epoch_cpu_seconds``."""
        self._stamps.append(self._wall_clock())
        self._cpu.append(self._cpu_clock())
        wall, cpu = np.diff(self._stamps), np.diff(self._cpu)
        out = {}
        if len(wall) >= 1:
            out["first_epoch_seconds"] = round(float(wall[0]), 4)
        if len(wall) >= 2:
            out["epoch_seconds"] = round(float(np.median(wall[1:])), 4)
            out["epoch_cpu_seconds"] = round(float(np.median(cpu[1:])), 4)
        return out


def epochs_from(default: int, epochs: Optional[int], steps: Optional[int], steps_per_epoch: int) -> int:
    """Epochs of a fit: ``epochs``, else ``steps`` updates rounded up to epochs, else ``default``."""
    if epochs is not None and steps is not None:
        raise ConfigError("give epochs or steps, not both")
    if steps is not None:
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps!r}")
        return -(-int(steps) // steps_per_epoch)
    value = int(default if epochs is None else epochs)
    if value < 0:
        raise ConfigError(f"epochs must be >= 0, got {value}")
    return value


def resolve_config(defaults: dict, config: dict, model: str) -> dict:
    """``defaults`` updated by ``config``; ConfigError naming any unknown option."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ConfigError(f"{model}: unknown option(s) {', '.join(unknown)}; options are {', '.join(sorted(defaults))}")
    return {**defaults, **config}
