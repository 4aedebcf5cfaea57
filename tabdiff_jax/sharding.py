"""Data parallelism over all local devices with ``jax.sharding``: a 1-D ``data`` mesh.

Training: parameters and optimiser state are replicated; each step's batch is constrained to be
split by rows over the ``data`` axis, so every device runs the forward and backward pass of its
rows and XLA inserts the gradient all-reduce. The step function itself is unchanged: the same
code runs on one device (where the constraint is a no-op) or many.

Sampling: a chunk of rows is generated with its output sharded by rows. JAX's random bits are
partitionable (``jax_threefry_partitionable``, on by default), so the same key gives the same rows
whatever the number of devices.

Multi-process (several processes or hosts): call :func:`tabdiff_jax.distributed.initialize_from_env`
first in every process; ``jax.devices()`` then lists the devices of all processes, :func:`data_mesh`
spans them, and :func:`to_global` makes the host data of each process (the whole table, the same in
every process) one replicated global array.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tabdiff_jax.errors import ConfigError

DATA_AXIS = "data"


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device JAX sees)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ConfigError("devices is empty: a mesh needs at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def auto_mesh() -> Optional[Mesh]:
    """The data mesh when more than one device is visible, else ``None`` (plain single-device code)."""
    return data_mesh() if jax.device_count() > 1 else None


def local_mesh() -> Optional[Mesh]:
    """The data mesh over this process's devices when it has more than one, else ``None``: sampling runs
    per process (several processes split the rows by ranges, :mod:`tabdiff_jax.generate`)."""
    return data_mesh(jax.local_devices()) if jax.local_device_count() > 1 else None


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def row_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Optional[Mesh], name: str = "batch_size") -> None:
    """Raise a ConfigError unless ``batch_size`` splits evenly over the mesh's devices."""
    if mesh is not None and batch_size % mesh.size:
        raise ConfigError(f"{name}={batch_size} must be a multiple of the {mesh.size} devices of the data mesh")


def round_up(value: int, mesh: Optional[Mesh]) -> int:
    """``value`` rounded up to a multiple of the mesh's device count (unchanged without a mesh)."""
    return int(value) if mesh is None else -(-int(value) // mesh.size) * mesh.size


def round_down(value: int, mesh: Optional[Mesh]) -> int:
    """``value`` rounded down to a multiple of the mesh's device count, at least one row per device
    (unchanged without a mesh)."""
    return int(value) if mesh is None else max(mesh.size, int(value) - int(value) % mesh.size)


def constrain_rows(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Inside jit: ask for every array leaf of ``tree`` to be split by rows over ``mesh``.

    A no-op for ``mesh=None`` or a single device. Leaves of rank 0 stay replicated.
    """
    if mesh is None or mesh.size == 1:
        return tree
    rows, rep = row_sharded(mesh), replicated(mesh)
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, rows if getattr(x, "ndim", 0) >= 1 else rep), tree)


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Place every leaf of ``tree`` on all devices of ``mesh`` (``None``: leave it where it is)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated(mesh))



def to_global(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Multi-process only: every leaf of ``tree`` (the same value in every process) as a global array
    replicated over ``mesh``; unchanged in a single process (where jit places host arrays itself)."""
    if mesh is None or jax.process_count() == 1:
        return tree
    return replicate(tree, mesh)
