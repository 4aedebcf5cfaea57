"""Marginal-based private synthesis: the mechanisms behind :class:`tabdiff_jax.MST` and :class:`tabdiff_jax.AIM`.

One concept per module (nothing imported here, so that ``zcdp`` does not pull in ``mbi``):

* :mod:`~tabdiff_jax.marginal.zcdp`: zCDP accounting (Gaussian and exponential mechanisms, the
  exact rho -> (epsilon, delta) conversion) and the per-step :class:`~.zcdp.Ledger`;
* :mod:`~tabdiff_jax.marginal.discretise`: numbers to bins (public bounds, or private quantiles) and back;
* :mod:`~tabdiff_jax.marginal.common`: data marginals, keyed noise, the exponential mechanism, the
  mbi estimation step (one compiled program per set of measured cliques);
* :mod:`~tabdiff_jax.marginal.graphical`: the fitted model's marginals by variable elimination and
  its row-wise ancestral sampler, in NumPy;
* :mod:`~tabdiff_jax.marginal.mst`, :mod:`~tabdiff_jax.marginal.aim`: the two mechanisms.
"""
