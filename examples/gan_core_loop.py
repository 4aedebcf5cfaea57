"""The GAN core in your own loop: WGAN-GP epochs as compiled scans, then row-keyed sampling.

Everything the estimator ``tabdiff_jax.WGANGP`` does, written out: encode the table densely
(numbers min-max scaled to [-1, 1] for the generator's tanh, categories one-hot), build generator
and critic, run jitted epochs over a :class:`GANState` (one ``TrainState`` per network), and draw
rows with one PRNG key per row, so row ``i`` depends only on the seed and ``i``.

    python examples/gan_core_loop.py --epochs 20
"""

import argparse

import jax
import optax

from tabdiff_jax import datasets
from tabdiff_jax.gan.sampling import make_sample_fn
from tabdiff_jax.gan.train import GANConfig, init_gan, make_epoch_fn
from tabdiff_jax.preprocess import Preprocessor
from tabdiff_jax.sampling import row_keys
from tabdiff_jax.table import from_dense, to_dense


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=10_000, help="training rows (keeps it quick)")
    args = parser.parse_args()

    train, _ = datasets.load("adult")
    train = train.sample(args.rows, random_state=0)
    pre = Preprocessor(numeric="minmax").fit(train, target="income")
    data = to_dense(pre.encode(train))                              # [n, dense_dim]
    layout = pre.layout

    config = GANConfig(loss="wasserstein", gradient_penalty=10.0, n_critic=5, pac=1, batch_size=500)
    gen_tx = critic_tx = optax.adam(2e-4, b1=0.5, b2=0.9)
    gen_def, critic_def, state = init_gan(jax.random.key(0), layout, config, gen_tx, critic_tx,
                                          generator_dims=(256, 256), critic_dims=(256, 256))
    epoch = jax.jit(make_epoch_fn(gen_def, critic_def, layout, config, gen_tx, critic_tx,
                                  steps_per_epoch=data.shape[0] // config.batch_size))
    key = jax.random.key(1)
    for e in range(args.epochs):
        state, metrics = epoch(state, data, None, jax.random.fold_in(key, e))
        if e % 5 == 0 or e == args.epochs - 1:
            print(f"epoch {e:3d}", {k: round(float(v), 4) for k, v in metrics.items()})

    sample = jax.jit(make_sample_fn(gen_def, layout, config))
    rows = sample(state.generator.params, None, row_keys(jax.random.key(2), 0, 1000))   # rows 0..999
    synthetic = pre.decode(from_dense(rows, layout))
    print(synthetic.head())
    print(synthetic["income"].value_counts(normalize=True).round(3).to_dict(), "real:",
          train["income"].value_counts(normalize=True).round(3).to_dict())


if __name__ == "__main__":
    main()
