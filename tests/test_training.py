from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tabdiff_jax.checkpoint import Checkpointer, TrainingInterrupted
from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.training import run_training

OPT = optax.adam(0.05)
DATA = jax.random.normal(jax.random.PRNGKey(1), (64, 3))


class State(NamedTuple):
    params: dict
    opt_state: optax.OptState
    step: jax.Array


def _init():
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    return State(params, OPT.init(params), jnp.int32(0))


@jax.jit
def _step(state, key):
    idx = jax.random.randint(key, (8,), 0, DATA.shape[0])
    x = DATA[idx]

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"] - x.sum(1)) ** 2)

    value, grads = jax.value_and_grad(loss)(state.params)
    updates, opt_state = OPT.update(grads, state.opt_state, state.params)
    return State(optax.apply_updates(state.params, updates), opt_state, state.step + 1), {"loss": value}


def test_training_reduces_loss_and_logs():
    state, history = run_training(_step, _init(), num_steps=60, key=jax.random.key(0), progress=False, log_every=20)
    assert [s for s, _ in history] == [20, 40, 60]
    assert history[-1][1]["loss"] < 0.1 * history[0][1]["loss"]  # ratio 0.009-0.021 over keys 0-4 (AVX-512, AVX2)
    assert int(state.step) == 60


def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path):
    key = jax.random.key(3)
    full, _ = run_training(_step, _init(), num_steps=20, key=key, progress=False)

    calls = {"n": 0}

    def flaky(state, k):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt
        return _step(state, k)

    with pytest.raises(TrainingInterrupted) as info:
        run_training(flaky, _init(), num_steps=20, key=key, run_dir=tmp_path, checkpoint_every=5, progress=False)
    assert isinstance(info.value, KeyboardInterrupt)  # Ctrl-C still stops a caller that does not know it
    # the interrupt saved the 13 finished steps (not only the step-10 checkpoint)
    assert (info.value.step, info.value.saved_step) == (13, 13)
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == 13
    resumed, _ = run_training(_step, _init(), num_steps=20, key=key, run_dir=tmp_path, checkpoint_every=5,
                              resume=True, progress=False)
    assert int(resumed.step) == 20
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert Checkpointer(tmp_path / "checkpoints", keep=3).all_steps()[-1] == 20


def test_stop_fn_ends_early_and_checkpoints(tmp_path):
    state, _ = run_training(_step, _init(), num_steps=50, key=jax.random.key(0), run_dir=tmp_path,
                            stop_fn=lambda step, s: step >= 7, progress=False)
    assert int(state.step) == 7
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == 7


def test_bad_arguments():
    with pytest.raises(ConfigError, match="num_steps"):
        run_training(_step, _init(), num_steps=-1, key=jax.random.key(0))
    with pytest.raises(ConfigError, match="run_dir"):
        run_training(_step, _init(), num_steps=1, key=jax.random.key(0), resume=True)


def test_checkpoints_on_a_time_interval(tmp_path):
    """checkpoint_seconds=0 saves after every step although checkpoint_every is never reached."""
    run_training(_step, _init(), num_steps=4, key=jax.random.key(0), run_dir=tmp_path, checkpoint_every=1000,
                 checkpoint_seconds=0, keep=10, progress=False)
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [1, 2, 3, 4]


def test_existing_checkpoints_are_refused_before_training(tmp_path):
    run_training(_step, _init(), num_steps=3, key=jax.random.key(0), run_dir=tmp_path, progress=False)
    calls = []
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run_training(lambda s, k: calls.append(1) or _step(s, k), _init(), num_steps=3, key=jax.random.key(0),
                     run_dir=tmp_path, progress=False)
    assert calls == []


def test_resume_from_a_checkpoint_of_another_shape_is_one_error(tmp_path):
    run_training(_step, _init(), num_steps=3, key=jax.random.key(0), run_dir=tmp_path, progress=False)
    params = {"w": jnp.zeros(5), "b": jnp.zeros(())}
    other = State(params, OPT.init(params), jnp.int32(0))
    with pytest.raises(DataError, match="does not fit"):
        run_training(_step, other, num_steps=5, key=jax.random.key(0), run_dir=tmp_path, resume=True, progress=False)


def test_plain_progress_lines_when_stderr_is_not_a_terminal(capsys):
    from tabdiff_jax.progress import PlainProgress, progress_bar

    bar = progress_bar(10, 0, "train", True)  # pytest's stderr is not a terminal
    assert isinstance(bar, PlainProgress)
    bar.interval = 0
    bar.set_postfix({"loss": "0.5"})
    bar.update(4)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0] == "train: 4/10 (40%), loss=0.5" and lines[-1].startswith("train: 4/10 (40%), loss=0.5 in ")


@pytest.mark.parametrize("desc, unit", [("toy", "steps/s="), ("toy epochs", "s/epoch=")])
def test_progress_shows_the_speed_in_the_loops_unit(desc, unit, capsys, monkeypatch):
    monkeypatch.setenv("TABDIFF_PROGRESS_SECONDS", "0")  # a line at every update
    run_training(_step, _init(), num_steps=3, key=jax.random.key(0), progress=True, desc=desc)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"{desc}: 3/3 (100%)") and unit in last
    assert ("s/epoch=" in last) != ("steps/s=" in last)


def _in_thread(fn, seconds: float = 60.0):
    """``fn()``'s result, failing (not hanging) if it takes over ``seconds``."""
    import threading

    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - raised again in the test's thread
            out["error"] = err

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_state_with_zero_size_arrays_is_saved_and_restored(tmp_path):
    # orbax-checkpoint hangs writing a zero-size array (a TabDiff without numbers has [0] exponents): each
    # one is stored as a placeholder and the template's own empty array restored in its place
    state = {"w": jnp.arange(3.0), "rho": jnp.zeros((0,)), "codes": jnp.zeros((4, 0), jnp.int32)}
    ckpt = Checkpointer(tmp_path / "ck")
    _in_thread(lambda: ckpt.save(5, state, {"history": [1.0]}))
    restored, meta = _in_thread(lambda: ckpt.restore(jax.tree.map(jnp.zeros_like, state)))
    assert meta == {"history": [1.0]}
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert restored["rho"].shape == (0,) and restored["codes"].shape == (4, 0)
    assert restored["codes"].dtype == jnp.int32
    with pytest.raises(ValueError, match="other shapes"):  # the placeholder does not hide a real mismatch
        ckpt.restore({"w": jnp.zeros(3), "rho": jnp.zeros((2,)), "codes": jnp.zeros((4, 0), jnp.int32)})
    ckpt.close()


def test_tabdiff_on_a_table_without_numbers_checkpoints_and_resumes(tmp_path):
    import pandas as pd

    import tabdiff_jax

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"city": rng.choice(["a", "b", "c"], 120), "y": rng.choice(["yes", "no"], 120)})
    whole = _in_thread(lambda: tabdiff_jax.TabDiff(steps=6, batch_size=32).fit(
        df, target="y", seed=0, run_dir=tmp_path / "whole", progress=False))
    part = _in_thread(lambda: tabdiff_jax.TabDiff(steps=3, batch_size=32).fit(
        df, target="y", seed=0, run_dir=tmp_path / "part", progress=False))
    assert part.fit_info["steps"] == 3
    resumed = _in_thread(lambda: tabdiff_jax.TabDiff(steps=6, batch_size=32).fit(
        df, target="y", seed=0, run_dir=tmp_path / "part", resume=True, progress=False))
    pd.testing.assert_frame_equal(resumed.sample(50, seed=1), whole.sample(50, seed=1))
