"""Every private model on Adult at epsilon 1, 5 and 10, with nothing learned outside the budget.

Public knowledge only: the bounds of the numbers (age 17-90, fnlwgt 0-1.5e6, education-num 1-16,
capital-gain 0-100000, capital-loss 0-4500, hours-per-week 1-99) and the category lists (the census
codebook's; here the union of the train and test splits' labels), with min-max numbers for the DP-SGD
models, so the preprocessor learns nothing from the private rows: each fit runs with
``PrivacyWarning`` as an error. delta = 1e-5. Each model samples as many rows as the training table,
scored by :func:`tabdiff_jax.evaluate.evaluate`: CatBoost F1 macro on adult_test (real 0.814), shape,
trend, boosted detection (ROC-AUC, 0.5 = indistinguishable), DCR median (synthetic to train, against
holdout to train), fit wall and CPU seconds.

    python benchmarks/private.py                                   # all models, epsilon 1 5 10 (about an hour on 2 cores)
    python benchmarks/private.py --models aim,mst --epsilons 5     # a subset
    python benchmarks/private.py --quick --out /tmp/p.json         # the wiring: tiny fits

The recipes (MODELS below) are each model's defaults except where its README section says otherwise:
private TabDDPM and TabDiff at batch 2,048, 1,000 steps, MLP 256-256, lr 2e-3 (benchmarks/private_tabddpm.py's
best), TabDiff with classifier-free guidance on the target (cond_prob 0.9, guidance 5: its best at epsilon 1). Results are merged into benchmarks/results/private.json under ``<model>_eps<epsilon>``, atomically
after each fit, with the command, the load average and the machine; an entry already there is kept
(``--force`` refits it), so an interrupted run resumes. A markdown table is printed at the end.
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

import pandas as pd

from tabdiff_jax.io import write_json

from tabdiff_adult import load_adult  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "private.json"
TARGET = "income"
PUBLIC_BOUNDS = {"age": (17, 90), "fnlwgt": (0, 1.5e6), "education-num": (1, 16), "capital-gain": (0, 100000),
                 "capital-loss": (0, 4500), "hours-per-week": (1, 99)}
MINMAX = {"preprocessor": {"numeric": "minmax"}}
DIFFUSION = {**MINMAX, "steps": 1000, "batch_size": 2048, "lr": 2e-3, "hidden_dims": [256, 256]}
# name -> (class, options): the private recipes compared
MODELS = {
    "tablediffusion": ("TableDiffusion", dict(MINMAX)),
    "tabddpm": ("TabDDPM", {**DIFFUSION, "num_timesteps": 100}),
    "tabdiff": ("TabDiff", {**DIFFUSION, "cond_prob": 0.9, "guidance": 5.0}),  # classifier-free guidance on the target
    "dpgan": ("DPGAN", {}),
    "mst": ("MST", {}),
    "aim": ("AIM", {}),
}
QUICK = {"tablediffusion": {"epochs": 1}, "tabddpm": {"steps": 5}, "tabdiff": {"steps": 5}, "dpgan": {"epochs": 1},
         "mst": {"iters": 20}, "aim": {"iters": 20, "round_iters": 5, "rounds": 15}}


def run_one(name: str, epsilon: float, train: pd.DataFrame, test: pd.DataFrame, *, seed: int, threads: int,
            quick: bool) -> dict:
    import tabdiff_jax
    import tabdiff_jax.evaluate as ev
    from tabdiff_jax.privacy.preprocessing import PrivacyWarning

    cls, options = MODELS[name]
    options = {**options, **(QUICK[name] if quick else {})}
    categories = {c: sorted(set(train[c].astype(str)) | set(test[c].astype(str)))
                  for c in train.columns if c not in PUBLIC_BOUNDS}
    model = getattr(tabdiff_jax, cls)(epsilon=epsilon, delta=1e-5, **options)
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyWarning)  # nothing may be learned outside the budget
        model.fit(train, target=TARGET, seed=seed, progress=False, public_bounds=PUBLIC_BOUNDS,
                  public_categories=categories)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    load1 = os.getloadavg()[0]
    t0 = time.perf_counter()
    syn = model.sample(len(train), seed=seed + 1)
    sample_s = time.perf_counter() - t0
    holdout = test.sample(min(len(test), len(train)), random_state=seed)
    r = ev.evaluate(train, syn, test=test, holdout=holdout, target=TARGET, task="classification", seed=seed,
                    threads=threads, skip=("coverage", "sdmetrics_dcr")).to_dict()
    util, fid, priv, info = r["utility"], r["fidelity"], r["privacy"] or {}, model.fit_info
    metric = util["metric"]
    return {
        "model": name, "class": cls, "epsilon": epsilon, "delta": 1e-5, "seed": seed, "metric": metric,
        "real": util["real"][metric], "synthetic": util["synthetic"][metric],
        "shape": fid["shape"], "trend": fid["trend"], "detection_auc": fid.get("detection_auc"),
        "dcr_median": priv.get("dcr_median"), "dcr_holdout_median": priv.get("dcr_holdout_median"),
        "synthetic_positive_rate": float((syn[TARGET] == ">50K").mean()),
        "real_positive_rate": float((train[TARGET] == ">50K").mean()),
        "epsilon_spent": info.get("epsilon_spent"),
        "nothing_learned_outside_budget": not (info.get("preprocessing") or {}).get("data_dependent"),
        "fit_seconds": round(fit_s, 1), "fit_cpu_seconds": round(fit_cpu, 1), "sample_seconds": round(sample_s, 1),
        "load_average_1min": [round(load0, 2), round(load1, 2)],
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
    }


def markdown(results: dict) -> str:
    def f(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    lines = ["| model | epsilon | F1 (real 0.814) | shape | trend | detection AUC | DCR median (holdout) "
             "| >50K share | fit (s) | fit CPU (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    entries = sorted((e for e in results.values() if isinstance(e, dict) and "model" in e),
                     key=lambda e: (e["epsilon"], list(MODELS).index(e["model"]) if e["model"] in MODELS else 99))
    for e in entries:
        lines.append(f"| {e['model']} | {e['epsilon']:g} | {f(e['synthetic'])} | {f(e['shape'])} | {f(e['trend'])} "
                     f"| {f(e['detection_auc'])} | {f(e['dcr_median'])} ({f(e['dcr_holdout_median'])}) "
                     f"| {f(e['synthetic_positive_rate'], 2)} | {e['fit_seconds']:.0f} | {e['fit_cpu_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--epsilons", default="1,5,10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="CatBoost threads")
    p.add_argument("--force", action="store_true", help="refit entries already in the results")
    p.add_argument("--quick", action="store_true", help="tiny fits: checks the wiring")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    out = Path(args.out)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    train, test = load_adult()
    results = json.loads(out.read_text()) if out.exists() else {}
    command = "python benchmarks/private.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for eps in [float(e) for e in args.epsilons.split(",")]:
        for name in names:
            key = f"{name}_eps{eps:g}"
            if key in results and not args.force:
                print(f"{key}: kept (--force refits)", flush=True)
                continue
            entry = run_one(name, eps, train, test, seed=args.seed, threads=args.threads, quick=args.quick)
            entry.update(command=command, machine={"cpus": os.cpu_count(), "platform": platform.platform()})
            results[key] = entry
            write_json(results, out)
            print(f"{key}: F1 {entry['synthetic']:.3f}, shape {entry['shape']:.3f}, trend {entry['trend']:.3f}, "
                  f"detection AUC {entry['detection_auc']:.3f}, fit {entry['fit_seconds']} s "
                  f"(CPU {entry['fit_cpu_seconds']} s, load {entry['load_average_1min']})", flush=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
