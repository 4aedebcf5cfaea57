"""Private TabDDPM on Adult with nothing learned outside the budget: utility at epsilon 1 and 5.

TabDDPM trained by DP-SGD (:mod:`tabdiff_jax.privacy.loop`: Poisson batches, book-keeping clipping,
calibrated Gaussian noise, delta 1e-5) on ``adult_train.csv`` with ``preprocessor={"numeric":
"minmax"}`` and public bounds (issue 17: age 17-90, fnlwgt 0-1.5e6, education-num 1-16, capital-gain
0-100000, capital-loss 0-4500, hours-per-week 1-99) and the category lists taken as public (the
census codebook's lists; here read from the training file), so the preprocessor learns nothing from
the private rows. As many rows as the training table are sampled and scored with
:func:`tabdiff_jax.evaluate.evaluate` (CatBoost F1 macro on ``adult_test.csv``, shape, trend, DCR).

    python benchmarks/private_tabddpm.py --epsilons 1 5                        # default recipe
    python benchmarks/private_tabddpm.py --model tabdiff --epsilons 1 --steps 500 --batch-size 2048
    python benchmarks/private_tabddpm.py --model tabdiff --epsilons 1 --steps 500 --batch-size 2048 \
        --cond-prob 0.5 --guidance 2 --tag _cfg05_g2                  # classifier-free guidance
    python benchmarks/private_tabddpm.py --epsilons 1 --steps 600 --batch-size 2048 --lr 3e-3 \\
        --hidden-dims 256,256 --num-timesteps 50 --tag _b2048

Each run is merged into benchmarks/results/private_tabddpm.json (atomically) under
``eps<epsilon><tag>`` with its command, the load average before and after, fit and sample times
and the privacy record of the fit.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from tabdiff_jax.io import write_json

from private import PUBLIC_BOUNDS  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "private_tabddpm.json"
TARGET = "income"
TABLEDIFFUSION_EPS1_PUBLIC = 0.534  # issue 17: TableDiffusion, same footing, epsilon 1, seed 0 (2026-11-29)
PRIVACY_KEYS = ("epsilon", "delta", "noise_multiplier", "sampling_rate", "steps", "planned_steps", "epsilon_spent",
                "accountant", "accountant_delta", "truncation_delta", "l2_clip", "expected_batch_size", "clipping",
                "batch_capacity", "truncated_steps", "final_loss", "train_seconds", "steps_per_second", "preprocessing",
                "dpsgd_epsilon", "dpsgd_delta", "released")


def public_categories(train: pd.DataFrame) -> dict:
    return {c: sorted(train[c].dropna().astype(str).unique()) for c in train.columns if c not in PUBLIC_BOUNDS}


def run_one(epsilon: float, args, train: pd.DataFrame, test: pd.DataFrame) -> dict:
    import tabdiff_jax.evaluate as ev
    from tabdiff_jax.models.base import get_model_class

    options = dict(epsilon=epsilon, delta=args.delta, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                   weight_decay=args.weight_decay, hidden_dims=[int(w) for w in args.hidden_dims.split(",")],
                   dim_t=args.dim_t, max_grad_norm=args.max_grad_norm, clipping=args.clipping,
                   ema_decay=args.ema_decay, preprocessor={"numeric": "minmax"}, log_every=50, checkpoint_every=10_000)
    if args.model == "tabddpm":
        options["num_timesteps"] = args.num_timesteps
    else:  # TabDiff's classifier-free guidance on the target (defaults: off)
        options.update(cond_prob=args.cond_prob, guidance=args.guidance)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    model = get_model_class(args.model)(**options).fit(train, target=TARGET, seed=args.seed, progress=not args.no_progress,
                                   public_bounds=PUBLIC_BOUNDS, public_categories=public_categories(train))
    fit_s = time.perf_counter() - t0
    load_fit = os.getloadavg()
    t0 = time.perf_counter()
    syn = model.sample(len(train), seed=args.seed + 1)
    sample_s = time.perf_counter() - t0
    report = ev.evaluate(train, syn, test=test, target=TARGET, task="classification", seed=args.seed,
                         threads=args.threads, skip=("detection", "coverage", "sdmetrics_dcr")).to_dict()
    util = report["utility"]
    metric = util["metric"]
    info = model.fit_info
    return {
        "model": args.model, "epsilon": epsilon, "metric": metric, "real": util["real"][metric], "synthetic": util["synthetic"][metric],
        "shape": report["fidelity"]["shape"], "trend": report["fidelity"]["trend"],
        "dcr_median": report["privacy"].get("dcr_median"),
        "synthetic_positive_rate": float((syn[TARGET] == ">50K").mean()),
        "fit_seconds": round(fit_s, 1), "sample_seconds": round(sample_s, 1),
        "loadavg_before_fit": [round(x, 2) for x in load_before], "loadavg_after_fit": [round(x, 2) for x in load_fit],
        "privacy": {k: info.get(k) for k in PRIVACY_KEYS},
        "nothing_learned_outside_budget": bool(info["preprocessing"]["private"]),
        "options": {k: v for k, v in options.items()}, "seed": args.seed,
        "tablediffusion_same_footing_eps1": TABLEDIFFUSION_EPS1_PUBLIC,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tabddpm", choices=["tabddpm", "tabdiff"])
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 5.0])
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--hidden-dims", default="256,256")
    p.add_argument("--dim-t", type=int, default=128)
    p.add_argument("--num-timesteps", type=int, default=100)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--cond-prob", type=float, default=0.0, help="TabDiff: rows trained with the target given")
    p.add_argument("--guidance", type=float, default=0.0, help="TabDiff: classifier-free guidance weight")
    p.add_argument("--clipping", default="ghost", choices=["ghost", "vmap"])
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default="")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    train, test = pd.read_csv(DATA / "adult_train.csv"), pd.read_csv(DATA / "adult_test.csv")
    for eps in args.epsilons:
        result = run_one(eps, args, train, test)
        result.update({"command": "python benchmarks/private_tabddpm.py " + " ".join(sys.argv[1:] if argv is None else argv),
                       "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}})
        results = {}
        if OUT.exists():
            import json

            results = json.loads(OUT.read_text())
        results[("" if args.model == "tabddpm" else args.model + "_") + f"eps{eps:g}{args.tag}"] = result
        write_json(results, OUT)
        print(f"epsilon {eps:g}{args.tag}: F1 {result['synthetic']:.3f} (real {result['real']:.3f}), shape "
              f"{result['shape']:.3f}, spent {result['privacy']['epsilon_spent']:.3f}, sigma "
              f"{result['privacy']['noise_multiplier']:.3f}, fit {result['fit_seconds']} s, "
              f"load {result['loadavg_after_fit']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
