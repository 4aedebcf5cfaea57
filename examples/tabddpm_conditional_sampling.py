"""Conditional sampling: rows of one class of the classification target.

TabDDPM conditions its denoiser on the class label; ``sample(n)`` draws labels from the training
class frequencies, ``sample(n, y=label)`` fixes them (``condition={"income": ">50K"}`` is the same,
and is what ``tabdiff-jax sample RUN_DIR --condition income=>50K`` passes).

    python examples/tabddpm_conditional_sampling.py --steps 2000
"""

import argparse

import tabdiff_jax
from tabdiff_jax import datasets


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()

    train, _ = datasets.load("adult")
    model = tabdiff_jax.TabDDPM(num_timesteps=100).fit(train, target="income", steps=args.steps, seed=0)

    rich = model.sample(2000, seed=1, y=">50K")
    poor = model.sample(2000, seed=2, y="<=50K")
    assert (rich.income == ">50K").all() and (poor.income == "<=50K").all()
    for name, real, syn in (("income >50K", train[train.income == ">50K"], rich),
                            ("income <=50K", train[train.income == "<=50K"], poor)):
        print(f"{name}: mean age real {real.age.mean():.1f} / synthetic {syn.age.mean():.1f}; "
              f"married share real {(real['marital-status'] == 'Married-civ-spouse').mean():.2f} / "
              f"synthetic {(syn['marital-status'] == 'Married-civ-spouse').mean():.2f}")

    mixed = model.sample(4, seed=3, y=[">50K", "<=50K", ">50K", "<=50K"])  # one label per row
    print(mixed[["age", "education", "income"]])


if __name__ == "__main__":
    main()
