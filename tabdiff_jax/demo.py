"""``tabdiff-jax demo``: the main job. Fit TabDDPM on the bundled Adult table, sample, evaluate.

Writes into the output folder (default ``./tabdiff-demo``):

* ``model/``: the fitted model (``tabdiff_jax.load("tabdiff-demo/model")``) with ``run.json``;
* ``synthetic.csv``: as many synthetic rows as the test split has;
* ``report.md``, ``report.json`` and ``plots/``: utility (train on synthetic, test on Adult's test
  split), fidelity and privacy, with the real-data baseline beside.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import pandas as pd

from tabdiff_jax.errors import ConfigError


def round_trip_check(df: pd.DataFrame, numeric: str = "quantile") -> dict:
    """Fit the shared preprocessor on ``df`` and report how exactly ``decode(encode(df))`` comes back."""
    from tabdiff_jax.preprocess import Preprocessor

    pre = Preprocessor(numeric=numeric).fit(df)
    back = pre.decode(pre.encode(df))
    exact = {c: bool(df[c].equals(back[c])) for c in df.columns}
    return {"columns_equal": list(back.columns) == list(df.columns),
            "dtypes_equal": bool((back.dtypes == df.dtypes).all()),
            "exact_columns": sum(exact.values()), "columns": len(exact)}


def run_demo(out: str | Path = "tabdiff-demo", steps: Optional[int] = None, seed: int = 0,
             quick: bool = False, progress: bool = True, sensitive: Optional[str] = None) -> dict:
    """Run the demo; ``quick`` trains a tiny model on 2,000 rows (a smoke test, not a result);
    ``sensitive`` (e.g. ``"sex"``) adds the fairness section to the report."""
    from tabdiff_jax import datasets, validate
    from tabdiff_jax.evaluate import evaluate
    from tabdiff_jax.io import write_json, write_table
    from tabdiff_jax.models.tabddpm import TabDDPM

    seed = validate.seed(seed)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    train, test = datasets.load("adult")
    info = datasets.BUNDLED["adult"]
    if sensitive is not None:  # refuse a bad column before the fit, not after it
        from tabdiff_jax.evaluate.columns import prepare
        from tabdiff_jax.evaluate.fairness import check_sensitive

        columns, tables = prepare(train, {"test": test}, target=info.target)
        check_sensitive(sensitive, columns, "classification", tables, set())
    options = {}
    if quick:
        rows = validate.seed32(seed)  # pandas' (NumPy's legacy) seeding stops at 2**32
        train = train.sample(n=2000, random_state=rows).reset_index(drop=True)
        test = test.sample(n=1000, random_state=rows).reset_index(drop=True)
        options = dict(steps=60, batch_size=256, hidden_dims=[64, 64], num_timesteps=50)
    if steps is not None:
        options["steps"] = int(steps)
    print(f"Adult: {len(train)} training rows, {len(test)} test rows, target {info.target!r}")
    print(f"preprocessor round trip: {round_trip_check(train)}")

    t0 = time.perf_counter()
    model = TabDDPM(**options).fit(train, target=info.target, seed=seed, run_dir=out / "model",
                                   overwrite=True, progress=progress)  # a second demo replaces the first
    t_fit = time.perf_counter() - t0
    loss = model.fit_info.get("final_loss") or {}
    loss_text = ", ".join(f"{k} {v:.4f}" for k, v in loss.items()) if isinstance(loss, dict) else str(loss)
    print(f"fitted TabDDPM ({model.fit_info.get('steps', '?')} steps) in {t_fit:.1f} s; final {loss_text}")

    t0 = time.perf_counter()
    synthetic = model.sample(len(test), seed=(seed + 1) % 2**64)
    t_sample = time.perf_counter() - t0
    write_table(synthetic, out / "synthetic.csv")
    print(f"sampled {len(synthetic)} rows in {t_sample:.1f} s -> {out / 'synthetic.csv'}")

    t0 = time.perf_counter()
    report = evaluate(train, synthetic, test=test, target=info.target, seed=seed, sensitive=sensitive)
    t_eval = time.perf_counter() - t0
    report.plots(out / "plots")
    report.to_json(out / "report.json")
    report.to_markdown(out / "report.md")
    print(report.summary_table())
    timings = {"fit_seconds": round(t_fit, 2), "sample_seconds": round(t_sample, 2), "evaluate_seconds": round(t_eval, 2)}
    write_json({**timings, "quick": quick, "seed": seed, "train_rows": len(train)}, out / "timings.json")
    print(f"\nreport: {out / 'report.md'} (plots in {out / 'plots'}); timings {timings}")
    return {"report": report.to_dict(), **timings}
