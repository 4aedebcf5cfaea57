"""DP-GAN on Adult with nothing learned outside the budget: CatBoost F1 macro on the test split, per seed.

Public bounds (age 17-90, fnlwgt 0-1.5e6, education-num 1-16, capital-gain 0-100000, capital-loss
0-4500, hours-per-week 1-99) and the category lists as public (the labels of the train and test
files), so the min-max preprocessor learns nothing from the private rows. ``len(train)`` rows are
sampled (seed 1) and scored by :func:`tabdiff_jax.evaluate.evaluate` (utility, shape, trend).

    .venv/bin/python benchmarks/dpgan_adult.py [--epsilons 1 5] [--seeds 0 1] [--options '{"epochs": 10}']
        [--out benchmarks/results/dpgan_adult.json]

Each finished run is written at once (``--resume`` keeps the runs already in the file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tabdiff_jax.io import write_json

from private import PUBLIC_BOUNDS  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
BOUNDS = PUBLIC_BOUNDS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def run(train, test, categories, epsilon: float, seed: int, options: dict) -> dict:
    from tabdiff_jax.evaluate import evaluate
    from tabdiff_jax.models.dpgan import DPGAN

    load, cpu, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    model = DPGAN(epsilon=epsilon, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train, target="income", seed=seed, progress=False, public_bounds=BOUNDS,
                  public_categories=categories)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - cpu
    synthetic = model.sample(len(train), seed=1)
    report = evaluate(train, synthetic, test=test, target="income", threads=1,
                      skip=("detection", "coverage", "privacy", "sdmetrics_dcr")).to_dict()
    info = model.fit_info
    return {"epsilon": epsilon, "seed": seed, "f1_macro": report["utility"]["synthetic"]["f1_macro"],
            "f1_macro_real": report["utility"]["real"]["f1_macro"],
            "positive_rate": float((synthetic["income"] == ">50K").mean()),
            "positive_rate_real": float((train["income"] == ">50K").mean()),
            "shape": report["fidelity"]["shape"], "trend": report["fidelity"]["trend"],
            "epsilon_spent": info["epsilon_spent"], "noise_multiplier": info["privacy"].get("noise_multiplier"),
            "private_steps": info["privacy"].get("private_steps"),
            "learned_from_data": info["privacy"].get("learned_from_data"),
            "fit_seconds": round(fit_s, 1), "fit_cpu_seconds": round(fit_cpu, 1), "load_avg_1min_start": load}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 5.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--options", default="{}", help="DPGAN options as JSON (the defaults otherwise)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dpgan_adult.json"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    train, test = pd.read_csv(DATA / "adult_train.csv"), pd.read_csv(DATA / "adult_test.csv")
    both = pd.concat([train, test])
    categories = {c: sorted(both[c].astype(str).unique()) for c in train.columns if c not in BOUNDS}
    out = Path(args.out)
    result = {"benchmark": "DP-GAN on Adult, public bounds and categories (nothing learned outside the budget)",
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "options": options,
              "delta": 1e-5, "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "runs": []}
    if args.resume and out.exists():
        result["runs"] = json.loads(out.read_text()).get("runs", [])
    done = {(r["epsilon"], r["seed"]) for r in result["runs"]}
    for epsilon in args.epsilons:
        for seed in args.seeds:
            if (epsilon, seed) in done:
                continue
            entry = run(train, test, categories, epsilon, seed, options)
            result["runs"].append(entry)
            print(json.dumps(entry), flush=True)
            summary = {}
            for e in sorted({r["epsilon"] for r in result["runs"]}):
                f1 = [r["f1_macro"] for r in result["runs"] if r["epsilon"] == e]
                summary[str(e)] = {"f1_macro_mean": float(np.mean(f1)), "f1_macro_min": float(np.min(f1)),
                                   "f1_macro_max": float(np.max(f1)), "seeds": len(f1)}
            result["summary"] = summary
            write_json(result, out)
    return result


if __name__ == "__main__":
    main()
