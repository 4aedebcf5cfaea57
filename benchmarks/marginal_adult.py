"""MST and AIM on Adult with nothing learned outside the budget: F1, shape, trend, fit time.

Public knowledge only: the bounds of the numbers (age 17-90, fnlwgt 0-1.5e6, education-num 1-16,
capital-gain 0-100000, capital-loss 0-4500, hours-per-week 1-99) and the category lists (from the
data set's documentation; here the union of the train and test splits' labels). Each model is fitted
on adult_train.csv, samples as many rows, and is scored by :func:`tabdiff_jax.evaluate.evaluate`
(CatBoost F1 macro on adult_test.csv, shape, trend), as benchmarks/quality_tabddpm.py does.

    python benchmarks/marginal_adult.py                          # MST and AIM at epsilon 1 and 5
    python benchmarks/marginal_adult.py --models aim --epsilons 1

Results are merged into benchmarks/results/marginal_adult.json (one entry per model and epsilon),
with the command, the machine's CPU count, the load average when each fit ended, the fit's CPU
seconds (``time.process_time``: what the fit costs whatever the load), and AIM's time per round. Issue 17's reference (private-pgm's own mechanisms on mbi 2.0): MST 0.647 / 0.652 and
AIM 0.785 / 0.789 at epsilon 1 / 5; acceptance: each fit under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

from tabdiff_jax.io import write_json

from private import PUBLIC_BOUNDS  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
BOUNDS = PUBLIC_BOUNDS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "marginal_adult.json"
REFERENCE = {"mst": {1.0: 0.647, 5.0: 0.652}, "aim": {1.0: 0.785, 5.0: 0.789}}


def run_one(name: str, epsilon: float, delta: float, seed: int, threads: int, options: dict) -> dict:
    import tabdiff_jax
    import tabdiff_jax.evaluate as ev

    train, test = pd.read_csv(DATA / "adult_train.csv"), pd.read_csv(DATA / "adult_test.csv")
    categories = {c: sorted(set(train[c]) | set(test[c])) for c in train.columns if c not in BOUNDS}
    model = getattr(tabdiff_jax, name.upper())(epsilon=epsilon, delta=delta, **options)
    from tabdiff_jax.privacy.preprocessing import PrivacyWarning

    t0, cpu0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)  # nothing may be learned outside the budget
        model.fit(train, target="income", seed=seed, public_bounds=BOUNDS, public_categories=categories)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    load = os.getloadavg()
    t0 = time.perf_counter()
    syn = model.sample(len(train), seed=seed + 1)
    sample_s = time.perf_counter() - t0
    r = ev.evaluate(train, syn, test=test, target="income", task="classification", seed=seed, threads=threads,
                    skip=("detection", "coverage", "sdmetrics_dcr")).to_dict()
    util, info = r["utility"], model.fit_info
    metric = util["metric"]
    out = {"model": name, "epsilon": epsilon, "delta": delta, "seed": seed, "metric": metric,
           "real": util["real"][metric], "synthetic": util["synthetic"][metric],
           "reference_private_pgm": REFERENCE[name].get(epsilon),
           "shape": r["fidelity"]["shape"], "trend": r["fidelity"]["trend"],
           "fit_seconds": round(fit_s, 1), "fit_cpu_seconds": round(fit_cpu, 1), "sample_seconds": round(sample_s, 1),
           "load_average_after_fit": [round(x, 2) for x in load], "cpus": os.cpu_count(),
           "epsilon_spent": info["epsilon_spent"], "rho": info["rho"], "rho_spent": info["rho_spent"],
           "preprocessing_private": info["preprocessing"]["private"], "config": model.settings}
    if name == "aim":
        times = info["round_seconds"]
        out.update({"rounds": info["rounds"], "annealed": info["annealed"], "round_seconds": times,
                    "mean_round_seconds": round(sum(times) / len(times), 2), "selected": info["selected"]})
    else:
        out["edges"] = info["edges"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mst,aim")
    parser.add_argument("--epsilons", default="1,5")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE model option (numbers parsed)")
    args = parser.parse_args(argv)
    options = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.option)}
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in args.models.split(","):
        for eps in [float(e) for e in args.epsilons.split(",")]:
            out = run_one(name, eps, args.delta, args.seed, args.threads, options)
            out["command"] = "python benchmarks/marginal_adult.py " + " ".join(argv if argv is not None else sys.argv[1:])
            print(json.dumps({k: v for k, v in out.items() if k not in ("round_seconds", "selected", "config")}))
            results[f"{name}_eps{eps:g}" + "".join(f"_{k}{v}" for k, v in options.items())] = out
            write_json(results, OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
