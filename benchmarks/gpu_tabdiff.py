"""TabDiff and TabDDPM on an accelerator: sampler rows/s and Adult fits whose samples are scored elsewhere.

    python benchmarks/gpu_tabdiff.py --out gpu_out              # on the GPU machine (about 3 minutes)
    python benchmarks/gpu_tabdiff.py --out /tmp/q --quick       # the wiring, on a CPU
    python benchmarks/gpu_tabdiff.py --score gpu_out            # here: score the samples it brought back

The GPU machine has no CatBoost, so the run there writes what it measured (tabdiff_gpu.json: rows/s of
the 50-step TabDiff sampler against TabDDPM at T = 100 with the same network, and each fit's seconds,
steps and sampling time) and the synthetic Adult tables (gpu_synth.tar, one CSV per fit); ``--score``
then scores them on this machine exactly as benchmarks/tabdiff_adult.py scores a CPU fit and merges
everything into benchmarks/results/tabdiff_adult.json under ``gpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
from tabdiff_adult import OUT, _scores, load_adult, speed  # benchmarks/ is on sys.path when run as a script

from tabdiff_jax.io import write_json

# name -> (model class, constructor options, fit options). The long TabDiff fit is bounded by seconds.
FITS = {
    "tabddpm_default": ("TabDDPM", {}, {}),
    "tabdiff_default": ("TabDiff", {}, {}),
    "tabdiff_long": ("TabDiff", {}, {"steps": 60000, "max_seconds": 45.0}),
}


def run_fits(out: Path, quick: bool) -> dict:
    import jax

    import tabdiff_jax

    train, _ = load_adult()
    results = {}
    synth = out / "synth"
    synth.mkdir(parents=True, exist_ok=True)
    for name, (cls, options, fit_options) in FITS.items():
        fit_options = {"steps": 50, "max_seconds": None} if quick else fit_options
        model = getattr(tabdiff_jax, cls)(**options)
        t0 = time.perf_counter()
        model.fit(train, target="income", seed=0, progress=False, **fit_options)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        syn = model.sample(len(train), seed=1)
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.sample(len(train), seed=2)
        warm_s = time.perf_counter() - t0
        syn.to_csv(synth / f"{name}.csv.gz", index=False)
        info = model.fit_info
        results[name] = {"model": cls, "options": options, "fit_options": fit_options,
                         "fit_seconds": round(fit_s, 1), "train_seconds": info.get("train_seconds"),
                         "steps": info.get("steps"), "steps_per_second": info.get("steps_per_second"),
                         "batch_size": info.get("batch_size"), "sample_seconds_cold": round(cold_s, 2),
                         "sample_rows_per_second": round(len(train) / warm_s, 1), "backend": jax.default_backend()}
        print(name, json.dumps(results[name]), flush=True)
    with tarfile.open(out / "gpu_synth.tar", "w") as tar:
        for f in sorted(synth.iterdir()):
            tar.add(f, arcname=f.name)
            f.unlink()
    synth.rmdir()
    return results


def score(folder: Path, threads: int) -> dict:
    """Score the synthetic tables of a GPU run here and merge them into tabdiff_adult.json."""
    measured = json.loads((folder / "tabdiff_gpu.json").read_text())
    train, test = load_adult()
    with tarfile.open(folder / "gpu_synth.tar") as tar:
        for member in tar.getmembers():
            name = member.name.removesuffix(".csv.gz")
            syn = pd.read_csv(tar.extractfile(member), compression="gzip")
            measured["fits"][name]["scores"] = _scores(train, test, syn, 0, threads)
            print(name, json.dumps(measured["fits"][name]["scores"]), flush=True)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results["gpu"] = measured
    write_json(results, OUT)
    return measured


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_out")
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the wiring on a CPU")
    ap.add_argument("--score", default=None, help="a folder brought back from a GPU run: score its samples here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.score:
        score(Path(args.score), args.threads)
        return 0
    import jax

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"command": "python " + " ".join(sys.argv), "backend": jax.default_backend(),
              "devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "cpu_count": os.cpu_count()}
    result["speed"] = speed(rows=512 if args.quick else 65536, repeats=1 if args.quick else 3)
    print("speed", json.dumps(result["speed"]), flush=True)
    write_json(result, out / "tabdiff_gpu.json")
    result["fits"] = run_fits(out, args.quick)
    write_json(result, out / "tabdiff_gpu.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
