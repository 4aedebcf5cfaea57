"""Speed and agreement of tabdiff_jax.evaluate against SDMetrics, on Adult, in one run on one machine.

1. shape + trend on Adult, 16,281 train rows vs the 16,281 test rows, against SDMetrics' QualityReport
   (our ``binning="separate"`` reproduces QualityReport's per-pair scores);
2. SDMetrics' DCR metrics (DCRBaselineProtection + DCROverfittingProtection) on 10,000 x 10,000 rows:
   ours in JAX at 10,000 rows; SDMetrics at ``--sdmetrics-rows`` (default 1,000 and 2,000) and
   extrapolated quadratically to 10,000 (its cost is a cross join of every pair of rows), with the
   scores of both compared at the sizes SDMetrics ran;
3. nearest neighbours (Euclidean DCR) at 10,000 and 50,000 rows a side, each in a fresh process
   whose peak RSS before and after the search shows that memory does not grow with the rows;
4. the whole ``evaluate`` of a 30,000-row table (SMOTE synthetic rows, CatBoost utility).

    .venv/bin/python benchmarks/evaluate.py [--quick] [--out benchmarks/results/evaluate.json]

Wall times on a shared machine vary with its load; the JSON records the 1-minute load average and
the process CPU time beside every wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _timing import timed  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from tabdiff_jax.evaluate import evaluate
from tabdiff_jax.evaluate.columns import prepare
from tabdiff_jax.evaluate.distances import encode_rows, nearest_neighbours
from tabdiff_jax.evaluate.fidelity import fidelity_scores
from tabdiff_jax.evaluate.sdmetrics_dcr import sdmetrics_dcr
from tabdiff_jax.io import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def metadata(columns):
    return {"columns": {c: {"sdtype": "numerical" if k == "numeric" else "categorical"} for c, k in columns.kinds.items()}}


def bench_quality(train, test, repeats):
    with warnings.catch_warnings():  # deprecated alias of the single-table report, same code
        warnings.simplefilter("ignore", FutureWarning)
        from sdmetrics.reports.single_table import QualityReport

    real = train.sample(len(test), random_state=0).reset_index(drop=True)
    syn = test.reset_index(drop=True)

    def ours(binning):
        columns, t = prepare(real, {"synthetic": syn})
        return columns, fidelity_scores(t["real"], t["synthetic"], columns, binning=binning)

    runs = [timed(ours, "separate") for _ in range(repeats)]
    (columns, mine), _ = runs[0]
    _, mine_real_bins = ours("real")
    report = QualityReport()
    _, sd_time = timed(report.generate, real, syn, metadata(columns), verbose=False)
    pairs = report.get_details("Column Pair Trends")
    shapes = report.get_details("Column Shapes").set_index("Column")["Score"]
    by_pair = {tuple(p["columns"]): p["score"] for p in mine["pairs"]}
    scored = pairs[pairs["Score"].notna()]
    pair_diff = max(abs(by_pair[(r["Column 1"], r["Column 2"])] - r["Score"]) for _, r in scored.iterrows())
    shape_diff = max(abs(v["score"] - shapes[c]) for c, v in mine["columns"].items())
    # QualityReport averages only the pairs whose real association passes its thresholds.
    threshold_avg = float(np.mean([by_pair[(r["Column 1"], r["Column 2"])] for _, r in scored.iterrows()]))
    props = report.get_properties().set_index("Property")["Score"]
    best = min(r[1]["wall_s"] for r in runs)
    return {
        "rows": [len(real), len(syn)],
        "ours_wall_s_first": runs[0][1]["wall_s"], "ours_wall_s_best": best, "ours_runs": [r[1] for r in runs],
        "sdmetrics_quality_report": sd_time,
        "speedup_best": round(sd_time["wall_s"] / best, 1),
        "shape_ours": mine["shape"], "shape_sdmetrics": float(props["Column Shapes"]),
        "trend_ours_all_pairs_separate_bins": mine["trend"], "trend_ours_all_pairs_real_bins": mine_real_bins["trend"],
        "trend_ours_on_sdmetrics_scored_pairs": threshold_avg, "trend_sdmetrics": float(props["Column Pair Trends"]),
        "sdmetrics_scored_pairs": int(len(scored)), "pairs": int(len(pairs)),
        "max_abs_diff_column_shape": shape_diff, "max_abs_diff_pair_score": pair_diff,
    }


def bench_dcr(train, test, rows, sdmetrics_rows):
    from sdmetrics.single_table import DCRBaselineProtection, DCROverfittingProtection

    def tables(n, seed):
        real = train.sample(n, random_state=seed).reset_index(drop=True)
        rest = train.drop(index=train.sample(n, random_state=seed).index)
        syn = rest.sample(n, random_state=seed + 1).reset_index(drop=True)
        syn["age"] = syn["age"] + np.random.default_rng(seed).integers(-2, 3, n)  # not exact copies
        hold = test.sample(n, random_state=seed + 2).reset_index(drop=True)
        return real, syn, hold

    def ours(real, syn, hold):
        columns, t = prepare(real, {"synthetic": syn, "holdout": hold})
        return sdmetrics_dcr(t["real"], t["synthetic"], t["holdout"], columns, seed=7), columns

    out = {"rows": rows}
    ours(*tables(500, 1))  # compile the block function once, as any real run would have
    (mine, _), t = timed(ours, *tables(rows, 0))
    out["ours"] = {**t, "baseline_protection": mine["baseline_protection"], "overfitting_protection": mine["overfitting_protection"]}
    out["sdmetrics"] = []
    for n in sdmetrics_rows:
        real, syn, hold = tables(n, 0)
        (small, columns), t_small = timed(ours, real, syn, hold)
        md = metadata(columns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            DCRBaselineProtection._seed = 7
            base, t_base = timed(DCRBaselineProtection.compute_breakdown, real, syn, md, None)
            DCRBaselineProtection._seed = None
            over, t_over = timed(DCROverfittingProtection.compute_breakdown, real, syn, hold, md, None)
        wall = t_base["wall_s"] + t_over["wall_s"]
        out["sdmetrics"].append({
            "rows": n, "baseline": t_base, "overfitting": t_over, "wall_s": round(wall, 2),
            "ours_wall_s_same_rows": t_small["wall_s"],
            "abs_diff_baseline_score": abs(base["score"] - small["baseline_protection"]),
            "abs_diff_overfitting_score": abs(over["score"] - small["overfitting_protection"]),
            "extrapolated_wall_s_at_rows": round(wall * (rows / n) ** 2, 1),
        })
    largest = out["sdmetrics"][-1]
    out["sdmetrics_extrapolated_wall_s"] = largest["extrapolated_wall_s_at_rows"]
    out["speedup_vs_extrapolated"] = round(largest["extrapolated_wall_s_at_rows"] / out["ours"]["wall_s"], 1)
    out["note"] = (f"SDMetrics was run at {sdmetrics_rows} rows only; its time at {rows} rows is extrapolated as "
                   f"time x ({rows}/n)^2 from the largest n (its work is one cross join per pair of rows).")
    return out


def _nn_child(rows, chunk_size, queue):
    """Runs in a fresh process, so that its peak RSS shows the search's own memory."""
    train, test = pd.read_csv(DATA / "adult_train.csv"), pd.read_csv(DATA / "adult_test.csv")
    pool = pd.concat([train, test], ignore_index=True)
    a = pool.sample(rows, replace=True, random_state=0).reset_index(drop=True)
    b = pool.sample(rows, replace=True, random_state=1).reset_index(drop=True)
    b["age"] = b["age"] + 0.5
    columns, t = prepare(a, {"b": b})
    (ea, eb), _ = encode_rows([t["real"], t["b"]], columns, reference=t["real"])
    nearest_neighbours(eb.take(np.arange(100)), ea.take(np.arange(100)), chunk_size=chunk_size)  # compile
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (d, _), tm = timed(nearest_neighbours, eb, ea, chunk_size=chunk_size)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"rows": [rows, rows], "chunk_size": chunk_size, **tm, "median_dcr": float(np.median(d)),
               "pairs_per_second": round(rows * rows / tm["wall_s"]), "block_bytes": chunk_size * chunk_size * 4,
               "peak_rss_mb_before_search": round(rss_before / 1024, 1), "peak_rss_mb_after_search": round(rss_after / 1024, 1),
               "full_distance_matrix_would_be_mb": round(rows * rows * 4 / 2**20)})


def bench_nn(rows_list, chunk_size=2048):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = []
    for rows in rows_list:
        queue = ctx.Queue()
        proc = ctx.Process(target=_nn_child, args=(rows, chunk_size, queue))
        proc.start()
        out.append(queue.get())
        proc.join()
    return out


def bench_full(train, test, rows, seed=0):
    from tabdiff_jax.models.smote import SMOTE

    real = train.sample(rows, random_state=seed).reset_index(drop=True) if rows <= len(train) else train
    synthetic = SMOTE().fit(real, target="income", seed=seed, progress=False).sample(len(real), seed=seed)
    report, t = timed(evaluate, real, synthetic, test=test, target="income", seed=seed)
    return {"rows": {"real": len(real), "synthetic": len(synthetic), "test": len(test)}, **t,
            "parts_wall_s": report["timings"], "utility_model": report["utility"]["model"],
            "utility_fitted": [report["utility"][k]["fitted"] for k in ("real", "synthetic")]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--sdmetrics-rows", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "evaluate.json"))
    args = parser.parse_args(argv)
    train, test = pd.read_csv(DATA / "adult_train.csv"), pd.read_csv(DATA / "adult_test.csv")
    q = args.quick
    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "quality": bench_quality(train, test.sample(2000, random_state=0) if q else test, repeats=3),
        "dcr_sdmetrics": bench_dcr(train, test, 1000 if q else 10_000, [200] if q else args.sdmetrics_rows),
        "nearest_neighbours": bench_nn([1000, 5000] if q else [10_000, 50_000]),
        "evaluate_30k": bench_full(train, test, 3000 if q else 30_000),
    }
    write_json(results, args.out)
    qa, dc, full = results["quality"], results["dcr_sdmetrics"], results["evaluate_30k"]
    rows = [
        ("shape+trend Adult (ours, best of 3)", f"{qa['ours_wall_s_best']:.2f} s", f"QualityReport {qa['sdmetrics_quality_report']['wall_s']:.2f} s"),
        ("  max |diff| column shape / pair score", f"{qa['max_abs_diff_column_shape']:.1e} / {qa['max_abs_diff_pair_score']:.1e}", ""),
        (f"SDMetrics DCR metrics {dc['rows']}x{dc['rows']} (ours)", f"{dc['ours']['wall_s']:.2f} s",
         f"SDMetrics ~{dc['sdmetrics_extrapolated_wall_s']:.0f} s (extrapolated), x{dc['speedup_vs_extrapolated']}"),
        *[(f"  at {s['rows']} rows: ours / SDMetrics", f"{s['ours_wall_s_same_rows']:.2f} s / {s['wall_s']:.1f} s",
           f"|diff| scores {max(s['abs_diff_baseline_score'], s['abs_diff_overfitting_score']):.1e}") for s in dc["sdmetrics"]],
        *[(f"nearest neighbours {nn['rows'][0]}x{nn['rows'][1]}", f"{nn['wall_s']:.2f} s",
           f"cpu {nn['cpu_s']:.1f} s, peak RSS {nn['peak_rss_mb_before_search']} -> {nn['peak_rss_mb_after_search']} MB")
          for nn in results["nearest_neighbours"]],
        (f"evaluate {full['rows']['real']} rows (all parts)", f"{full['wall_s']:.1f} s", f"cpu {full['cpu_s']:.1f} s, load {full['load_avg_1min']}"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, other in rows:
        print(f"{name:<{width}}  {value:>16}  {other}")
    print(f"-> {args.out}")
    return results


if __name__ == "__main__":
    main()
