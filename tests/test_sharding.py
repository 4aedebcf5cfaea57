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
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import nnx
    from tabdiff_jax.diffusion import tabddpm as dm
    from tabdiff_jax.sharding import auto_mesh, constrain_rows, replicate, row_sharded
    from tabdiff_jax.state import init_train_state, split_params
    assert jax.device_count() == 4, jax.devices()
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

    p0 = replicate({"w1": jnp.zeros((8, 16)), "w2": jnp.zeros((16,))}, mesh)
    hlo = make_step(mesh).lower(p0, replicate(opt.init(p0), mesh), jax.random.key(0)).compile().as_text()
    single, loss_single = train(None)
    sharded, loss_sharded = train(mesh)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)))

    # sampling: rows of a chunk sharded over devices; the same key must give the same rows
    def chunk(key):
        z = jax.random.normal(key, (64, 3))
        return jnp.tanh(z) + jax.random.uniform(jax.random.fold_in(key, 1), (64, 3))
    sharded_rows = jax.jit(chunk, out_shardings=row_sharded(mesh))(jax.random.key(11))
    one_device_rows = jax.jit(chunk, out_shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]))(jax.random.key(11))
    out = {"devices": jax.device_count(), "max_param_diff": diff, "loss": loss_sharded, "all_reduce": "all-reduce" in hlo,
           "num_shards": [len(sharded_rows.addressable_shards), len(one_device_rows.addressable_shards)],
           "rows_diff": float(jnp.max(jnp.abs(np.asarray(sharded_rows) - np.asarray(one_device_rows))))}

    # TabDDPM's data-parallel train step
    config = dm.DiffusionConfig(num_numeric=3, categorical_sizes=(4, 2), num_classes=2, num_timesteps=20)
    graphdef, params = split_params(dm.make_denoiser(config, hidden_dims=(32, 32), rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    data = dm.TableBatch(jnp.asarray(rng.normal(size=(128, 3)), jnp.float32),
                         jnp.asarray(np.stack([rng.integers(0, 4, 128), rng.integers(0, 2, 128)], 1), jnp.int32),
                         jnp.asarray(rng.integers(0, 2, 128), jnp.int32))
    opt = dm.make_annealed_adamw(2e-3, 1e-4, num_steps=10)

    def train(mesh):
        step = dm.make_train_step(graphdef, opt, config, batch_size=32, mesh=mesh)
        state = init_train_state(jax.tree.map(jnp.copy, params), opt, None)
        for i in range(5):
            state, m = step(state, data, jax.random.fold_in(jax.random.key(1), i))
        return state.params

    single, sharded = train(None), train(mesh)
    out["tabddpm_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(single),
                                                                          jax.tree.leaves(sharded)))
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four():
    """One interpreter with 4 simulated devices computes every single-device reference in-process
    (an unsharded mesh of None), so no 1-device interpreter is needed."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_train_step_equals_single_device(four):
    assert four["devices"] == 4
    assert four["max_param_diff"] < 1e-5
    assert four["all_reduce"], "the gradient of a row-sharded batch must be all-reduced across devices"


def test_sampling_gives_the_same_rows_whatever_the_device_count(four):
    assert four["num_shards"] == [4, 1]
    assert four["rows_diff"] <= 1e-6


def test_tabddpm_train_step_is_device_count_invariant(four):
    # the 4-device data-parallel step equals the single-device step; TabDDPM's sampler over 1 and 4
    # devices: test_sampling_contract.py::test_rows_do_not_depend_on_the_device_count, every model
    assert four["tabddpm_diff"] < 1e-5


# ------------------------------------------------------------------ TableDiffusion, the GANs, TVAE
# Each case fits one estimator on 1 device (saving it) and on 4 simulated devices (comparing its
# trained state with the saved one), then samples from the saved model in both interpreters.
ESTIMATOR_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import jax, numpy as np, pandas as pd
    warnings.simplefilter("ignore")
    from tabdiff_jax.models.base import load
    from tabdiff_jax.models.gan import CTGAN, WGANGP
    from tabdiff_jax.models.dpgan import DPGAN
    from tabdiff_jax.models.tablediffusion import TableDiffusion
    from tabdiff_jax.models.tvae import TVAE
    name, devices, saved = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    assert jax.device_count() == devices, jax.devices()
    SMALL = dict(batch_size=40, generator_dims=(16,), critic_dims=(16,), noise_dim=8, epochs=2)
    MODELS = {
        "tablediffusion": lambda: TableDiffusion(epsilon=2.0, delta=1e-3, steps=3, batch_size=40, hidden_dims=(16,),
                                                 num_timesteps=2),
        "wgan-gp": lambda: WGANGP(**SMALL, n_critic=2, generator_lr=1e-3, critic_lr=1e-3),
        "dpgan": lambda: DPGAN(**SMALL, epsilon=5.0, delta=1e-3, critic_lr=1e-3),
        "ctgan": lambda: CTGAN(**SMALL, pac=10),  # conditional vector, pac 10 (one pack per device), dropout
        "tvae": lambda: TVAE(epochs=2, batch_size=40, encoder_dims=(16,), decoder_dims=(16,), latent_dim=4),
    }
    rng = np.random.default_rng(0)
    n = 203
    df = pd.DataFrame({"a": rng.normal(size=n).round(3), "b": rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1]),
                       "c": rng.integers(0, 9, n), "d": rng.choice(["u", "v"], n)})
    model = MODELS[name]().fit(df, progress=False, seed=3)
    info = {k: v for k, v in model.fit_info.items() if k in ("sampling_rate", "noise_multiplier", "batch_capacity",
                                                             "epsilon_spent", "batch_size", "steps", "epochs")}
    info.update({k: v for k, v in model.fit_info.get("privacy", {}).items() if k != "learned_from_data"})
    diff = None
    if devices == 1:
        model.save(saved)
    else:
        ref, mine = load(saved)._get_state()[1], model._get_state()[1]
        assert sorted(ref) == sorted(mine)
        diff = max(float(np.max(np.abs(ref[k] - mine[k]))) for k in ref)
    reloaded = load(saved)  # the same parameters in both interpreters: the sampler alone decides
    # 30 rows (not a multiple of 4) in chunks of 14 (padded to 16 on 4 devices, then trimmed)
    table = reloaded.sample(30, seed=5, chunk_size=14)
    print(json.dumps({"diff": diff, "info": info, "table": table.to_dict(orient="list")}))
    """
)


def _estimator_run(name: str, devices: int, saved) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", ESTIMATOR_SCRIPT, name, str(devices), str(saved)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_estimator(name: str, tmp_path) -> tuple[dict, dict]:
    one = _estimator_run(name, 1, tmp_path / name)
    four = _estimator_run(name, 4, tmp_path / name)
    assert four["diff"] < 1e-5, four["diff"]  # 4-device data-parallel training equals the 1-device run
    assert four["info"] == one["info"]  # batch, steps and (for the private models) the privacy record
    for column, values in one["table"].items():  # the same rows for the same seed
        if isinstance(values[0], float):
            np.testing.assert_allclose(four["table"][column], values, rtol=1e-5, atol=1e-5)
        else:
            assert four["table"][column] == values, column
    return one, four


@pytest.mark.slow  # sampling's device-count invariance: test_sampling_contract.py, every model
def test_tablediffusion_private_training_and_sampling_are_device_count_invariant(tmp_path):
    one, _ = _check_estimator("tablediffusion", tmp_path)
    # capacity from the plan (a multiple of 8 splits over 4 devices); q and sigma as on one device
    assert one["info"]["batch_capacity"] % 4 == 0 and one["info"]["noise_multiplier"] > 0


@pytest.mark.slow  # sampling's device-count invariance: test_sampling_contract.py, every model
def test_wgangp_training_and_sampling_are_device_count_invariant(tmp_path):
    _check_estimator("wgan-gp", tmp_path)


@pytest.mark.slow
def test_dpgan_training_and_sampling_are_device_count_invariant(tmp_path):
    one, _ = _check_estimator("dpgan", tmp_path)
    assert one["info"]["noise_multiplier"] > 0 and one["info"]["private_steps"] == 2 * 5


@pytest.mark.slow
def test_ctgan_training_and_sampling_are_device_count_invariant(tmp_path):
    _check_estimator("ctgan", tmp_path)


@pytest.mark.slow
def test_tvae_training_and_sampling_are_device_count_invariant(tmp_path):
    _check_estimator("tvae", tmp_path)


DPSGD_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import nnx
    from tabdiff_jax.gan import GANConfig, init_gan, make_epoch_fn
    from tabdiff_jax.diffusion.tablediffusion import TableDiffusionNet, make_loss
    from tabdiff_jax.privacy import make_private_step
    from tabdiff_jax.sharding import auto_mesh, replicate
    from tabdiff_jax.table import TableLayout
    mesh = auto_mesh()
    assert mesh is not None and mesh.size == 4
    graphdef, params = nnx.split(TableDiffusionNet(6, 5, (16,), rngs=nnx.Rngs(0)), nnx.Param)
    x = jax.random.normal(jax.random.key(1), (16, 5))
    mask = jnp.arange(16) < 11  # a padded batch: 11 real rows
    out = {}
    for method in ("ghost", "vmap"):
        def run(mesh):
            dp = make_private_step(make_loss(3), optax.adam(1e-2), l2_clip=0.5, noise_multiplier=1.3,
                                   expected_batch_size=12.0, clipping=method, graphdef=graphdef, mesh=mesh)
            state = replicate(dp.init(params), mesh)
            step = dp.step.lower(state, x, mask, jax.random.key(0)).compile()
            for i in range(3):
                state, m = step(state, x, mask, jax.random.fold_in(jax.random.key(2), i))
            return state.params, float(m["loss"]), "all-reduce" in step.as_text()
        (single, loss1, _), (sharded, loss4, reduced) = run(None), run(mesh)
        diff = max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)))
        out[method] = {"diff": diff, "loss_diff": abs(loss1 - loss4), "all_reduce": reduced}
    # a GAN epoch with a row-sharded batch: gradients all-reduced, parameters replicated
    layout = TableLayout(("x",), ("c",), (3,), ("category",))
    config = GANConfig(loss="wasserstein", gradient_penalty=10.0, batch_size=8, noise_dim=4)
    gen_def, critic_def, state = init_gan(jax.random.key(0), layout, config, optax.adam(1e-3), optax.adam(1e-3),
                                          generator_dims=(8,), critic_dims=(8,))
    epoch = jax.jit(make_epoch_fn(gen_def, critic_def, layout, config, optax.adam(1e-3), optax.adam(1e-3),
                                  steps_per_epoch=2, mesh=mesh))
    state, data = replicate((state, jnp.zeros((32, 4))), mesh)
    epoch = epoch.lower(state, data, None, jax.random.key(0)).compile()
    new_state, _ = epoch(state, data, None, jax.random.key(0))
    out["gan"] = {"all_reduce": "all-reduce" in epoch.as_text(),
                  "replicated": all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(new_state))}
    print(json.dumps(out))
    """
)


def test_dpsgd_step_and_gan_epoch_are_data_parallel():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", DPSGD_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for method in ("ghost", "vmap"):
        r = out[method]
        # clipped sum all-reduced over the 4 row shards and one noise draw (noise added per device, or
        # missing, would not match): the single-device step to float rounding
        assert r["all_reduce"] and r["diff"] < 1e-5 and r["loss_diff"] < 1e-5, (method, r)
    assert out["gan"]["all_reduce"] and out["gan"]["replicated"], out["gan"]
