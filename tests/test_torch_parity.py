"""Parity of tabdiff_jax's TabDDPM with the PyTorch reference in benchmarks/torch_reference.

Same weights and the same inputs (x, t, y and the forward-process draws passed in explicitly) must
give the same denoiser outputs, loss, gradients, optimizer step and reverse-step distributions.

The torch side computes the loss in float64: the original's float32 per-block normaliser (a
difference of one cumulative logsumexp over the whole row) loses about 1e-4 relative on the
multinomial term, so a float32 reference cannot be compared at 1e-5. Ours stays float32.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import multinomial_reference as log_space  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from tabdiff_jax.diffusion import denoiser as nets  # noqa: E402
from tabdiff_jax.diffusion import gaussian  # noqa: E402
from tabdiff_jax.diffusion import tabddpm as D  # noqa: E402
from tabdiff_jax.state import split_params  # noqa: E402

# "benchmarks" is also the name of a package that opacus installs: import the reference by its own name.
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # torch_reference, speed
import torch_reference as tr  # noqa: E402

ADULT_SIZES = (9, 16, 7, 15, 6, 5, 2, 42)  # Adult's 8 categorical columns, 102 categories
TINY = dict(sizes=(3, 4, 2), num_numeric=2, n=8, hidden_dims=(16, 16), T=20)


@functools.lru_cache(maxsize=4)  # tests share cases (and their compiled functions); none mutates one
def _case(sizes, num_numeric, n, hidden_dims, T, seed=0, num_classes=2):
    """Weights, a batch and the forward-process draws, all from ``seed``."""
    cfg = D.DiffusionConfig(num_numeric=num_numeric, categorical_sizes=sizes, num_classes=num_classes,
                            num_timesteps=T)
    graphdef, params = split_params(D.make_denoiser(cfg, hidden_dims=hidden_dims, rngs=nnx.Rngs(seed)))
    rng = np.random.default_rng(seed)
    x_num = rng.standard_normal((n, num_numeric)).astype(np.float32)
    x_cat = np.stack([rng.integers(0, k, n) for k in sizes], 1).astype(np.int32)
    y = rng.integers(0, max(num_classes, 1), n).astype(np.int32)
    t = rng.integers(0, T, n).astype(np.int32)
    t[:2], t[2:4] = 0, T - 1  # both ends of the chain: the decoder NLL and the last KL
    forward = jax.jit(D.forward_noise, static_argnums=0)  # jitted: eager op-by-op dispatch is slow
    x_num_t, x_cat_t, noise = forward(cfg, jnp.asarray(x_num), jnp.asarray(x_cat), jnp.asarray(t),
                                      jax.random.key(seed + 1))
    return dict(cfg=cfg, graphdef=graphdef, params=params, x_num=x_num, x_cat=x_cat, y=y, t=t,
                x_num_t=np.asarray(x_num_t), x_cat_t=np.asarray(x_cat_t), noise=np.asarray(noise))


def _ours_loss_and_grad(c):
    """Our batch loss for the case's fixed draws and its gradient, ``(loss, grads)`` (one jit)."""
    cfg, graphdef = c["cfg"], c["graphdef"]

    def loss(params, x_num_t, x_cat_t, x_cat, t, y, noise):
        out = nets.apply_denoiser(graphdef, params, D.denoiser_input(cfg, x_num_t, x_cat_t), t, y)
        lg, lm = D.loss_terms(cfg, out, noise, x_cat, x_cat_t, t)
        return jnp.mean(lg + cfg.weight * lm)

    args = [jnp.asarray(c[k]) for k in ("x_num_t", "x_cat_t", "x_cat", "t", "y", "noise")]
    return jax.jit(jax.value_and_grad(loss))(c["params"], *args)


def _torch_loss(c, dtype):
    cfg = c["cfg"]
    model = tr.to_torch(c["params"], dtype=dtype)
    diff = tr.GaussianMultinomialDiffusion(cfg.num_numeric, cfg.categorical_sizes, model, cfg.num_timesteps).to(dtype)
    f = lambda a: torch.tensor(np.asarray(a), dtype=dtype)
    i = lambda a: torch.tensor(np.asarray(a), dtype=torch.long)
    loss_multi, loss_gauss = diff.mixed_loss(f(c["x_num"]), i(c["x_cat"]), i(c["y"]), t=i(c["t"]), noise=f(c["noise"]),
                                             x_cat_t=i(c["x_cat_t"]), include_prior=False)
    return model, diff, loss_multi + loss_gauss


def _assert_denoiser_matches(c, atol):
    cfg = c["cfg"]
    x_in = np.asarray(jax.jit(D.denoiser_input, static_argnums=0)(cfg, c["x_num_t"], c["x_cat_t"]))
    apply = jax.jit(nets.apply_denoiser, static_argnums=0)
    ours = np.asarray(apply(c["graphdef"], c["params"], x_in, c["t"], c["y"]))
    model = tr.to_torch(c["params"])
    with torch.no_grad():
        theirs = model(torch.tensor(x_in), torch.tensor(c["t"], dtype=torch.long),
                       torch.tensor(c["y"], dtype=torch.long)).numpy()
    assert np.abs(ours).max() > 1e-3  # a non-trivial output
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=atol)


def _assert_loss_and_grads_match(c, rtol):
    ours_loss, ours_grads = _ours_loss_and_grad(c)
    model, _, loss = _torch_loss(c, torch.float64)
    loss.backward()
    np.testing.assert_allclose(loss.item(), float(ours_loss), rtol=rtol)
    theirs = tr.from_torch(_grads_as_model(model))
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ours_grads))
    for (path, g_ours), g_theirs in zip(jax.tree_util.tree_leaves_with_path(ours_grads), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(np.asarray(g_theirs), np.asarray(g_ours), rtol=0, atol=rtol * scale,
                                   err_msg=jax.tree_util.keystr(path))


def _grads_as_model(model):
    """A copy of ``model`` whose parameters are its gradients (to reuse :func:`tr.from_torch`)."""
    copy = tr.weights.model_from_params(tr.from_torch(model)).to(torch.float64)
    with torch.no_grad():
        for p_dst, p_src in zip(copy.parameters(), model.parameters()):
            p_dst.copy_(p_src.grad)
    return copy


def test_weights_round_trip_and_shape_check():
    c = _case(**TINY)
    back = tr.from_torch(tr.to_torch(c["params"]))
    same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), c["params"], back)
    assert all(jax.tree.leaves(same))
    wrong = tr.MLPDiffusion(d_in=c["cfg"].d_in + 1, num_classes=2, d_layers=TINY["hidden_dims"], dim_t=128)
    with pytest.raises(ValueError, match="proj"):
        tr.to_torch(c["params"], wrong)


def test_denoiser_outputs_match_tiny():
    _assert_denoiser_matches(_case(**TINY), atol=1e-5)


def test_loss_and_gradients_match_tiny():
    _assert_loss_and_grads_match(_case(**TINY), rtol=1e-5)


def test_kl_prior_matches():
    c = _case(**TINY)
    _, diff, _ = _torch_loss(c, torch.float64)
    with torch.no_grad():
        theirs = diff.kl_prior(diff.index_to_log_onehot(torch.tensor(c["x_cat"], dtype=torch.long))).numpy()
    spec = c["cfg"].spec
    ours = np.asarray(log_space.kl_prior(c["cfg"].make_schedule(), jnp.asarray(c["x_cat"]), spec)).sum(-1)
    assert theirs.max() > 0
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-7)


def test_adamw_step_matches():
    """torch.optim.AdamW and our optimizer move the same weights by the same gradient alike."""
    c = _case(**TINY)
    _, grads = _ours_loss_and_grad(c)
    opt = D.make_annealed_adamw(lr=2e-3, weight_decay=1e-4)
    first_step = jax.jit(lambda g, p: optax.apply_updates(p, opt.update(g, opt.init(p), p)[0]))
    ours = first_step(grads, c["params"])
    model = tr.to_torch(c["params"])
    torch_opt = tr.make_optimizer(model, lr=2e-3, weight_decay=1e-4)
    for p, g in zip(model.parameters(), tr.to_torch(grads).parameters()):
        p.grad = g.detach().clone()
    torch_opt.step()
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), ours, c["params"])
    assert min(jax.tree.leaves(moved)) > 1e-4  # Adam moves every weight by about lr
    for a, b in zip(jax.tree.leaves(tr.from_torch(model)), jax.tree.leaves(ours)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_reverse_step_matches():
    """One ancestral step: the Gaussian move (same noise) and the multinomial posterior agree."""
    c = _case(**TINY)
    cfg, schedule = c["cfg"], c["cfg"].make_schedule()

    @jax.jit
    def ours_step(params, x_num_t, x_cat_t, t, y):
        out = nets.apply_denoiser(c["graphdef"], params, D.denoiser_input(cfg, x_num_t, x_cat_t), t, y)
        eps, logits = out[:, :cfg.num_numeric], out[:, cfg.num_numeric:]
        z = jax.random.normal(jax.random.key(7), eps.shape)
        x_prev = gaussian.p_sample(schedule, x_num_t, t, eps, z)
        log_p = log_space.p_posterior(schedule, logits, x_cat_t, t, cfg.spec)  # flat [n, D]
        return eps, logits, z, x_prev, log_p

    eps, logits, z, ours_num, ours_cat = ours_step(c["params"], *(jnp.asarray(c[k]) for k in
                                                                  ("x_num_t", "x_cat_t", "t", "y")))
    _, diff, _ = _torch_loss(c, torch.float64)
    f = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)
    tt = torch.tensor(c["t"], dtype=torch.long)
    with torch.no_grad():
        theirs_num = diff.gaussian_p_sample(f(eps), f(c["x_num_t"]), tt, noise=f(z)).numpy()
        log_xt = diff.index_to_log_onehot(torch.tensor(c["x_cat_t"], dtype=torch.long))
        theirs_cat = diff.p_pred(f(logits), log_xt, tt).numpy()
    np.testing.assert_allclose(theirs_num, np.asarray(ours_num), rtol=1e-5, atol=1e-5)
    # Compare probabilities: log-probabilities of impossible categories differ (log 1e-30 vs NEG).
    np.testing.assert_allclose(np.exp(theirs_cat), np.exp(np.asarray(ours_cat)), rtol=0, atol=1e-5)


def test_reference_sampler_and_train_step_run():
    c = _case(**TINY)
    cfg = c["cfg"]
    diff = tr.GaussianMultinomialDiffusion(cfg.num_numeric, cfg.categorical_sizes, tr.to_torch(c["params"]), 5)
    torch.manual_seed(0)
    x_num, x_cat, y = diff.sample(64, torch.tensor([0.25, 0.75]))
    assert x_num.shape == (64, 2) and x_cat.shape == (64, 3) and y.shape == (64,)
    assert torch.isfinite(x_num).all() and (x_cat.max(0).values < torch.tensor(cfg.categorical_sizes)).all()
    assert len(torch.unique(x_cat[:, 1])) > 1  # draws, not a constant
    opt = tr.make_optimizer(diff)
    before = [p.detach().clone() for p in diff.parameters()]
    lm, lg = tr.train_step(diff, opt, torch.tensor(c["x_num"]), torch.tensor(c["x_cat"], dtype=torch.long),
                           torch.tensor(c["y"], dtype=torch.long), 8)
    assert np.isfinite(lm) and np.isfinite(lg) and lm > 0 and lg > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, diff.parameters()))


@pytest.mark.slow
@pytest.mark.bench
def test_parity_adult_shapes_full_network():
    """Adult's shapes (6 numbers, 102 categories in 8 blocks, 2 classes), 256-256-256, T = 1000."""
    c = _case(ADULT_SIZES, 6, 1024, (256, 256, 256), T=1000, seed=11)
    _assert_denoiser_matches(c, atol=1e-5)
    _assert_loss_and_grads_match(c, rtol=1e-5)


def test_speed_compare_interleaves_and_reports_medians():
    """benchmarks/speed.py's timing: compile call apart, alternating order, medians per unit."""
    import speed

    calls = []

    def ours(k):
        calls.append(("ours", k))
        return 0.5 if len([c for c in calls if c[0] == "ours"]) == 1 else 0.01 * k  # a slow first call

    clock = iter([2.0, 3.5])  # seconds of compilation before and after ours' first call

    def theirs(k):
        calls.append(("torch", k))
        return 0.02 * k

    monitor = speed.RssMonitor()
    try:
        c = speed.compare(ours, theirs, repeats=4, min_block_s=0.1, monitor=monitor, torch_cap=3,
                          compile_clock=lambda: next(clock))
    finally:
        monitor.close()
    assert (c["first_s"], c["repeats"], c["compile_s"]) == (0.5, 4, 1.5)
    assert c["ours_s"] == pytest.approx(0.01) and c["torch_s"] == pytest.approx(0.02)
    assert c["ours_cpu_s"] >= 0 and c["torch_cpu_s"] >= 0
    assert (c["k_ours"], c["k_torch"]) == (1, 3)  # k from the first (slow) call; PyTorch's capped at torch_cap
    timed = [c[0] for c in calls[2:]]
    assert timed == ["ours", "torch", "torch", "ours", "ours", "torch", "torch", "ours"]
    assert set(monitor.peaks) == {"ours", "torch"} and min(monitor.peaks.values()) > 0
