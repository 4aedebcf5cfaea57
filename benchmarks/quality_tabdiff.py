"""TabDiff and TabDDPM side by side on the TabDDPM paper's tables: quality, relations, time.

For each data set (split and target as in benchmarks/quality_tabddpm.py): fit each model on the
training split, sample as many rows, and score with :func:`tabdiff_jax.evaluate.evaluate`: CatBoost
F1 macro / R2 on the test split, shape, trend, boosted detection (ROC-AUC and its score
1 - (2 AUC - 1)), SDMetrics' LogisticDetection (the "C2ST" TabSyn and TabDiff report),
alpha-precision / beta-recall, DCR, and the share of synthetic rows keeping each exact relation of
the real table. Fit and sampling time, and sampling rows/s (a second, compiled call), per model.

    python benchmarks/quality_tabdiff.py                              # all five tables, both models
    python benchmarks/quality_tabdiff.py --same-time                  # TabDiff gets TabDDPM's train seconds
    python benchmarks/quality_tabdiff.py --datasets insurance --models tabddpm --quick   # a smoke run
    python benchmarks/quality_tabdiff.py --sampler-speed --repeats 10  # sampler rows/s only, same network

``--sampler-speed`` times the samplers alone on each table (8,192 rows, the 256-256 network with random
weights, best of ``--repeats`` calls taking turns): TabDiff at 50 steps (multistep, no and Heun's correction;
25 with Heun's) against TabDDPM at T = 100 (benchmarks/tabdiff_adult.py's ``speed``), into the
``sampler_speed`` entry.

Results are merged into benchmarks/results/quality_tabdiff.json (one entry per data set, atomic
write); a markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
from pathlib import Path

from quality_tabddpm import DATASETS, load_split  # benchmarks/ is on sys.path when this runs as a script

from tabdiff_jax.io import write_json

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "quality_tabdiff.json"
ALL_DATASETS = ("adult", "california", "insurance", "abalone", "king")
MODELS = {"tabddpm": ("tabdiff_jax.models.tabddpm", "TabDDPM"), "tabdiff": ("tabdiff_jax.models.tabdiff", "TabDiff")}
# Integer-coded nominal columns declared categorical for both models (``fit(column_kinds=...)``):
# King's zipcode is a postal code (70 values in 98001-98199), not a quantity. As a number, the models draw
# lat / long outside the zipcode's area, and the boosted detector finds synthetic rows from those three
# columns alone (AUC 0.98). --numeric-codes keeps them numbers (the inferred kind).
COLUMN_KINDS = {"king": {"zipcode": "categorical"}}
# Options of a --quick smoke run: a few steps, a short sampler.
QUICK = {"tabddpm": {"steps": 200, "num_timesteps": 50}, "tabdiff": {"steps": 200, "num_sample_steps": 10}}

# Published Adult figures: "A Sobering Look at Tabular Data Generation via Probabilistic Circuits"
# (arXiv 2603.23016), repository april-tools/tabpc, article_material/our_results/*.csv; mean of 5
# models, SDMetrics QualityReport scores; boosted-detection score = 1 - (2 AUC - 1) of an XGBoost
# classifier (xgb_detection.csv); logistic detection = SDMetrics' LogisticDetection (lr_detection.csv).
PUBLISHED_SOURCE = ("arXiv 2603.23016 (april-tools/tabpc, article_material/our_results/*.csv; mean of 5 models, "
                    "SDMetrics QualityReport scores)")
PUBLISHED_ADULT = {
    "TabSyn (ICLR 2024)": {"shape": 0.992, "trend": 0.980, "boosted_detection_score": 0.79,
                           "logistic_detection_score": 0.987, "alpha_precision": 0.990, "beta_recall": 0.480,
                           "sampling_steps": 50},
    "TabDiff (ICLR 2025)": {"shape": 0.993, "trend": 0.985, "boosted_detection_score": 0.84,
                            "logistic_detection_score": 0.990, "alpha_precision": 0.986, "beta_recall": 0.526,
                            "sampling_steps": 50},
    "TabPC (probabilistic circuit)": {"shape": 0.994, "trend": 0.986, "boosted_detection_score": 0.86,
                                      "logistic_detection_score": 0.996, "alpha_precision": 0.996,
                                      "beta_recall": 0.500, "sampling_steps": None},
}


def detection_score(auc):
    """SDMetrics' detection score from a ROC-AUC: ``1 - (2 max(AUC, 0.5) - 1)``."""
    return None if auc is None else 1.0 - (2.0 * max(float(auc), 0.5) - 1.0)


def make_model(name: str, options: dict):
    module, cls = MODELS[name]
    return getattr(importlib.import_module(module), cls)(**options)


def run_model(name: str, options: dict, train, test, target: str, task: str, *, seed: int, threads: int,
              max_seconds=None, column_kinds=None) -> dict:
    """Fit, sample ``len(train)`` rows (timed twice: with and without compilation), evaluate."""
    import tabdiff_jax.evaluate as ev

    model = make_model(name, options)
    t0 = time.perf_counter()
    model.fit(train, target=target, task=task, seed=seed, progress=False, max_seconds=max_seconds,
              column_kinds=column_kinds)
    fit_s = time.perf_counter() - t0
    n = len(train)
    t0 = time.perf_counter()
    syn = model.sample(n, seed=seed + 1)
    sample_s = time.perf_counter() - t0
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    model.sample(n, seed=seed + 2)
    warm_s = time.perf_counter() - t0
    # QualityReport's trend binning: the published shape / trend are SDMetrics QualityReport scores.
    report = ev.evaluate(train, syn, test=test, target=target, task=task, seed=seed, threads=threads,
                         trend_binning="separate").to_dict()
    fid, priv, util = report["fidelity"], report["privacy"] or {}, report["utility"]
    metric = util["metric"]
    info = model.fit_info
    return {
        "metric": metric, "real": util["real"][metric], "synthetic": util["synthetic"][metric],
        "shape": fid["shape"], "trend": fid["trend"],
        "detection_auc": fid.get("detection_auc"), "boosted_detection_score": detection_score(fid.get("detection_auc")),
        "logistic_detection_score": fid.get("logistic_detection_score"),
        "logistic_detection_auc": (fid.get("logistic_detection") or {}).get("auc"),
        "alpha_precision": fid.get("alpha_precision"), "beta_recall": fid.get("beta_recall"),
        "dcr_median": priv.get("dcr_median"), "dcr_holdout_median": priv.get("dcr_holdout_median"),
        "closer_to_train_share": priv.get("closer_to_train_share"),
        "relations": [{"relation": r["description"], "kind": r["kind"], "kept_share": r["kept_share"]}
                      for r in (report.get("relations") or {}).get("relations", [])],
        "min_kept_share": (report.get("relations") or {}).get("min_kept_share"),
        "fit_seconds": round(fit_s, 1), "train_seconds": info.get("train_seconds"), "steps": info.get("steps"),
        "batch_size": info.get("batch_size"), "max_seconds": max_seconds,
        "sample_seconds": round(sample_s, 2), "sample_rows_per_second": round(n / warm_s, 1),
        "sample_load_average": round(load, 2), "evaluate_seconds": report["timings"]["total"],
        "column_kinds": column_kinds,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.settings.items()
                    if isinstance(v, (int, float, str, bool, tuple, list, type(None)))},
    }


def markdown_table(results: dict) -> str:
    """One row per (data set, model): the figures of :func:`run_model`."""

    def f(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    lines = ["| data | model | fit (s) | steps | utility (real) | shape | trend | boosted det. score (AUC) "
             "| logistic det. score | alpha-prec. | beta-rec. | DCR median (holdout) | relations kept (worst) "
             "| sample rows/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, entry in results.items():
        if not isinstance(entry, dict) or "models" not in entry:
            continue
        for name, m in entry["models"].items():
            lines.append(
                f"| {key} | {name} | {f(m['fit_seconds'], 0)} | {m['steps']} | {f(m['synthetic'])} ({f(m['real'])}) "
                f"| {f(m['shape'])} | {f(m['trend'])} | {f(m['boosted_detection_score'])} ({f(m['detection_auc'])}) "
                f"| {f(m['logistic_detection_score'])} | {f(m['alpha_precision'])} | {f(m['beta_recall'])} "
                f"| {f(m['dcr_median'])} ({f(m['dcr_holdout_median'])}) "
                f"| {f(m['min_kept_share'], 4) if m['relations'] else 'none found'} "
                f"| {m['sample_rows_per_second']:,.0f} |")
    return "\n".join(lines)


def sampler_speed(args, results: dict, path: Path, machine: dict) -> int:
    from tabdiff_adult import speed  # benchmarks/ is on sys.path when this runs as a script

    entry = {"command": "python benchmarks/quality_tabdiff.py --sampler-speed --repeats " + str(args.repeats),
             "machine": machine, "tables": {}}
    print("| data | TabDDPM T=100 rows/s | TabDiff 50 multistep | x | 50 no correction | x | 50 Heun | x |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.datasets.split(","):
        train, _ = load_split(name, args.seed)
        out = speed(repeats=args.repeats, train=train, target=DATASETS[name][2])
        entry["tables"][name] = out
        r = {k: out[k] for k in ("tabddpm_T100", "tabdiff_50_multistep", "tabdiff_50_no_correction",
                                 "tabdiff_50_correction")}
        print(f"| {name} | {r['tabddpm_T100']['rows_per_second']:,.0f} | " + " | ".join(
            f"{r[k]['rows_per_second']:,.0f} | {r[k]['speedup_vs_tabddpm_T100']:.2f}"
            for k in ("tabdiff_50_multistep", "tabdiff_50_no_correction", "tabdiff_50_correction")) + " |", flush=True)
    entry["machine"]["load_average_at_end"] = os.getloadavg()
    results["sampler_speed"] = entry
    write_json(results, path)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(ALL_DATASETS))
    p.add_argument("--models", default="tabddpm,tabdiff", help="comma-separated, in fit order: tabddpm, tabdiff")
    p.add_argument("--same-time", action="store_true",
                   help="fit TabDDPM first, then TabDiff with max_seconds = TabDDPM's train seconds (TabDiff stops at "
                        "that time or at its steps, whichever comes first: raise --tabdiff-steps to spend the time)")
    p.add_argument("--tabdiff-steps", type=int, default=None, help="TabDiff's training steps (default: its own)")
    p.add_argument("--numeric-codes", action="store_true",
                   help="keep integer-coded nominal columns (King's zipcode) numbers instead of declaring them categorical")
    p.add_argument("--quick", action="store_true", help="smoke run: 200 steps, short samplers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=-1, help="CatBoost threads")
    p.add_argument("--tag", default="", help="suffix of the result key (keeps several runs)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--sampler-speed", action="store_true", help="only time the samplers (same network) per table")
    p.add_argument("--repeats", type=int, default=5, help="--sampler-speed: timed calls per sampler (best kept)")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS] + [d for d in args.datasets.split(",") if d not in DATASETS]
    if unknown:
        p.error(f"unknown model or data set: {', '.join(unknown)}; models: {', '.join(MODELS)}; "
                f"data sets: {', '.join(DATASETS)}")
    if args.same_time and models[:1] != ["tabddpm"]:
        p.error("--same-time needs tabddpm first in --models (TabDiff gets its train seconds)")

    import jax

    machine = {"cpu_count": os.cpu_count(), "backend": jax.default_backend(),
               "devices": [str(d) for d in jax.devices()],
               "platform": platform.platform(), "load_average_at_start": os.getloadavg()}
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.sampler_speed:
        return sampler_speed(args, results, path, machine)
    for name in args.datasets.split(","):
        train, test = load_split(name, args.seed)
        _, _, target, task = DATASETS[name]
        entry = {"dataset": name, "target": target, "task": task, "rows_train": len(train), "rows_test": len(test),
                 "same_time": args.same_time, "quick": args.quick, "models": {}}
        budget = None
        for model in models:
            options = dict(QUICK[model]) if args.quick else {}
            if model == "tabdiff" and args.tabdiff_steps is not None:
                options["steps"] = args.tabdiff_steps
            max_seconds = budget if (model == "tabdiff" and args.same_time) else None
            out = run_model(model, options, train, test, target, task, seed=args.seed, threads=args.threads,
                            max_seconds=max_seconds,
                            column_kinds=None if args.numeric_codes else COLUMN_KINDS.get(name))
            if model == "tabddpm":
                budget = out["train_seconds"]
            entry["models"][model] = out
            print(json.dumps({"dataset": name, "model": model, **{k: v for k, v in out.items() if k != "options"}}),
                  flush=True)
        entry["machine"] = {**machine, "load_average_at_end": os.getloadavg()}
        results[name + args.tag] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(results, path)
    print(markdown_table({k: v for k, v in results.items() if k in {d + args.tag for d in args.datasets.split(",")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
