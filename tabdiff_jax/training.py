"""The one training loop every model uses: compiled steps, checkpoints, resume, a progress bar.

The loop is deliberately thin. ``step_fn(state, step_key) -> (state, metrics)`` is a jitted function
that draws its own batch from data already on the device, so the loop never moves data from the
host. The key of step ``s`` is ``jax.random.fold_in(key, s)``: a run interrupted after a checkpoint
and resumed from it makes exactly the same steps as an uninterrupted run.

Metrics are pulled to the host only every ``log_every`` steps (each pull waits for the device).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from tabdiff_jax.checkpoint import Checkpointer
from tabdiff_jax.errors import ConfigError

PyTree = Any
StepFn = Callable[[PyTree, jax.Array], tuple[PyTree, dict]]


def _to_host(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def _fmt(metrics: dict) -> dict:
    return {k: (f"{v:.4g}" if math.isfinite(v) else str(v)) for k, v in metrics.items()}


def run_training(
    step_fn: StepFn,
    state: PyTree,
    *,
    num_steps: int,
    key: jax.Array,
    run_dir: Optional[str | Path] = None,
    checkpoint_every: int = 1000,
    keep: int = 3,
    resume: bool = False,
    progress: bool = True,
    desc: str = "train",
    log_every: int = 50,
    stop_fn: Optional[Callable[[int, PyTree], bool]] = None,
    on_log: Optional[Callable[[int, dict], Optional[dict]]] = None,
) -> tuple[PyTree, list[tuple[int, dict]]]:
    """Run ``num_steps`` steps of ``step_fn`` from ``state``.

    Args:
      step_fn: ``(state, key) -> (state, metrics)``, usually jitted with the state donated.
      state: the initial train state (also the template for restoring a checkpoint).
      num_steps: total number of steps of the run (a resumed run stops at the same total).
      key: the run's PRNG key; step ``s`` uses ``fold_in(key, s)``.
      run_dir: where checkpoints go (``run_dir/checkpoints``); ``None`` for no checkpoints.
      checkpoint_every: save every this many steps, and at the end.
      keep: number of checkpoints kept.
      resume: continue from the latest checkpoint in ``run_dir`` if there is one.
      progress: show a tqdm progress bar (steps/s and the latest metrics).
      desc: label of the progress bar.
      log_every: pull metrics to the host every this many steps (and at the last step).
      stop_fn: ``(step, state) -> bool`` called before each step; ``True`` ends training early
        (a privacy budget that the next step would exceed, for example).
      on_log: called with ``(step, metrics)`` whenever metrics are pulled; may return extra
        entries for the progress bar (epsilon spent, for example).

    Returns:
      The final state and the logged history ``[(step, metrics), ...]``.

    Raises:
      ConfigError: ``num_steps`` < 0, or ``resume`` without ``run_dir``.
    """
    if num_steps < 0:
        raise ConfigError(f"num_steps must be >= 0, got {num_steps}")
    if resume and run_dir is None:
        raise ConfigError("resume=True needs a run_dir holding the checkpoints")
    checkpointer = Checkpointer(Path(run_dir) / "checkpoints", keep=keep) if run_dir is not None else None
    start = 0
    history: list[tuple[int, dict]] = []
    if checkpointer is not None and resume and checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(state)
        start = int(checkpointer.latest_step())
        history = [(int(s), m) for s, m in meta.get("history", [])]
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
    t0, step = time.perf_counter(), start
    try:
        for step in range(start, num_steps):
            if stop_fn is not None and stop_fn(step, state):
                break
            state, metrics = step_fn(state, jax.random.fold_in(key, step))
            done = step + 1
            if done % log_every == 0 or done == num_steps:
                host = _to_host(metrics)
                history.append((done, host))
                extra = on_log(done, host) if on_log is not None else None
                elapsed = time.perf_counter() - t0
                bar.set_postfix({"steps/s": f"{(done - start) / max(elapsed, 1e-9):.1f}", **_fmt(host), **(extra or {})})
            bar.update(1)
            if checkpointer is not None and (done % checkpoint_every == 0 or done == num_steps):
                checkpointer.save(done, state, {"history": history})
        else:
            step = num_steps
        if checkpointer is not None and step != num_steps and step > start:
            checkpointer.save(step, state, {"history": history})
    finally:
        bar.close()
        if checkpointer is not None:
            checkpointer.close()
    return state, history
