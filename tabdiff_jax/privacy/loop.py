"""The DP-SGD fit that every private model shares: plan, Poisson batches, a budget-tracked loop, records.

A model brings a per-example loss ``loss_fn(model, batch, keys) -> [B]`` (the convention of
:mod:`tabdiff_jax.privacy.dpsgd`: row ``i`` depends only on row ``i`` of the batch and on
``keys[i]``), its initial parameters, its optimiser and its training table as a pytree of ``[n, ...]``
arrays on the device; :func:`fit_dpsgd` does the rest:

* with ``epsilon``: :func:`~tabdiff_jax.privacy.accounting.plan_privacy` calibrates sigma for the
  planned length (``epochs`` or ``steps`` of an expected Poisson batch ``batch_size``), every step
  draws a Poisson batch (:func:`~tabdiff_jax.privacy.sampling.poisson_sample`), clips per example
  (``clipping="ghost"``, book-keeping, or ``"vmap"``), adds the calibrated Gaussian noise, and a
  :class:`~tabdiff_jax.privacy.accounting.BudgetTracker` stops the loop before a step that would
  spend past the target; the preprocessor is audited
  (:func:`~tabdiff_jax.privacy.preprocessing.audit_preprocessing`: a warning and a record of what
  it learned from the private table outside the budget);
* with ``epsilon=None``: the same Poisson batches and the mean-loss gradient, no noise.

A resumed run (``resume=True``) restores the last checkpoint and makes the same remaining steps
with the same sigma: the plan depends only on ``(n, batch_size, length, epsilon, delta)``, and a
private run's length may not change on resume (:mod:`tabdiff_jax.runs`), so a resumed run never
spends more than an uninterrupted one.

Example:
  >>> state, history, info = fit_dpsgd(loss_fn, lambda steps: optax.adam(1e-3), params, data,
  ...                                  jax.random.key(0), graphdef=graphdef, batch_size=256, epochs=10,
  ...                                  epsilon=1.0, delta=1e-5, model_name="MyModel")
  >>> info["epsilon_spent"] <= 1.0
  True
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.privacy.accounting import BudgetTracker, plan_privacy, steps_for_epochs
from tabdiff_jax.privacy.dpsgd import LossFn, make_nonprivate_step, make_private_step
from tabdiff_jax.privacy.preprocessing import audit_preprocessing
from tabdiff_jax.privacy.sampling import gather_rows, poisson_capacity, poisson_sample
from tabdiff_jax.sharding import auto_mesh, replicate, round_up
from tabdiff_jax.training import run_training

PyTree = Any


def num_rows(data: PyTree) -> int:
    """Rows ``n`` of a pytree of ``[n, ...]`` arrays (every leaf must agree)."""
    sizes = {int(x.shape[0]) for x in jax.tree_util.tree_leaves(data)}
    if len(sizes) != 1:
        raise ConfigError(f"the training data must be arrays with one row count, got row counts {sorted(sizes)}")
    return sizes.pop()


def fit_dpsgd(loss_fn: LossFn, make_optimizer: Callable[[int], optax.GradientTransformation], params: PyTree,
              data: PyTree, key: jax.Array, *, graphdef, batch_size: int, epochs: Optional[float] = None,
              steps: Optional[int] = None, epsilon: Optional[float], delta: float = 1e-5, l2_clip: float = 1.0,
              clipping: str = "ghost", accountant: str = "rdp", ema_decay: Optional[float] = None,
              preprocessor=None, model_name: str = "model", run_dir=None, resume: bool = False,
              progress: bool = True, checkpoint_every: int = 1000, checkpoint_seconds: Optional[float] = 60.0,
              log_every: int = 50, stop_fn: Optional[Callable[[int, Any], bool]] = None, static_state: tuple = ()):
    """Train ``params`` by DP-SGD (``epsilon`` given) or by plain Poisson-batch SGD (``epsilon=None``).

    Args:
      loss_fn: per-example loss ``(model, batch, keys) -> [B]`` (:mod:`tabdiff_jax.privacy.dpsgd`).
      make_optimizer: ``num_steps -> optax transformation`` (the planned length, for schedules).
      params: the initial parameters (:func:`tabdiff_jax.state.split_params`).
      data: the training table, a pytree of ``[n, ...]`` arrays.
      key: the run's PRNG key (step ``s`` uses ``fold_in(key, s)``; :func:`tabdiff_jax.training.run_training`).
      graphdef: the NNX graph definition of the network.
      batch_size: the expected Poisson batch ``q n`` (at most ``n``).
      epochs, steps: the planned length; exactly one.
      epsilon, delta: the target guarantee; ``epsilon=None`` trains without privacy.
      l2_clip: per-example clipping norm ``C``.
      clipping: ``"ghost"`` (book-keeping) or ``"vmap"``.
      accountant: ``"rdp"`` or ``"pld"``.
      ema_decay: keep an exponential moving average of the parameters (post-processing: free).
      preprocessor: the fitted preprocessor, audited for what it learned outside the budget.
      model_name: for the warning, the progress bar and the closing line.
      run_dir, resume, progress, checkpoint_every, checkpoint_seconds, log_every: as
        :func:`tabdiff_jax.training.run_training`.
      stop_fn: a further ``(step, state) -> bool`` that ends training early (a time limit).
      static_state: NNX states merged with ``params`` but neither trained nor clipped (parameters
        outside :mod:`tabdiff_jax.layers`, frozen so that book-keeping clipping applies).

    Returns:
      ``(train_state, history, info)``: the :class:`tabdiff_jax.state.TrainState`, the logged
      metrics and the JSON-able record for ``fit_info``: ``private``, ``steps`` (done),
      ``planned_steps``, ``sampling_rate``, ``batch_size``, ``batch_capacity``, ``truncated_steps``,
      ``final_loss``, and for a private run ``epsilon``, ``delta``, ``noise_multiplier``,
      ``epsilon_spent``, ``accountant``, ``accountant_delta``, ``truncation_delta``, ``l2_clip``,
      ``expected_batch_size``, ``clipping`` and ``preprocessing`` (the audit).

    Raises:
      ConfigError: both or neither of ``epochs`` and ``steps``, or an argument out of range (named).
    """
    if (epochs is None) == (steps is None):
        raise ConfigError(f"{model_name}: give exactly one of epochs and steps")
    n = num_rows(data)
    batch = min(int(batch_size), n)
    private = epsilon is not None
    info: dict = {"private": private}
    mesh = auto_mesh()  # data parallelism over all local devices; None on a single device
    tracker = plan = None
    if private:
        info["preprocessing"] = audit_preprocessing(preprocessor, model_name) if preprocessor is not None else None
        plan = plan_privacy(n, batch, float(epsilon), float(delta), epochs=epochs, steps=steps, accountant=accountant)
        q, num_steps, capacity = plan.sampling_rate, plan.steps, round_up(plan.capacity, mesh)
        dp = make_private_step(loss_fn, make_optimizer(num_steps), l2_clip=l2_clip,
                               noise_multiplier=plan.noise_multiplier, expected_batch_size=plan.expected_batch_size,
                               clipping=clipping, graphdef=graphdef, static_state=static_state, ema_decay=ema_decay,
                               jit=False, mesh=mesh)
        tracker = BudgetTracker(plan.target_epsilon, plan.accountant_delta, noise_multiplier=plan.noise_multiplier,
                                sampling_rate=q, accountant=accountant)
        on_log = lambda step, m: {"eps": f"{tracker.epsilon_spent(step):.3f}"}
    else:
        q, num_steps = steps_for_epochs(n, batch, epochs) if epochs is not None else (batch / n, int(steps))
        capacity = round_up(poisson_capacity(n, q), mesh)
        dp = make_nonprivate_step(loss_fn, make_optimizer(num_steps), graphdef=graphdef, static_state=static_state,
                                  ema_decay=ema_decay, jit=False, mesh=mesh)
        on_log = None
    stops = [f for f in (tracker.stop_fn if tracker is not None else None, stop_fn) if f is not None]
    stop = (lambda step, state: any(f(step, state) for f in stops)) if stops else None

    def train_step(state, step_key, rows):
        train_state, truncated = state
        k_batch, k_step = jax.random.split(step_key)
        pb = poisson_sample(k_batch, n, q, capacity)
        train_state, metrics = dp.step(train_state, gather_rows(rows, pb.indices), pb.mask, k_step)
        return (train_state, truncated + (pb.overflow > 0).astype(jnp.int32)), {**metrics, "overflow": pb.overflow}

    jitted = jax.jit(train_step, donate_argnums=0)
    data = replicate(data, mesh)  # every device gathers its rows of the batch locally
    state = replicate((dp.init(params), jnp.zeros((), jnp.int32)), mesh)
    state, history = run_training(lambda st, k: jitted(st, k, data), state, num_steps=num_steps, key=key,
                                  run_dir=run_dir, checkpoint_every=int(checkpoint_every),
                                  checkpoint_seconds=checkpoint_seconds, resume=resume, progress=progress,
                                  desc=model_name, log_every=int(log_every), stop_fn=stop, on_log=on_log)
    train_state, truncated = state
    done = int(train_state.step)
    info.update({"steps": done, "planned_steps": num_steps, "sampling_rate": q, "batch_size": batch,
                 "batch_capacity": capacity, "truncated_steps": int(truncated),
                 "final_loss": history[-1][1].get("loss") if history else None})
    if private:
        spent = tracker.epsilon_spent(done)
        info.update({"epsilon": plan.target_epsilon, "delta": plan.delta, "noise_multiplier": plan.noise_multiplier,
                     "epsilon_spent": spent, "accountant": plan.accountant, "accountant_delta": plan.accountant_delta,
                     "truncation_delta": plan.truncation_delta, "l2_clip": float(l2_clip),
                     "expected_batch_size": plan.expected_batch_size, "clipping": clipping})
        if progress:
            print(f"{model_name}: spent epsilon {spent:.4f} of {plan.target_epsilon:g} "
                  f"(delta {plan.delta:g}, sigma {plan.noise_multiplier:.4f}, q {q:.4g}, {done} steps)")
    else:
        info.update({"epsilon": None, "delta": None, "noise_multiplier": 0.0})
    return train_state, history, info


# Share of (epsilon, delta) a private estimator spends on the frequencies of its label condition
# (TabDDPM draws the label of each sampled row from them); basic composition with the DP-SGD run.
LABEL_SHARE = 0.02


def private_frequencies(labels, num_classes: int, epsilon: float, delta: float, key: jax.Array, *,
                        accountant: str = "rdp"):
    """Class frequencies by the Gaussian mechanism: counts plus ``N(0, sigma^2)``, clipped at 0, normalised.

    Adding or removing one row changes one count by 1 (L2 sensitivity 1); ``sigma`` is the smallest
    noise multiplier whose ``(epsilon, delta)`` is within the target (the accountant's Gaussian
    mechanism, :func:`~tabdiff_jax.privacy.accounting.calibrate_noise_multiplier` with ``q = 1``).
    Clipping and normalising are post-processing. All counts noised to 0 give uniform frequencies.

    Returns:
      ``(frequencies [num_classes] float64, record)`` with the record's ``epsilon``, ``delta`` and
      ``noise_multiplier``.
    """
    import numpy as np

    from tabdiff_jax.privacy.accounting import calibrate_noise_multiplier

    sigma = calibrate_noise_multiplier(epsilon, delta, 1.0, 1, accountant=accountant)
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    noisy = np.maximum(counts + sigma * np.asarray(jax.random.normal(key, (num_classes,)), np.float64), 0.0)
    freqs = noisy / noisy.sum() if noisy.sum() > 0 else np.full(num_classes, 1.0 / num_classes)
    return freqs, {"epsilon": float(epsilon), "delta": float(delta), "noise_multiplier": float(sigma)}


# Options of a private diffusion estimator (TabDDPM, TabDiff): epsilon None trains without privacy.
PRIVATE_OPTIONS = {"epsilon": None, "delta": 1e-5, "max_grad_norm": 1.0, "clipping": "ghost", "accountant": "rdp"}


def check_private_options(settings: dict) -> None:
    """Validate :data:`PRIVATE_OPTIONS` in an estimator's ``settings`` when ``epsilon`` is set.

    Raises:
      ConfigError: naming ``epsilon``, ``delta``, ``max_grad_norm``, ``clipping``, ``accountant``, or
        ``dropout`` (a dropout mask shared by the batch would tie the per-example gradients together).
    """
    from tabdiff_jax import validate
    from tabdiff_jax.privacy.accounting import ACCOUNTANTS, check_delta
    from tabdiff_jax.privacy.dpsgd import CLIPPINGS

    if settings["epsilon"] is None:
        return
    validate.positive_float("epsilon", settings["epsilon"])
    check_delta(settings["delta"])
    validate.positive_float("max_grad_norm", settings["max_grad_norm"])
    validate.in_choices("clipping", settings["clipping"], CLIPPINGS)
    validate.in_choices("accountant", settings["accountant"], ACCOUNTANTS)
    if float(settings.get("dropout") or 0.0) > 0.0:
        raise ConfigError("dropout must be 0 with epsilon: a dropout mask shared by the batch would tie the "
                          "per-example gradients together")


def fit_private_estimator(settings: dict, loss_fn: LossFn, make_optimizer, params: PyTree, data: PyTree,
                          key: jax.Array, *, graphdef, batch_size: int, steps: int, epochs: Optional[float],
                          preprocessor, model_name: str, run_dir, resume: bool, progress: bool,
                          stop_fn=None, static_state: tuple = (), released: Optional[dict] = None):
    """:func:`fit_dpsgd` with a diffusion estimator's ``settings`` (:data:`PRIVATE_OPTIONS`, ``ema_decay``,
    ``sample_with_ema``, ``checkpoint_every``, ``checkpoint_seconds``, ``log_every``): ``epochs``, when
    given, plans the run instead of ``steps``.

    ``released``: ``{name: record}`` of other releases from the private table (such as
    :func:`private_frequencies`), each with its ``epsilon`` and ``delta``; DP-SGD gets what remains
    of the budget (basic composition), so the whole fit stays within ``(epsilon, delta)``.

    Returns:
      ``(params to sample with, fit_info)``: the EMA when kept and ``sample_with_ema``, else the
      parameters; ``fit_info`` is :func:`fit_dpsgd`'s record (``epsilon``, ``delta`` and
      ``epsilon_spent`` of the whole fit; ``dpsgd_epsilon`` / ``dpsgd_delta`` its DP-SGD part) plus
      ``released``, ``max_grad_norm``, ``train_seconds``, ``steps_per_second``, ``sampled_from`` and
      the last 20 logged metrics (``history``).
    """
    import time

    from tabdiff_jax.privacy.accounting import check_delta

    check_delta(settings["delta"], num_rows(data))  # the whole fit's delta, before any share is split off
    released = dict(released or {})
    eps_other = sum(r["epsilon"] for r in released.values())
    delta_other = sum(r["delta"] for r in released.values())
    ema_decay = None if settings.get("ema_decay") is None else float(settings["ema_decay"])
    t0 = time.perf_counter()
    state, history, info = fit_dpsgd(
        loss_fn, make_optimizer, params, data, key, graphdef=graphdef, batch_size=batch_size,
        epochs=None if epochs is None else float(epochs), steps=steps if epochs is None else None,
        epsilon=float(settings["epsilon"]) - eps_other, delta=float(settings["delta"]) - delta_other,
        l2_clip=float(settings["max_grad_norm"]),
        clipping=settings["clipping"], accountant=settings["accountant"], ema_decay=ema_decay,
        preprocessor=preprocessor, model_name=model_name, run_dir=run_dir, resume=resume, progress=progress,
        checkpoint_every=int(settings["checkpoint_every"]), checkpoint_seconds=settings["checkpoint_seconds"],
        log_every=int(settings["log_every"]), stop_fn=stop_fn, static_state=static_state)
    seconds = time.perf_counter() - t0
    use_ema = ema_decay is not None and bool(settings.get("sample_with_ema", True))
    info.update({"dpsgd_epsilon": info["epsilon"], "dpsgd_delta": info["delta"], "released": released,
                 "epsilon": float(settings["epsilon"]), "delta": float(settings["delta"]),
                 "epsilon_spent": info["epsilon_spent"] + eps_other})
    info.update({"max_grad_norm": float(settings["max_grad_norm"]), "train_seconds": round(seconds, 3),
                 "steps_per_second": round(info["steps"] / max(seconds, 1e-9), 3),
                 "sampled_from": "ema" if use_ema else "params",
                 "history": [(int(i), m) for i, m in history[-20:]]})
    return (state.ema if use_ema else state.params), info
