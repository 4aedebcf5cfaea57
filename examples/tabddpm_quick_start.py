"""Quick start: fit TabDDPM on the bundled Adult table, sample, save and load.

    python examples/tabddpm_quick_start.py --steps 2000

A few thousand steps already give a usable table on a laptop CPU; the defaults of
``TabDDPM()`` are tuned to reach the paper's Adult utility in about five minutes on 2 cores.
"""

import argparse

import tabdiff_jax
from tabdiff_jax import datasets


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default="tabddpm-run")
    args = parser.parse_args()

    train, _ = datasets.load("adult")
    model = tabdiff_jax.TabDDPM(num_timesteps=100)
    model.fit(train, target="income", steps=args.steps, seed=0, run_dir=args.out)  # checkpoints + run.json
    print(model.fit_info["steps"], "steps,", model.fit_info["steps_per_second"], "steps/s")

    synthetic = model.sample(1000, seed=1)  # same columns, order and dtypes as `train`
    print(synthetic.head())
    print(synthetic.income.value_counts(normalize=True))

    again = tabdiff_jax.load(args.out)      # the run directory is a saved model
    assert again.sample(1000, seed=1).equals(synthetic)


if __name__ == "__main__":
    main()
