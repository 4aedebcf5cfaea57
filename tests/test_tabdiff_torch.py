"""TabDiff's loss on one fixed batch against a PyTorch re-implementation of the official formulas
(MinkaiXu/TabDiff: ``PowerMeanNoise_PerColumn``, ``LogLinearNoise_PerColumn``, ``Precond``,
``_edm_loss``, ``_subs_parameterization``, ``_absorbed_closs``) with the same weights and the same
noise draws. Needs the bench extra (torch); slow (imports torch)."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from tabdiff_jax.diffusion import tabdiff as td
from tabdiff_jax.state import split_params

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def _t(a):
    return torch.tensor(np.asarray(a, np.float64))


def _torch_mlp(params, x, t_in, dim_t):
    """TabDDPM's MLP (our denoiser) in torch: proj(x) + time MLP of the sinusoidal embedding, ReLU blocks."""
    half = dim_t // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = t_in[:, None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    lin = lambda p, h: h @ _t(p["kernel"]) + _t(p["bias"])
    emb = lin(params["time_out"], torch.nn.functional.silu(lin(params["time_in"], emb)))
    h = lin(params["proj"], x) + emb
    for i in sorted(params["blocks"]):
        h = torch.relu(lin(params["blocks"][i], h))
    return lin(params["head"], h)


def test_loss_equals_official_formulas_in_torch():
    cfg = td.TabDiffConfig(num_numeric=3, categorical_sizes=(3, 5), time_input="log_sigma")
    net = td.make_network(cfg, hidden_dims=(32, 32), dim_t=16, rngs=nnx.Rngs(0))
    net.rho_raw.value = jax.numpy.asarray([6.0, 7.0, 9.0])
    net.k_raw.value = jax.numpy.asarray([-6.0, 0.5])
    _, params = split_params(net)
    params = jax.tree.map(np.asarray, params)
    n = 48
    rng = np.random.default_rng(0)
    x_num = rng.normal(size=(n, 3)).astype(np.float32)
    x_cat = np.stack([rng.integers(0, 3, n), rng.integers(0, 5, n)], 1).astype(np.int32)
    keys = jax.random.split(jax.random.key(4), n)
    ours = np.asarray(td.row_losses(net, x_num, x_cat, keys, cfg))
    t, eps, gumbel = (np.asarray(a, np.float64) for a in jax.vmap(lambda k: td._row_draws(cfg, k))(keys))

    # ---- the official formulas, float64 torch
    tt = _t(t)[:, None]
    rho = torch.nn.functional.softplus(_t(params["rho_raw"])) + 5.0
    sigma = (0.002 ** (1 / rho) + tt * (80 ** (1 / rho) - 0.002 ** (1 / rho))).pow(rho)
    k = torch.nn.functional.softplus(_t(params["k_raw"])) + 1.0
    e_max, e_min = 1e-3, 1e-5
    sigma_cat = -torch.log1p(-((1 - e_max - e_min) * tt.pow(k) + e_min))
    dsigma_cat = (1 - e_max - e_min) * k * tt.pow(k - 1) / (1 - ((1 - e_max - e_min) * tt.pow(k) + e_min))
    move = -torch.expm1(-sigma_cat)
    # the same Bernoulli draws as ours: Gumbel-max over (keep, mask)
    masked = (torch.log(move) + _t(gumbel[..., 1]) > torch.log1p(-move) + _t(gumbel[..., 0]))
    sizes = [3, 5]
    x_cat_t = torch.where(masked, torch.tensor(sizes), torch.tensor(x_cat).long())
    onehot = torch.cat([torch.nn.functional.one_hot(x_cat_t[:, i], sizes[i] + 1) for i in range(2)], 1).double()
    x_t = _t(x_num) + _t(eps) * sigma
    sd = 1.0
    c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
    c_in = 1 / (sd**2 + sigma**2).sqrt()
    sigma_cond = (0.002 ** (1 / 7) + tt * (80 ** (1 / 7) - 0.002 ** (1 / 7))).pow(7)
    out = _torch_mlp(params["denoiser"], torch.cat([c_in * x_t, onehot], 1), (sigma_cond.log() / 4)[:, 0], 16)
    d_x = c_skip * x_t + c_out * out[:, :3]
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    c_loss = (weight * (d_x - _t(x_num)) ** 2).mean(1)
    logits = out[:, 3:]
    d_terms = []
    for b, (o, K) in enumerate(zip([0, 3], sizes)):
        logp = torch.log_softmax(logits[:, o:o + K], dim=1).gather(1, torch.tensor(x_cat[:, b:b + 1]).long())[:, 0]
        logp = torch.where(masked[:, b], logp, torch.zeros_like(logp))  # unmasked: log p = 0 (subs)
        d_terms.append(-dsigma_cat[:, b] / torch.expm1(sigma_cat[:, b]) * logp)
    d_loss = torch.stack(d_terms, 1).mean(1)
    np.testing.assert_allclose(ours, (c_loss + d_loss).numpy(), rtol=2e-4, atol=2e-5)
