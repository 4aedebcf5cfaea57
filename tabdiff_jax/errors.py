"""Exceptions raised for bad input; each message names the column, argument or file at fault."""


class TabdiffError(Exception):
    """Base class of the errors tabdiff_jax raises on purpose (the CLI prints them as one line)."""


class DataError(TabdiffError, ValueError):
    """The table is not usable as given (empty, NaN/inf, unseen category, wrong target, ...)."""


class ConfigError(TabdiffError, ValueError):
    """An argument or option is invalid (bad epsilon, unknown model, bad batch size, ...)."""
