"""Checks of scalar arguments, shared by every module: each returns the value cast, or raises.

Every check raises :class:`~tabdiff_jax.errors.ConfigError` with the argument's ``name``, what was
expected and what was given, so that a message reads ``l2_clip must be a positive finite number,
got -1.0``. Booleans are not numbers here (``True`` is not a batch size).

Example:
  >>> steps = positive_int("steps", steps, minimum=0)
  >>> l2_clip = positive_float("l2_clip", l2_clip)
  >>> sampling_rate = probability("sampling_rate", sampling_rate, closed_high=True)
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from tabdiff_jax.errors import ConfigError


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum`` (integral floats such as ``2.0`` pass; ``2.5``, ``True`` do not)."""
    try:
        v = None if isinstance(value, (bool, str, bytes)) else float(value)
    except (TypeError, ValueError):
        v = None
    if v is None or not math.isfinite(v) or v != int(v) or int(v) < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value) if isinstance(value, int) else int(v)  # no float rounding of large ints


SEED_LIMIT = 2**64


def seed(value: Any, name: str = "seed") -> int:
    """``value`` as a seed, an integer in ``0 .. 2**64 - 1`` (integral floats pass; negatives, ``True``,
    strings and ``None`` do not: a seed has to name one run)."""
    try:
        v = None if isinstance(value, (bool, str, bytes)) or value is None else int(value)
        if v is not None and v != value:
            v = None  # 2.5
    except (TypeError, ValueError, OverflowError):
        v = None
    if v is None or not 0 <= v < SEED_LIMIT:
        raise ConfigError(f"{name} must be an integer from 0 to 2**64 - 1, got {value!r}")
    return v


def seed32(value: Any, name: str = "seed") -> int:
    """A :func:`seed` for libraries that take 32-bit seeds (scikit-learn, CatBoost, NumPy's ``RandomState``):
    seeds below ``2**32`` as they are, wider ones hashed to 32 bits (``numpy.random.SeedSequence``)."""
    v = seed(value, name)
    return v if v < 2**32 else int(np.random.SeedSequence(v).generate_state(1)[0])


def _number(name: str, value: Any, expected: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {expected}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {expected}, got {value!r}") from None


def positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float ``> 0`` (``>= 0`` with ``allow_zero``); NaN and inf fail."""
    expected = "a finite number >= 0" if allow_zero else "a positive finite number"
    v = _number(name, value, expected)
    if not (math.isfinite(v) and (v >= 0.0 if allow_zero else v > 0.0)):
        raise ConfigError(f"{name} must be {expected}, got {value!r}")
    return v


def probability(name: str, value: Any, *, closed_low: bool = False, closed_high: bool = False) -> float:
    """``value`` as a float in ``(0, 1)``; ``closed_low`` / ``closed_high`` admit 0 / 1."""
    expected = f"a number in {'[' if closed_low else '('}0, 1{']' if closed_high else ')'}"
    v = _number(name, value, expected)
    if not ((v >= 0.0 if closed_low else v > 0.0) and (v <= 1.0 if closed_high else v < 1.0)):
        raise ConfigError(f"{name} must be {expected}, got {value!r}")
    return v


def boolean(name: str, value: Any) -> bool:
    """``value`` as a ``bool`` if it is one (Python's or NumPy's); ``"yes"``, ``1`` and ``None`` are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def in_choices(name: str, value: Any, choices: Iterable) -> Any:
    """``value`` itself if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    return value


def network_options(settings: dict) -> None:
    """The options a diffusion model's network and optimiser share (TabDDPM, TabDiff): ``lr``,
    ``weight_decay``, ``ema_decay`` (None or in (0, 1)), ``dropout`` (in [0, 1)), ``matmul_dtype``
    (None, ``"float32"`` or ``"bfloat16"``); and the privacy options when ``epsilon`` is set."""
    positive_float("lr", settings["lr"])
    positive_float("weight_decay", settings["weight_decay"], allow_zero=True)
    if settings["ema_decay"] is not None and not 0.0 < float(settings["ema_decay"]) < 1.0:
        raise ConfigError(f"ema_decay must be in (0, 1) or None, got {settings['ema_decay']!r}")
    if not 0.0 <= float(settings["dropout"]) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {settings['dropout']!r}")
    if settings["matmul_dtype"] not in (None, "bfloat16", "float32"):
        raise ConfigError(f"matmul_dtype must be None, 'float32' or 'bfloat16', got {settings['matmul_dtype']!r}")
    if settings.get("epsilon") is not None:  # None: no privacy (the default)
        from tabdiff_jax.privacy.loop import check_private_options

        check_private_options(settings)


def fit_length(model: str, settings: dict, steps: Any, epochs: Any, batch_size: Any, rows: int) -> tuple[int, int]:
    """``(steps, batch)`` of a step-counted fit (TabDDPM, TabDiff): fit's ``steps`` / ``batch_size`` over the
    options, the batch at most ``rows``; ``epochs`` only plans a private run (``epsilon`` set)."""
    if epochs is not None and settings.get("epsilon") is None:
        raise ConfigError(f"{model} counts training steps, not epochs: use steps= (--steps); epochs= plans a "
                          "private run (epsilon=)")
    if epochs is not None and steps is not None:
        raise ConfigError(f"{model}.fit: give at most one of epochs and steps")
    num_steps = positive_int("steps", settings["steps"] if steps is None else steps, 0)
    batch = positive_int("batch_size", settings["batch_size"] if batch_size is None else batch_size)
    return num_steps, min(batch, int(rows))
