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


TABDDPM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from tabdiff_jax import diffusion as dm, samplers
    from tabdiff_jax.nets import split_params
    from tabdiff_jax.sharding import auto_mesh
    mesh = auto_mesh()
    config = dm.DiffusionConfig(num_numeric=3, categorical_sizes=(4, 2), num_classes=2, num_timesteps=20)
    graphdef, params = split_params(dm.make_denoiser(config, d_layers=(32, 32), rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    data = dm.TableBatch(jnp.asarray(rng.normal(size=(128, 3)), jnp.float32),
                         jnp.asarray(np.stack([rng.integers(0, 4, 128), rng.integers(0, 2, 128)], 1), jnp.int32),
                         jnp.asarray(rng.integers(0, 2, 128), jnp.int32))
    opt = dm.make_optimizer(2e-3, 1e-4, num_steps=10)

    def train(mesh):
        step = dm.make_train_step(graphdef, opt, config, batch_size=32, mesh=mesh)
        state = dm.init_train_state(jax.tree.map(jnp.copy, params), opt, None)
        for i in range(5):
            state, m = step(state, data, jax.random.fold_in(jax.random.key(1), i))
        return state.params

    single, sharded = train(None), train(mesh)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)))
    rows = samplers.sample(single, graphdef, config, jax.random.key(7), 24, class_probs=np.array([0.3, 0.7]),
                           chunk_size=8)
    print(json.dumps({"diff": diff, "x_num": np.asarray(rows.x_num).tolist(), "x_cat": np.asarray(rows.x_cat).tolist(),
                      "y": np.asarray(rows.y).tolist()}))
    """
)


def test_tabddpm_train_step_and_sampler_are_device_count_invariant():
    def run(devices):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        proc = subprocess.run([sys.executable, "-c", TABDDPM_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    one, four = run(1), run(4)
    assert four["diff"] < 1e-5  # the 4-device data-parallel step equals the single-device step
    # trained on one device in both runs, so the sampler alone decides: same rows whatever the device count
    # numbers to float32 rounding (matmul reduction order differs with the shard shapes)
    np.testing.assert_allclose(np.asarray(four["x_num"]), np.asarray(one["x_num"]), rtol=1e-5, atol=1e-5)
    assert four["x_cat"] == one["x_cat"] and four["y"] == one["y"]
