"""Adult, TabDDPM with and without ``derive="auto"`` (exact dependencies kept by construction, issue 16).

Fits TabDDPM on the Adult training split twice (the same seed and options; ``preprocessor={"derive":
"auto"}`` or not), samples as many rows, and scores both with :func:`tabdiff_jax.evaluate.evaluate`:
the share of rows keeping each exact relation of the real table (education <-> education-num),
shape, trend, boosted detection and (unless ``--no-utility``) the CatBoost F1 on the test split.

    python benchmarks/derive_adult.py --steps 2000            # results/derive_adult.json
    python benchmarks/derive_adult.py --steps 2000 --seed 1 --out benchmarks/results/derive_adult_seed1.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import pandas as pd

from tabdiff_jax.io import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "derive_adult.json"


def run(derive, steps: int, batch_size: int, seed: int, utility: bool) -> dict:
    from tabdiff_jax import evaluate
    from tabdiff_jax.models.tabddpm import TabDDPM

    train, test = pd.read_csv(DATA / "adult_train.csv"), pd.read_csv(DATA / "adult_test.csv")
    t0, load0 = time.perf_counter(), os.getloadavg()
    model = TabDDPM(steps=steps, batch_size=batch_size, preprocessor={"derive": derive})
    model.fit(train, target="income", seed=seed, progress=False)
    fit_s = time.perf_counter() - t0
    synthetic = model.sample(len(train), seed=seed)
    skip = ("coverage", "privacy", "sdmetrics_dcr") + (() if utility else ("utility",))
    report = evaluate(train, synthetic, test=test, target="income", seed=seed, skip=skip, threads=1)
    results = report.to_dict()
    rels = results.get("relations") or {}
    kept = {r["description"]: r["kept_share"] for r in rels.get("relations", [])}
    summary = {"fidelity": results.get("fidelity"), "detection": results.get("detection"),
               "utility": results.get("utility")}
    print(report.summary_table(), flush=True)
    return {"derive": derive, "derived": [d.column for d in model.preprocessor.derived], "fit_seconds": round(fit_s, 1),
            "load_before_fit": load0, "load_after_fit": os.getloadavg(), "kept_share": kept, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-utility", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    out = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "runs": []}
    for derive in (None, "auto"):
        out["runs"].append(run(derive, args.steps, args.batch_size, args.seed, not args.no_utility))
        write_json(out, args.out)
        print(out["runs"][-1], flush=True)


if __name__ == "__main__":
    main()
