"""Multi-process JAX (several processes on one machine, or several hosts): start-up and the primary process.

Every process runs the same program on the same table. After :func:`initialize_from_env`,
``jax.devices()`` lists the devices of all processes and the training code's ``data`` mesh
(:func:`tabdiff_jax.sharding.auto_mesh`) spans them: each process holds the whole table and a
replica of the train state as global arrays (:func:`tabdiff_jax.sharding.to_global`), each device
computes the gradient of its rows of the batch, and XLA all-reduces it across processes (on CPUs
through gloo). The result equals a one-process fit with the same seed and batch to float rounding
(``tests/test_distributed.py``).

Files: only process 0 (:func:`is_primary`) writes the run folder (``resume.json``, ``model.json``,
``state.npz``, ``run.json``); the orbax checkpoints under ``run_dir/checkpoints`` are written
collectively (every process takes part; orbax writes each replicated array once, splitting the
work), so on several hosts ``run_dir`` must be on a file system they all see. Sampling needs no
coordination: each process runs ``tabdiff-jax sample RUN -n N -o DIR/ --part I --of K`` on its
own and writes its own parts. Inside the multi-process program, a fitted model keeps a
process-local copy of its parameters and ``model.sample`` runs on the process's own devices
(every process gets the same rows; give each its own ``sample_to(..., start=, stop=)`` range).
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

from tabdiff_jax.errors import ConfigError

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_from_env(env: Optional[Mapping[str, str]] = None, *, timeout: int = 300) -> tuple[int, int]:
    """``jax.distributed.initialize`` from ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; call it before anything else uses JAX.

    On CPUs the cross-process collectives go through gloo. Blocks until all processes have joined
    (at most ``timeout`` seconds). Returns ``(process_index, process_count)``.

    Raises:
      ConfigError: a variable is missing or malformed.
    """
    env = os.environ if env is None else env
    missing = [name for name in ENV_VARS if not env.get(name)]
    if missing:
        raise ConfigError(f"multi-process fit: set {', '.join(missing)} (e.g. JAX_COORDINATOR_ADDRESS=host0:1234 "
                          "JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 on the first process)")
    try:
        count, index = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
    except ValueError:
        raise ConfigError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                          f"{env['JAX_NUM_PROCESSES']!r} and {env['JAX_PROCESS_ID']!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"JAX_PROCESS_ID={index} must lie in 0 .. JAX_NUM_PROCESSES - 1 = {count - 1}")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU all-reduce across processes
    jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"], num_processes=count,
                               process_id=index, initialization_timeout=int(timeout))
    return jax.process_index(), jax.process_count()


def is_primary() -> bool:
    """True in process 0 (and in any single-process program): the one that writes files."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (nothing to do in a single process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
