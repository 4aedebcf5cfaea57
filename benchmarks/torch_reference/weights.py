"""Copy parameters between a tabdiff_jax denoiser and the PyTorch :class:`MLPDiffusion`.

The tabdiff_jax side is the plain nested dict of :func:`tabdiff_jax.diffusion.denoiser.split_params`::

    {"proj": {"kernel", "bias"}, "time_in": ..., "time_out": ..., "label_embed": {"embedding"},
     "blocks": {0: {"kernel", "bias"}, ...}, "head": ...}

Flax kernels are ``[in, out]`` and torch ``Linear.weight`` is ``[out, in]``: ``weight = kernel.T``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from .model import MLPDiffusion


def _linear_pairs(model: MLPDiffusion) -> list[tuple[tuple, torch.nn.Linear]]:
    pairs = [(("proj",), model.proj), (("time_in",), model.time_embed[0]), (("time_out",), model.time_embed[2])]
    pairs += [(("blocks", i), block.linear) for i, block in enumerate(model.blocks)]
    pairs.append((("head",), model.head))
    return pairs


def _get(tree: dict, path: tuple) -> Any:
    for key in path:
        tree = tree[key] if key in tree else tree[str(key)]
    return tree


def model_from_params(params: dict, dropout: float = 0.0) -> MLPDiffusion:
    """An :class:`MLPDiffusion` with the architecture of ``params`` (weights not copied yet)."""
    d_in, dim_t = np.shape(params["proj"]["kernel"])
    blocks = params["blocks"]
    d_layers = [np.shape(_get(blocks, (i,))["kernel"])[1] for i in range(len(blocks))]
    num_classes = np.shape(params["label_embed"]["embedding"])[0] if params.get("label_embed") else 0
    return MLPDiffusion(int(d_in), num_classes=int(num_classes), d_layers=d_layers, dim_t=int(dim_t), dropout=dropout)


def to_torch(params: dict, model: Optional[MLPDiffusion] = None, dtype: torch.dtype = torch.float32) -> MLPDiffusion:
    """Load tabdiff_jax denoiser ``params`` into ``model`` (built to match when None); returns the model.

    Raises:
      ValueError: a parameter's shape differs from the torch module's.
    """
    model = model_from_params(params) if model is None else model
    model = model.to(dtype)

    def load(dst: torch.Tensor, value, name: str):
        value = torch.from_numpy(np.array(value, dtype=np.float64)).to(dtype=dtype, device=dst.device)
        if tuple(dst.shape) != tuple(value.shape):
            raise ValueError(f"{name}: torch shape {tuple(dst.shape)} != tabdiff_jax shape {tuple(value.shape)}")
        dst.copy_(value)

    with torch.no_grad():
        for path, linear in _linear_pairs(model):
            node = _get(params, path)
            load(linear.weight, np.asarray(node["kernel"]).T, "/".join(map(str, path)) + "/kernel")
            load(linear.bias, node["bias"], "/".join(map(str, path)) + "/bias")
        if model.label_emb is not None:
            load(model.label_emb.weight, params["label_embed"]["embedding"], "label_embed/embedding")
    return model


def from_torch(model: MLPDiffusion) -> dict:
    """The tabdiff_jax ``params`` dict (float32 jax arrays) holding ``model``'s weights."""
    import jax.numpy as jnp

    as_jax = lambda t: jnp.asarray(t.detach().cpu().to(torch.float32).numpy())
    params: dict = {"blocks": {}}
    for path, linear in _linear_pairs(model):
        node = {"kernel": as_jax(linear.weight.T), "bias": as_jax(linear.bias)}
        if path[0] == "blocks":
            params["blocks"][path[1]] = node
        else:
            params[path[0]] = node
    if model.label_emb is not None:
        params["label_embed"] = {"embedding": as_jax(model.label_emb.weight)}
    return params
