"""Training plumbing every model shares: the loop (compiled steps, checkpoints, resume, a progress bar),
option resolution, optimisers, parameter (de)serialisation for ``state.npz``, and epoch timing.

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
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tabdiff_jax import validate
from tabdiff_jax.checkpoint import Checkpointer, TrainingInterrupted, save_on_interrupt
from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.progress import progress_bar

PyTree = Any
OPTIMIZERS = ("adam", "rmsprop")
StepFn = Callable[[PyTree, jax.Array], tuple[PyTree, dict]]


def _to_host(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def _rate(desc: str, done: int, elapsed: float) -> dict:
    """The progress bar's speed: ``s/epoch`` where the loop counts epochs (a GAN's or TVAE's, each several
    seconds: ``steps/s`` would read 0.0), else ``steps/s``."""
    if desc.endswith("epochs"):
        return {"s/epoch": f"{elapsed / max(done, 1):.1f}"}
    return {"steps/s": f"{done / max(elapsed, 1e-9):.1f}"}


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
    checkpoint_seconds: Optional[float] = 60.0,
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
      checkpoint_seconds: also save when this many seconds have passed since the last save
        (``None``: steps only). On Ctrl-C the state of the last finished step is saved too, and
        :class:`TrainingInterrupted` (a KeyboardInterrupt) says where.
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
      ConfigError: ``num_steps`` < 0, ``resume`` without ``run_dir``, or checkpoints in ``run_dir``
        without ``resume``.
      DataError: ``resume`` from a checkpoint that does not fit ``state``.
      TrainingInterrupted: Ctrl-C (after saving a checkpoint when ``run_dir`` is given).
    """
    if num_steps < 0:
        raise ConfigError(f"num_steps must be >= 0, got {num_steps}")
    if resume and run_dir is None:
        raise ConfigError("resume=True needs a run_dir holding the checkpoints")
    if checkpoint_seconds is not None and not float(checkpoint_seconds) >= 0:
        raise ConfigError(f"checkpoint_seconds must be >= 0 or None, got {checkpoint_seconds!r}")
    checkpointer = Checkpointer(Path(run_dir) / "checkpoints", keep=keep) if run_dir is not None else None
    start = 0
    history: list[tuple[int, dict]] = []
    if checkpointer is not None and checkpointer.latest_step() is not None:
        if not resume:  # refused now, not after training (orbax would not overwrite the steps)
            checkpointer.close()
            raise ConfigError(f"{checkpointer.directory} already holds checkpoints (last step "
                              f"{checkpointer.latest_step()}): resume that run or use an empty folder")
        try:
            state, meta = checkpointer.restore(state)
        except Exception as exc:  # a checkpoint of another model or table: one line, not orbax's traceback
            checkpointer.close()
            raise DataError(f"{checkpointer.directory}: cannot restore step {checkpointer.latest_step()}: the "
                            f"checkpoint does not fit this model and table, or is corrupt ({type(exc).__name__}); "
                            "fit into a new folder") from exc
        start = int(checkpointer.latest_step())
        history = [(int(s), m) for s, m in meta.get("history", [])]
    t0, step = time.perf_counter(), start
    saved, last_save, completed = start, t0, start
    bar = None
    try:
        bar = progress_bar(num_steps, start, desc, progress)
        for step in range(start, num_steps):
            if stop_fn is not None and stop_fn(step, state):
                break
            done = step + 1
            state, metrics = step_fn(state, jax.random.fold_in(key, step))
            completed = done  # no interrupt can land between these two statements
            if done % log_every == 0 or done == num_steps:
                host = _to_host(metrics)
                history.append((done, host))
                extra = on_log(done, host) if on_log is not None else None
                elapsed = time.perf_counter() - t0
                bar.set_postfix({**_rate(desc, done - start, elapsed), **_fmt(host), **(extra or {})})
            bar.update(1)
            due = checkpoint_seconds is not None and time.perf_counter() - last_save >= checkpoint_seconds
            if checkpointer is not None and (done % checkpoint_every == 0 or done == num_steps or due):
                checkpointer.save(done, state, {"history": history})
                saved, last_save = done, time.perf_counter()
        else:
            step = num_steps
        if checkpointer is not None and step != num_steps and step > start:
            checkpointer.save(step, state, {"history": history})
    except KeyboardInterrupt:
        if checkpointer is None:
            raise
        if completed > saved:
            saved = save_on_interrupt(checkpointer, completed, state, {"history": history}, saved)
        raise TrainingInterrupted(completed, saved, num_steps, checkpointer.directory) from None
    finally:
        if bar is not None:
            bar.close()
        if checkpointer is not None:
            checkpointer.close()
    return state, history

def make_named_optimizer(name: str, learning_rate: float, *, betas: Sequence[float] = (0.5, 0.9),
                         weight_decay: float = 0.0) -> optax.GradientTransformation:
    """The optimiser a GAN's or TVAE's ``optimizer`` option names: Adam (``betas``) or RMSprop, with
    PyTorch-style L2 weight decay added to the gradient (TabDDPM's is
    :func:`tabdiff_jax.diffusion.tabddpm.make_annealed_adamw`).

    Raises:
      ConfigError: unknown ``name`` or a non-positive ``learning_rate``.
    """
    learning_rate = validate.positive_float("learning_rate", learning_rate)
    weight_decay = validate.positive_float("weight_decay", weight_decay, allow_zero=True)
    validate.in_choices("optimizer", name, OPTIMIZERS)
    if name == "adam":
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ConfigError(f"betas must lie in [0, 1), got {tuple(betas)}")
        opt = optax.adam(float(learning_rate), b1=b1, b2=b2)
    elif name == "rmsprop":
        # PyTorch's RMSprop defaults (decay 0.99, eps 1e-8, eps outside the square root).
        opt = optax.rmsprop(float(learning_rate), decay=0.99, eps=1e-8)
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


def early_stop(t0: float, max_seconds: Optional[float], stop_after_steps: Optional[int]):
    """``stop_fn`` of :func:`run_training` for fit's ``max_seconds`` (counted from ``t0``) and
    ``stop_after_steps`` (``None`` when neither is given)."""
    if max_seconds is None and stop_after_steps is None:
        return None

    def stop_fn(i, _state):
        late = max_seconds is not None and time.perf_counter() - t0 > float(max_seconds)
        return late or (stop_after_steps is not None and i >= int(stop_after_steps))

    return stop_fn


def train_estimator(step: Callable, state, settings: dict, *, num_steps: int, key, run_dir, resume: bool,
                    progress: bool, desc: str, batch: int, max_seconds: Optional[float] = None,
                    stop_after_steps: Optional[int] = None) -> tuple[Any, dict]:
    """:func:`run_training` of a diffusion estimator (TabDDPM, TabDiff) with its options (``checkpoint_every``,
    ``checkpoint_seconds``, ``log_every``, ``ema_decay``, ``sample_with_ema``) and fit's early stops.

    Returns:
      ``(params to sample with (the EMA when kept and asked for), fit_info)``.
    """
    t0 = time.perf_counter()
    state, history = run_training(step, state, num_steps=num_steps, key=key, run_dir=run_dir,
                                  checkpoint_every=int(settings["checkpoint_every"]),
                                  checkpoint_seconds=settings["checkpoint_seconds"], resume=resume, progress=progress,
                                  desc=desc, log_every=int(settings["log_every"]),
                                  stop_fn=early_stop(t0, max_seconds, stop_after_steps))
    seconds = time.perf_counter() - t0
    use_ema = settings["ema_decay"] is not None and bool(settings["sample_with_ema"])
    done = int(state.step)
    info = {"steps": done, "batch_size": batch, "train_seconds": round(seconds, 3),
            "steps_per_second": round(done / max(seconds, 1e-9), 3),
            "final_loss": history[-1][1] if history else None,
            "sampled_from": "ema" if use_ema else "params",
            "history": [(int(i), m) for i, m in history[-20:]]}
    return (state.ema if use_ema else state.params), info
