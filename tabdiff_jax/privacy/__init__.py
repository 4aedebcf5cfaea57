"""Differential privacy for training: clipping, noise, Poisson batches, accounting, DP-SGD steps.

One concept per module (in the style of jax_privacy):

* :mod:`~tabdiff_jax.privacy.clipping`: per-example L2 clipping, NaN/zero safe;
* :mod:`~tabdiff_jax.privacy.noise`: the Gaussian mechanism (and a note on production noise keys);
* :mod:`~tabdiff_jax.privacy.sampling`: Poisson sampling into fixed-size padded batches;
* :mod:`~tabdiff_jax.privacy.accounting`: RDP / PLD accounting, sigma calibration, budget tracking;
* :mod:`~tabdiff_jax.privacy.ghost`: book-keeping ("ghost") clipping for networks of
  :mod:`tabdiff_jax.layers`;
* :mod:`~tabdiff_jax.privacy.dpsgd`: the jit-compiled private (and non-private) training step;
* :mod:`~tabdiff_jax.privacy.preprocessing`: what a fitted preprocessor learned from private data;
* :mod:`~tabdiff_jax.privacy.loop`: the private fit the diffusion models share (plan, Poisson batches,
  budget-tracked loop, run records; imported on demand, not here).
"""

from tabdiff_jax.privacy.accounting import (
    BudgetTracker,
    PrivacyPlan,
    calibrate_noise_multiplier,
    check_delta,
    compute_epsilon,
    dp_event,
    plan_privacy,
    steps_for_epochs,
    truncation_delta,
)
from tabdiff_jax.privacy.clipping import (
    ClipStats,
    clip_factors,
    clip_per_example,
    clipped_sum,
    per_example_sq_norms,
    weighted_row_sum,
)
from tabdiff_jax.privacy.dpsgd import (
    PrivateStep,
    TrainState,
    clipped_grad_sum,
    make_nonprivate_step,
    make_private_step,
    vmap_clipped_sum,
)
from tabdiff_jax.privacy.ghost import ProbeTape, ghost_clipped_sum
from tabdiff_jax.privacy.noise import add_gaussian_noise, privatize, standard_normal
from tabdiff_jax.privacy.preprocessing import PrivacyWarning, audit_preprocessing
from tabdiff_jax.privacy.sampling import (
    PoissonBatch,
    gather_rows,
    overflow_probability,
    poisson_capacity,
    poisson_sample,
)

__all__ = [
    "BudgetTracker", "ClipStats", "PoissonBatch", "PrivacyPlan", "PrivacyWarning", "PrivateStep", "ProbeTape",
    "TrainState", "add_gaussian_noise", "audit_preprocessing", "calibrate_noise_multiplier", "check_delta", "clip_factors",
    "clip_per_example", "clipped_grad_sum", "clipped_sum", "compute_epsilon", "dp_event", "gather_rows",
    "ghost_clipped_sum", "make_nonprivate_step", "make_private_step", "overflow_probability",
    "per_example_sq_norms", "plan_privacy", "poisson_capacity", "poisson_sample", "privatize",
    "standard_normal", "steps_for_epochs", "truncation_delta", "vmap_clipped_sum", "weighted_row_sum",
]
