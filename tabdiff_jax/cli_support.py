"""Pieces of the command line kept out of ``cli.py``: one-line argparse errors, the model list of
``fit --help``, ``KEY=VALUE`` flag parsers, ``--device`` selection, output checks, flag hints in
messages, and one-line warnings."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import sys
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

from tabdiff_jax.errors import ConfigError

# One line each for `tabdiff-jax fit --help` (kept here so that help imports no model).
MODEL_HELP = {
    "tabddpm": "Gaussian + multinomial diffusion (TabDDPM); trains --steps; conditions on the target; --epsilon: DP-SGD",
    "tabdiff": "continuous-time Gaussian + masked diffusion, learned schedules (TabDiff); trains --steps; --epsilon: DP-SGD",
    "tablediffusion": "diffusion trained with DP-SGD (TableDiffusion); --epsilon for privacy, --epochs",
    "smote": "interpolates between neighbouring rows of a class; no training",
    "tvae": "variational autoencoder (TVAE); --epochs",
    "gan": "plain GAN on the encoded table; --epochs",
    "cgan": "GAN conditioned on a categorical column; --epochs",
    "wgan": "Wasserstein GAN with weight clipping; --epochs",
    "wgan-gp": "Wasserstein GAN with gradient penalty; --epochs",
    "ctgan": "conditional GAN with mode-specific normalisation (CTGAN); --epochs",
    "dpgan": "GAN with a DP-SGD critic (DPGAN); --epsilon, --epochs",
    "mst": "private marginals on a maximum spanning tree (MST, mbi); --epsilon, --delta",
    "aim": "private adaptive marginals (AIM, mbi); --epsilon, --delta",
}
DEVICES = ("cpu", "gpu", "cuda", "rocm", "tpu")
# Python names that messages use -> the flag that sets them on the command line.
FLAG_HINTS = (("column_kinds", "--column-kind COL=KIND"), ("max_categories", "--max-categories N"),
              ("public_categories", "--public-categories COL=A,B,C"), ("public_bounds", "--public-bounds COL=LO:HI"),
              ("numeric=", "--numeric"), ("options are", "--option KEY=VALUE"), ("target '", "--target"),
              ("'steps'", "--steps"), ("'epochs'", "--epochs"), ("'batch_size'", "--batch-size"))


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``prog: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def models_epilog() -> str:
    width = max(map(len, MODEL_HELP))
    return "models:\n" + "\n".join(f"  {name:<{width}}  {text}" for name, text in MODEL_HELP.items())


def _split(flag: str, item: str, form: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{flag} expects {form}, got {item!r}")
    return key.strip(), value


def _scalar(text: str):
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True, else the text itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def column_kind(item: str) -> tuple[str, str]:
    return _split("--column-kind", item, "COL=KIND (KIND: numeric or categorical)")


def public_bounds(item: str) -> tuple[str, tuple]:
    col, value = _split("--public-bounds", item, "COL=LO:HI")
    parts = value.split("..") if ".." in value else value.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise argparse.ArgumentTypeError(f"--public-bounds expects COL=LO:HI (or COL=LO..HI for timestamps), got {item!r}")
    return col, tuple(_scalar(p.strip()) for p in parts)


def public_categories(item: str) -> tuple[str, list]:
    col, value = _split("--public-categories", item, "COL=A,B,C")
    labels = [v.strip() for v in value.split(",")]
    if not any(labels):
        raise argparse.ArgumentTypeError(f"--public-categories expects COL=A,B,C, got {item!r}")
    typed = [_scalar(v) for v in labels]  # one type for all: numbers only if every label is one
    same = len({type(v) for v in typed}) == 1 and not isinstance(typed[0], str)
    return col, typed if same else labels


def option(item: str) -> tuple[str, object]:
    key, value = _split("--option", item, "KEY=VALUE (VALUE as JSON where it parses)")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.replace("-", "_"), parsed


def pairs(items: Optional[Sequence[tuple]], flag: str) -> Optional[dict]:
    """Repeated ``(key, value)`` flags as a dict; the same key twice is an error naming ``flag``."""
    if not items:
        return None
    out: dict = {}
    for key, value in items:
        if key in out:
            raise ConfigError(f"{flag} {key}: given twice")
        out[key] = value
    return out


def known_options(model) -> Optional[set]:
    """Constructor options of a model that keeps unknown ones silently (``None``: the model checks
    its options itself, as every model with a ``settings`` dict does, aliases included)."""
    if isinstance(getattr(model, "settings", None), dict):
        return None
    params = inspect.signature(type(model).__init__).parameters.values()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return named | {"preprocessor"}


def build_model(cls, config: dict, options: Optional[dict]):
    """``cls(**config, **options)``; a bad ``--option`` is a ConfigError naming it."""
    options = dict(options or {})
    for key, flag in (("epsilon", "--epsilon"), ("delta", "--delta")):
        if key in options and key in config:
            raise ConfigError(f"--option {key}: given twice (also {flag})")
    if isinstance(options.get("preprocessor"), dict) and "preprocessor" in config:
        options["preprocessor"] = {**config["preprocessor"], **options["preprocessor"]}
    try:
        model = cls(**{**config, **options})
    except ConfigError as exc:
        culprit = next((k for k in options if k in str(exc)), None)
        if culprit is None:
            raise
        raise ConfigError(f"--option {culprit}={json.dumps(options[culprit], default=str)}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"--option: {exc}") from exc
    known = known_options(model)
    unknown = sorted(k for k in options if known is not None and k not in known)
    if unknown:
        raise ConfigError(f"--option {unknown[0]}: {cls.model_name} has no such option; "
                          f"its options are {', '.join(sorted(known))}")
    return model


def select_device(device: Optional[str], flag: str = "--device") -> None:
    """Run JAX on ``device`` (cpu, gpu, tpu); ConfigError naming the flag when it is unknown or absent.

    Before JAX starts this selects the platform (so ``--device cpu`` leaves a GPU alone); once
    it runs (in-process callers) it checks that such devices exist and makes the first the default.
    """
    if not device:
        return
    name = device.strip().lower()
    if name not in DEVICES:
        raise ConfigError(f"{flag} {device!r}: unknown device; expected cpu, gpu or tpu")
    import jax
    from jax._src import xla_bridge

    absent = ConfigError(f"{flag} {name}: JAX has no {name} device here"
                         + (" (GPUs need a CUDA build of jax: pip install 'jax[cuda12]')" if name in ("gpu", "cuda") else ""))
    if xla_bridge.backends_are_initialized():
        try:
            devices = jax.devices(name)
        except RuntimeError:
            raise absent from None
        if jax.default_backend() != devices[0].platform:
            jax.config.update("jax_default_device", devices[0])
        return
    previous = jax.config.jax_platforms
    jax.config.update("jax_platforms", name)
    try:
        jax.devices()
    except RuntimeError:
        jax.config.update("jax_platforms", previous)
        raise absent from None


def check_table_output(path: str, flag: str) -> None:
    """Refuse, before any work, an output path ``write_table`` would refuse after it."""
    from tabdiff_jax.io import TABLE_SUFFIXES, _suffix

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p}: is a folder; give a .csv or .parquet file")
    if _suffix(p) not in TABLE_SUFFIXES:
        raise ConfigError(f"{flag} {p}: unsupported file type {_suffix(p) or '(none)'}; use .csv or .parquet")
    if p.parent.exists() and not p.parent.is_dir():
        raise ConfigError(f"{flag} {p}: {p.parent} is a file, not a folder")


def with_flag_hints(message: str) -> str:
    """``message`` plus the flags that set the Python names it mentions."""
    flags = [flag for word, flag in FLAG_HINTS if word in message and flag.split()[0] not in message]
    return message + (f" (command line: {', '.join(flags)})" if flags else "")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    print(f"tabdiff-jax: {category.__name__}: {with_flag_hints(text)}", file=file or sys.stderr)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within: warnings print as one line (no source line, no file name)."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        yield
