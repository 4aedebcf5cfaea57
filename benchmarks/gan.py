"""GAN family and TVAE on Adult (and California): per-epoch speed against the ``ctgan`` package, and quality.

1. Speed, in one run on one machine: seconds per epoch on Adult (32,561 rows, batch 500) of our
   CTGAN-style WGAN-GP and our TVAE against ``ctgan``'s CTGAN and TVAE (PyTorch) with the same
   batch size and layer widths (generator 256-256 residual, critic 256-256 with pac 10, noise 128;
   TVAE 128-128 / latent 128). Ours: the median epoch after the first (the first compiles);
   theirs: the time from the start of training (after their preprocessing) to the end, divided by
   the number of epochs. Preprocessing times are reported beside. Needs the ``bench`` extra
   (``ctgan``); without it only our side is timed.
2. Quality: every model (GAN, CGAN, WGAN, WGAN-GP, CTGAN-style, TVAE, DP-GAN at epsilon 1 and 5)
   fitted on the training split, ``len(train)`` rows sampled, and
   :func:`tabdiff_jax.evaluate.evaluate` against the test split: utility (CatBoost, train on
   synthetic / test on real), shape, trend, detection and DCR.

    .venv/bin/python benchmarks/gan.py [--quick] [--skip-speed] [--skip-quality]
        [--models gan cgan ...] [--datasets adult california] [--epoch-scale 1.0]
        [--out benchmarks/results/gan.json]

Epoch budgets per model are in ``EPOCHS`` (scaled by ``--epoch-scale``); they are far below the
papers' (300 epochs for CTGAN/TVAE) when CPU time is short, and the JSON says what was used.
Wall times on a shared machine vary with its load; the JSON records the 1-minute load average and
the process CPU time beside every wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tabdiff_jax.io import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "adult": ("adult_train.csv", "adult_test.csv", "income"),
    "california": ("california_housing.csv", None, "median_house_value"),
}
# Epochs for the quality table (full runs use 300 for CTGAN / TVAE as the papers; see --epoch-scale).
EPOCHS = {"gan": 30, "cgan": 30, "wgan": 20, "wgan-gp": 20, "ctgan": 100, "tvae": 100, "dpgan-eps1": 10,
          "dpgan-eps5": 10,
          # the other models of the library, in the same table with the same evaluation (None: model defaults,
          # TabDDPM 8,000 steps of batch 1,024; SMOTE has no training)
          "tabddpm": None, "tablediffusion-eps1": 10, "tablediffusion-eps5": 10, "smote": None}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _model(name: str, epochs: int, **options):
    from tabdiff_jax.models.gan import CGAN, CTGAN, GAN, WGAN, WGANGP
    from tabdiff_jax.models.dpgan import DPGAN
    from tabdiff_jax.models.smote import SMOTE
    from tabdiff_jax.models.tabddpm import TabDDPM
    from tabdiff_jax.models.tablediffusion import TableDiffusion
    from tabdiff_jax.models.tvae import TVAE

    classes = {"gan": GAN, "cgan": CGAN, "wgan": WGAN, "wgan-gp": WGANGP, "ctgan": CTGAN, "tvae": TVAE}
    if name == "tabddpm":
        return TabDDPM(**options)
    if name == "smote":
        return SMOTE(**options)
    if name.startswith("tablediffusion-eps"):
        return TableDiffusion(epochs=epochs, epsilon=float(name[len("tablediffusion-eps"):]), **options)
    if name.startswith("dpgan-eps"):
        return DPGAN(epochs=epochs, epsilon=float(name[len("dpgan-eps"):]), **options)
    return classes[name](epochs=epochs, **options)


# ----------------------------------------------------------------------------------------- speed
def _ctgan_epoch_seconds(kind: str, train: pd.DataFrame, discrete: list[str], epochs: int) -> dict:
    """Fit ctgan's CTGAN or TVAE; time training apart from preprocessing (hook on their sampler)."""
    import ctgan.synthesizers.ctgan as ctgan_mod
    import ctgan.synthesizers.tvae as tvae_mod

    marks = {}
    if kind == "ctgan":
        original = ctgan_mod.DataSampler

        class Marked(original):
            def __init__(self, *a, **k):
                marks["train_start"], marks["train_cpu"] = time.perf_counter(), time.process_time()
                super().__init__(*a, **k)

        ctgan_mod.DataSampler, module, attr = Marked, ctgan_mod, "DataSampler"
        model = ctgan_mod.CTGAN(epochs=epochs, batch_size=500, verbose=False)
    else:
        original = tvae_mod.DataLoader

        def Marked(*a, **k):  # noqa: N802
            marks["train_start"], marks["train_cpu"] = time.perf_counter(), time.process_time()
            return original(*a, **k)

        tvae_mod.DataLoader, module, attr = Marked, tvae_mod, "DataLoader"
        model = tvae_mod.TVAE(epochs=epochs, batch_size=500)
    cpu, t0 = time.process_time(), time.perf_counter()
    try:
        model.fit(train, discrete_columns=discrete)
    finally:
        setattr(module, attr, original)
    end, cpu_end = time.perf_counter(), time.process_time()
    return {"epoch_seconds": round((end - marks["train_start"]) / epochs, 4),
            "epoch_cpu_seconds": round((cpu_end - marks["train_cpu"]) / epochs, 4),
            "preprocess_seconds": round(marks["train_start"] - t0, 3), "epochs": epochs,
            "fit_cpu_seconds": round(time.process_time() - cpu, 2), "load_avg_1min": _load()}


def _our_epoch_seconds(kind: str, train: pd.DataFrame, target: str, epochs: int) -> dict:
    from tabdiff_jax.models.gan import CTGAN
    from tabdiff_jax.models.tvae import TVAE

    model = CTGAN(epochs=epochs + 1) if kind == "ctgan" else TVAE(epochs=epochs + 1)
    cpu = time.process_time()
    model.fit(train, target=target, progress=False)
    info = model.fit_info
    return {"epoch_seconds": info["epoch_seconds"], "epoch_cpu_seconds": info["epoch_cpu_seconds"],
            "first_epoch_seconds": info["first_epoch_seconds"],
            "preprocess_seconds": info["preprocess_seconds"], "epochs": epochs + 1,
            "fit_cpu_seconds": round(time.process_time() - cpu, 2), "load_avg_1min": _load()}


def bench_speed(epochs: int, rounds: int, torch_threads: int | None = None) -> dict:
    train_file, _, target = DATASETS["adult"]
    train = pd.read_csv(DATA / train_file)
    discrete = [c for c in train.columns if train[c].dtype == object or pd.api.types.is_string_dtype(train[c])]
    try:
        import ctgan  # noqa: F401
        import torch

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        have_ctgan, torch_threads = True, torch.get_num_threads()
    except ImportError:
        have_ctgan, torch_threads = False, None
    out = {"data": "adult_train.csv", "rows": len(train), "batch_size": 500, "timed_epochs": epochs,
           "torch_threads": torch_threads, "rounds": []}
    # Interleave ours and theirs so that both see the same machine load; repeat for a spread.
    for r in range(rounds):
        entry = {}
        for kind in ("ctgan", "tvae"):
            entry[f"ours_{kind}"] = _our_epoch_seconds(kind, train, target, epochs)
            print(f"[speed round {r}] ours {kind}: {entry[f'ours_{kind}']}", flush=True)
            if have_ctgan:
                entry[f"ctgan_{kind}"] = _ctgan_epoch_seconds(kind, train, discrete, epochs)
                print(f"[speed round {r}] ctgan {kind}: {entry[f'ctgan_{kind}']}", flush=True)
                for unit in ("epoch_seconds", "epoch_cpu_seconds"):
                    ratio = entry[f"ctgan_{kind}"][unit] / entry[f"ours_{kind}"][unit]
                    entry[f"speedup_{kind}_{unit}"] = round(ratio, 2)
        out["rounds"].append(entry)
    if have_ctgan:
        for kind in ("ctgan", "tvae"):
            for unit in ("epoch_seconds", "epoch_cpu_seconds"):
                values = [e[f"speedup_{kind}_{unit}"] for e in out["rounds"]]
                out[f"speedup_{kind}_{unit}_median"] = float(np.median(values))
    return out


# --------------------------------------------------------------------------------------- quality
def _tables(dataset: str, quick: bool):
    train_file, test_file, target = DATASETS[dataset]
    df = pd.read_csv(DATA / train_file)
    if test_file is None:  # California: a seeded 80/20 split
        idx = np.random.default_rng(0).permutation(len(df))
        cut = int(0.8 * len(df))
        train, test = df.iloc[idx[:cut]].reset_index(drop=True), df.iloc[idx[cut:]].reset_index(drop=True)
    else:
        train, test = df, pd.read_csv(DATA / test_file)
    if quick:
        train, test = train.sample(3000, random_state=0), test.sample(2000, random_state=0)
    return train, test, target


def bench_quality(dataset: str, models: list[str], scale: float, quick: bool, done: dict | None = None,
                  save=None) -> dict:
    from threadpoolctl import threadpool_limits

    from tabdiff_jax.evaluate import evaluate

    train, test, target = _tables(dataset, quick)
    results = {"data": dataset, "rows": {"train": len(train), "test": len(test)}, "models": dict(done or {})}
    for name in models:
        if name in results["models"]:
            print(f"[quality {dataset}] {name}: kept from the previous run (--resume)", flush=True)
            continue
        if EPOCHS[name] is None:
            epochs = None
        else:
            epochs = max(1, int(round(EPOCHS[name] * scale))) if not quick else 2
        options = {}
        if name == "cgan" and dataset == "california":
            options = {"condition_column": "ocean_proximity"}  # numeric target: condition on its categorical column
        if name == "tabddpm" and quick:
            options = {"steps": 100}
        model = _model(name, epochs, **options)
        load, cpu, t0 = _load(), time.process_time(), time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(train, target=target, progress=False)
        fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - cpu
        info = model.fit_info
        if epochs is None and "steps" in info:
            epochs = f"{info['steps']} steps"
        t1 = time.perf_counter()
        synthetic = model.sample(len(train), seed=1)
        sample_s = time.perf_counter() - t1
        with threadpool_limits(1):
            report = evaluate(train, synthetic, test=test, target=target, threads=1, sdmetrics_rows=2000,
                              skip=("coverage",))
        r = report.to_dict()
        util = r.get("utility") or {}
        metric = util.get("metric")
        entry = {
            "epochs": epochs, "fit_seconds": round(fit_s, 1), "sample_seconds": round(sample_s, 2),
            "epoch_seconds": info.get("epoch_seconds"), "fit_cpu_seconds": round(fit_cpu, 1),
            "load_avg_1min": load, "utility_metric": metric,
            "utility_real": (util.get("real") or {}).get(metric),
            "utility_synthetic": (util.get("synthetic") or {}).get(metric),
            "shape": r["fidelity"]["shape"], "trend": r["fidelity"]["trend"],
            "detection_auc": r["fidelity"].get("detection_auc"),
            "dcr": {k: v for k, v in (r.get("privacy") or {}).items() if "dcr" in k.lower() or "closer" in k.lower()},
            "evaluation_seconds": r.get("timings", {}).get("total"),
        }
        if "epsilon" in info:
            entry.update(epsilon=info["epsilon"], delta=info["delta"], epsilon_spent=info["epsilon_spent"],
                         noise_multiplier=info.get("noise_multiplier", (info.get("privacy") or {}).get("noise_multiplier")))
        results["models"][name] = entry
        if save is not None:
            save(results)
        summary = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "dcr")
        print(f"[quality {dataset}] {name}: {summary}", flush=True)
    return results


def markdown_table(quality: dict) -> str:
    lines = ["| model | epochs | utility synthetic (real) | shape | trend | detection AUC | DCR median "
             "(holdout) | closer to train | s/epoch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    for name, e in quality["models"].items():
        d = e["dcr"]
        lines.append(f"| {name} | {e['epochs']} | {fmt(e['utility_synthetic'])} ({fmt(e['utility_real'])}) "
                     f"| {fmt(e['shape'])} | {fmt(e['trend'])} | {fmt(e['detection_auc'])} "
                     f"| {fmt(d.get('dcr_median'))} ({fmt(d.get('dcr_holdout_median'))}) "
                     f"| {fmt(d.get('closer_to_train_share'))} | {e.get('epoch_seconds') or 'n/a'} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 timed epochs, one round, small tables")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--speed-epochs", type=int, default=5, help="timed epochs per speed run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved speed rounds")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for ctgan (default: torch's, one per core)")
    parser.add_argument("--models", nargs="+", default=list(EPOCHS), choices=list(EPOCHS))
    parser.add_argument("--datasets", nargs="+", default=["adult"], choices=list(DATASETS))
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="multiply the EPOCHS budgets")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gan.json"))
    parser.add_argument("--resume", action="store_true", help="keep the models already in --out, run the rest")
    args = parser.parse_args(argv)
    import jax

    out = {"benchmark": "GAN family and TVAE: per-epoch speed vs the ctgan package, quality on real tables",
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax_backend": jax.default_backend(),
                       "devices": [str(d) for d in jax.devices()], "load_average_1min_start": _load()},
           "quick": args.quick}
    if not args.skip_speed:
        out["speed"] = bench_speed(2 if args.quick else args.speed_epochs, 1 if args.quick else args.rounds,
                                   args.torch_threads)
        write_json(out, args.out)
    previous = {}
    if args.resume and Path(args.out).exists():
        import json

        previous = json.loads(Path(args.out).read_text())
        out = {**previous, **{k: v for k, v in out.items() if k != "machine"}}
    if not args.skip_quality:
        out.setdefault("quality", {})

        def save(partial, dataset):
            out["quality"][dataset] = partial
            write_json(out, args.out)

        for dataset in args.datasets:
            done = (previous.get("quality", {}).get(dataset) or {}).get("models", {})
            out["quality"][dataset] = bench_quality(dataset, args.models, args.epoch_scale, args.quick, done,
                                                    save=lambda partial, d=dataset: save(partial, d))
            out["quality"][dataset]["markdown"] = markdown_table(out["quality"][dataset])
            write_json(out, args.out)
            print(out["quality"][dataset]["markdown"], flush=True)
    write_json(out, args.out)
    return out


if __name__ == "__main__":
    main()
