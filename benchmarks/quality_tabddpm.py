"""TabDDPM quality on the paper's benchmark tables: train on synthetic, test on real.

For each data set: fit :class:`tabdiff_jax.TabDDPM` on the training split, sample as many rows,
and score with :func:`tabdiff_jax.evaluate.evaluate` (CatBoost F1 macro / R2 on the test split,
shape, DCR). For Adult the SMOTE baseline's DCR is measured on the same split. Fit and sampling
times, steps and batch size are recorded with the machine (CPU count, JAX backend).

    python benchmarks/quality_tabddpm.py                       # all four, model defaults
    python benchmarks/quality_tabddpm.py --datasets adult --steps 4000 --batch-size 1024
    python benchmarks/quality_tabddpm.py --datasets california --hidden-dims 512,512,512 --steps 15000 \
        --sample-factor 4 --tag _recipe                        # the California recipe (R2 >= 0.80)
    python benchmarks/quality_tabddpm.py --quick               # a smoke run (few steps)
    python benchmarks/quality_tabddpm.py --speed               # steps/s (batch 1024, 4096), rows/s (T=100, 1000)

Results are merged into benchmarks/results/quality_tabddpm.json (one entry per data set).
Acceptance (issue 5): Adult F1 >= 0.78 with shape > 0.95 and DCR median above SMOTE's;
California R2 >= 0.80; Insurance and Abalone within 0.03 of real.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tabdiff_jax.io import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "quality_tabddpm.json"

# name -> (train file, test file or None for a seeded 80/20 split, target, task)
DATASETS = {
    "adult": ("adult_train.csv", "adult_test.csv", "income", "classification"),
    "california": ("california_housing.csv", None, "median_house_value", "regression"),
    "insurance": ("insurance.csv", None, "charges", "regression"),
    "abalone": ("abalone.csv", None, "rings", "regression"),
    "king": ("king.csv", None, "price", "regression"),
}
# Paper figures (real / TabDDPM), from ../shared/data/README.md.
PAPER = {"adult": (0.815, 0.795), "california": (0.857, 0.836), "insurance": (0.814, 0.809),
         "abalone": (0.556, 0.550), "king": (0.907, 0.833)}


def load_split(name: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    train_file, test_file, _, _ = DATASETS[name]
    df = pd.read_csv(DATA / train_file)
    if test_file is not None:
        return df, pd.read_csv(DATA / test_file)
    perm = np.random.default_rng(seed).permutation(len(df))
    cut = int(round(0.8 * len(df)))
    return df.iloc[perm[:cut]].reset_index(drop=True), df.iloc[perm[cut:]].reset_index(drop=True)


def run_one(name: str, options: dict, fit_kwargs: dict, seed: int, threads: int, smote: bool,
            run_dir=None, sample_factor: float = 1.0) -> dict:
    import tabdiff_jax.evaluate as ev
    from tabdiff_jax.models.tabddpm import TabDDPM

    train, test = load_split(name, seed)
    _, _, target, task = DATASETS[name]
    model = TabDDPM(**options)
    resumed = run_dir is not None and (Path(run_dir) / "checkpoints").is_dir()
    t0 = time.perf_counter()
    model.fit(train, target=target, task=task, seed=seed, progress=True, run_dir=run_dir, resume=resumed,
              **fit_kwargs)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_synthetic = int(round(sample_factor * len(train)))
    syn = model.sample(n_synthetic, seed=seed + 1)
    sample_s = time.perf_counter() - t0
    report = ev.evaluate(train, syn, test=test, target=target, task=task, seed=seed, threads=threads,
                         skip=("detection", "coverage", "sdmetrics_dcr"))
    r = report.to_dict()
    util = r["utility"]
    metric = util["metric"]
    out = {
        "dataset": name, "target": target, "task": task, "rows_train": len(train), "rows_test": len(test),
        "rows_synthetic": n_synthetic, "sample_factor": sample_factor,
        "metric": metric, "real": util["real"][metric], "synthetic": util["synthetic"][metric], "gap": util["gap"],
        "paper_real_tabddpm": PAPER[name], "shape": r["fidelity"]["shape"], "trend": r["fidelity"]["trend"],
        "dcr_median": r["privacy"]["dcr_median"], "dcr_holdout_median": r["privacy"]["dcr_holdout_median"],
        "exact_copies": r["privacy"].get("exact_copy_rate", r["privacy"].get("exact_copies")),
        "fit_seconds": round(fit_s, 1), "sample_seconds": round(sample_s, 1),
        "steps": model.fit_info["steps"], "batch_size": model.fit_info["batch_size"],
        "steps_per_second": model.fit_info["steps_per_second"], "final_loss": model.fit_info["final_loss"],
        "config": model.settings, "resumed_from_checkpoint": resumed,
    }
    if smote:
        from tabdiff_jax.models.smote import SMOTE

        sm = SMOTE().fit(train, target=target, task=task, seed=seed, progress=False)
        sm_syn = sm.sample(len(train), seed=seed + 1)
        sm_rep = ev.evaluate(train, sm_syn, test=test, target=target, task=task, seed=seed, threads=threads,
                             skip=("detection", "coverage", "sdmetrics_dcr"))
        sr = sm_rep.to_dict()
        out["smote"] = {"synthetic": sr["utility"]["synthetic"][metric], "shape": sr["fidelity"]["shape"],
                        "dcr_median": sr["privacy"]["dcr_median"]}
        out["dcr_above_smote"] = out["dcr_median"] > out["smote"]["dcr_median"]
    if name == "adult":
        out["pass"] = bool(out["synthetic"] >= 0.78 and out["shape"] > 0.95 and out.get("dcr_above_smote", True))
    elif name == "california":
        out["pass"] = bool(out["synthetic"] >= 0.80)
    else:
        out["pass"] = bool(out["gap"] <= 0.03)
    return out


def speed(batches=(1024, 4096), timesteps=(100, 1000), sample_rows=8192, repeats=20) -> dict:
    """Training steps/s and sampling rows/s of the default TabDDPM network on Adult's encoded shapes."""
    import jax
    from flax import nnx

    from tabdiff_jax.diffusion import samplers
    from tabdiff_jax.diffusion import tabddpm as dm
    from tabdiff_jax.models.tabddpm import TABDDPM_DEFAULTS
    from tabdiff_jax.preprocess import Preprocessor
    from tabdiff_jax.state import init_train_state, split_params
    from tabdiff_jax.table import split_target

    train, _ = load_split("adult")
    pre = Preprocessor(numeric="quantile").fit(train, target="income")
    feats, y = split_target(pre.encode(train))
    data = dm.TableBatch(feats.numeric, feats.categorical, y)
    probs = np.bincount(np.asarray(y)) / len(y)
    layers = tuple(TABDDPM_DEFAULTS["hidden_dims"])
    out = {"hidden_dims": list(layers), "train": {}, "sample": {}}
    for T in timesteps:
        config = dm.DiffusionConfig.from_layout(pre.layout, num_timesteps=T)
        graphdef, params = split_params(dm.make_denoiser(config, hidden_dims=layers, rngs=nnx.Rngs(0)))
        if T == timesteps[0]:
            for batch in batches:
                opt = dm.make_annealed_adamw(num_steps=10_000)
                step = dm.make_train_step(graphdef, opt, config, batch_size=batch)
                state = init_train_state(params, opt)
                state, _ = step(state, data, jax.random.key(0))
                jax.block_until_ready(state)
                t0 = time.perf_counter()
                for i in range(repeats):
                    state, _ = step(state, data, jax.random.key(i))
                jax.block_until_ready(state)
                out["train"][str(batch)] = round(repeats / (time.perf_counter() - t0), 2)
        kw = dict(class_probs=probs, chunk_size=sample_rows)
        samplers.sample(params, graphdef, config, jax.random.key(0), sample_rows, **kw)  # compile
        t0 = time.perf_counter()
        samplers.sample(params, graphdef, config, jax.random.key(1), sample_rows, **kw)
        out["sample"][f"T={T}"] = round(sample_rows / (time.perf_counter() - t0), 1)
    out["units"] = "train: steps/s at each batch size; sample: rows/s (ancestral, all T steps, chunk of 8192)"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="adult,california,insurance,abalone")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--hidden-dims", default=None, help="comma-separated widths, e.g. 512,512,512")
    p.add_argument("--timesteps", type=int, default=None)
    p.add_argument("--sample-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--ema", type=float, default=None)
    p.add_argument("--sample-factor", type=float, default=1.0,
                   help="synthetic rows per training row (the paper's California run sampled 52,800 = 4x its "
                        "13,209 training rows; the utility model trains on all of them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=-1, help="CatBoost threads")
    p.add_argument("--no-smote", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: 200 steps, T=50")
    p.add_argument("--tag", default="", help="suffix of the result key (keeps several runs)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--speed", action="store_true", help="only measure steps/s and sampling rows/s")
    p.add_argument("--run-dir", default=None, help="keep checkpoints here (a killed run resumes from them)")
    args = p.parse_args(argv)

    options = {}
    if args.hidden_dims:
        options["hidden_dims"] = [int(w) for w in args.hidden_dims.split(",")]
    for key, value in (("num_timesteps", args.timesteps), ("num_sample_steps", args.sample_steps), ("lr", args.lr),
                       ("ema_decay", args.ema)):
        if value is not None:
            options[key] = value
    fit_kwargs = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None}
    if args.quick:
        options.setdefault("num_timesteps", 50)
        fit_kwargs.setdefault("steps", 200)

    import jax

    machine = {"cpu_count": os.cpu_count(), "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
               "platform": platform.platform(), "load_average_at_start": os.getloadavg()}
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.speed:
        results["speed" + args.tag] = {**speed(), "machine": {**machine, "load_average_at_end": os.getloadavg()}}
        print(json.dumps(results["speed" + args.tag], indent=1))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(results, path)
        return 0
    for name in args.datasets.split(","):
        t0 = time.perf_counter()
        run_dir = None if args.run_dir is None else Path(args.run_dir) / (name + args.tag)
        entry = run_one(name, options, fit_kwargs, args.seed, args.threads, smote=(name == "adult" and not args.no_smote),
                        run_dir=run_dir, sample_factor=args.sample_factor)
        entry["machine"] = {**machine, "load_average_at_end": os.getloadavg()}
        entry["total_seconds"] = round(time.perf_counter() - t0, 1)
        results[name + args.tag] = entry
        print(json.dumps({k: v for k, v in entry.items() if k not in ("config", "machine", "final_loss")}, indent=1),
              flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(results, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
