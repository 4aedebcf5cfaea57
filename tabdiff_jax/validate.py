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


def in_choices(name: str, value: Any, choices: Iterable) -> Any:
    """``value`` itself if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    return value
