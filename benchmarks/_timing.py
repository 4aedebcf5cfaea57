"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import os
import time

import jax


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), {"wall_s", "cpu_s", "load_avg_1min"})``; JAX arrays in the result are
    waited for (``block_until_ready``), so asynchronous dispatch does not hide their cost."""
    load = os.getloadavg()[0]
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    jax.block_until_ready([leaf for leaf in jax.tree.leaves(out) if isinstance(leaf, jax.Array)])
    return out, {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
                 "load_avg_1min": round(load, 2)}
