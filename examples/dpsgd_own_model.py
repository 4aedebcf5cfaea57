"""DP-SGD on your own NNX model: Poisson batches, per-example clipping, noise, accounting.

A small classifier of Adult's income from its encoded features, trained with (epsilon, delta)
differential privacy by the library's DP-SGD step: the step only needs a per-example loss
``loss_fn(model, batch, keys) -> [B]``. The network is built from ``tabdiff_jax.layers`` so that
book-keeping ("ghost") clipping applies; any other NNX model works with ``clipping="vmap"``.

    python examples/dpsgd_own_model.py --epsilon 1 --epochs 5
"""

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tabdiff_jax import datasets
from tabdiff_jax.layers import Linear
from tabdiff_jax.preprocess import Preprocessor
from tabdiff_jax.privacy import (
    BudgetTracker,
    make_private_step,
    plan_privacy,
    poisson_sample,
)
from tabdiff_jax.state import split_params
from tabdiff_jax.table import split_target, to_dense


class Classifier(nnx.Module):
    def __init__(self, d_in: int, width: int, *, rngs: nnx.Rngs):
        self.hidden = Linear(d_in, width, rngs=rngs)
        self.out = Linear(width, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def loss_fn(model, batch, keys):
    """Cross-entropy of each row: row i depends only on batch row i (what DP-SGD requires)."""
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--epochs", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--clipping", choices=["ghost", "vmap"], default="ghost")
    args = parser.parse_args()

    train, test = datasets.load("adult")
    pre = Preprocessor(numeric="quantile").fit(train, target="income")  # NB: quantiles are not private here
    (x_tr, y_tr), (x_te, y_te) = ((to_dense(f), jnp.asarray(y)) for f, y in
                                  (split_target(pre.encode(df)) for df in (train, test)))
    n = x_tr.shape[0]

    plan = plan_privacy(n, args.batch_size, args.epsilon, args.delta, epochs=args.epochs)
    graphdef, params = split_params(Classifier(x_tr.shape[1], 64, rngs=nnx.Rngs(0)))
    dp = make_private_step(loss_fn, optax.adam(1e-3), graphdef=graphdef, l2_clip=1.0,
                           noise_multiplier=plan.noise_multiplier, expected_batch_size=plan.expected_batch_size,
                           clipping=args.clipping)
    tracker = BudgetTracker(plan.target_epsilon, plan.accountant_delta, noise_multiplier=plan.noise_multiplier,
                            sampling_rate=plan.sampling_rate)

    @jax.jit
    def draw(key):  # a fixed-size padded Poisson batch: one compilation for every step
        pb = poisson_sample(key, n, plan.sampling_rate, plan.capacity)
        return (jnp.take(x_tr, pb.indices, axis=0), jnp.take(y_tr, pb.indices, axis=0)), pb.mask

    state, key = dp.init(params), jax.random.key(0)
    for step in range(plan.steps):
        k_batch, k_step = jax.random.split(jax.random.fold_in(key, step))
        batch, mask = draw(k_batch)
        state, metrics = dp.step(state, batch, mask, k_step)

    accuracy = jnp.mean(jnp.argmax(nnx.merge(graphdef, state.params)(x_te), -1) == y_te)
    print(f"sigma {plan.noise_multiplier:.3f}, q {plan.sampling_rate:.4f}, {plan.steps} steps, "
          f"epsilon spent {tracker.epsilon_spent(plan.steps):.3f} of {args.epsilon:g} (delta {args.delta:g})")
    print(f"test accuracy {float(accuracy):.3f} (majority class {float(jnp.mean(y_te == 0)):.3f})")


if __name__ == "__main__":
    main()
