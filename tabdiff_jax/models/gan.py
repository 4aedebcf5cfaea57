"""The GAN family as estimators: GAN, CGAN, WGAN, WGANGP and a CTGAN-style preset (DPGAN: :mod:`tabdiff_jax.models.dpgan`).

Every class is the same machine (:mod:`tabdiff_jax.gan.train`) with other defaults; any option
can be overridden, e.g. ``WGANGP(conditional="ctgan", pac=10)``. Options (all keyword):

    epochs, batch_size, noise_dim, generator_dims, critic_dims, residual (CTGAN's generator),
    dropout (critic), generator_lr, critic_lr, optimizer ("adam" | "rmsprop"), betas,
    weight_decay, loss ("bce" | "wasserstein"), gradient_penalty, weight_clip, n_critic, pac,
    conditional (None | "column" | "ctgan"), condition_column (for "column"; default: the
    classification target), log_frequency, tau, numeric_activation (None: tanh for "minmax" /
    "mode_specific" numbers, identity otherwise), checkpoint_every (epochs), preprocessor (dict
    of Preprocessor options, e.g. {"numeric": "mode_specific"}), generator_ema (None, or the decay
    of a moving average of the generator's weights, which sampling then uses), classifier_loss (AC-GAN's
    auxiliary classifier of the conditioned column, ``conditional="column"``: its weight; 0: none) and
    classifier_dims (its hidden widths; None: critic_dims), classifier_labels (sampling draws each row's
    conditioned column from that classifier's p(label | the generated row's other columns), the critic's
    weights saved with the model; a ``condition=`` on the column is kept).

An epoch is ``n // batch_size`` generator updates, each after ``n_critic`` critic updates (as
the ``ctgan`` package counts them), compiled as one ``lax.scan``.

``sample(n, condition={"col": "value"})`` (CGAN, and any model with a conditional vector) sets
that value in every row: the generator is conditioned on it and the column's block is set.

Data parallelism over all local devices (:func:`tabdiff_jax.sharding.auto_mesh`): every batch is
split by rows over the devices, parameters replicated. The batch is rounded down to a multiple of
``pac`` times the device count (an epoch still counts ``n // batch_size`` updates of the requested
``batch_size``; a table too small for that trains on one device). DPGAN's privacy plan uses the
requested batch size, so ``q``, the step count and the accounting do not depend on the device
count. Sampling splits each chunk's rows over the devices (each chunk padded to a multiple of the
device count and trimmed); row ``i`` draws its condition and noise from its own key
(:mod:`tabdiff_jax.sampling`), so the same seed gives the same rows whatever the chunk size or
device count. A condition on a column outside the conditional vector (or on a model without one)
is met by rejection sampling (:meth:`~tabdiff_jax.models.base.Synthesizer.sample`).
"""

from __future__ import annotations

import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError, DataError
from tabdiff_jax.gan import conditional as cond_lib
from tabdiff_jax.gan.nets import numeric_activation_for
from tabdiff_jax.gan.sampling import label_bias, make_sample_fn
from tabdiff_jax.gan.train import GANConfig, init_gan, make_epoch_fn
from tabdiff_jax.models.base import Synthesizer, register
from tabdiff_jax.sampling import cached_chunk, row_keys, sample_rows
from tabdiff_jax.sharding import auto_mesh, replicate
from tabdiff_jax.table import TableLayout, from_dense, to_dense
from tabdiff_jax.training import (
    EpochTimer,
    arrays_to_tree,
    epochs_from,
    make_named_optimizer,
    resolve_config,
    run_training,
    tree_to_arrays,
)

# Defaults from the GAN talk (noise 32, generator 128-256-512, critic 512-256-128, batch 128, lr 5e-4).
GAN_DEFAULTS = dict(
    epochs=300, batch_size=128, noise_dim=32, generator_dims=(128, 256, 512), critic_dims=(512, 256, 128),
    residual=False, dropout=0.0, generator_lr=5e-4, critic_lr=5e-4, optimizer="adam", betas=(0.5, 0.9),
    weight_decay=0.0, loss="bce", gradient_penalty=0.0, weight_clip=None, n_critic=1, pac=1,
    conditional=None, condition_column=None, log_frequency=True, tau=0.2, numeric_activation=None,
    checkpoint_every=50, checkpoint_seconds=60.0, preprocessor=None, generator_ema=None,
    classifier_loss=0.0, classifier_dims=None, classifier_labels=False,
)
CONDITIONALS = (None, "column", "ctgan")
CALIBRATION_ROWS = 8192  # generated rows that calibrate the classifier's labels to the class shares
LABEL_CALIBRATION = 0x43414C42  # fold_in constant of their key ("CALB")


class GANSynthesizer(Synthesizer):
    """Shared implementation; use one of the registered subclasses."""

    preprocessor_options = {"numeric": "quantile"}
    defaults: dict = GAN_DEFAULTS

    def __init__(self, **config):
        self.settings = resolve_config(self.defaults, config, type(self).__name__)
        s = self.settings
        validate.in_choices("conditional", s["conditional"], CONDITIONALS)
        validate.positive_int("epochs", s["epochs"], 0)
        validate.positive_int("checkpoint_every", s["checkpoint_every"])
        if float(s["classifier_loss"]) > 0 and s["conditional"] != "column":
            raise ConfigError("classifier_loss needs conditional='column' (AC-GAN classifies the conditioned column)")
        validate.boolean("classifier_labels", s["classifier_labels"])
        if s["classifier_labels"] and not float(s["classifier_loss"]) > 0:
            raise ConfigError("classifier_labels needs classifier_loss > 0 (the classifier it draws the labels from)")
        if not 0.0 <= float(s["dropout"]) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {s['dropout']!r}")
        self._gan_config(batch_size=int(s["batch_size"]))  # validates the training options early
        super().__init__(**{k: v for k, v in config.items() if not (k == "preprocessor" and v is None)})

    # ------------------------------------------------------------------------------ setup
    @property
    def _numeric(self) -> str:
        return {**self.preprocessor_options, **(self.settings["preprocessor"] or {})}.get("numeric", "quantile")

    def _gan_config(self, batch_size: int, blocks: Optional[tuple] = None) -> GANConfig:
        """The training settings; ``blocks`` (the conditioned blocks of a fit, when known): without one
        (e.g. DPGAN on a table without a categorical target) there is no auxiliary classifier."""
        s = self.settings
        ctgan = s["conditional"] == "ctgan"
        return GANConfig(loss=s["loss"], gradient_penalty=float(s["gradient_penalty"]),
                         weight_clip=None if s["weight_clip"] is None else float(s["weight_clip"]),
                         n_critic=int(s["n_critic"]), pac=int(s["pac"]), batch_size=int(batch_size),
                         noise_dim=int(s["noise_dim"]), tau=float(s["tau"]),
                         numeric_activation=s["numeric_activation"] or numeric_activation_for(self._numeric),
                         condition_loss=1.0 if ctgan else 0.0, impose_condition=s["conditional"] == "column",
                         generator_ema=None if s["generator_ema"] is None else float(s["generator_ema"]),
                         classifier_loss=float(s["classifier_loss"]) if blocks is None or len(blocks) == 1 else 0.0)

    def _condition_blocks(self, layout: TableLayout) -> tuple[int, ...]:
        s = self.settings
        if s["conditional"] == "ctgan":
            return cond_lib.category_blocks(layout)
        if s["conditional"] == "column":
            column = s["condition_column"] or layout.target
            if column is None:
                raise ConfigError("condition_column: CGAN needs a categorical column to condition on "
                                  "(pass condition_column=..., or fit with a classification target)")
            return cond_lib.category_blocks(layout, column)
        return ()

    def _optimizers(self):
        s = self.settings
        make = lambda lr: make_named_optimizer(s["optimizer"], lr, betas=s["betas"], weight_decay=s["weight_decay"])
        return make(float(s["generator_lr"])), make(float(s["critic_lr"]))

    def _build(self, layout: TableLayout, config: GANConfig, sampler, key: jax.Array):
        s = self.settings
        gen_tx, critic_tx = self._optimizers()
        cond_dim = 0 if sampler is None else sampler.cond_dim
        label_block = None if sampler is None else (sampler.dense_offsets[0], sampler.sizes[0])
        gen_def, critic_def, state = init_gan(key, layout, config, gen_tx, critic_tx,
                                              generator_dims=s["generator_dims"], critic_dims=s["critic_dims"],
                                              cond_dim=cond_dim, residual=bool(s["residual"]),
                                              dropout=float(s["dropout"]), label_block=label_block,
                                              classifier_dims=s["classifier_dims"])
        self._layout, self._config, self._gen_def, self._sample_fn = layout, config, gen_def, None
        self._critic_def, self._critic = critic_def, None
        return gen_def, critic_def, gen_tx, critic_tx, state

    def _batch_size(self, n: int, requested: Optional[int] = None) -> int:
        pac = int(self.settings["pac"])
        batch = min(int(self.settings["batch_size"] if requested is None else requested), n)
        batch -= batch % pac
        if batch < 1:
            raise DataError(f"the table has {n} rows: fewer than pac={pac}")
        return batch

    # ---------------------------------------------------------------------------- fitting
    def _private_setup(self, gen_def, critic_def, layout, config, critic_tx, n, critic_steps, *,
                       expected_batch, mesh=None):
        """``(critic_update, stop_fn, on_log)`` of a private run; the base class is not private."""
        return None, None, None

    @staticmethod
    def _data_parallel(batch: int, pac: int):
        """``(mesh, batch)``: the data mesh and the batch rounded down to whole packs per device, or
        ``(None, batch)`` on one device or when the batch is too small to split."""
        mesh = auto_mesh()
        if mesh is None or batch < pac * mesh.size:
            return None, batch
        return mesh, batch - batch % (pac * mesh.size)

    def _fit(self, df, encoded, key, *, run_dir, resume, progress, epochs=None, steps=None, batch_size=None):
        """``epochs`` / ``batch_size`` override the options for this fit; ``steps`` (generator updates,
        the command line's ``--steps``) is rounded up to whole epochs."""
        s = self.settings
        layout = encoded.layout
        data = to_dense(encoded)
        n = int(data.shape[0])
        requested = self._batch_size(n, batch_size)
        mesh, batch = self._data_parallel(requested, int(s["pac"]))  # data parallelism over local devices
        blocks = self._condition_blocks(layout)
        config = self._gan_config(batch, blocks)
        steps_per_epoch = max(n // requested, 1)
        num_epochs = epochs_from(s["epochs"], epochs, steps, steps_per_epoch)
        steps = steps_per_epoch
        sampler = self._condition_sampler(encoded, layout, blocks, key, trains=num_epochs > 0) if blocks else None
        self._blocks = blocks
        k_init, k_train = jax.random.split(key)
        gen_def, critic_def, gen_tx, critic_tx, state = self._build(layout, config, sampler, k_init)
        critic_update, stop_fn, on_log = self._private_setup(gen_def, critic_def, layout, config, critic_tx, n,
                                                             num_epochs * steps * config.n_critic,
                                                             expected_batch=requested, mesh=mesh)
        epoch = jax.jit(make_epoch_fn(gen_def, critic_def, layout, config, gen_tx, critic_tx, steps_per_epoch=steps,
                                      critic_update=critic_update, mesh=mesh), donate_argnums=0)
        data, sampler, state = replicate((data, sampler, state), mesh)
        timer = EpochTimer(lambda st, k: epoch(st, data, sampler, k))
        state, history = run_training(timer, state, num_steps=num_epochs,
                                      key=k_train, run_dir=run_dir, checkpoint_every=int(s["checkpoint_every"]),
                                      checkpoint_seconds=s["checkpoint_seconds"],
                                      resume=resume, progress=progress, desc=f"{type(self).__name__} epochs",
                                      log_every=1, stop_fn=stop_fn, on_log=on_log)
        self._generator = state.generator.params if state.generator.ema is None else state.generator.ema
        if self._labels_from_classifier and config.classifier_loss > 0:  # the labels from the (private) classifier
            self._critic = (state.critic.params, self._label_bias(layout, config, critic_def, state.critic.params,
                                                                  sampler, jax.random.fold_in(key, LABEL_CALIBRATION)))
        self._sampler_arrays = sampler
        self.fit_info = {"epochs": int(state.step) // steps, "steps_per_epoch": steps,
                         "batch_size": config.batch_size, "sampled_from": "params" if config.generator_ema is None
                         else "ema", **timer.summary(),
                         "history": [(int(e), m) for e, m in history[-20:]],
                         **self._privacy_info(int(state.critic.step))}

    def _label_bias(self, layout, config, critic_def, critic_params, sampler, key) -> jax.Array:
        """The classifier's logit shift that makes its labels of generated rows keep the class shares the rows
        are generated with (the sampler's released ones; :func:`tabdiff_jax.gan.sampling.label_bias`), from
        ``CALIBRATION_ROWS`` rows of ``key``: post-processing of the generator and the critic."""
        sample = jax.jit(make_sample_fn(self._gen_def, layout, config, critic_def=critic_def))
        rows = sample(self._generator, sampler, row_keys(key, 0, CALIBRATION_ROWS))
        logits = np.asarray(nnx.merge(critic_def, critic_params).classify(rows))
        size = sampler.sizes[0]
        shares = np.exp(np.asarray(sampler.sample_logits, np.float64)[0, :size])
        return jnp.asarray(label_bias(logits, shares))

    @property
    def _labels_from_classifier(self) -> bool:
        return bool(self.settings["classifier_labels"]) and float(self.settings["classifier_loss"]) > 0

    def _condition_sampler(self, encoded, layout, blocks, key, *, trains: bool):
        """The :class:`~tabdiff_jax.gan.conditional.ConditionSampler` of ``blocks`` (DPGAN: a private one)."""
        log_frequency = bool(self.settings["log_frequency"]) and self.settings["conditional"] == "ctgan"
        return cond_lib.build_condition_sampler(np.asarray(encoded.categorical), layout, blocks,
                                                log_frequency=log_frequency)

    def _privacy_info(self, critic_steps: int) -> dict:
        return {}

    # ---------------------------------------------------------------------------- sampling
    def _native_condition(self, codes: dict) -> bool:
        """One column that the conditional vector covers (CGAN's column, CTGAN's categories)."""
        if self._sampler_arrays is None or len(codes) != 1:
            return False
        return next(iter(codes)) in [self._layout.categorical_names[b] for b in self._sampler_arrays.blocks]

    def _chunk(self, size: int, mesh):
        """Compiled ``chunk(generator, sampler, key, start, block_id, category) -> (raw_numeric, raw_codes)``
        of ``size`` rows (row ``i`` from ``fold_in(key, i)``), decoded on the device."""
        def build():
            sample = make_sample_fn(self._gen_def, self._layout, self._config, mesh, critic_def=self._critic_def)
            pre, layout = self.preprocessor, self._layout

            def chunk(generator, critic, sampler, key, start, block_id=None, category=None):
                rows = sample(generator, sampler, row_keys(key, start, size), block_id, category,
                              *(critic if critic is not None else (None, None)))
                return pre.decode_arrays(from_dense(rows, layout))

            return jax.jit(chunk)

        return cached_chunk(self, size, mesh, (self._gen_def, self._critic_def, self.preprocessor, self._layout,
                                               self._config), build)

    def _sample_raw(self, start, n, key, *, condition: Optional[dict] = None, chunk_size: int = 4096):
        fixed = ()
        if condition:  # accepted by _native_condition: one column of the conditional vector
            (column, (_, code)), = condition.items()
            fixed = cond_lib.fixed_condition(self._sampler_arrays, self._layout, column, code, 1)

        def make(size, mesh):
            fn = self._chunk(size, mesh)
            return lambda first, _: fn(self._generator, self._critic, self._sampler_arrays, key, first, *fixed)

        return sample_rows(make, n, start=start, chunk_size=chunk_size)

    # ------------------------------------------------------------------------- persistence
    def _get_state(self):
        meta = {"layout": self._layout.to_json(), "blocks": list(self._blocks),
                "batch_size": self._config.batch_size}
        arrays = tree_to_arrays(self._generator, "generator")
        if self._critic is not None:  # the classifier that draws the labels (DP-GAN: private weights)
            arrays.update(tree_to_arrays(self._critic[0], "critic"))
            arrays["label_bias"] = np.asarray(self._critic[1])
        if self._sampler_arrays is not None:
            arrays["sample_logits"] = np.asarray(self._sampler_arrays.sample_logits)
        return meta, arrays

    def _set_state(self, meta, arrays):
        layout = TableLayout.from_json(meta["layout"])
        self._blocks = tuple(int(b) for b in meta.get("blocks", ()))
        sampler = None
        if self._blocks:
            # Only the generation frequencies are needed after fitting; the row index is not saved.
            dummy = np.zeros((1, layout.num_categorical), np.int32)
            sampler = cond_lib.build_condition_sampler(dummy, layout, self._blocks)
            sampler = sampler.replace(sample_logits=jnp.asarray(arrays["sample_logits"]))
        config = self._gan_config(int(meta["batch_size"]), self._blocks)
        *_, state = self._build(layout, config, sampler, jax.random.key(0))
        self._generator = arrays_to_tree(state.generator.params, arrays, "generator")
        if self._labels_from_classifier and config.classifier_loss > 0:
            if any(name.startswith("critic") for name in arrays):
                bias = arrays.get("label_bias", np.zeros(sampler.sizes[0], np.float32))
                self._critic = (arrays_to_tree(state.critic.params, arrays, "critic"), jnp.asarray(bias))
            else:  # saved before the classifier existed: the generator's own classes
                warnings.warn(f"{type(self).__name__}: the saved model holds no classifier; its rows keep the class "
                              "they were generated for", stacklevel=2)
        self._sampler_arrays = sampler


def _preset(name: str, **overrides):
    def wrap(cls):
        cls.defaults = {**GAN_DEFAULTS, **overrides}
        return register(name)(cls)
    return wrap


@_preset("gan")
class GAN(GANSynthesizer):
    """Vanilla GAN (Goodfellow et al. 2014) with the non-saturating loss; the GAN talk's defaults."""


@_preset("cgan", conditional="column")
class CGAN(GANSynthesizer):
    """Conditional GAN (Mirza & Osindero 2014): generator and critic see a one-hot condition on
    ``condition_column`` (default: the classification target); ``sample(n, condition={col: value})``."""


@_preset("wgan", loss="wasserstein", weight_clip=0.01, optimizer="rmsprop", generator_lr=5e-5, critic_lr=5e-5,
         n_critic=5)
class WGAN(GANSynthesizer):
    """Wasserstein GAN (Arjovsky et al. 2017): weight clipping 0.01, RMSprop lr 5e-5, 5 critic steps."""


@_preset("wgan-gp", loss="wasserstein", gradient_penalty=10.0, betas=(0.5, 0.9), generator_lr=1e-4,
         critic_lr=1e-4, n_critic=5)
class WGANGP(GANSynthesizer):
    """WGAN-GP (Gulrajani et al. 2017): gradient penalty 10, Adam lr 1e-4 betas (0.5, 0.9), 5 critic steps."""


@_preset("ctgan", loss="wasserstein", gradient_penalty=10.0, betas=(0.5, 0.9), generator_lr=2e-4, critic_lr=2e-4,
         weight_decay=1e-6, n_critic=1, pac=10, batch_size=500, noise_dim=128, generator_dims=(256, 256),
         critic_dims=(256, 256), residual=True, dropout=0.5, conditional="ctgan")
class CTGAN(GANSynthesizer):
    """CTGAN-style WGAN-GP (Xu et al. 2019, the ``ctgan`` package's defaults): mode-specific
    normalisation, conditional vector with training-by-sampling (log-frequency), PacGAN (pac 10),
    residual generator 256-256 (LayerNorm for BatchNorm), critic 256-256 with dropout 0.5."""

    preprocessor_options = {"numeric": "mode_specific"}


def __getattr__(name: str):
    """``DPGAN`` lives in :mod:`tabdiff_jax.models.dpgan`; importing it from here still works."""
    if name == "DPGAN":
        from tabdiff_jax.models.dpgan import DPGAN

        return DPGAN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
