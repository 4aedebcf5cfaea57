"""Multi-process JAX, actually run: two local processes (``jax.distributed``, gloo CPU collectives).

A fit by 2 processes x 1 CPU device must give the parameters of a one-process fit with the same seed,
on 2 simulated devices (the same global device count) and on 1 device, to 1e-5: TabDDPM through
``tabdiff-jax fit --distributed`` and private TableDiffusion (DP-SGD; noise added once) through the
API. Only process 0 writes the run folder; the checkpoints are written collectively. Sampling: two
independent processes write their own ``--part I --of 2`` parts of one dataset folder.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

TIMEOUT = 300

WORKER = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("ignore")
    table, out, distributed = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    writes = []  # files this process creates, renames or removes in its run folders (checkpoints apart)

    def audit(event, args):
        if event == "open":
            path, mode, flags = args
            if not (isinstance(mode, str) and any(c in mode for c in "wax+")) and not (
                    mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                return
        elif event not in ("os.rename", "os.remove", "shutil.rmtree"):
            return
        path = str(args[0]) if args and isinstance(args[0], (str, bytes, os.PathLike)) else ""
        if path.startswith(out) and "/checkpoints" not in path:
            writes.append(f"{event} {path}")

    sys.addaudithook(audit)
    import jax, numpy as np, pandas as pd
    from tabdiff_jax import cli
    import tabdiff_jax.models.tabddpm as tabddpm_module
    import tabdiff_jax.models.tablediffusion as td_module
    trained = {}

    import tabdiff_jax.training as training_module
    inner = training_module.run_training

    def wrapped(*args, **kwargs):  # how the final train state is laid out, per model (its progress label)
        state, history = inner(*args, **kwargs)
        leaf = jax.tree.leaves(state)[0]
        trained[str(kwargs.get("desc", "")).lower()] = {
            "global": not leaf.is_fully_addressable, "devices": len(leaf.sharding.device_set),
            "replicated": all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state))}
        return state, history
    training_module.run_training = wrapped
    import tabdiff_jax.privacy.loop as loop_module  # TableDiffusion's DP-SGD loop imports it by name
    loop_module.run_training = wrapped
    rc = cli.main(["fit", table, "--model", "tabddpm", "--target", "c", "--out", f"{out}/tabddpm", "--steps", "20",
                   "--batch-size", "32", "--seed", "3", "--no-progress", "--option", "hidden_dims=[16,16]",
                   "--option", "dim_t=16", "--option", "num_timesteps=10", "--option", "log_every=5",
                   "--option", "checkpoint_every=10"] + (["--distributed"] if distributed else []))
    assert rc == 0, rc
    model = td_module.TableDiffusion(epsilon=2.0, delta=1e-3, steps=4, batch_size=40, hidden_dims=(16,),
                                     num_timesteps=2, checkpoint_every=2)
    model.fit(pd.read_csv(table), target="c", seed=3, run_dir=f"{out}/tablediffusion", progress=False)
    info = {k: model.fit_info[k] for k in ("steps", "batch_capacity", "noise_multiplier", "epsilon_spent")}
    info["sample"] = model.sample(20, seed=1).to_csv(index=False)  # in the same program, after the fit
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(),
                      "local_devices": jax.local_device_count(), "trained": trained, "info": info, "writes": writes}))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, env, n: int):
    """Start ``n`` processes (``JAX_PROCESS_ID`` 0 .. n-1 when n > 1); their parsed last stdout lines."""
    procs = []
    try:
        for i in range(n):
            penv = dict(env, **({"JAX_PROCESS_ID": str(i)} if n > 1 else {}))
            procs.append(subprocess.Popen(args, env=penv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          start_new_session=True))
        deadline, outs = time.monotonic() + TIMEOUT, []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:  # a failed or hung process must not leave its peer waiting in a collective
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return outs


def _env(devices: int, processes: int = 1) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    if processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES=str(processes))
    return env


def _fit(table, out, devices: int, processes: int) -> list[dict]:
    outs = _launch([sys.executable, "-c", WORKER, str(table), str(out), "1" if processes > 1 else "0"],
                   _env(devices, processes), processes)
    for rc, stdout, stderr in outs:
        if rc != 0 and processes > 1 and "gloo" in stderr.lower() and "not" in stderr.lower():
            pytest.skip(f"gloo CPU collectives unavailable in this JAX build: {stderr.strip().splitlines()[-1]}")
        assert rc == 0, stderr[-3000:]
    return [json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in outs]


def _params(run) -> dict:
    with np.load(run / "state.npz") as z:
        return {k: z[k] for k in z.files}


def _max_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    rng = np.random.default_rng(0)
    n = 120
    pd.DataFrame({"a": rng.normal(size=n).round(3), "b": rng.choice(["x", "y", "z"], n),
                  "c": rng.choice(["u", "v"], n)}).to_csv(root / "table.csv", index=False)
    out = {}
    for name, devices, processes in (("2x1", 1, 2), ("1x2", 2, 1), ("1x1", 1, 1)):
        out[name] = (root / name, _fit(root / "table.csv", root / name, devices, processes))
    return root, out


@pytest.mark.slow  # the module takes about two minutes on 2 CPU cores (new interpreters)
def test_two_processes_train_one_global_data_parallel_state(fits):
    _, runs = fits
    (_, two), (_, one) = runs["2x1"], runs["1x2"]
    assert [r["process"] for r in two] == [0, 1]
    for r in two:
        assert r["processes"] == 2 and r["devices"] == 2 and r["local_devices"] == 1
        for model in ("tabddpm", "tablediffusion"):  # a replicated global array spanning both processes
            assert r["trained"][model] == {"global": True, "devices": 2, "replicated": True}, r["trained"]
    assert one[0]["trained"]["tabddpm"] == {"global": False, "devices": 2, "replicated": True}


@pytest.mark.parametrize("model", ["tabddpm", "tablediffusion"])
@pytest.mark.slow
def test_two_process_fit_equals_one_process_fit(fits, model):
    _, runs = fits
    two = _params(runs["2x1"][0] / model)
    diffs = {name: _max_diff(two, _params(runs[name][0] / model)) for name in ("1x2", "1x1")}
    print(f"{model}: max parameter difference, 2 processes vs {diffs}")
    assert max(diffs.values()) < 1e-5, diffs
    # training did move the parameters (the comparison is not between two initialisations)
    assert model != "tablediffusion" or runs["2x1"][1][0]["info"]["steps"] == 4
    # the privacy record is the one-process one: the same sampling, noise multiplier and budget spent
    infos = [runs[name][1][0]["info"] for name in ("2x1", "1x2", "1x1")]
    assert infos[0] == infos[1] == infos[2] and infos[0]["noise_multiplier"] > 0
    # and each process samples the same rows after a distributed fit, in the same program
    assert runs["2x1"][1][1]["info"] == infos[0] and infos[0]["sample"].count("\n") == 21


@pytest.mark.slow
def test_only_process_zero_writes_the_run_folder_and_checkpoints_restore(fits):
    _, runs = fits
    run, (first, second) = runs["2x1"]
    assert second["writes"] == [], second["writes"]
    for name in ("resume.json", "model.json", "state.npz", "run.json"):
        assert any(name in w for w in first["writes"]), (name, first["writes"])
    for model, steps in (("tabddpm", {10, 20}), ("tablediffusion", {2, 4})):
        ckpt = run / model / "checkpoints"
        assert {int(p.name) for p in ckpt.iterdir() if p.name.isdigit()} == steps
        assert json.loads((run / model / "run.json").read_text())["steps"] == max(steps)
        # the last checkpoint, written by both processes together, holds the saved parameters
        saved = _checkpoint_params(ckpt / str(max(steps)) / "state")
        final = {("params",) + _tokens(k): v for k, v in _params(run / model).items()}
        assert sorted(saved) == sorted(final)
        assert max(float(np.max(np.abs(saved[k] - final[k]))) for k in final) == 0.0


def _tokens(name: str) -> tuple:
    return tuple(t.strip("'") for t in re.findall(r"\[([^\]]+)\]", name))


def _checkpoint_params(path) -> dict:
    import jax
    import orbax.checkpoint as ocp

    checkpointer = ocp.PyTreeCheckpointer()
    meta = checkpointer.metadata(path)
    tree = getattr(getattr(meta, "item_metadata", meta), "tree", getattr(meta, "item_metadata", meta))
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = checkpointer.restore(path, restore_args=as_numpy)
    paths = ((_tokens(jax.tree_util.keystr(p)), v) for p, v in jax.tree_util.tree_flatten_with_path(state)[0])
    # the train state's parameters (TableDiffusion's state is (train state, truncated count))
    return {t[t.index("params"):]: np.asarray(v) for t, v in paths if "params" in t and "opt_state" not in t}


@pytest.mark.slow
def test_each_process_samples_its_own_parts(fits, tmp_path):
    _, runs = fits
    run = runs["2x1"][0] / "tabddpm"
    base = [sys.executable, "-m", "tabdiff_jax.cli", "sample", str(run), "-n", "50", "--seed", "1",
            "--rows-per-part", "10", "--no-progress"]
    env = _env(1)
    parts = []
    for i in range(2):  # two independent processes (no coordination), as on two hosts
        parts.append(subprocess.Popen(base + ["-o", f"{tmp_path}/rows/", "--part", str(i), "--of", "2"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    whole = subprocess.run(base + ["-o", str(tmp_path / "all.csv")], env=env, capture_output=True, text=True,
                           timeout=TIMEOUT)
    for p in parts:
        try:
            _, err = p.communicate(timeout=TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 0, err[-2000:]
    assert whole.returncode == 0, whole.stderr[-2000:]
    files = sorted((tmp_path / "rows").glob("*.parquet"))
    assert len(files) == 5
    got = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    expected = pd.read_csv(tmp_path / "all.csv")
    assert len(got) == 50 and list(got.columns) == list(expected.columns)
    np.testing.assert_allclose(got["a"].to_numpy(float), expected["a"].to_numpy(float), rtol=1e-5, atol=1e-5)
    for col in ("b", "c"):
        assert got[col].astype(str).tolist() == expected[col].astype(str).tolist()


def test_initialize_from_env_names_what_is_missing_or_wrong(monkeypatch, tmp_path, capsys):
    from tabdiff_jax import cli
    from tabdiff_jax.distributed import initialize_from_env
    from tabdiff_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID"):
        initialize_from_env({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"})
    with pytest.raises(ConfigError, match="must lie in 0 .. JAX_NUM_PROCESSES - 1 = 1"):
        initialize_from_env({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"})
    with pytest.raises(ConfigError, match="must be integers"):
        initialize_from_env({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"})
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    # the CLI: one line naming the variables, exit 2, nothing written
    assert cli.main(["fit", "adult", "--model", "tabddpm", "--out", str(tmp_path / "run"), "--distributed"]) == 2
    assert "set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
