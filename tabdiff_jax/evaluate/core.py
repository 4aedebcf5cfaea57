"""``evaluate(real, synthetic, ...)``: utility, fidelity and privacy of a synthetic table in one report."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional

import pandas as pd

from tabdiff_jax import validate
from tabdiff_jax.errors import ConfigError
from tabdiff_jax.evaluate.columns import prepare, seeded_split
from tabdiff_jax.evaluate.coverage import alpha_precision_beta_recall
from tabdiff_jax.evaluate.detection import detection_auc
from tabdiff_jax.evaluate.fairness import check_sensitive, fairness_scores
from tabdiff_jax.evaluate.distances import encode_rows
from tabdiff_jax.evaluate.fidelity import column_summary, fidelity_scores
from tabdiff_jax.evaluate.privacy import privacy_metrics
from tabdiff_jax.evaluate.relations import exact_relations
from tabdiff_jax.evaluate.report import Report
from tabdiff_jax.evaluate.sdmetrics_dcr import sdmetrics_dcr
from tabdiff_jax.evaluate.sdmetrics_detection import logistic_detection
from tabdiff_jax.evaluate.utility import infer_task, utility_scores

PARTS = ("utility", "detection", "coverage", "privacy", "sdmetrics_dcr", "relations")


def evaluate(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    test: Optional[pd.DataFrame] = None,
    target: Optional[str] = None,
    holdout: Optional[pd.DataFrame] = None,
    task: Optional[str] = None,
    seed: int = 0,
    *,
    column_kinds: Optional[Mapping[str, str]] = None,
    skip: Iterable[str] = (),
    utility_model: str = "auto",
    utility_iterations: int = 1000,
    threads: int = -1,
    detection_rows: int = 10_000,
    coverage_rows: int = 10_000,
    sdmetrics_rows: Optional[int] = 10_000,
    trend_binning: str = "real",
    holdout_fraction: float = 0.2,
    chunk_size: int = 2048,
    sensitive: Optional[str] = None,
) -> Report:
    """Evaluate ``synthetic`` against ``real`` (the table the generator was fitted on).

    Args:
      real: the training table; it decides the column kinds (numbers vs categories).
      synthetic: the generated table, with the same columns.
      test: real rows for machine-learning efficiency (train on real / on synthetic, score here).
      target: the column to predict for utility.
      holdout: real rows the generator never saw, for the privacy baselines. When missing, the
        test table is used, else ``holdout_fraction`` of ``real`` is split off with ``seed`` (the
        report's notes say which; a split is only a fair holdout if the generator was fitted on
        the rest).
      task: ``"classification"`` / ``"regression"``; inferred from the target's kind if ``None``.
      seed: seed of every subsample, split and model in the evaluation.
      column_kinds: overrides of the inferred kinds, e.g. ``{"zipcode": "categorical"}``.
      skip: parts to leave out, from ``("utility", "detection", "coverage", "privacy", "sdmetrics_dcr",
        "relations")``; "detection" is both the boosted and the logistic (SDMetrics C2ST) detection.
      utility_model: ``"auto"`` (CatBoost if installed, else scikit-learn), ``"catboost"``, ``"sklearn"``.
      utility_iterations: most boosting rounds of the utility model (early stopping on 20 %).
      threads: threads of the utility model (-1: all cores; 1 can be faster on a busy machine); CatBoost
        fits on one whatever this says (its trees depend on the count) and predicts on ``threads``.
      detection_rows, coverage_rows: at most this many rows per table for both detections and for
        alpha-precision / beta-recall (seeded subsamples).
      sdmetrics_rows: rows per table for the SDMetrics-style DCR (``None``: all rows).
      trend_binning: ``"real"`` (ContingencySimilarity's bins) or ``"separate"`` (QualityReport's).
      holdout_fraction: share of ``real`` split off when no holdout or test table is given.
      chunk_size: block size of the nearest-neighbour search.
      sensitive: a column whose groups the utility models' fairness is measured over
        (demographic-parity and equalised-odds differences, see :mod:`.fairness`); needs a
        classification target and the utility part.

    Returns:
      A :class:`~tabdiff_jax.evaluate.report.Report`.

    Raises:
      DataError: empty tables, column sets that differ (naming the columns), a missing target,
        values that do not fit their column's kind.
      ConfigError: bad ``task``, ``skip`` entry, ``trend_binning`` or model name; a ``sensitive``
        column without a classification target, equal to it, or with utility skipped.
    """
    t_start = time.perf_counter()
    skip = set(skip)
    unknown = skip - set(PARTS)
    if unknown:
        raise ConfigError(f"skip has unknown parts {sorted(unknown)}; expected some of {PARTS}")
    seed = validate.seed32(seed)  # scikit-learn and CatBoost take 32-bit seeds
    columns, tables = prepare(real, {"synthetic": synthetic, "test": test, "holdout": holdout},
                              target=target, column_kinds=column_kinds)
    real_t, syn_t, test_t, hold_t = tables["real"], tables["synthetic"], tables["test"], tables["holdout"]
    task = infer_task(real_t[target], columns.kinds[target], task) if target is not None else None
    if sensitive is not None:  # before any model is trained
        check_sensitive(sensitive, columns, task, tables, skip)
    notes, timings = [], {}
    results: dict = {
        "rows": {"real": len(real_t), "synthetic": len(syn_t), "test": None if test_t is None else len(test_t),
                 "holdout": None if hold_t is None else len(hold_t)},
        "columns": {"numeric": columns.numeric, "categorical": columns.categorical},
        "target": target, "task": task, "seed": int(seed), "notes": notes,
    }

    def timed(name, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t, 3)
        return out

    fid = timed("fidelity", fidelity_scores, real_t, syn_t, columns, trend_binning)
    fidelity = {k: fid[k] for k in ("shape", "trend", "correlation_diff")}
    fidelity["trend_binning"] = trend_binning
    if "detection" not in skip:
        det = timed("detection", detection_auc, real_t, syn_t, columns, seed=seed, max_rows=detection_rows)
        fidelity["detection_auc"] = det["auc"]
        fidelity["detection"] = det
        logistic = timed("logistic_detection", logistic_detection, real_t, syn_t, columns, seed=seed,
                         max_rows=detection_rows)
        fidelity["logistic_detection_score"] = logistic["score"]
        fidelity["logistic_detection"] = logistic
    if "relations" not in skip:
        results["relations"] = timed("relations", exact_relations, real_t, syn_t, columns, seed=seed)

    need_holdout = bool({"coverage", "privacy", "sdmetrics_dcr"} - skip)
    train_p, hold_p = real_t, hold_t
    if need_holdout:
        if hold_t is not None:
            results["holdout_source"] = "holdout table"
        elif test_t is not None:
            hold_p = test_t
            results["holdout_source"] = "test table"
            notes.append("privacy holdout: the test table (no holdout table given)")
        else:
            keep, held = seeded_split(len(real_t), holdout_fraction, seed)
            train_p, hold_p = real_t.iloc[keep].reset_index(drop=True), real_t.iloc[held].reset_index(drop=True)
            results["holdout_source"] = f"split of real ({holdout_fraction:.0%}, seed {seed})"
            notes.append(f"privacy holdout: {len(held)} rows ({holdout_fraction:.0%}) split off the real table with seed "
                         f"{seed}; privacy and coverage compare with the other {len(keep)} rows, which is only fair "
                         f"if the generator was fitted on those rows alone")
        encoded, _ = timed("encode", encode_rows, [train_p, syn_t, hold_p], columns, reference=train_p)

    privacy, distances = None, None
    if "coverage" not in skip:
        cov = timed("coverage", alpha_precision_beta_recall, encoded[0], encoded[1], seed=seed,
                    max_rows=coverage_rows, chunk_size=chunk_size)
        fidelity.update(alpha_precision=cov["alpha_precision"], beta_recall=cov["beta_recall"], coverage=cov)
    if "privacy" not in skip:
        privacy, distances = timed("privacy", privacy_metrics, train_p, syn_t, hold_p, columns, seed=seed,
                                   chunk_size=chunk_size, encoded=encoded)
        privacy["holdout_source"] = results["holdout_source"]
    if "sdmetrics_dcr" not in skip:
        privacy = privacy if privacy is not None else {"holdout_source": results["holdout_source"]}
        privacy["dcr_sdmetrics"] = timed("sdmetrics_dcr", sdmetrics_dcr, train_p, syn_t, hold_p, columns, seed=seed,
                                         max_rows=sdmetrics_rows, chunk_size=chunk_size)
    results["fidelity"] = fidelity
    results["privacy"] = privacy

    utility, fairness, predictions = None, None, ({} if sensitive is not None else None)
    if "utility" not in skip:
        eval_table, source = (test_t, "test table") if test_t is not None else (hold_t, "holdout table")
        if target is None:
            notes.append("utility skipped: no target column")
        elif eval_table is None:
            notes.append("utility skipped: no test or holdout table to score on")
        else:
            utility = timed("utility", utility_scores, real_t, syn_t, eval_table, columns, task, seed=seed,
                            model=utility_model, iterations=utility_iterations, threads=threads,
                            predictions=predictions)
            utility["scored_on"] = source
            if sensitive is not None:
                fairness = timed("fairness", fairness_scores, predictions, sensitive, columns.kinds[sensitive])
                fairness["scored_on"] = source
            if source != "test table":
                notes.append("utility scored on the holdout table (no test table given)")
    results["utility"] = utility
    results["fairness"] = fairness

    results["details"] = {
        "columns": {
            c: {"kind": columns.kinds[c], **fid["columns"][c],
                "real": column_summary(real_t[c], columns.kinds[c]), "synthetic": column_summary(syn_t[c], columns.kinds[c])}
            for c in columns.names
        },
        "pairs": fid["pairs"],
        "association": {"columns": columns.names, "real": fid["association_real"], "synthetic": fid["association_synthetic"]},
    }
    timings["total"] = round(time.perf_counter() - t_start, 3)
    results["timings"] = timings
    artifacts = {"real": real_t, "synthetic": syn_t, "columns": columns, "distances": distances,
                 "association": (fid["association_real"], fid["association_synthetic"])}
    return Report(results, artifacts)


def evaluate_files(
    real_path: str | os.PathLike,
    synthetic_path: str | os.PathLike,
    test_path: str | os.PathLike | None = None,
    holdout_path: str | os.PathLike | None = None,
    target: Optional[str] = None,
    json_out: str | os.PathLike | None = None,
    plots_dir: str | os.PathLike | None = None,
    markdown_out: str | os.PathLike | None = None,
    **kwargs,
) -> Report:
    """:func:`evaluate` on ``.csv`` / ``.parquet`` files (what ``tabdiff-jax evaluate`` runs).

    Writes the JSON to ``json_out`` and the figures to ``plots_dir`` when given; the markdown goes
    to ``markdown_out``, or to ``plots_dir/report.md`` when only ``plots_dir`` is given.

    Raises:
      DataError: a file is missing or unreadable, or anything :func:`evaluate` rejects.
    """
    from tabdiff_jax.io import load_table

    real = load_table(real_path)
    synthetic = load_table(synthetic_path)
    test = load_table(test_path) if test_path is not None else None
    holdout = load_table(holdout_path) if holdout_path is not None else None
    report = evaluate(real, synthetic, test=test, target=target, holdout=holdout, **kwargs)
    if plots_dir is not None:
        report.plots(plots_dir)
        if markdown_out is None:
            markdown_out = Path(plots_dir) / "report.md"
    if markdown_out is not None:
        report.to_markdown(markdown_out)
    if json_out is not None:
        report.to_json(json_out)
    return report
