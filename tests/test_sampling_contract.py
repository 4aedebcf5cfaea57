"""The one sampling contract, for every model: row i of ``sample(n, seed)`` depends only on (seed, i).

Each model is fitted once (tiny, see MODELS) on a small mixed table with a binary target; then the same rows
must come back whatever the chunk size, ``n`` (prefixes) or device count (a subprocess with 4
simulated CPU devices loads the saved models), different seeds must differ, and
``condition={target: value}`` must give rows of that class only (natively or by rejection).
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax.errors import ConfigError

# The contract is the sampler's, not the weights': models train for 0 steps where they allow it (the
# training step's compilation would double the file's time), TableDiffusion for 1 private step.
SMALL_GAN = dict(batch_size=50, generator_dims=(16,), critic_dims=(16,), noise_dim=8, epochs=0)
MODELS = {
    "tabddpm": ("TabDDPM", dict(steps=0, batch_size=64, num_timesteps=8, hidden_dims=(16, 16), dim_t=16)),
    "tabdiff": ("TabDiff", dict(steps=0, batch_size=64, num_sample_steps=4, hidden_dims=(16, 16), dim_t=16)),
    "tablediffusion": ("TableDiffusion", dict(epsilon=5.0, delta=1e-3, steps=1, batch_size=50, hidden_dims=(16,),
                                              num_timesteps=3, categorical="sample")),
    "gan": ("GAN", SMALL_GAN),
    "cgan": ("CGAN", SMALL_GAN),
    "wgan": ("WGAN", {**SMALL_GAN, "n_critic": 2}),
    "wgan-gp": ("WGANGP", {**SMALL_GAN, "n_critic": 2}),
    "ctgan": ("CTGAN", SMALL_GAN),
    "dpgan": ("DPGAN", {**SMALL_GAN, "epsilon": 5.0, "delta": 1e-3}),
    "tvae": ("TVAE", dict(epochs=0, batch_size=50, encoder_dims=(16,), decoder_dims=(16,), latent_dim=4,
                          categorical="sample")),
    "smote": ("SMOTE", {}),
    # marginal mechanisms: few mirror-descent steps; AIM with rounds = columns runs one round
    "mst": ("MST", dict(epsilon=5.0, delta=1e-3, bins=8, iters=20)),
    "aim": ("AIM", dict(epsilon=5.0, delta=1e-3, bins=8, iters=20, round_iters=10, rounds=5)),
}
N, M = 30, 12  # rows sampled, and a prefix of them


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({
        "x": x.round(4),
        "count": rng.integers(0, 20, n).astype(np.int64),
        "colour": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
        "size": rng.choice(["s", "l"], n),
        "label": np.where(x + rng.normal(scale=0.5, size=n) > 0.2, "yes", "no"),
    })


def _model(name):
    import tabdiff_jax

    cls_name, options = MODELS[name]
    return getattr(tabdiff_jax, cls_name)(**options)


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame):
    """Equal tables: categories exactly, numbers to float32 rounding (matmul shapes differ by chunk)."""
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for column in a.columns:
        if pd.api.types.is_float_dtype(a[column]):
            np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), rtol=1e-4, atol=1e-4, err_msg=column)
        else:
            assert a[column].tolist() == b[column].tolist(), column


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Every model fitted once; saved under one folder for the multi-device subprocess."""
    root = tmp_path_factory.mktemp("contract")
    df = _frame()
    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODELS:
            models[name] = _model(name).fit(df, target="label", progress=False, seed=1)
            models[name].save(root / name)
    return root, models


@pytest.mark.parametrize("name", list(MODELS))
def test_rows_do_not_depend_on_chunk_size_or_n_and_seeds_differ(fitted, name):
    model = fitted[1][name]
    small, large = model.sample(N, seed=1, chunk_size=7), model.sample(N, seed=1, chunk_size=64)
    assert_same_rows(small, large)
    assert_same_rows(model.sample(M, seed=1, chunk_size=7), large.iloc[:M].reset_index(drop=True))
    other = model.sample(N, seed=2, chunk_size=64)
    assert not other.equals(large)
    assert not np.allclose(other["x"].to_numpy(), large["x"].to_numpy())


@pytest.mark.parametrize("name", list(MODELS))
def test_seeds_past_32_bits_are_seeds_of_their_own(fitted, name):
    # JAX (64-bit types off) keeps a seed's low 32 bits: 2**32 + 1 would have repeated seed 1's rows
    model = fitted[1][name]
    one, wide = model.sample(N, seed=1, chunk_size=64), model.sample(N, seed=2**32 + 1, chunk_size=64)
    assert not np.allclose(one["x"].to_numpy(), wide["x"].to_numpy())
    assert_same_rows(model.sample(M, seed=2**64 - 1, chunk_size=7), model.sample(N, seed=2**64 - 1).iloc[:M])
    for bad in (-1, 2**64, None, "1", 1.5, True):
        with pytest.raises(ConfigError, match="seed must be an integer"):
            model.sample(M, seed=bad)


@pytest.mark.parametrize("name", list(MODELS))
def test_condition_gives_rows_of_the_class_and_keeps_the_contract(fitted, name):
    model = fitted[1][name]
    rows = model.sample(N, seed=3, condition={"label": "yes"}, chunk_size=7)
    assert len(rows) == N and (rows["label"] == "yes").all()
    prefix = model.sample(M, seed=3, condition={"label": "yes"}, chunk_size=7)
    assert_same_rows(prefix, rows.iloc[:M].reset_index(drop=True))
    with pytest.raises(ConfigError, match="known values.*(no|yes)"):
        model.sample(5, condition={"label": "maybe"})


def test_rejection_raises_one_line_naming_the_class_and_rate(fitted):
    model = fitted[1]["gan"]
    with pytest.raises(ConfigError, match=r"label='yes'.*% of rows") as err:
        model.sample(50, seed=0, condition={"label": "yes"}, max_candidates=60)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not categorical"):
        model.sample(5, condition={"x": 1.0})
    with pytest.raises(ConfigError, match="not a column"):
        model.sample(5, condition={"shade": "red"})
    with pytest.raises(ConfigError, match="chunk_size"):  # the old name of the sample-time keyword
        model.sample(5, batch_size=5)


DEVICES_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import jax
    warnings.simplefilter("ignore")
    from tabdiff_jax.models.base import load
    root, names = sys.argv[1], sys.argv[2].split(",")
    assert jax.device_count() == 4, jax.devices()
    # N rows (not a multiple of 4) in chunks of 7 (padded to 8 on 4 devices, then trimmed)
    out = {name: load(f"{root}/{name}").sample(%d, seed=1, chunk_size=7).to_json(orient="split") for name in names}
    print(json.dumps(out))
    """ % N
)


@pytest.fixture(scope="module")
def four_devices(fitted):
    root, _ = fitted
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", DEVICES_SCRIPT, str(root), ",".join(MODELS)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(MODELS))
def test_rows_do_not_depend_on_the_device_count(fitted, four_devices, name):
    import io

    one = fitted[1][name].sample(N, seed=1, chunk_size=7)
    four = pd.read_json(io.StringIO(four_devices[name]), orient="split", dtype=dict(one.dtypes))
    assert_same_rows(four, one)


def test_sample_rows_and_rejection_sample_address_rows_by_index():
    import jax

    from tabdiff_jax.sampling import rejection_sample, row_keys, sample_rows

    key = jax.random.key(0)

    def make(size, mesh):  # a uniform per row from its own key, and the per-row input passed through
        return jax.jit(lambda start, idx: (jax.vmap(jax.random.uniform)(row_keys(key, start, size)), idx))

    stream = sample_rows(make, 2000, chunk_size=64, per_row=np.arange(2000))
    np.testing.assert_array_equal(stream[1], np.arange(2000))  # per-row inputs cut into chunks, padding trimmed
    part = sample_rows(make, 20, start=13, chunk_size=7, per_row=np.arange(13, 33))
    np.testing.assert_array_equal(part[0], stream[0][13:33])  # a row range: the same rows

    def draw(start, count):
        return sample_rows(make, count, start=start, chunk_size=16, per_row=np.arange(start, start + count))

    rare = lambda rows: rows[0] < 0.05  # noqa: E731  (about 5%: 40 rows take several blocks of candidates)
    rows = rejection_sample(draw, 40, rare, describe="u<0.05")
    np.testing.assert_array_equal(rows[1], np.flatnonzero(stream[0] < 0.05)[:40])  # the first 40 accepted, in order
    np.testing.assert_array_equal(rejection_sample(draw, 9, rare, describe="u<0.05")[1], rows[1][:9])
    with pytest.raises(ConfigError, match=r"u<0.05: the model generates it in \d.*% of rows"):
        rejection_sample(draw, 40, rare, describe="u<0.05", max_candidates=300)
