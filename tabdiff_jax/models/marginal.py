"""MST and AIM: marginal-based private synthesis (private-pgm's mechanisms, estimation by ``mbi``).

Both discretise the table (:mod:`tabdiff_jax.marginal.discretise`: equal-width bins within public
bounds, else private quantiles paid from the same budget), measure noisy marginals under
zero-concentrated DP (:mod:`tabdiff_jax.marginal.zcdp`; ``rho`` is the largest that gives the
target ``(epsilon, delta)`` by the exact conversion), fit a graphical model to them with mbi
(mirror descent), and sample it row by row: ancestral sampling along a greedy elimination order,
each row from the uniforms of its own key ``fold_in(key, i)`` (:mod:`tabdiff_jax.sampling`), a
number drawn uniformly within its bin.

* :class:`MST` (McKenna et al. 2021): 1-way marginals, a private maximum spanning tree of pairs,
  the tree's pairs (:func:`~tabdiff_jax.marginal.mst.run_mst`);
* :class:`AIM` (McKenna et al. 2022): every pair of columns as the workload, rounds of
  exponential-mechanism selection with annealing (:func:`~tabdiff_jax.marginal.aim.run_aim`).

The shared preprocessor (``numeric="minmax"``, which learns nothing beyond bounds) gives the
columns' bounds and categories: public when passed as ``public_bounds`` / ``public_categories`` to
``fit``, else learned from the data, reported outside the budget (warned, and recorded in
``fit_info["preprocessing"]``). ``fit_info`` records epsilon, delta, rho, the rho spent per kind of
step, epsilon_spent, the selected marginals and the fit's round times. The fitted model's
log-potentials are saved in ``state.npz`` (no pickle), and a loaded model samples the same rows.

Example:
  >>> model = AIM(epsilon=1.0).fit(train, target="income", public_bounds={"age": (17, 90)})
  >>> synthetic = model.sample(len(train), seed=0)
"""

from __future__ import annotations

import time

import jax

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.marginal.discretise import Discretiser
from tabdiff_jax.marginal.graphical import GraphModel, draw_codes
from tabdiff_jax.marginal.zcdp import Ledger, cdp_epsilon, cdp_rho
from tabdiff_jax.models.base import Synthesizer, register
from tabdiff_jax.privacy.preprocessing import audit_preprocessing
from tabdiff_jax.sampling import row_uniforms

COMMON = dict(epsilon=1.0, delta=1e-5, bins=32, quantile_share=0.1, preprocessor=None)


class _Marginal(Synthesizer):
    """Shared fit / sample / state of the marginal mechanisms; subclasses set ``DEFAULTS`` and ``_run``."""

    DEFAULTS: dict = {}
    preprocessor_options = {"numeric": "minmax"}

    def __init__(self, **config):
        name = type(self).__name__
        unknown = sorted(set(config) - set(self.DEFAULTS))
        if unknown:
            raise ConfigError(f"{name}: unknown option(s) {', '.join(unknown)}; options are {', '.join(sorted(self.DEFAULTS))}")
        s = {**self.DEFAULTS, **config}
        validate.positive_float("epsilon", s["epsilon"])
        s["delta"] = validate.probability("delta", s["delta"])
        validate.positive_int("bins", s["bins"], 2)
        validate.probability("quantile_share", s["quantile_share"])
        validate.positive_int("iters", s["iters"])
        self.settings = s
        super().__init__(**config)
        self.config["preprocessor"] = dict(s["preprocessor"] or {})

    def _run(self, codes, shape, rho, key, log):
        raise NotImplementedError

    def _fit(self, df, encoded, key, *, run_dir, resume, progress, **fit_kwargs):
        name = type(self).__name__
        if fit_kwargs:
            raise ConfigError(f"{name} does not train in steps or epochs: option(s) {sorted(fit_kwargs)} do not apply")
        s = self.settings
        t0 = time.perf_counter()
        audit = audit_preprocessing(self.preprocessor, name)
        rho = cdp_rho(s["epsilon"], s["delta"])
        raw_numeric, raw_codes = self.preprocessor.to_arrays(df)
        specs = self.preprocessor.specs
        private_bins = [sp.name for sp in specs if sp.kind != "categorical" and sp.domain_source != "public"]
        quantiles = Ledger(s["quantile_share"] * rho if private_bins else 0.0)
        k_bins, k_mech = jax.random.split(key)
        self._disc = Discretiser.fit(specs, raw_numeric, int(s["bins"]), quantiles.target, k_bins, quantiles)
        codes = self._disc.encode(raw_numeric, raw_codes)
        log = print if progress else None
        model, ledger, record = self._run(codes, self._disc.shape, rho - quantiles.spent, k_mech, log)
        self._set_model(model)
        spent = quantiles.spent + ledger.spent
        info = {"private": True, "epsilon": float(s["epsilon"]), "delta": float(s["delta"]), "rho": rho,
                "rho_spent": spent, "epsilon_spent": cdp_epsilon(spent, s["delta"]) if spent > 0 else 0.0,
                "rho_by_step": {**quantiles.summary()["by_kind"], **ledger.summary()["by_kind"]},
                "accounting": "zCDP, converted to (epsilon, delta) exactly (Canonne, Kamath & Steinke 2020)",
                "preprocessing": audit, "decode": "numbers drawn uniformly within their bin",
                "bins": {c["name"]: {"bins": len(c["low"]), "source": c["source"]}
                         for c in self._disc.columns if c["kind"] == "numeric"},
                "mechanism_seconds": round(time.perf_counter() - t0, 3), **record}
        self.fit_info = info
        if progress:
            print(f"{name}: spent epsilon {info['epsilon_spent']:.4f} of {s['epsilon']:g} (delta {s['delta']:g}, "
                  f"rho {spent:.5f} of {rho:.5f})")

    def _set_model(self, model: GraphModel) -> None:
        self._model = model
        self._tables = model.sampler_tables()

    # ------------------------------------------------------------------------ sampling
    def _sample_raw(self, start, n, key, *, chunk_size=None):
        d = len(self._disc.columns)
        width = d + sum(c["kind"] == "numeric" for c in self._disc.columns)
        u = row_uniforms(key, n, width, start=start, chunk_size=chunk_size)  # [n, width] in [0, 1)
        codes = draw_codes(self._tables, self._model.shape, u[:, :d])
        return self._disc.decode(codes, u[:, d:])

    # --------------------------------------------------------------------- persistence
    def _get_state(self):
        meta, arrays = self._model.to_state()
        return {"model": meta, "columns": self._disc.columns}, arrays

    def _set_state(self, meta, arrays):
        self._disc = Discretiser(list(meta["columns"]))
        self._set_model(GraphModel.from_state(meta["model"], arrays))


@register("mst")
class MST(_Marginal):
    """MST (options: ``epsilon``, ``delta``, ``bins``, ``quantile_share`` (share of the budget for the
    private quantiles of columns without public bounds), ``iters`` (mirror-descent steps), ``preprocessor``)."""

    DEFAULTS = {**COMMON, "iters": 3000}

    def _run(self, codes, shape, rho, key, log):
        from tabdiff_jax.marginal.mst import run_mst

        return run_mst(codes, shape, rho, key, iters=int(self.settings["iters"]), log=log)


@register("aim")
class AIM(_Marginal):
    """AIM (options as :class:`MST`, and ``rounds`` (planned rounds, default 16 per column),
    ``max_model_size`` (MB of the junction tree: 10 here, AIM's paper 80; on Adult at epsilon 10, 80 MB gave F1
    0.777 in 689 s of fit on 2 cores, 10 MB F1 0.782 in 215 s, the mirror-descent steps on the larger
    model costing the difference), ``round_iters`` (mirror-descent steps per round,
    warm-started), ``iters`` (steps of the final fit, warm-started: 1,000 as AIM's reference ``max_iters``;
    2,500 gave Adult at epsilon 10 F1 0.780 against 0.777, at 1.6x the fit's CPU time))."""

    DEFAULTS = {**COMMON, "iters": 1000, "round_iters": 100, "rounds": None, "max_model_size": 10.0}

    def __init__(self, **config):
        super().__init__(**config)
        s = self.settings
        validate.positive_int("round_iters", s["round_iters"])
        validate.positive_float("max_model_size", s["max_model_size"])
        if s["rounds"] is not None:
            validate.positive_int("rounds", s["rounds"])

    def _run(self, codes, shape, rho, key, log):
        from tabdiff_jax.marginal.aim import run_aim

        s = self.settings
        return run_aim(codes, shape, rho, key, rounds=s["rounds"], max_model_size=float(s["max_model_size"]),
                       round_iters=int(s["round_iters"]), iters=int(s["iters"]), log=log)
