"""A PyTorch reference of TabDDPM (Kotelnikov et al. 2023), used only for speed comparisons and parity.

It is written the way the original ``tab_ddpm`` code is: eager PyTorch, a flat ``[n, sum K_b]``
log-space layout for the categorical blocks with Python loops over blocks, a ``logcumsumexp``
based per-block normaliser, and a Python loop over the timesteps when sampling. It is *not* part
of the library; ``benchmarks/speed.py`` and ``tests/test_torch_parity.py`` import it.

Import it with ``benchmarks/`` on ``sys.path`` (``import torch_reference``): the name
``benchmarks`` itself is taken by a package that opacus installs.

Modules:
  model: :class:`MLPDiffusion`, the denoiser.
  diffusion: :class:`GaussianMultinomialDiffusion` (losses, ancestral sampler) and :func:`train_step`.
  weights: copy parameters between a tabdiff_jax denoiser and :class:`MLPDiffusion`.
"""

from .diffusion import GaussianMultinomialDiffusion, make_optimizer, train_step
from .model import MLPDiffusion, timestep_embedding
from .weights import from_torch, to_torch

__all__ = [
    "GaussianMultinomialDiffusion",
    "MLPDiffusion",
    "from_torch",
    "make_optimizer",
    "timestep_embedding",
    "to_torch",
    "train_step",
]
