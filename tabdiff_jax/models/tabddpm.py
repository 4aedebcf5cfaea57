"""TabDDPM (Kotelnikov et al. 2023) as an estimator: ``TabDDPM(...).fit(df, target=...).sample(n)``.

A thin wrapper over the pure core: :mod:`tabdiff_jax.diffusion` (model, loss, compiled train step),
:mod:`tabdiff_jax.diffusion.samplers` (the compiled reverse process) and the shared preprocessor
(quantile-to-normal numbers, categorical codes). A classification target is the denoiser's label
condition, drawn at sampling time from the training class frequencies unless ``y`` is given; a
regression target is diffused as a number.

Options (keyword, all optional; ``steps`` and ``batch_size`` can also be passed to ``fit``)::

    steps, batch_size, lr, weight_decay, num_timesteps, schedule, hidden_dims, dim_t, dropout,
    ema_decay (None: no EMA), sample_with_ema, grad_clip, checkpoint_every, log_every,
    num_sample_steps (None: all T ancestral steps), sample_chunk_size (rows per compiled sampling
    call; None: 2,048 on a CPU, 65,536 on an accelerator; the rows do not depend on it), matmul_dtype (None or
    "bfloat16": mixed-precision matmuls for accelerators), preprocessor (dict of Preprocessor options;
    ``{"derive": "auto"}`` rebuilds exactly determined columns instead of modelling them, not private runs)

Private training (DP-SGD, :mod:`tabdiff_jax.privacy.loop`, the step TableDiffusion uses)::

    epsilon (None: not private, the default), delta (1e-5; below 1/n), max_grad_norm (per-example
    clipping norm, 1.0), clipping ("ghost": book-keeping, the default and faster; or "vmap"),
    accountant ("rdp" or "pld")

With ``epsilon``, ``batch_size`` is the expected Poisson batch and ``steps`` (or ``fit(epochs=)``)
the planned length that the noise is calibrated for; a resumed private run keeps that length.
Numbers go through the quantile transform, whose quantiles are learned from the private table
outside the budget (the fit warns and records it in ``fit_info["preprocessing"]``); for a fully
private pipeline pass ``preprocessor={"numeric": "minmax"}`` and ``public_bounds`` /
``public_categories`` to ``fit``.
"""

from __future__ import annotations

import functools
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx

from tabdiff_jax import validate
from tabdiff_jax.diffusion import samplers
from tabdiff_jax.diffusion import tabddpm as dm
from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.models.base import NetworkState, Synthesizer, register
from tabdiff_jax.sharding import auto_mesh, round_down, to_global
from tabdiff_jax.state import init_train_state, split_params
from tabdiff_jax.table import EncodedTable, TableLayout, split_target
from tabdiff_jax.training import (
    early_stop,
    resolve_config,
    train_estimator,
)

# Chosen for the Adult demo on 2 CPU cores (about 5 minutes with sampling and evaluation): T = 100
# (the paper's smaller setting; sampling costs T forward passes per row, T = 1000 is 10x slower),
# the cosine schedule and AdamW at 2e-3 with linear decay as in TabDDPM, a 256-256 MLP and batch
# 1024 instead of the paper's tuned Adult model (up to 1024 wide, batch 4096, 30k steps), which a
# CPU cannot train in minutes. 8000 steps reach Adult F1 0.79 (paper 0.795), shape 0.99 (see
# benchmarks/results/quality_tabddpm.json).
TABDDPM_DEFAULTS = dict(
    steps=8000, batch_size=1024, lr=2e-3, weight_decay=1e-4, num_timesteps=100, schedule="cosine",
    hidden_dims=(256, 256), dim_t=128, dropout=0.0, ema_decay=None, sample_with_ema=True, grad_clip=None,
    checkpoint_every=1000, checkpoint_seconds=60.0, log_every=50, num_sample_steps=None, sample_chunk_size=None, matmul_dtype=None,
    preprocessor=None,
    # DP-SGD (tabdiff_jax.privacy.loop.PRIVATE_OPTIONS); epsilon=None: not private
    epsilon=None, delta=1e-5, max_grad_norm=1.0, clipping="ghost", accountant="rdp",
)


# RePaint's resampling when inpainting (sample(condition=) on a non-target column, impute): each reverse
# step done 10 times. On a correlated Gaussian with the exact denoiser, b given a = 1.5 (r = 0.9, T = 50)
# has mean 0.93 with 1 pass, 1.21 with 3 and 1.32 with 10 (exact 1.35; tests/test_conditioning.py).
INPAINT_RESAMPLE = 10


@functools.lru_cache(maxsize=8)
def _train_step(graphdef, config, batch_size, ema_decay, lr, weight_decay, num_steps, grad_clip, mesh=None):
    """``(optimizer, compiled step)``, cached so that refitting the same configuration does not recompile."""
    optimizer = dm.make_annealed_adamw(lr, weight_decay, num_steps=num_steps, grad_clip=grad_clip)
    return optimizer, dm.make_train_step(graphdef, optimizer, config, batch_size=batch_size, ema_decay=ema_decay,
                                         mesh=mesh)


@register("tabddpm")
class TabDDPM(NetworkState, Synthesizer):
    """TabDDPM: Gaussian diffusion for numbers, multinomial diffusion for categories, one MLP.

    Example:
      >>> model = TabDDPM(steps=2000).fit(df, target="income", seed=0)
      >>> synthetic = model.sample(10_000, seed=1)
      >>> rich = model.sample(100, y=">50K")          # rows of one class
      >>> model.save("run"); same = tabdiff_jax.load("run")

    Options are listed in the module docstring; defaults in :data:`TABDDPM_DEFAULTS`.
    """

    preprocessor_options = {"numeric": "quantile"}
    CONFIG_KEY = "diffusion"  # where model.json keeps the config (NetworkState)
    supports_inpainting = True  # sample(condition=) on any columns and impute(df): see _sample_raw

    def __init__(self, **config):
        if "hidden_dims" in config and config["hidden_dims"] is not None:
            config["hidden_dims"] = [int(w) for w in config["hidden_dims"]]
        self.settings = resolve_config(TABDDPM_DEFAULTS, config, "TabDDPM")
        s = self.settings
        for name in ("steps", "batch_size", "num_timesteps", "dim_t", "checkpoint_every", "log_every",
                     "sample_chunk_size"):
            if name != "sample_chunk_size" or s[name] is not None:
                validate.positive_int(name, s[name], 0 if name == "steps" else 1)
        if s["num_sample_steps"] is not None:
            validate.positive_int("num_sample_steps", s["num_sample_steps"])
            if s["num_sample_steps"] > s["num_timesteps"]:
                raise ConfigError(f"num_sample_steps ({s['num_sample_steps']}) exceeds num_timesteps ({s['num_timesteps']})")
        dm.DiffusionConfig(num_numeric=1, num_timesteps=int(s["num_timesteps"]), schedule=s["schedule"])  # validates
        validate.network_options(s)  # lr, weight_decay, ema_decay, dropout, matmul_dtype, privacy
        super().__init__(**{k: v for k, v in config.items() if not (k == "preprocessor" and v is None)})
        self._postprocess = None

    # ------------------------------------------------------------------------------ setup
    def _build(self, layout: TableLayout, key) -> tuple:
        """``(config, graphdef, params)`` of a fresh denoiser for ``layout``."""
        s = self.settings
        config = dm.DiffusionConfig.from_layout(layout, num_timesteps=int(s["num_timesteps"]), schedule=s["schedule"])
        model = dm.make_denoiser(config, hidden_dims=tuple(s["hidden_dims"]), dim_t=int(s["dim_t"]),
                                 dropout_rate=float(s["dropout"]), matmul_dtype=s["matmul_dtype"],
                                 rngs=nnx.Rngs(key))
        graphdef, params = split_params(model)
        self._layout, self._config, self._graphdef = layout, config, graphdef
        return config, graphdef, params

    # ---------------------------------------------------------------------------- fitting
    def _fit(self, df, encoded: EncodedTable, key, *, run_dir, resume, progress, steps=None, batch_size=None,
             max_seconds: Optional[float] = None, stop_after_steps: Optional[int] = None, epochs=None):
        """Train; ``steps`` / ``batch_size`` override the options, ``max_seconds`` stops early on time,
        ``stop_after_steps`` stops (and checkpoints) early, as an interruption would."""
        s = self.settings
        private = s["epsilon"] is not None
        layout = encoded.layout
        feats, y = split_target(encoded) if layout.task == "classification" else (encoded, None)
        num_steps, batch = validate.fit_length("TabDDPM", s, steps, epochs, batch_size, feats.num_rows)
        k_init, k_train = jax.random.split(key)
        config, graphdef, params = self._build(layout, k_init)
        if config.num_classes:
            counts = np.bincount(np.asarray(y), minlength=config.num_classes).astype(np.float64)
            self._class_probs = counts / counts.sum()
        else:
            self._class_probs = None
        data = dm.TableBatch(jnp.asarray(feats.numeric, jnp.float32), jnp.asarray(feats.categorical, jnp.int32),
                             None if y is None else jnp.asarray(y, jnp.int32))
        ema_decay = None if s["ema_decay"] is None else float(s["ema_decay"])
        if private:
            label_key = jax.random.fold_in(key, 0x4C41424C)  # "LABL": the label frequencies' noise
            return self._fit_private(config, graphdef, params, data, k_train, label_key, batch=batch, steps=num_steps,
                                     epochs=epochs, run_dir=run_dir, resume=resume, progress=progress,
                                     max_seconds=max_seconds, stop_after_steps=stop_after_steps)
        mesh = auto_mesh()  # data parallelism over all local devices; None on a single device
        batch = round_down(batch, mesh)  # rows must split evenly over the devices
        optimizer, step = _train_step(graphdef, config, batch, ema_decay, float(s["lr"]), float(s["weight_decay"]),
                                      max(num_steps, 1), None if s["grad_clip"] is None else float(s["grad_clip"]),
                                      mesh)
        state = init_train_state(params, optimizer, ema_decay)
        data, state = to_global((data, state), mesh)  # several processes: global replicated arrays
        self._params, self.fit_info = train_estimator(
            lambda st, k: step(st, data, k), state, s, num_steps=num_steps, key=k_train, run_dir=run_dir,
            resume=resume, progress=progress, desc="TabDDPM", batch=batch, max_seconds=max_seconds,
            stop_after_steps=stop_after_steps)
        self._postprocess = None

    def _fit_private(self, config, graphdef, params, data, key, label_key, *, batch, steps, epochs, run_dir, resume,
                     progress, max_seconds, stop_after_steps):
        """DP-SGD (:func:`tabdiff_jax.privacy.loop.fit_dpsgd`, the step TableDiffusion uses): Poisson batches
        of expected size ``batch``, each row's gradient clipped to ``max_grad_norm`` (book-keeping clipping
        by default), Gaussian noise calibrated so that the planned ``steps`` (or ``epochs``) spend at most
        ``epsilon``; AdamW with TabDDPM's linear decay over the planned steps. The class frequencies that
        sampling draws labels from are released by the Gaussian mechanism with ``LABEL_SHARE`` of the
        budget (:func:`tabdiff_jax.privacy.loop.private_frequencies`); DP-SGD gets the rest."""
        from tabdiff_jax.privacy.accounting import check_delta
        from tabdiff_jax.privacy.loop import LABEL_SHARE, fit_private_estimator, private_frequencies

        s = self.settings
        check_delta(s["delta"], int(data.x_num.shape[0]))  # before anything is released
        grad_clip = None if s["grad_clip"] is None else float(s["grad_clip"])
        released = {}
        if config.num_classes:  # the label prior of sampling: from the private table, so noised and accounted
            self._class_probs, released["label_frequencies"] = private_frequencies(
                data.y, config.num_classes, LABEL_SHARE * float(s["epsilon"]), LABEL_SHARE * float(s["delta"]),
                label_key, accountant=s["accountant"])
        self._params, self.fit_info = fit_private_estimator(
            s, dm.make_private_loss(config),
            lambda total: dm.make_annealed_adamw(float(s["lr"]), float(s["weight_decay"]), num_steps=total,
                                                 grad_clip=grad_clip),
            params, data, key, graphdef=graphdef, batch_size=batch, steps=steps, epochs=epochs,
            preprocessor=self.preprocessor, model_name="TabDDPM", run_dir=run_dir, resume=resume, progress=progress,
            stop_fn=early_stop(time.perf_counter(), max_seconds, stop_after_steps), released=released)
        self._postprocess = None

    # ---------------------------------------------------------------------------- sampling
    def _target_codes(self, y, n: int) -> np.ndarray:
        """Labels of the classification target (one value or ``n`` values) -> int codes ``[n]``."""
        from tabdiff_jax.preprocess import frames

        if not self._config.num_classes:
            raise ConfigError("y: the model has no classification target to condition on "
                              f"(target={self.target!r}, task={self.task!r})")
        spec = next(sp for sp in self.preprocessor.specs if sp.name == self.target)
        values = pd.Series(np.broadcast_to(np.asarray(y, dtype=object), (n,)), dtype=object)
        try:
            return frames.category_codes(values, spec, frames.label_index(spec))
        except DataError as e:
            raise ConfigError(f"y: {e}") from None

    def _decode_fn(self):
        if self._postprocess is None:
            pre, layout = self.preprocessor, self._layout

            def postprocess(batch):
                return pre.decode_arrays(samplers.to_encoded_table(batch, layout))

            self._postprocess = postprocess
        return self._postprocess

    def _native_condition(self, codes: dict) -> bool:
        return bool(self._config.num_classes) and set(codes) == {self.target}  # the label condition y

    def _sample_raw(self, start, n, key, *, y=None, condition: Optional[dict] = None, known=None,
                    chunk_size: Optional[int] = None, num_sample_steps: Optional[int] = None,
                    resample: Optional[int] = None):
        """``known`` (:class:`~tabdiff_jax.conditioning.Known`): given cells, inpainted in the reverse
        process with ``resample`` (default :data:`INPAINT_RESAMPLE`) passes per step; a given
        classification target is the label condition ``y`` of its rows."""
        from tabdiff_jax import conditioning

        s = self.settings
        x_known, y_known = None, None
        if known is not None:
            feats, y_known = conditioning.split_target(known, self._layout)
            if feats.any():
                x_known = (feats.numeric, feats.numeric_mask, feats.codes, feats.codes_mask)
            y_known = None if y_known is None or not (y_known >= 0).any() else y_known
        if condition or y_known is not None:
            if y is not None:
                raise ConfigError("give either y or a condition on the target, not both")
            codes = y_known if y_known is not None else np.full(n, condition[self.target][1], np.int32)
        else:
            codes = None if y is None else self._target_codes(y, n)
        chunk = s["sample_chunk_size"] if chunk_size is None else chunk_size
        steps = s["num_sample_steps"] if num_sample_steps is None else num_sample_steps
        return samplers.sample(self._params, self._graphdef, self._config, key, n, y=codes,
                               class_probs=self._class_probs, chunk_size=chunk, num_sample_steps=steps,
                               postprocess=self._decode_fn(), start=start, known=x_known,
                               resample=INPAINT_RESAMPLE if resample is None else resample)
