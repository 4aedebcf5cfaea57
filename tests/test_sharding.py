"""Data parallelism on simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N).

The device count is fixed when JAX starts, so each case runs in a fresh interpreter.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    from tabdiff_jax.sharding import auto_mesh, constrain_rows, replicate, row_sharded
    assert jax.device_count() == int(sys.argv[1]), jax.devices()
    mesh = auto_mesh()
    data = jax.random.normal(jax.random.PRNGKey(0), (256, 8))
    w_true = jnp.arange(8.0)
    opt = optax.adam(1e-2)

    def make_step(mesh):
        def step(params, opt_state, key):
            idx = jax.random.randint(key, (64,), 0, data.shape[0])
            x = constrain_rows(data[idx], mesh)
            def loss(p):
                h = jnp.tanh(x @ p["w1"])
                return jnp.mean((h @ p["w2"] - x @ w_true) ** 2)
            value, grads = jax.value_and_grad(loss)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value
        return jax.jit(step)

    def train(mesh):
        params = {"w1": jax.random.normal(jax.random.PRNGKey(1), (8, 16)) * 0.3,
                  "w2": jax.random.normal(jax.random.PRNGKey(2), (16,)) * 0.3}
        params = replicate(params, mesh)
        opt_state = replicate(opt.init(params), mesh)
        step = make_step(mesh)
        for i in range(20):
            params, opt_state, value = step(params, opt_state, jax.random.fold_in(jax.random.key(5), i))
        return params, float(value)

    hlo = ""
    if mesh is not None:
        p0 = replicate({"w1": jnp.zeros((8, 16)), "w2": jnp.zeros((16,))}, mesh)
        hlo = make_step(mesh).lower(p0, replicate(opt.init(p0), mesh), jax.random.key(0)).compile().as_text()
    single, loss_single = train(None)
    sharded, loss_sharded = train(mesh)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)))

    # sampling: rows of a chunk sharded over devices; the same key must give the same rows
    def chunk(key):
        z = jax.random.normal(key, (64, 3))
        return jnp.tanh(z) + jax.random.uniform(jax.random.fold_in(key, 1), (64, 3))
    out_sharding = row_sharded(mesh) if mesh is not None else None
    rows = jax.jit(chunk, out_shardings=out_sharding)(jax.random.key(11))
    print(json.dumps({"devices": jax.device_count(), "max_param_diff": diff, "loss": loss_sharded,
                      "num_shards": len(rows.addressable_shards), "all_reduce": "all-reduce" in hlo, "rows": np.asarray(rows).tolist()}))
    """
)


def _run(devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(devices)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
    return {n: _run(n) for n in (1, 4)}


def test_sharded_train_step_equals_single_device(runs):
    four = runs[4]
    assert four["devices"] == 4
    assert four["max_param_diff"] < 1e-5
    assert four["all_reduce"], "the gradient of a row-sharded batch must be all-reduced across devices"


def test_sampling_gives_the_same_rows_whatever_the_device_count(runs):
    assert runs[4]["num_shards"] == 4 and runs[1]["num_shards"] == 1
    np.testing.assert_allclose(np.asarray(runs[4]["rows"]), np.asarray(runs[1]["rows"]), rtol=0, atol=1e-6)
