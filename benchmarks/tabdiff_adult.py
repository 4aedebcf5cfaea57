"""TabDiff on Adult: sampler speed against TabDDPM, and quality at a fit budget.

    python benchmarks/tabdiff_adult.py --speed                          # rows/s: TabDiff 50 steps vs TabDDPM T=100
    python benchmarks/tabdiff_adult.py --max-seconds 95 --tag budget_tabddpm   # TabDDPM's default fit wall-clock
    python benchmarks/tabdiff_adult.py --steps 20000 --tag recipe30     # a recipe (<= 30 min of fit)
    python benchmarks/tabdiff_adult.py --options '{"hidden_dims": [512, 512]}' ...
    python benchmarks/tabdiff_adult.py --load MODEL --rows 32561,216000 --sample-seeds 1,2,3 --tag T

Train on /work/shared/data adult_train.csv (target income), sample as many rows, score on the test split
with :func:`tabdiff_jax.evaluate.evaluate` (CatBoost F1 macro, shape, trend, boosted detection) and the
share of rows keeping Adult's education <-> education-num one-to-one mapping. Results are merged into
benchmarks/results/tabdiff_adult.json under ``--tag`` with the command line and the load average.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tabdiff_jax.io import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "tabdiff_adult.json"


def load_adult() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Adult's train and test splits: ../shared/data where it exists, else the copy bundled in the package."""
    if (DATA / "adult_train.csv").exists():
        return pd.read_csv(DATA / "adult_train.csv"), pd.read_csv(DATA / "adult_test.csv")
    from tabdiff_jax import datasets

    return datasets.load("adult")


def education_mapping_share(real: pd.DataFrame, syn: pd.DataFrame) -> float:
    """Share of synthetic rows whose (education, education-num) pair occurs in the real table."""
    pairs = set(zip(real["education"].astype(str), real["education-num"].astype(float)))
    got = zip(syn["education"].astype(str), pd.to_numeric(syn["education-num"], errors="coerce").astype(float))
    return float(np.mean([p in pairs for p in got]))


def speed(rows: int = 8192, repeats: int = 3, hidden_dims=(256, 256), train=None, target: str = "income") -> dict:
    """Rows/s of the TabDiff sampler (50 steps with Heun's, the multistep or no correction; 25 with Heun's) and
    TabDDPM's (T = 100), on the same network (random weights: the cost does not depend on them), for the
    table ``train`` (default: Adult) with ``target``."""
    import jax
    from flax import nnx

    from tabdiff_jax.diffusion import samplers
    from tabdiff_jax.diffusion import tabddpm as dm
    from tabdiff_jax.diffusion import tabdiff as td
    from tabdiff_jax.diffusion import tabdiff_sampler as tds
    from tabdiff_jax.preprocess import Preprocessor
    from tabdiff_jax.state import split_params
    from tabdiff_jax.table import split_target

    if train is None:
        train, _ = load_adult()
    pre = Preprocessor(numeric="quantile").fit(train, target=target)
    config = dm.DiffusionConfig.from_layout(pre.layout, num_timesteps=100)
    kwargs = {}
    if config.num_classes:  # TabDDPM draws the class label from the training frequencies
        _, y = split_target(pre.encode(train))
        kwargs["class_probs"] = np.bincount(np.asarray(y), minlength=config.num_classes) / len(y)

    out = {"rows": rows, "hidden_dims": list(hidden_dims), "backend": jax.default_backend(), "repeats": repeats,
           "timing": "best of the repeats, the samplers taking turns (a change of load hits them alike)"}
    g, p = split_params(dm.make_denoiser(config, hidden_dims=hidden_dims, rngs=nnx.Rngs(0)))
    calls = {"tabddpm_T100": lambda s: samplers.sample(p, g, config, jax.random.key(s), rows, **kwargs)}
    tconfig = td.TabDiffConfig.from_layout(pre.layout)
    tg, tp = split_params(td.make_network(tconfig, hidden_dims=hidden_dims, rngs=nnx.Rngs(0)))
    runs = (("tabdiff_50_correction", 50, "heun"), ("tabdiff_50_multistep", 50, "multistep"),
            ("tabdiff_50_no_correction", 50, "none"), ("tabdiff_25_correction", 25, "heun"))
    for name, steps, corr in runs:
        calls[name] = functools.partial(lambda s, st, c: tds.sample(tp, tg, tconfig, jax.random.key(s), rows, steps=st,
                                                                    correction=c), st=steps, c=corr)
    for fn in calls.values():
        jax.block_until_ready(fn(0))  # compile
    best, cpu = {name: np.inf for name in calls}, {name: np.inf for name in calls}
    for r in range(repeats):
        for name, fn in calls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(r + 1))
            best[name] = min(best[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    for name in calls:  # CPU seconds: the work done, less sensitive than the wall clock to other jobs
        out[name] = {"rows_per_second": round(rows / best[name], 1), "seconds": round(best[name], 3),
                     "speedup_vs_tabddpm_T100": round(best["tabddpm_T100"] / best[name], 2),
                     "cpu_seconds": round(cpu[name], 3),
                     "cpu_speedup_vs_tabddpm_T100": round(cpu["tabddpm_T100"] / cpu[name], 2)}
    out["load_at_end"] = os.getloadavg()
    return out


def target_probabilities(model, df: pd.DataFrame, t: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """``(p, y)``: a fitted TabDiff's ``p(target | every other column)`` for the rows of ``df`` (the target
    block masked, the other categories given, the numbers clean, the network at time ``t``: the distribution
    ``target_last`` draws the class from at its last step) and the rows' true codes."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from tabdiff_jax.blocks import block_offsets
    from tabdiff_jax.diffusion import tabdiff as td

    cfg, gb = model._config, model._config.guided_block
    sizes = cfg.categorical_sizes
    net = nnx.merge(model._graphdef, model._params)
    rho, _ = net.exponents(cfg)
    enc = model.preprocessor.encode(df)
    x_num, codes = jnp.asarray(enc.numeric, jnp.float32), np.asarray(enc.categorical)
    masked = codes.copy()
    masked[:, gb] = sizes[gb]
    tt = jnp.full((len(df),), t, jnp.float32)
    sigma = td.power_mean_sigma(tt[:, None], rho, cfg.sigma_min, cfg.sigma_max)
    _, logits = td.denoise(net, cfg, x_num, td.masked_onehot(jnp.asarray(masked), cfg), tt, sigma)
    off = block_offsets(sizes)[gb]
    return np.asarray(jax.nn.softmax(logits[:, off:off + sizes[gb]], axis=-1)), codes[:, gb]


def classifier_check(model, train, test) -> dict:
    """How well the model's own ``p(income | x)`` classifies the training and the test rows: the class
    ``target_last`` gives a synthetic row comes from it, so its test quality bounds what a classifier
    trained on the synthetic rows can learn."""
    from sklearn.metrics import f1_score, log_loss

    out = {}
    for name, df in (("train", train), ("test", test)):
        p, y = target_probabilities(model, df)
        pred = p.argmax(1)
        out[name] = {"accuracy": round(float(np.mean(pred == y)), 4), "log_loss": round(float(log_loss(y, p)), 4),
                     "f1_macro": round(float(f1_score(y, pred, average="macro")), 4)}
    return out


def _scores(train, test, syn, seed, threads) -> dict:
    import tabdiff_jax.evaluate as ev

    r = ev.evaluate(train, syn, test=test, target="income", task="classification", seed=seed, threads=threads,
                    skip=("coverage", "sdmetrics_dcr")).to_dict()
    util, fid = r["utility"], r["fidelity"]
    metric = util["metric"]
    auc = fid.get("detection_auc")
    return {"real": util["real"][metric], "synthetic": util["synthetic"][metric], "metric": metric,
            "shape": fid["shape"], "trend": fid["trend"], "detection_auc": auc,
            "boosted_detection_score": None if auc is None else 1.0 - max(0.0, 2.0 * auc - 1.0),
            "education_mapping_share": education_mapping_share(train, syn)}


def quality(options: dict, steps, max_seconds, seed: int, threads: int, compare_correction: bool = False,
            save: str = None, load: str = None, rows=None, sample_seeds=None) -> dict:
    """Fit (or ``load``) a TabDiff on Adult and score samples of it: one per sample seed (default ``seed + 1``),
    each scored at every size in ``rows`` (default: as many rows as the training split). The sizes are nested:
    row ``i`` depends only on (seed, i), so the largest sample is drawn once and its first ``n`` rows are the
    sample of ``n`` rows. TabDDPM's published Adult figure used 216,000 sampled rows (its tuned
    ``num_samples``, about 8x its 26,048 training rows)."""
    from tabdiff_jax.models.tabdiff import TabDiff

    train, test = load_adult()
    load0 = os.getloadavg()
    fit_s = None
    if load:
        model = TabDiff.load(load)
    else:
        model = TabDiff(**options)
        t0 = time.perf_counter()
        fit_kwargs = {} if steps is None else {"steps": steps}
        model.fit(train, target="income", seed=seed, progress=False, max_seconds=max_seconds, **fit_kwargs)
        fit_s = round(time.perf_counter() - t0, 1)
        if save:
            model.save(save)
    sizes = sorted(set(rows or [len(train)]))
    seeds = list(sample_seeds or [seed + 1])
    by_rows = []
    for s in seeds:
        t0 = time.perf_counter()
        big = model.sample(sizes[-1], seed=s)
        sample_s = round(time.perf_counter() - t0, 1)
        for n in sizes:
            syn = big.iloc[:n].reset_index(drop=True)
            by_rows.append({"sample_seed": s, "rows": n, "sample_seconds_of_largest": sample_s,
                            **_scores(train, test, syn, seed, threads)})
    out = dict(by_rows[0])  # the first seed at the smallest size: the keys of the earlier runs
    if model._config.guided_block is not None:
        out["classifier_check"] = classifier_check(model, train, test)
    if len(by_rows) > 1:
        out["by_rows"] = by_rows
        out["mean_by_rows"] = {str(n): {k: round(float(np.mean([r[k] for r in by_rows if r["rows"] == n])), 4)
                                        for k in ("synthetic", "shape", "trend", "detection_auc")} for n in sizes}
    if compare_correction:  # the same model, sampled without the correction step (half the network calls)
        t0 = time.perf_counter()
        plain = model.sample(len(train), seed=seeds[0], correction=False)
        plain_s = round(time.perf_counter() - t0, 1)  # includes compiling the sampler without correction
        out["no_correction"] = {**_scores(train, test, plain, seed, threads), "sample_seconds": plain_s}
    info = model.fit_info or {}
    return {**out, "fit_seconds": fit_s, "loaded_from": load, "steps": info.get("steps"),
            "steps_per_second": info.get("steps_per_second"), "rho": info.get("rho"), "k": info.get("k"),
            "config": model.settings, "load_at_start": load0, "load_at_end": os.getloadavg()}


def _ints(text):
    return None if text is None else [int(v) for v in text.split(",") if v.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="--speed: timed calls per sampler (best kept)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--options", default="{}", help="TabDiff options as JSON")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="default")
    ap.add_argument("--compare-correction", action="store_true", help="also sample without the correction step")
    ap.add_argument("--save", default=None, help="save the fitted model to this folder")
    ap.add_argument("--load", default=None, help="score this saved model instead of fitting one")
    ap.add_argument("--rows", default=None, help="comma-separated sample sizes (default: the training rows)")
    ap.add_argument("--sample-seeds", default=None, help="comma-separated sample seeds (default: --seed + 1)")
    args = ap.parse_args(argv)
    result = speed(repeats=args.repeats) if args.speed else quality(json.loads(args.options), args.steps, args.max_seconds, args.seed,
                                                 args.threads, args.compare_correction, args.save, args.load,
                                                 _ints(args.rows), _ints(args.sample_seeds))
    result["command"] = "python " + " ".join(sys.argv)
    result["cpu_count"] = os.cpu_count()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results["speed" if args.speed else args.tag] = result
    write_json(results, OUT)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
