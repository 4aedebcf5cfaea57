"""Batch generation at scale: Adult TabDDPM rows streamed to parquet parts, one process against four.

A TabDDPM is fitted briefly on Adult (``--fit-steps``, default 200: speed, not quality) into a run
folder. For each N in ``--rows`` (default 1,000,000 and 10,000,000):

* one process (this one, the model loaded from the run folder) writes N rows into ``DIR/`` as parts
  of ``--rows-per-part`` rows: wall time, rows/s, and peak RSS (a thread sampling /proc/self/statm)
  against the RSS before sampling, which shows memory bounded by the part size, not by N;
* ``--processes`` (default 4) separate CLI processes (``tabdiff-jax sample ... --part i --of 4``) fill
  another folder at the same time: wall time, rows/s, the largest worker's peak RSS;
* the two folders are compared part by part, byte for byte (sha256), and both manifests must be
  complete.

    .venv/bin/python benchmarks/generate.py                      # N = 1M and 10M (long on a CPU)
    .venv/bin/python benchmarks/generate.py --rows 20000 --rows-per-part 5000   # a smoke run

Writes benchmarks/results/generate.json (atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE))
RESULTS = HERE / "results"


def pid_rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class ChildPeaks:
    """Peak RSS of each of some child processes, sampled every ``interval_s`` in a thread."""

    def __init__(self, pids, interval_s: float = 0.05):
        self.peaks = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _run(self, interval_s):
        while not self._stop.wait(interval_s):
            for pid in self.peaks:
                self.peaks[pid] = max(self.peaks[pid], pid_rss_mib(pid))

    def close(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.peaks


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("part-*.parquet"))}


def fit_run(run: Path, steps: int, seed: int) -> float:
    from tabdiff_jax import TabDDPM, datasets

    train, _ = datasets.load("adult")
    t0 = time.perf_counter()
    TabDDPM(steps=steps).fit(train, target="income", seed=seed, run_dir=run, progress=False)
    return time.perf_counter() - t0


def one_process(run: Path, out: Path, n: int, seed: int, rows_per_part: int) -> dict:
    from speed import RssMonitor, rss_mib

    from tabdiff_jax.runs import load_run

    model = load_run(run)
    model.sample(min(rows_per_part, n), seed=seed + 1)  # compile outside the timing (as each worker does once)
    monitor, before = RssMonitor(), rss_mib()
    with monitor.track("sample"):
        t0 = time.perf_counter()
        summary = model.sample_to(f"{out}/", n, seed=seed, rows_per_part=rows_per_part)
        wall = time.perf_counter() - t0
    monitor.close()
    return {"wall_s": round(wall, 2), "rows_per_s": round(n / wall, 1), "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(monitor.peaks["sample"], 1), "complete": summary["complete"],
            "parts": len(summary["parts_written"])}


def k_processes(run: Path, out: Path, n: int, seed: int, rows_per_part: int, k: int) -> dict:
    command = [sys.executable, "-m", "tabdiff_jax.cli", "sample", str(run), "-n", str(n), "--seed", str(seed),
               "--rows-per-part", str(rows_per_part), "--no-progress", "-o", f"{out}/"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(command + ["--part", str(i), "--of", str(k)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(k)]
    peaks = ChildPeaks([p.pid for p in procs])
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    rss = peaks.close()
    failed = [(i, err.strip().splitlines()[-1:]) for i, (p, (_, err)) in enumerate(zip(procs, outputs)) if p.returncode]
    if failed:
        raise SystemExit(f"worker(s) failed: {failed}")
    from tabdiff_jax.io import read_json

    manifest = read_json(out / "_manifest.json")
    return {"processes": k, "wall_s": round(wall, 2), "rows_per_s": round(n / wall, 1),
            "max_worker_peak_rss_mib": round(max(rss.values()), 1), "complete": manifest["complete"],
            "worker_lines": [o.strip().splitlines()[-1] if o.strip() else "" for o, _ in outputs]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000], help="N values")
    parser.add_argument("--rows-per-part", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--split-max-rows", type=int, default=1_000_000,
                        help="replay N as --processes row ranges only for N up to this (the split of 10M rows would "
                             "double a long run and shows nothing the 1M split does not)")
    parser.add_argument("--fit-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="folder for the run and the datasets (default: a temporary one, removed)")
    parser.add_argument("--out", default=str(RESULTS / "generate.json"))
    args = parser.parse_args(argv)

    import jax

    from tabdiff_jax import __version__
    from tabdiff_jax.io import write_json

    work = Path(args.work or tempfile.mkdtemp(prefix="tabdiff-generate-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run = work / "run"
        fit_s = fit_run(run, args.fit_steps, args.seed) if not (run / "model.json").exists() else None
        results = []
        for n in args.rows:
            single, split = work / f"one-{n}", work / f"split-{n}"
            for folder in (single, split):
                shutil.rmtree(folder, ignore_errors=True)
            one = one_process(run, single, n, args.seed + 1, args.rows_per_part)
            a = digests(single)
            size = sum(p.stat().st_size for p in single.glob("part-*.parquet"))
            many, same = None, None
            if n <= args.split_max_rows:
                many = k_processes(run, split, n, args.seed + 1, args.rows_per_part, args.processes)
                same = a == digests(split) and len(a) > 0
            shutil.rmtree(single, ignore_errors=True)
            shutil.rmtree(split, ignore_errors=True)
            results.append({"n": n, "rows_per_part": args.rows_per_part, "parts": len(a), "dataset_mib": round(size / 2**20, 1),
                            "one_process": one, "split": many, "identical_bytes": same})
            split_line = (f"{args.processes} processes {many['rows_per_s']:,.0f} rows/s; identical: {same}"
                          if many else "no split run")
            print(f"N={n:,}: one process {one['rows_per_s']:,.0f} rows/s, peak RSS {one['peak_rss_mib']:.0f} MiB; "
                  f"{split_line}", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {"benchmark": "generate", "library": __version__, "backend": jax.default_backend(),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2)},
              "model": {"name": "tabddpm", "fit_steps": args.fit_steps, "fit_seconds": None if fit_s is None else round(fit_s, 1)},
              "notes": ["one_process: the model loaded and its sampler compiled before the clock starts; RSS before "
                        "includes the fit in this process", "split: wall time from launching the workers to the last "
                        "exit, so it includes each worker's start, imports, model load and compile (worker_lines give "
                        "each writer's own time)"],
              "results": results}
    write_json(report, args.out)
    print()
    print("| N | parts | one process rows/s | RSS before -> peak (MiB) | "
          f"{args.processes} processes rows/s | worker peak RSS (MiB) | byte-identical |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        o, s = r["one_process"], r["split"]
        split_cells = (f"{s['rows_per_s']:,.0f} | {s['max_worker_peak_rss_mib']:.0f} | {r['identical_bytes']}"
                       if s else "- | - | -")
        print(f"| {r['n']:,} | {r['parts']} | {o['rows_per_s']:,.0f} | {o['rss_before_mib']:.0f} -> {o['peak_rss_mib']:.0f} | "
              f"{split_cells} |")
    if not all(r["one_process"]["complete"] and (r["split"] is None or (r["identical_bytes"] and r["split"]["complete"]))
               for r in results):
        raise SystemExit("the split datasets differ from the one-process datasets")
    return report


if __name__ == "__main__":
    main()
