"""TabDDPM's ``MLPDiffusion`` denoiser in PyTorch.

``h = proj(x) + time_embed(sinusoidal(t)) [+ silu(label_emb(y))]``, then blocks
``Linear -> ReLU -> Dropout``, then a ``Linear`` head back to the input width. Same
architecture and parameter shapes as :class:`tabdiff_jax.diffusion.denoiser.TabDDPMDenoiser` (torch stores
``weight`` as ``[out, in]``, the flax kernels are ``[in, out]``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t f_i) | sin(t f_i)]`` of timesteps ``[n]`` -> ``[n, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class _Block(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.relu(self.linear(x)))


class MLPDiffusion(nn.Module):
    """The TabDDPM denoiser.

    Args:
      d_in: input (and output) width: numeric columns plus the one-hot width.
      num_classes: classes of the label condition (0: unconditional).
      d_layers: widths of the hidden blocks.
      dim_t: width of the input projection and the time / label embeddings.
      dropout: dropout after each hidden block (active in ``train()`` mode).
    """

    def __init__(self, d_in: int, num_classes: int = 0, d_layers: Sequence[int] = (256, 256),
                 dim_t: int = 128, dropout: float = 0.0):
        super().__init__()
        self.dim_t, self.num_classes = int(dim_t), int(num_classes)
        self.proj = nn.Linear(d_in, dim_t)
        self.time_embed = nn.Sequential(nn.Linear(dim_t, dim_t), nn.SiLU(), nn.Linear(dim_t, dim_t))
        self.label_emb = nn.Embedding(num_classes, dim_t) if num_classes > 0 else None
        widths = (dim_t,) + tuple(int(w) for w in d_layers)
        self.blocks = nn.ModuleList([_Block(a, b, dropout) for a, b in zip(widths[:-1], widths[1:])])
        self.head = nn.Linear(widths[-1], d_in)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` ``[n, d_in]``, ``timesteps`` int ``[n]``, ``y`` int ``[n]`` -> ``[n, d_in]``."""
        emb = self.time_embed(timestep_embedding(timesteps, self.dim_t).to(x.dtype))
        if self.label_emb is not None and y is not None:
            emb = emb + F.silu(self.label_emb(y))
        h = self.proj(x) + emb
        for block in self.blocks:
            h = block(h)
        return self.head(h)
