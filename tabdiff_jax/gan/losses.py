"""GAN objectives as pure functions of critic scores (and, for the penalty, of the critic).

* Non-saturating GAN (Goodfellow et al. 2014): the critic minimises
  ``softplus(-D(real)) + softplus(D(fake))`` (binary cross-entropy on logits), the generator
  ``softplus(-D(fake))``.
* Wasserstein (Arjovsky et al. 2017): the critic minimises ``mean D(fake) - mean D(real)``,
  the generator ``-mean D(fake)``; Lipschitz by weight clipping (:func:`clip_weights`) or by
  the gradient penalty of Gulrajani et al. 2017 (:func:`gradient_penalty`).
* CTGAN's conditional loss (:func:`condition_cross_entropy`): cross-entropy of the generated
  block that the condition vector fixes.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tabdiff_jax.errors import ConfigError

LOSSES = ("bce", "wasserstein")


def critic_loss(loss: str, real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """Per-score critic loss ``[k]`` from scores ``[k]`` of real and fake rows (or packs)."""
    if loss == "bce":
        return jax.nn.softplus(-real_scores) + jax.nn.softplus(fake_scores)
    if loss == "wasserstein":
        return fake_scores - real_scores
    raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")


def generator_loss(loss: str, fake_scores: jax.Array) -> jax.Array:
    """Per-score generator loss ``[k]`` (non-saturating for ``"bce"``)."""
    if loss == "bce":
        return jax.nn.softplus(-fake_scores)
    if loss == "wasserstein":
        return -fake_scores
    raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")


def gradient_penalty(critic_fn: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     key: jax.Array, pac: int = 1) -> jax.Array:
    """WGAN-GP penalty ``mean_k (||grad_x D(x_hat_k)|| - 1)^2`` (without the weight lambda).

    ``x_hat = alpha * real + (1 - alpha) * fake`` with one ``alpha ~ U(0, 1)`` per pack of ``pac``
    rows, and the gradient norm taken over the whole pack, as in CTGAN.

    Args:
      critic_fn: ``[batch, dim] -> [batch // pac]`` scores; packs must not interact (no batch
        statistics), so the gradient of the summed scores gives every pack's own gradient.
      real, fake: ``[batch, dim]``.
      key: interpolation key.
      pac: rows per pack.

    Returns:
      Scalar penalty.
    """
    batch, dim = real.shape
    alpha = jax.random.uniform(key, (batch // pac, 1, 1), real.dtype)
    alpha = jnp.broadcast_to(alpha, (batch // pac, pac, 1)).reshape(batch, 1)
    x_hat = alpha * real + (1.0 - alpha) * fake
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(batch // pac, pac * dim)), axis=-1) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0))


def clip_weights(params, clip_value: float):
    """Every parameter clipped elementwise to ``[-clip_value, clip_value]`` (WGAN's initial critic; in
    training the clip is an optax transform of the critic's optimiser: ``gan.train.critic_optimizer``)."""
    return jax.tree.map(lambda p: jnp.clip(p, -clip_value, clip_value), params)


def condition_cross_entropy(raw_blocks: list[jax.Array], block_id: jax.Array, category: jax.Array) -> jax.Array:
    """CTGAN's conditional loss per row ``[batch]``.

    Args:
      raw_blocks: generator logits of each conditioned block, ``[batch, size_j]``.
      block_id: ``[batch]`` index (into ``raw_blocks``) of the block each row conditions on.
      category: ``[batch]`` category required in that block.

    Returns:
      ``-log softmax(raw_blocks[block_id])[category]`` per row.
    """
    per_block = []
    for j, logits in enumerate(raw_blocks):
        logp = jax.nn.log_softmax(logits, axis=-1)
        cat = jnp.clip(category, 0, logits.shape[-1] - 1)
        ce = -jnp.take_along_axis(logp, cat[:, None], axis=-1)[:, 0]
        per_block.append(jnp.where(block_id == j, ce, 0.0))
    return sum(per_block)


def classifier_cross_entropy(critic, rows: jax.Array, labels: jax.Array) -> jax.Array:
    """Per row ``[batch]``: ``-log softmax(critic.classify(rows))[label]`` of a critic's auxiliary classifier
    (AC-GAN; ``rows`` in the dense layout without the condition vector, ``labels`` int ``[batch]``)."""
    logp = jax.nn.log_softmax(critic.classify(rows), axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def critic_mask(params):
    """True for a critic's own parameters, False for its auxiliary classifier's (WGAN's clipping skips those)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(getattr(k, "key", None) == "classifier" for k in path), params)
