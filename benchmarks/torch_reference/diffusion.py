"""TabDDPM's Gaussian + multinomial diffusion in eager PyTorch, structured like the original code.

The categorical blocks live in one flat ``[n, D]`` log-space tensor (``D = sum K_b``, log one-hot
with ``log(1e-30)`` for the zeros); per-block work (log-softmax, Gumbel draws, one-hot encoding)
is a Python loop over blocks, and the per-block normaliser is the original's ``logcumsumexp``
difference. Sampling is a Python loop over the ``T`` timesteps, one denoiser call per step.

Two deliberate departures, neither of which changes the cost:

* the denoiser sees ``[x_num_t | one-hot(x_cat_t)]`` (as tabdiff_jax does) where the original feeds
  the log one-hot; parity needs the same input.
* the per-step progress ``print`` of the original sampler is left out (it would time the terminal).

Timesteps are 0-indexed; ``t = 0`` is the first noising step, as in the original and tabdiff_jax.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_TINY = 1e-30


def _cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    abar = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1.0 - abar((i + 1) / num_timesteps) / abar(i / num_timesteps), max_beta)
                     for i in range(num_timesteps)], np.float64)


def _linear_betas(num_timesteps: int) -> np.ndarray:
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def _log_1_min_a(a: np.ndarray) -> np.ndarray:
    return np.log(1.0 - np.exp(a) + 1e-40)


def log_add_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(exp(a) + exp(b))`` shifted by the elementwise maximum."""
    m = torch.max(a, b)
    return m + torch.log(torch.exp(a - m) + torch.exp(b - m))


def log_sub_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(exp(a) - exp(b))`` for ``a >= b``."""
    m = torch.maximum(a, b)
    return torch.log(torch.exp(a - m) - torch.exp(b - m)) + m


def sliced_logsumexp(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Per-block logsumexp of flat ``x`` ``[n, D]``, repeated over each block's positions.

    As in the original: differences of one cumulative logsumexp over the whole row.
    """
    lse = torch.logcumsumexp(F.pad(x, [1, 0, 0, 0], value=-float("inf")), dim=-1)
    starts, ends = offsets[:-1], offsets[1:]
    # output_size (the blocks cover the row) spares a GPU -> host sync to size the result; same values.
    return torch.repeat_interleave(log_sub_exp(lse[:, ends], lse[:, starts]), ends - starts, dim=-1,
                                   output_size=x.shape[-1])


def _extract(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return values.gather(-1, t).reshape(-1, 1)


class GaussianMultinomialDiffusion(nn.Module):
    """Mixed diffusion around a denoiser (an :class:`~torch_reference.model.MLPDiffusion`).

    Args:
      num_numerical: numeric columns (the leading ``num_numerical`` outputs are noise predictions).
      categorical_sizes: categories ``K_b`` of each block.
      denoise_fn: ``(x [n, d_in], t [n], y [n]) -> [n, d_in]``.
      num_timesteps: ``T``.
      scheduler: "cosine" or "linear".
    """

    def __init__(self, num_numerical: int, categorical_sizes: Sequence[int], denoise_fn: nn.Module,
                 num_timesteps: int = 1000, scheduler: str = "cosine"):
        super().__init__()
        self.num_numerical = int(num_numerical)
        self.num_classes = np.asarray(categorical_sizes, np.int64)
        self.num_timesteps = int(num_timesteps)
        self._denoise_fn = denoise_fn
        offsets = np.concatenate([[0], np.cumsum(self.num_classes)]).astype(np.int64)
        # The original keeps these index arrays in NumPy; as (non-persistent) buffers they follow the module
        # to its device, so that indexing a GPU tensor does not copy an index from the host each time.
        for i in range(len(self.num_classes)):
            self.register_buffer(f"_block_index_{i}", torch.arange(int(offsets[i]), int(offsets[i + 1])),
                                 persistent=False)
        self.register_buffer("offsets", torch.from_numpy(offsets))
        self.register_buffer("num_classes_expanded",
                             torch.from_numpy(np.repeat(self.num_classes, self.num_classes).astype(np.float32)))

        betas = _cosine_betas(num_timesteps) if scheduler == "cosine" else _linear_betas(num_timesteps)
        alphas = 1.0 - betas
        log_alpha = np.log(alphas)
        log_cumprod_alpha = np.cumsum(log_alpha)
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        buffers = dict(
            log_alpha=log_alpha,
            log_1_min_alpha=_log_1_min_a(log_alpha),
            log_cumprod_alpha=log_cumprod_alpha,
            log_1_min_cumprod_alpha=_log_1_min_a(log_cumprod_alpha),
            sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
            posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
            # The reverse step's "fixedlarge" variance: beta_t, with step 1's posterior variance at t = 0.
            model_log_variance=np.log(np.append(posterior_variance[1], betas[1:])),
        )
        for name, value in buffers.items():
            self.register_buffer(name, torch.from_numpy(np.asarray(value, np.float64)).float())

    @property
    def slices_for_classes(self) -> list[torch.Tensor]:
        """Column indices of each categorical block in the flat layout (long tensors on the module's device)."""
        return [getattr(self, f"_block_index_{i}") for i in range(len(self.num_classes))]

    # ---- Gaussian part -------------------------------------------------------------------------
    def gaussian_q_sample(self, x_start, t, noise):
        return _extract(self.sqrt_alphas_cumprod, t) * x_start + _extract(self.sqrt_one_minus_alphas_cumprod, t) * noise

    def gaussian_loss(self, model_out, noise):
        """eps-prediction MSE per row ``[n]``."""
        return ((noise - model_out) ** 2).mean(dim=1)

    def gaussian_p_sample(self, model_out, x, t, noise=None):
        """One ancestral step of the numeric block (noise drawn here unless given)."""
        pred_xstart = _extract(self.sqrt_recip_alphas_cumprod, t) * x - _extract(self.sqrt_recipm1_alphas_cumprod, t) * model_out
        mean = _extract(self.posterior_mean_coef1, t) * pred_xstart + _extract(self.posterior_mean_coef2, t) * x
        if noise is None:
            noise = torch.randn_like(x)
        nonzero = (t != 0).to(x.dtype).reshape(-1, 1)
        return mean + nonzero * torch.exp(0.5 * _extract(self.model_log_variance, t)) * noise

    # ---- multinomial part ----------------------------------------------------------------------
    def index_to_log_onehot(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[n, B]`` -> flat log one-hot ``[n, D]`` (``log(1e-30)`` off the code)."""
        onehots = [F.one_hot(codes[:, i], int(k)) for i, k in enumerate(self.num_classes)]
        return torch.log(torch.cat(onehots, dim=1).to(self.log_alpha.dtype).clamp(min=_TINY))

    def q_pred(self, log_x_start, t):
        """``log q(x_t | x_0)``, flat ``[n, D]``."""
        return log_add_exp(log_x_start + _extract(self.log_cumprod_alpha, t),
                           _extract(self.log_1_min_cumprod_alpha, t) - torch.log(self.num_classes_expanded))

    def q_pred_one_timestep(self, log_x_t, t):
        """``log q(x_t | x_{t-1})`` as a function of ``x_{t-1}`` (evaluated at ``x_t``), flat."""
        return log_add_exp(log_x_t + _extract(self.log_alpha, t),
                           _extract(self.log_1_min_alpha, t) - torch.log(self.num_classes_expanded))

    def predict_start(self, model_out):
        """Per-block log-softmax of the flat logits."""
        log_pred = torch.empty_like(model_out)
        for ix in self.slices_for_classes:
            log_pred[:, ix] = F.log_softmax(model_out[:, ix], dim=1)
        return log_pred

    def q_posterior(self, log_x_start, log_x_t, t):
        """``log q(x_{t-1} | x_t, x_0)`` normalised per block; ``x_0`` itself at ``t = 0``."""
        t_minus_1 = torch.clamp(t - 1, min=0)
        log_ev = self.q_pred(log_x_start, t_minus_1)
        log_ev = torch.where((t == 0).reshape(-1, 1), log_x_start, log_ev)
        unnormed = log_ev + self.q_pred_one_timestep(log_x_t, t)
        return unnormed - sliced_logsumexp(unnormed, self.offsets)

    def p_pred(self, model_out, log_x_t, t):
        return self.q_posterior(self.predict_start(model_out), log_x_t, t)

    def log_sample_categorical(self, logits):
        """Gumbel-max draw in each block of flat log-probabilities -> flat log one-hot."""
        codes = []
        for ix in self.slices_for_classes:
            block = logits[:, ix]
            uniform = torch.rand_like(block)
            gumbel = -torch.log(-torch.log(uniform + _TINY) + _TINY)
            codes.append((gumbel + block).argmax(dim=1).unsqueeze(1))
        return self.index_to_log_onehot(torch.cat(codes, dim=1))

    def q_sample(self, log_x_start, t):
        return self.log_sample_categorical(self.q_pred(log_x_start, t))

    @staticmethod
    def multinomial_kl(log_prob1, log_prob2):
        return (log_prob1.exp() * (log_prob1 - log_prob2)).sum(dim=1)

    def kl_prior(self, log_x_start):
        """``KL(q(x_{T-1} | x_0) || uniform)`` summed over blocks, ``[n]`` (no gradient flows into it)."""
        t_last = torch.full((log_x_start.shape[0],), self.num_timesteps - 1, dtype=torch.long,
                            device=log_x_start.device)
        log_qxT = self.q_pred(log_x_start, t_last)
        return self.multinomial_kl(log_qxT, -torch.log(self.num_classes_expanded * torch.ones_like(log_qxT)))

    def compute_Lt(self, model_out, log_x_start, log_x_t, t):
        """KL of step ``t`` (decoder NLL at ``t = 0``) summed over blocks, ``[n]``."""
        log_true = self.q_posterior(log_x_start, log_x_t, t)
        log_model = self.p_pred(model_out, log_x_t, t)
        kl = self.multinomial_kl(log_true, log_model)
        decoder_nll = -(log_x_start.exp() * log_model).sum(dim=1)
        mask = (t == 0).to(kl.dtype)
        return mask * decoder_nll + (1.0 - mask) * kl

    # ---- the training loss ---------------------------------------------------------------------
    def denoiser_input(self, x_num_t, log_x_cat_t):
        return torch.cat([x_num_t, log_x_cat_t.exp()], dim=1)

    def mixed_loss(self, x_num, x_cat, y=None, *, t=None, noise=None, x_cat_t=None, include_prior=True):
        """TabDDPM's loss: ``(loss_multi, loss_gauss)``, batch means.

        ``loss_multi`` is ``mean_rows (T * L_t + [kl_prior]) / B``: the multinomial term with the
        uniform ``t``'s ``1 / p(t)`` weight. Random parts are drawn here unless given (parity).

        Args:
          x_num: float ``[n, num_numerical]``; x_cat: long codes ``[n, B]``; y: long ``[n]`` or None.
          t: long ``[n]``; noise: float ``[n, num_numerical]``; x_cat_t: long codes ``[n, B]``.
          include_prior: add the (parameter-free) prior KL term, as the original does.
        """
        n = x_num.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (n,), device=x_num.device)
        pt = torch.ones_like(t, dtype=x_num.dtype) / self.num_timesteps
        if noise is None:
            noise = torch.randn_like(x_num)
        x_num_t = self.gaussian_q_sample(x_num, t, noise)
        log_x_cat = self.index_to_log_onehot(x_cat)
        log_x_cat_t = self.q_sample(log_x_cat, t) if x_cat_t is None else self.index_to_log_onehot(x_cat_t)
        model_out = self._denoise_fn(self.denoiser_input(x_num_t, log_x_cat_t), t, y)
        out_num, out_cat = model_out[:, :self.num_numerical], model_out[:, self.num_numerical:]
        vb = self.compute_Lt(out_cat, log_x_cat, log_x_cat_t, t) / pt
        if include_prior:
            vb = vb + self.kl_prior(log_x_cat)
        loss_multi = vb / len(self.num_classes)
        loss_gauss = self.gaussian_loss(out_num, noise)
        return loss_multi.mean(), loss_gauss.mean()

    # ---- the ancestral sampler -----------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num_samples: int, y_dist: Optional[torch.Tensor] = None, num_steps: Optional[int] = None):
        """Reverse diffusion over all ``T`` steps (a Python loop): ``(x_num [n, d], x_cat [n, B], y [n])``.

        ``num_steps`` runs only the first ``num_steps`` reverse steps (from ``t = T - 1`` down): every
        step does the same work, so a benchmark can time a prefix and scale it to ``T``.
        """
        b = int(num_samples)
        device = self.log_alpha.device
        z_norm = torch.randn((b, self.num_numerical), device=device, dtype=self.log_alpha.dtype)
        log_z = self.log_sample_categorical(torch.zeros((b, int(self.num_classes.sum())), device=device,
                                                        dtype=self.log_alpha.dtype))
        y = torch.multinomial(y_dist.to(device), num_samples=b, replacement=True).long() if y_dist is not None else None
        last = 0 if num_steps is None else max(self.num_timesteps - int(num_steps), 0)
        for i in reversed(range(last, self.num_timesteps)):
            t = torch.full((b,), i, device=device, dtype=torch.long)
            model_out = self._denoise_fn(self.denoiser_input(z_norm, log_z), t, y)
            out_num, out_cat = model_out[:, :self.num_numerical], model_out[:, self.num_numerical:]
            z_norm = self.gaussian_p_sample(out_num, z_norm, t)
            log_z = self.log_sample_categorical(self.p_pred(out_cat, log_z, t))
        z_ohe = torch.exp(log_z).round()
        codes = torch.stack([z_ohe[:, ix].argmax(dim=1) for ix in self.slices_for_classes], dim=1)
        return z_norm, codes, y


def make_optimizer(model: nn.Module, lr: float = 2e-3, weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """AdamW as in TabDDPM's trainer (PyTorch's default implementation for the device)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def train_step(diffusion: GaussianMultinomialDiffusion, optimizer: torch.optim.Optimizer,
               x_num: torch.Tensor, x_cat: torch.Tensor, y: Optional[torch.Tensor], batch_size: int):
    """One step like TabDDPM's ``Trainer._run_step``: draw a batch, mixed loss, backward, AdamW.

    Returns the two loss terms as Python floats (the original logs ``.item()`` every step).
    """
    idx = torch.randint(0, x_num.shape[0], (batch_size,), device=x_num.device)
    optimizer.zero_grad()
    loss_multi, loss_gauss = diffusion.mixed_loss(x_num[idx], x_cat[idx], None if y is None else y[idx])
    (loss_multi + loss_gauss).backward()
    optimizer.step()
    return loss_multi.item(), loss_gauss.item()
