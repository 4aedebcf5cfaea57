"""TabDiff (Shi et al., ICLR 2025) as an estimator: ``TabDiff(...).fit(df, target=...).sample(n)``.

A thin wrapper over the pure core :mod:`tabdiff_jax.diffusion.tabdiff` (continuous-time Gaussian and
masked diffusion with learned per-column schedules, loss, compiled train step) and
:mod:`tabdiff_jax.diffusion.tabdiff_sampler` (the stochastic sampler with its correction step), with the
shared preprocessor (quantile-to-normal numbers, as the official code). Every column, the target
included, is modelled jointly; ``sample(n, condition={...})`` and ``impute(df)`` inpaint given cells
(``supports_inpainting``).

Options (keyword, all optional; ``steps`` and ``batch_size`` can also be passed to ``fit``)::

    steps, batch_size, lr (AdamW, decaying linearly to 0), weight_decay, hidden_dims, dim_t, dropout,
    ema_decay (None: no EMA), sample_with_ema, grad_clip, anneal_num_weight (the numeric loss weight
    falls from 1 to 0 over the run, as the official "anneal"), learn_schedule (learn rho and k),
    cat_weight, time_input ("t": 1000 t, or "log_sigma": the official EDM input), time_strata (a
    training batch's rows share this many stratified times, so the time MLP runs on that many rows;
    0: a time per row, the paper's; private fits always draw one per row), num_sample_steps (sampler steps, 50), correction ("multistep": second order from the previous step's network call, the default; "heun": the paper's, a second call per step; "none"),
    stochastic (the sampler's churn), target_last (sampling: the classification target drawn last, from p(y | x); off), cond_prob, guidance (classifier-free guidance: see the class), checkpoint_every, checkpoint_seconds, log_every,
    sample_chunk_size, matmul_dtype, preprocessor (dict of Preprocessor options),
    backbone ("mlp": TabDDPM's MLP, the default; "transformer": the paper's column-tokenised transformer,
    :mod:`tabdiff_jax.diffusion.transformer`, sized by d_token, layers, heads; hidden_dims is then unused),
    numeric_embedding (the MLP only: None, the default, or "periodic": each number also enters through
    PLR periodic embeddings, Gorishniy et al. 2022, :class:`tabdiff_jax.diffusion.denoiser.PeriodicEmbedding`,
    sized by embedding_frequencies, frequency_scale, embedding_dim),
    epsilon (None: not private, the default), delta, max_grad_norm, clipping, accountant (DP-SGD, as
    TabDDPM's: :mod:`tabdiff_jax.privacy.loop`; see ``_fit_private``; a private fit with a classification
    target releases its class frequencies, as TabDDPM, and sampling draws each row's class from them)
"""

from __future__ import annotations

import functools
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tabdiff_jax import validate
from tabdiff_jax.diffusion import tabdiff as td
from tabdiff_jax.diffusion import tabdiff_sampler as tds
from tabdiff_jax.diffusion.tabddpm import make_annealed_adamw
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.models.base import NetworkState, Synthesizer, register
from tabdiff_jax.sharding import auto_mesh, round_down, to_global
from tabdiff_jax.state import init_train_state, split_params
from tabdiff_jax.table import EncodedTable, TableLayout
from tabdiff_jax.training import early_stop, resolve_config, train_estimator

# Chosen on Adult on 2 CPU cores (benchmarks/results/tabdiff_adult.json): TabDDPM's 256-256 MLP and
# batch 1024 (the official 1024-wide MLP, batch 4096 and 8000 epochs do not fit a CPU's minutes), the
# official lr 1e-3 without weight decay, EMA, 50 sampling steps; the time input 1000 t and a fixed
# numeric loss weight (the official log-sigma input and annealed weight: shape 0.987 / trend 0.970 /
# detection AUC 0.68 at 7,300 steps, against 0.993 / 0.980 / 0.62 with these).
TABDIFF_DEFAULTS = dict(
    steps=8000, batch_size=1024, lr=2e-3, weight_decay=1e-4, hidden_dims=(256, 256), dim_t=128, dropout=0.0,
    ema_decay=0.999, sample_with_ema=True, grad_clip=None, anneal_num_weight=False, learn_schedule=True,
    cat_weight=1.0, time_input="t", time_strata=64, num_sample_steps=tds.DEFAULT_STEPS, correction=tds.DEFAULT_CORRECTION, stochastic=True,
    target_last=False,  # sampling: hold the classification target masked until the last step (tabdiff_sampler)
    cond_prob=0.0, guidance=0.0,  # classifier-free guidance on the classification target (off)
    checkpoint_every=1000, checkpoint_seconds=60.0, log_every=50, sample_chunk_size=None, matmul_dtype=None,
    preprocessor=None,
    backbone="mlp", d_token=32, layers=2, heads=4,  # the transformer's sizes (backbone="transformer" only)
    # the MLP's numbers through periodic embeddings (None: as they are); their frequencies, scale, width
    numeric_embedding=None, embedding_frequencies=48, frequency_scale=1.0, embedding_dim=24,
    # DP-SGD (tabdiff_jax.privacy.loop.PRIVATE_OPTIONS); epsilon=None: not private
    epsilon=None, delta=1e-5, max_grad_norm=1.0, clipping="ghost", accountant="rdp",
)


@functools.lru_cache(maxsize=8)
def _train_step(graphdef, config, batch_size, ema_decay, lr, weight_decay, num_steps, grad_clip, anneal, mesh=None,
                time_strata=0):
    """``(optimizer, compiled step)``, cached so that refitting the same configuration does not recompile."""
    optimizer = make_annealed_adamw(lr, weight_decay, num_steps=num_steps, grad_clip=grad_clip)
    return optimizer, td.make_train_step(graphdef, optimizer, config, batch_size=batch_size, ema_decay=ema_decay,
                                         num_steps=num_steps, anneal_num_weight=anneal, mesh=mesh,
                                         time_strata=time_strata)


# fold_in constant of the per-row uniforms that draw a private model's class from its released prior ("LPRI")
LABEL_DRAW = 0x4C505249


@register("tabdiff")
class TabDiff(NetworkState, Synthesizer):
    """TabDiff: learned-schedule Gaussian diffusion for numbers, masked diffusion for categories, one network
    (an MLP; ``backbone="transformer"``: a column-tokenised transformer, slower on CPU: see the README).

    Private (``epsilon=``) with a classification target, the class frequencies are released with 2% of
    the budget, as TabDDPM's label prior; sampling draws each row's class from them and inpaints every
    other column conditionally on it (a target the caller gives is kept).

    Classifier-free guidance on a classification target (as the TabDiff paper's conditional generation,
    with the joint network as both models):

    * ``cond_prob`` (in [0, 1), default 0): in training (non-private and DP-SGD alike), each row's target
      is given clean with this probability (never masked, its loss term dropped; drawn from the row's
      key), so the network learns p(features | class) at every noise level besides the joint model.
    * ``guidance`` (``w >= 0``, default 0; ``sample(..., guidance=w)`` overrides it): in rows whose target
      is given (``condition`` on it, ``impute`` with it observed, or in plain sampling the class drawn from
      the training frequencies: with ``cond_prob > 0``, or the privately released ones), every
      denoiser call is made with the target and with it masked, and combined as ``(1 + w) D_c - w D_u``
      for numbers and ``log_softmax((1 + w) logp_c - w logp_u)`` per categorical block (twice the
      network calls in those rows). Without a classification target both have no effect.

    Example:
      >>> model = TabDiff(steps=2000).fit(df, target="income", seed=0)
      >>> synthetic = model.sample(10_000, seed=1)
      >>> women = model.sample(100, condition={"sex": "Female", "age": 40})
      >>> filled = model.impute(df_with_gaps)
      >>> model.save("run"); same = tabdiff_jax.load("run")

    Options are listed in the module docstring; defaults in :data:`TABDIFF_DEFAULTS`.
    """

    preprocessor_options = {"numeric": "quantile", "derive": "auto"}  # exact dependencies kept (preprocess.dependencies)
    CONFIG_KEY = "tabdiff"  # where model.json keeps the config (NetworkState)
    supports_inpainting = True  # sample(condition=) on any columns and impute(df)

    def __init__(self, **config):
        if "hidden_dims" in config and config["hidden_dims"] is not None:
            config["hidden_dims"] = [int(w) for w in config["hidden_dims"]]
        self.settings = resolve_config(TABDIFF_DEFAULTS, config, "TabDiff")
        s = self.settings
        for name in ("steps", "batch_size", "dim_t", "checkpoint_every", "log_every", "sample_chunk_size",
                     "d_token", "layers", "heads", "embedding_frequencies", "embedding_dim"):
            if name != "sample_chunk_size" or s[name] is not None:
                validate.positive_int(name, s[name], 0 if name in ("steps", "layers") else 1)
        validate.positive_int("time_strata", s["time_strata"], 0)
        validate.in_choices("backbone", s["backbone"], td.BACKBONES)
        if s["numeric_embedding"] is not None:
            validate.in_choices("numeric_embedding", s["numeric_embedding"], ("periodic",))
            validate.positive_float("frequency_scale", s["frequency_scale"])
            if s["backbone"] != "mlp":
                raise ConfigError("numeric_embedding is an option of the MLP backbone (the transformer embeds each "
                                  "number itself): drop it or use backbone='mlp'")
        if s["d_token"] % s["heads"]:
            raise ConfigError(f"d_token ({s['d_token']}) must be divisible by heads ({s['heads']})")
        validate.positive_int("num_sample_steps", s["num_sample_steps"], 2)
        validate.positive_float("cat_weight", s["cat_weight"], allow_zero=True)
        validate.positive_float("guidance", s["guidance"], allow_zero=True)
        if not (validate.positive_float("cond_prob", s["cond_prob"], allow_zero=True) < 1.0):
            raise ConfigError(f"cond_prob must be a number in [0, 1), got {s['cond_prob']!r}")
        td.TabDiffConfig(num_numeric=1, time_input=s["time_input"])  # validates
        tds.correction_name(s["correction"])  # validates
        for name in ("anneal_num_weight", "learn_schedule", "stochastic", "sample_with_ema", "target_last"):
            validate.boolean(name, s[name])
        validate.network_options(s)  # lr, weight_decay, ema_decay, dropout, matmul_dtype, privacy
        super().__init__(**{k: v for k, v in config.items() if not (k == "preprocessor" and v is None)})
        self._postprocess = None
        self._class_probs = None  # released class frequencies of a private fit (None: the target is diffused)

    # ------------------------------------------------------------------------------ setup
    def _build(self, layout: TableLayout, key) -> tuple:
        """``(config, graphdef, params)`` of a fresh network for ``layout``."""
        s = self.settings
        config = td.TabDiffConfig.from_layout(layout, learn_schedule=bool(s["learn_schedule"]),
                                              cat_weight=float(s["cat_weight"]), time_input=s["time_input"],
                                              guided_block=layout.target_categorical_index,
                                              cond_prob=float(s["cond_prob"]))
        net = td.make_network(config, hidden_dims=tuple(s["hidden_dims"]), dim_t=int(s["dim_t"]),
                              dropout_rate=float(s["dropout"]), matmul_dtype=s["matmul_dtype"], backbone=s["backbone"],
                              transformer=dict(d_token=int(s["d_token"]), layers=int(s["layers"]), heads=int(s["heads"])),
                              numeric_embedding=None if s["numeric_embedding"] is None else dict(
                                  frequencies=int(s["embedding_frequencies"]), scale=float(s["frequency_scale"]),
                                  dim=int(s["embedding_dim"])),
                              rngs=nnx.Rngs(key))
        graphdef, params = split_params(net)
        self._layout, self._config, self._graphdef = layout, config, graphdef
        return config, graphdef, params

    # ---------------------------------------------------------------------------- fitting
    def _fit(self, df, encoded: EncodedTable, key, *, run_dir, resume, progress, steps=None, batch_size=None,
             max_seconds: Optional[float] = None, stop_after_steps: Optional[int] = None, epochs=None):
        """Train; ``steps`` / ``batch_size`` override the options, ``max_seconds`` stops early on time
        (the learning rate and loss-weight schedules still span ``steps``), ``stop_after_steps`` stops
        (and checkpoints) early, as an interruption would."""
        s = self.settings
        private = s["epsilon"] is not None
        num_steps, batch = validate.fit_length("TabDiff", s, steps, epochs, batch_size, encoded.num_rows)
        k_init, k_train = jax.random.split(key)
        config, graphdef, params = self._build(encoded.layout, k_init)
        data = td.TableBatch(jnp.asarray(encoded.numeric, jnp.float32), jnp.asarray(encoded.categorical, jnp.int32))
        ema_decay = None if s["ema_decay"] is None else float(s["ema_decay"])
        self._class_probs = None
        if not private and config.guided_block is not None and float(s["cond_prob"]) > 0:  # the prior guidance draws from
            codes = np.asarray(encoded.categorical)[:, config.guided_block]
            self._class_probs = np.bincount(codes, minlength=encoded.layout.categorical_sizes[config.guided_block]) / len(codes)
        if private:
            label_key = jax.random.fold_in(key, 0x4C41424C)  # "LABL": the label frequencies' noise, as TabDDPM
            return self._fit_private(config, graphdef, params, data, k_train, label_key, batch=batch, steps=num_steps,
                                     epochs=epochs, run_dir=run_dir, resume=resume, progress=progress,
                                     max_seconds=max_seconds, stop_after_steps=stop_after_steps)
        mesh = auto_mesh()  # data parallelism over all local devices; None on a single device
        batch = round_down(batch, mesh)  # rows must split evenly over the devices
        optimizer, step = _train_step(graphdef, config, batch, ema_decay, float(s["lr"]), float(s["weight_decay"]),
                                      max(num_steps, 1), None if s["grad_clip"] is None else float(s["grad_clip"]),
                                      bool(s["anneal_num_weight"]), mesh, int(s["time_strata"]))
        state = init_train_state(params, optimizer, ema_decay)
        data, state = to_global((data, state), mesh)
        self._params, self.fit_info = train_estimator(
            lambda st, k: step(st, data, k), state, s, num_steps=num_steps, key=k_train, run_dir=run_dir,
            resume=resume, progress=progress, desc="TabDiff", batch=batch, max_seconds=max_seconds,
            stop_after_steps=stop_after_steps)
        self._postprocess = None
        rho, k = nnx.merge(graphdef, self._params).exponents(config)
        self.fit_info.update(rho=[round(float(r), 4) for r in np.asarray(rho)],
                             k=[round(float(v), 4) for v in np.asarray(k)])

    def _fit_private(self, config, graphdef, params, data, key, label_key, *, batch, steps, epochs, run_dir, resume,
                     progress, max_seconds, stop_after_steps):
        """DP-SGD through the loop TabDDPM and TableDiffusion use (:func:`tabdiff_jax.privacy.loop.fit_dpsgd`) on
        :func:`tabdiff_jax.diffusion.tabdiff.dpsgd_loss_fn`: Poisson batches of expected size ``batch``, each
        row's gradient clipped to ``max_grad_norm``, noise calibrated for the planned ``steps`` (or ``epochs``).
        Every column, the target included, is diffused; with a classification target its class frequencies
        are also released by the Gaussian mechanism with ``LABEL_SHARE`` (2%) of ``epsilon`` and ``delta``
        (:func:`tabdiff_jax.privacy.loop.private_frequencies`, as TabDDPM; DP-SGD gets the rest), and
        sampling draws each row's class from them, inpainting the other columns given it. With book-keeping
        clipping (``clipping="ghost"``, the default) the schedule exponents ``rho``, ``k`` (not layers) stay
        at their initial values; ``clipping="vmap"`` learns them (``learn_schedule``), much more slowly. The
        numeric loss weight is not annealed (the per-example loss does not see the step)."""
        from tabdiff_jax.privacy.accounting import check_delta
        from tabdiff_jax.privacy.loop import LABEL_SHARE, fit_private_estimator, private_frequencies

        s = self.settings
        check_delta(s["delta"], int(data.x_num.shape[0]))  # before anything is released
        released = {}
        layout, i = self._layout, self._layout.target_categorical_index
        if i is not None and layout.task == "classification":  # the label prior of sampling, noised and accounted
            self._class_probs, released["label_frequencies"] = private_frequencies(
                data.x_cat[:, i], int(layout.categorical_sizes[i]), LABEL_SHARE * float(s["epsilon"]),
                LABEL_SHARE * float(s["delta"]), label_key, accountant=s["accountant"])
        frozen = {k: v for k, v in params.items() if k != "denoiser"} if s["clipping"] == "ghost" else {}
        trained = {k: v for k, v in params.items() if k not in frozen}
        grad_clip = None if s["grad_clip"] is None else float(s["grad_clip"])
        trained, self.fit_info = fit_private_estimator(
            s, td.dpsgd_loss_fn(config),
            lambda total: make_annealed_adamw(float(s["lr"]), float(s["weight_decay"]), num_steps=total,
                                              grad_clip=grad_clip),
            trained, data, key, graphdef=graphdef, batch_size=batch, steps=steps, epochs=epochs,
            preprocessor=self.preprocessor, model_name="TabDiff", run_dir=run_dir, resume=resume, progress=progress,
            stop_fn=early_stop(time.perf_counter(), max_seconds, stop_after_steps),
            static_state=(frozen,) if frozen else (), released=released)
        self._params = {**frozen, **trained}
        self._postprocess = None
        rho, k = nnx.merge(graphdef, self._params).exponents(config)
        self.fit_info.update({"rho": [round(float(r), 4) for r in np.asarray(rho)],
                              "k": [round(float(v), 4) for v in np.asarray(k)], "schedule_learned": not frozen})

    # ---------------------------------------------------------------------------- sampling
    def _decode_fn(self):
        if self._postprocess is None:
            pre, layout = self.preprocessor, self._layout

            def postprocess(x_num, x_cat):
                return pre.decode_arrays(EncodedTable(x_num, x_cat, layout))

            self._postprocess = postprocess
        return self._postprocess

    def _sample_raw(self, start, n, key, *, known=None, chunk_size: Optional[int] = None,
                    num_sample_steps: Optional[int] = None, correction=None,
                    guidance: Optional[float] = None, target_last: Optional[bool] = None):
        """``known`` (:class:`~tabdiff_jax.conditioning.Known`, full layout): given cells kept exactly
        (categories never masked, numbers inpainted along the forward process). A private model's rows
        whose target is not given draw it from the released class frequencies (:meth:`_draw_labels`).
        ``guidance``: this call's classifier-free guidance weight (None: the ``guidance`` option);
        ``target_last``: this call's choice (None: the ``target_last`` option)."""
        s = self.settings
        if known is not None and not (np.any(known.numeric_mask) or np.any(known.codes_mask)):
            known = None
        if self._class_probs is not None and known is None:  # given cells: the class is inpainted given them
            known = self._draw_labels(start, n, key, known)
        return tds.sample(self._params, self._graphdef, self._config, key, n,
                          steps=s["num_sample_steps"] if num_sample_steps is None else num_sample_steps,
                          correction=s["correction"] if correction is None else correction,
                          stochastic=bool(s["stochastic"]), known=known,
                          chunk_size=s["sample_chunk_size"] if chunk_size is None else chunk_size,
                          postprocess=self._decode_fn(), start=start,
                          guidance=float(s["guidance"] if guidance is None else guidance),
                          target_last=validate.boolean("target_last", s["target_last"] if target_last is None else target_last))

    def _draw_labels(self, start, n, key, known):
        """``known`` with the target of every row that does not give it drawn from ``_class_probs``: row
        ``i``'s class from one uniform of ``(key, i)`` (inverse CDF), so the sampling contract holds."""
        from tabdiff_jax import conditioning, sampling

        layout, i = self._layout, self._layout.target_categorical_index
        u = sampling.row_uniforms(jax.random.fold_in(key, LABEL_DRAW), n, 1, start=start)[:, 0]
        cdf = np.cumsum(np.asarray(self._class_probs, np.float64))
        drawn = np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), len(cdf) - 1).astype(np.int32)
        if known is None:
            known = conditioning.Known(np.zeros((n, layout.num_numeric), np.float32),
                                       np.zeros((n, layout.num_numeric), bool),
                                       np.zeros((n, layout.num_categorical), np.int32),
                                       np.zeros((n, layout.num_categorical), bool))
        codes, mask = np.array(known.codes, np.int32), np.array(known.codes_mask, bool)
        codes[:, i] = np.where(mask[:, i], codes[:, i], drawn)  # the caller's target kept
        mask[:, i] = True
        return conditioning.Known(known.numeric, known.numeric_mask, codes, mask)
