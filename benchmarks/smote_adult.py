"""SMOTE on Adult: utility (train on synthetic, test on the real test split) and privacy (DCR).

The TabDDPM paper reports F1 .815 (real) vs .791 (SMOTE) on Adult and a SMOTE DCR far below that of
a real holdout. This script fits SMOTE on ../shared/data/adult_train.csv, samples as many rows,
and evaluates them with ``tabdiff_jax.evaluate`` (the test split as test table and privacy holdout);
the utility is repeated for ``--seeds`` more sampling seeds (CatBoost seed fixed), since one seed's
F1 moves by about +-0.002.

    .venv/bin/python benchmarks/smote_adult.py [--seed 0] [--seeds 1 2] [--out benchmarks/results/smote_adult.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import pandas as pd

from tabdiff_jax.evaluate import evaluate
from tabdiff_jax.io import write_json
from tabdiff_jax.models.smote import SMOTE

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2], help="extra sampling seeds for the utility")
    parser.add_argument("--k-neighbors", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "smote_adult.json"))
    parser.add_argument("--plots", default=None, help="also write the report's figures here")
    args = parser.parse_args(argv)

    train = pd.read_csv(DATA / "adult_train.csv")
    test = pd.read_csv(DATA / "adult_test.csv")
    t0 = time.perf_counter()
    model = SMOTE(k_neighbors=args.k_neighbors).fit(train, target="income", seed=args.seed, progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    synthetic = model.sample(len(train), seed=args.seed)
    sample_s = time.perf_counter() - t0
    cpu0 = time.process_time()
    report = evaluate(train, synthetic, test=test, target="income", seed=args.seed)
    cpu_s = time.process_time() - cpu0
    if args.plots:
        report.plots(args.plots)
        report.to_markdown(Path(args.plots) / "report.md")

    u, p, f = report["utility"], report["privacy"], report["fidelity"]
    per_seed = {args.seed: u["synthetic"]["f1_macro"]}
    for extra in args.seeds:
        more = evaluate(train, model.sample(len(train), seed=extra), test=test, target="income", seed=args.seed,
                        skip=("detection", "coverage", "privacy", "sdmetrics_dcr"))
        per_seed[extra] = more["utility"]["synthetic"]["f1_macro"]
    f1_mean = sum(per_seed.values()) / len(per_seed)
    result = {
        "benchmark": "SMOTE on Adult (train -> sample len(train) rows -> evaluate on the test split)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]},
        "seed": args.seed,
        "k_neighbors": args.k_neighbors,
        "rows": {"train": len(train), "synthetic": len(synthetic), "test": len(test)},
        "fit_seconds": round(fit_s, 2),
        "sample_seconds": round(sample_s, 2),
        "utility_model": u["model"],
        "f1_real": u["real"]["f1_macro"],
        "f1_smote": u["synthetic"]["f1_macro"],
        "f1_gap": u["gap"],
        "f1_smote_per_sampling_seed": per_seed,
        "f1_smote_mean": f1_mean,
        "f1_gap_mean": u["real"]["f1_macro"] - f1_mean,
        "paper_f1_real_vs_smote": [0.815, 0.791],
        "dcr_median_smote_to_train": p["dcr_median"],
        "dcr_median_holdout_to_train": p["dcr_holdout_median"],
        "closer_to_train_share": p["closer_to_train_share"],
        "exact_copies": p["exact_copies"],
        "mia_auc": p["mia_auc"],
        "shape": f["shape"],
        "trend": f["trend"],
        "detection_auc": f["detection_auc"],
        "evaluation_seconds": report["timings"],
        "evaluation_cpu_seconds": round(cpu_s, 1),
        "report": report.to_dict(),
    }
    write_json(result, args.out)
    print(report.summary_table())
    print(f"SMOTE fit {fit_s:.1f} s, sample {sample_s:.2f} s; F1 real {result['f1_real']:.4f} vs SMOTE {result['f1_smote']:.4f} "
          f"(gap {result['f1_gap']:.4f}; mean over seeds {sorted(per_seed)}: {result['f1_gap_mean']:.4f}); DCR median SMOTE {result['dcr_median_smote_to_train']:.4f} vs holdout "
          f"{result['dcr_median_holdout_to_train']:.4f} -> {args.out}")
    return result


if __name__ == "__main__":
    main()
