"""Training checkpoints with orbax: save every k steps, keep the last few, restore the latest.

A checkpoint holds one pytree (the train state: params, optimiser state, EMA, step counter, ...) and a
small JSON of metadata. Restoring needs a template pytree of the same structure (for example the
freshly initialised state), so that NamedTuples, optax states and dtypes come back exactly.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any

# orbax logs every save at INFO level; a progress bar is the better place for that.
logging.getLogger("absl").setLevel(logging.WARNING)


@contextlib.contextmanager
def _defer_sigint(deliver: bool = True) -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) until the block ends, then deliver it to the previous handler
    (or drop it: ``deliver=False``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and deliver and callable(previous):
            previous(signal.SIGINT, None)


class Checkpointer:
    """Keeps the last ``keep`` checkpoints of a train state under ``directory``.

    Args:
      directory: folder of the checkpoints (created if missing).
      keep: how many of the most recent checkpoints to keep.
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "meta"),
            options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
        )

    def save(self, step: int, state: PyTree, meta: Optional[dict] = None) -> None:
        """Save ``state`` (and JSON ``meta``) as step ``step``; blocks until it is on disk.

        A Ctrl-C while it writes takes effect once the checkpoint is complete.
        """
        with _defer_sigint():
            self._save(step, state, meta)

    def _save(self, step: int, state: PyTree, meta: Optional[dict]) -> None:
        self._manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(_storable(state)), meta=ocp.args.JsonSave(meta or {})),
            force=True,
        )
        self._manager.wait_until_finished()

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(self, template: PyTree, step: Optional[int] = None) -> tuple[PyTree, dict]:
        """Restore ``step`` (default: the latest) into the structure of ``template``.

        Raises:
          FileNotFoundError: there is no checkpoint in ``directory``.
          ValueError: the checkpoint's arrays (their number or shapes, read from its metadata before any
            array is) are not those of ``template``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        saved, wanted = self.saved_shapes(step), _shapes(jax.tree.leaves(_storable(template)))
        if saved is not None and saved != wanted:  # checked first: orbax's failed reads leave tasks behind
            raise ValueError(f"the checkpoint holds {len(saved)} arrays of other shapes than the "
                             f"{len(wanted)} expected")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _storable(template))
        restored = self._manager.restore(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        state = jax.tree.map(lambda t, r: t if _empty(t) else r, template, restored["state"])
        return state, dict(restored["meta"] or {})

    def saved_shapes(self, step: int) -> Optional[list]:
        """The sorted shapes of the arrays saved at ``step`` (from the checkpoint's metadata), or ``None``
        where the metadata cannot be read (the restore then decides)."""
        try:
            tree = self._manager.item_metadata(int(step))["state"]
            return _shapes(jax.tree.leaves(getattr(tree, "tree", tree)))
        except Exception:  # noqa: BLE001 - an unreadable metadata file is the restore's to report
            return None

    def close(self) -> None:
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _empty(leaf) -> bool:
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype") and int(np.prod(leaf.shape)) == 0


def _storable(tree: PyTree) -> PyTree:
    """``tree`` with each zero-size array (a TabDiff without numbers has ``[0]`` noise exponents) as one
    zero of its dtype: orbax-checkpoint hangs writing a zero-size array (seen with 0.12.8), and on restore
    the template's own empty array is put back."""
    return jax.tree.map(lambda x: np.zeros((1,), x.dtype) if _empty(x) else x, tree)


def _shapes(leaves) -> list:
    """Sorted shapes of array leaves (orbax may order a saved tree's leaves otherwise than the template)."""
    return sorted(tuple(int(d) for d in (leaf.shape if hasattr(leaf, "shape") else np.shape(leaf))) for leaf in leaves)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: ``step`` steps were done; the run is saved at ``saved_step``."""

    def __init__(self, step: int, saved_step: int, total: int, directory: Path):
        self.step, self.saved_step, self.total, self.directory = int(step), int(saved_step), int(total), directory
        where = (f"saved at step {self.saved_step} in {directory}" if self.saved_step > 0
                 else "no checkpoint was saved")
        super().__init__(f"interrupted at step {self.step} of {self.total}; {where}")


def save_on_interrupt(checkpointer: Checkpointer, step: int, state: PyTree, meta: dict, saved: int) -> int:
    """Save ``state`` as ``step`` after a Ctrl-C (another Ctrl-C while it writes is ignored).

    Returns the step now saved: ``step``, or ``saved`` if ``state`` cannot be saved (its buffers
    were donated to a step that the interrupt cut short).
    """
    if checkpointer.latest_step() == step:  # the interrupt came while this step was being saved
        return step
    leaves = [leaf for leaf in jax.tree.leaves(state) if isinstance(leaf, jax.Array)]
    if any(leaf.is_deleted() for leaf in leaves):
        return saved
    try:
        with _defer_sigint(deliver=False):  # the program is stopping already
            checkpointer._save(step, state, meta)
        return step
    except Exception:  # noqa: BLE001 - the earlier checkpoint is still there
        return saved
