"""Speed of the shared preprocessor: fit + encode + decode on Adult and on a 1,000,000-row copy,
for each numeric transform, against ctgan's DataTransformer (mode-specific normalisation) on Adult.

    .venv/bin/python benchmarks/preprocess.py [--quick] [--rows 1000000] [--out benchmarks/results/preprocess.json]

``encode`` and ``decode`` are timed twice: the first call includes the XLA compilation (one per
padded row bucket and table structure), the second is the steady state. The goals (issue 3): on 2
cores, mode-specific fit + encode at least 5x faster than ctgan's fit + transform on Adult, and
1,000,000 Adult rows encoded in under 10 s. Wall times on a shared machine vary with its load; the
JSON records the 1-minute load average and the process CPU time beside every wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import warnings
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from _timing import timed  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from tabdiff_jax.io import write_json
from tabdiff_jax.preprocess import NUMERIC_TRANSFORMS, Preprocessor

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def bench_ours(df: pd.DataFrame, numeric: str, target: str) -> dict:
    pre, fit = timed(Preprocessor(numeric=numeric).fit, df, target=target)
    enc, encode_first = timed(pre.encode, df)
    enc, encode = timed(pre.encode, df)
    back, decode_first = timed(pre.decode, enc)
    back, decode = timed(pre.decode, enc)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    return {
        "rows": len(df), "fit": fit, "encode_first": encode_first, "encode": encode,
        "decode_first": decode_first, "decode": decode,
        "fit_encode_decode_s": round(fit["wall_s"] + encode_first["wall_s"] + decode_first["wall_s"], 3),
        "encoded_width": {"numeric": pre.layout.num_numeric, "categorical_blocks": pre.layout.num_categorical,
                          "onehot": pre.layout.onehot_dim},
    }


def bench_ctgan(df: pd.DataFrame, discrete: list[str]) -> dict:
    try:
        from ctgan.data_transformer import DataTransformer
    except ImportError as err:
        return {"skipped": f"ctgan not importable ({err}); install the bench extra"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer = DataTransformer(max_clusters=10, weight_threshold=0.005)
        _, fit = timed(transformer.fit, df, discrete_columns=discrete)
        data, transform = timed(transformer.transform, df)
        _, inverse = timed(transformer.inverse_transform, data)
    import ctgan

    return {"version": ctgan.__version__, "rows": len(df), "fit": fit, "transform": transform,
            "inverse_transform": inverse, "width": int(data.shape[1])}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 Adult rows and a 100,000-row copy")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the large copy of Adult")
    parser.add_argument("--transforms", nargs="+", default=list(NUMERIC_TRANSFORMS), choices=NUMERIC_TRANSFORMS)
    parser.add_argument("--no-ctgan", action="store_true", help="skip ctgan's DataTransformer")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "preprocess.json"))
    args = parser.parse_args(argv)

    adult = pd.read_csv(DATA / "adult_train.csv")
    rows = 100_000 if args.quick else args.rows
    if args.quick:
        adult = adult.sample(n=5000, random_state=0).reset_index(drop=True)
    big = adult.iloc[np.arange(rows) % len(adult)].reset_index(drop=True)
    discrete = [c for c in adult.columns if not pd.api.types.is_numeric_dtype(adult[c])]

    results = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                    "devices": [str(d) for d in jax.devices()], "load_avg_at_start": os.getloadavg()},
        "quick": args.quick, "adult_rows": len(adult), "big_rows": rows, "ours": {}, "ctgan": None,
    }
    for numeric in args.transforms:
        results["ours"][numeric] = {"adult": bench_ours(adult, numeric, "income"),
                                    "big": bench_ours(big, numeric, "income")}
        print(f"{numeric}: done", flush=True)
    if not args.no_ctgan:
        results["ctgan"] = bench_ctgan(adult, discrete)

    table = []
    for numeric, r in results["ours"].items():
        for name, m in r.items():
            table.append({"transform": numeric, "table": f"{name} ({m['rows']:,} rows)",
                          "fit_s": m["fit"]["wall_s"], "encode_s (1st)": m["encode_first"]["wall_s"],
                          "encode_s": m["encode"]["wall_s"], "decode_s (1st)": m["decode_first"]["wall_s"],
                          "decode_s": m["decode"]["wall_s"], "total_s (1st calls)": m["fit_encode_decode_s"]})
    ct = results["ctgan"]
    if ct and "fit" in ct:
        table.append({"transform": f"ctgan {ct['version']} DataTransformer", "table": f"adult ({ct['rows']:,} rows)",
                      "fit_s": ct["fit"]["wall_s"], "encode_s (1st)": ct["transform"]["wall_s"],
                      "decode_s (1st)": ct["inverse_transform"]["wall_s"],
                      "total_s (1st calls)": round(ct["fit"]["wall_s"] + ct["transform"]["wall_s"]
                                                   + ct["inverse_transform"]["wall_s"], 3)})
        ours = results["ours"].get("mode_specific", {}).get("adult")
        if ours:
            ours_fit_encode = ours["fit"]["wall_s"] + ours["encode_first"]["wall_s"]
            results["speedup_vs_ctgan"] = {
                "fit_plus_encode": round((ct["fit"]["wall_s"] + ct["transform"]["wall_s"]) / ours_fit_encode, 2),
                "fit_encode_decode": round((ct["fit"]["wall_s"] + ct["transform"]["wall_s"] + ct["inverse_transform"]["wall_s"])
                                           / ours["fit_encode_decode_s"], 2),
            }
    print(pd.DataFrame(table).to_string(index=False))
    if "speedup_vs_ctgan" in results:
        s = results["speedup_vs_ctgan"]
        print(f"\nmode_specific vs ctgan on Adult: {s['fit_plus_encode']}x (fit + encode vs fit + transform), "
              f"{s['fit_encode_decode']}x (with decode / inverse_transform)")
    write_json(results, args.out)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
