"""The shared scalar checks: values that pass come back cast, the rest raise ConfigError naming the argument."""

import math

import numpy as np
import pytest

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError


def test_positive_int():
    assert validate.positive_int("n", 3) == 3 and validate.positive_int("n", np.int64(4)) == 4
    assert validate.positive_int("n", 2.0) == 2 and validate.positive_int("steps", 0, minimum=0) == 0
    assert validate.positive_int("seed", 2**62, 0) == 2**62  # no float rounding
    for bad in (0, -1, 2.5, True, "3", None, math.nan, math.inf):
        with pytest.raises(ConfigError, match="^n must be an integer >= 1"):
            validate.positive_int("n", bad)


def test_seed():
    assert validate.seed(0) == 0 and validate.seed(np.uint64(2**64 - 1)) == 2**64 - 1 and validate.seed(7.0) == 7
    for bad in (-1, 2**64, None, "3", b"3", 2.5, True, math.nan, math.inf, [1]):
        with pytest.raises(ConfigError, match="seed must be an integer"):
            validate.seed(bad)


def test_seed32_keeps_32_bit_seeds_and_folds_wider_ones():
    assert validate.seed32(0) == 0 and validate.seed32(2**32 - 1) == 2**32 - 1
    wide = [validate.seed32(s) for s in (2**32, 2**32 + 1, 2**64 - 1)]
    assert all(0 <= w < 2**32 for w in wide) and len(set(wide)) == 3
    assert validate.seed32(2**32 + 1) == wide[1]  # the same each time
    with pytest.raises(ConfigError, match="seed must be an integer"):
        validate.seed32(-1)


def test_seed_key_keeps_32_bit_seeds_and_separates_wider_ones():
    import jax

    from tabdiff_jax.sampling import seed_key

    data = jax.random.key_data
    assert np.array_equal(data(seed_key(12345)), data(jax.random.key(12345)))  # the rows of earlier versions
    keys = {tuple(np.asarray(data(seed_key(s))).tolist()) for s in (1, 2**32 + 1, 2**33 + 1, 2**64 - 1, 2**40)}
    assert len(keys) == 5 and (0, 0) not in keys


def test_positive_float():
    assert validate.positive_float("l2_clip", 0.5) == 0.5 and validate.positive_float("l2_clip", np.float32(2)) == 2.0
    assert validate.positive_float("noise_multiplier", 0, allow_zero=True) == 0.0
    for bad in (0.0, -1.0, math.nan, math.inf, "x", None, True):
        with pytest.raises(ConfigError, match="^l2_clip must be a positive finite number"):
            validate.positive_float("l2_clip", bad)
    with pytest.raises(ConfigError, match="noise_multiplier must be a finite number >= 0"):
        validate.positive_float("noise_multiplier", -0.1, allow_zero=True)


def test_probability():
    assert validate.probability("delta", 1e-5) == 1e-5
    assert validate.probability("sampling_rate", 1, closed_high=True) == 1.0
    assert validate.probability("p", 0, closed_low=True) == 0.0
    for bad in (0.0, 1.0, -0.1, math.nan, "x"):
        with pytest.raises(ConfigError, match=r"^delta must be a number in \(0, 1\)"):
            validate.probability("delta", bad)
    with pytest.raises(ConfigError, match=r"sampling_rate must be a number in \(0, 1\]"):
        validate.probability("sampling_rate", 1.5, closed_high=True)


def test_in_choices():
    assert validate.in_choices("clipping", "vmap", ("ghost", "vmap")) == "vmap"
    with pytest.raises(ConfigError, match=r"clipping must be one of \('ghost', 'vmap'\), got 'opacus'"):
        validate.in_choices("clipping", "opacus", ("ghost", "vmap"))
