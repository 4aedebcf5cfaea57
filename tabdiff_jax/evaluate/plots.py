"""Figures of an evaluation report (matplotlib's Agg canvas; no pyplot, no global backend change).

* one ``marginal_NN_<column>.png`` per column: real vs synthetic histogram (numbers, shared bins)
  or category frequencies (the 15 most frequent real categories, the rest summed as "(other)");
* ``association_difference.png``: |real - synthetic| association matrix as a heatmap;
* ``dcr.png``: histograms of the distance to the closest train row, synthetic rows vs holdout rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tabdiff_jax.evaluate.columns import NUMERIC, Columns
from tabdiff_jax.io import atomic_path

TOP_CATEGORIES = 15
_REAL, _SYN, _HOLD = "#1f77b4", "#ff7f0e", "#2ca02c"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "column"


def marginal_plot(real: pd.Series, synthetic: pd.Series, kind: str, path: Path, score: Optional[float] = None) -> Path:
    """Real vs synthetic distribution of one column."""
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    title = f"{real.name}" + (f"  (shape {score:.3f})" if score is not None and np.isfinite(score) else "")
    if kind == NUMERIC:
        x, y = real.to_numpy(np.float64), synthetic.to_numpy(np.float64)
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
        both = np.concatenate([x, y])
        edges = np.histogram_bin_edges(both if len(both) else np.zeros(1), bins=40)
        ax.hist(x, bins=edges, density=True, alpha=0.55, color=_REAL, label="real")
        ax.hist(y, bins=edges, density=True, alpha=0.55, color=_SYN, label="synthetic")
        ax.set_ylabel("density")
    else:
        freq_real = real.fillna("(missing)").value_counts(normalize=True)
        freq_syn = synthetic.fillna("(missing)").value_counts(normalize=True)
        top = list(freq_real.index[:TOP_CATEGORIES])
        labels = top + (["(other)"] if len(freq_real) > len(top) or set(freq_syn.index) - set(top) else [])
        def heights(freq):
            h = [float(freq.get(k, 0.0)) for k in top]
            return h + ([1.0 - sum(h)] if len(labels) > len(top) else [])
        pos = np.arange(len(labels))
        ax.bar(pos - 0.2, heights(freq_real), width=0.4, color=_REAL, label="real")
        ax.bar(pos + 0.2, heights(freq_syn), width=0.4, color=_SYN, label="synthetic")
        ax.set_xticks(pos)
        ax.set_xticklabels([str(s)[:18] for s in labels], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("share of rows")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def association_heatmap(real: np.ndarray, synthetic: np.ndarray, names: list[str], path: Path) -> Path:
    """Heatmap of |real - synthetic| association (Pearson / correlation ratio / Cramer's V)."""
    diff = np.abs(np.asarray(real) - np.asarray(synthetic))
    size = max(4.0, 0.45 * len(names) + 2.0)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    # A floor on the colour scale keeps tiny differences pale instead of stretching them to full red.
    image = ax.imshow(diff, vmin=0.0, vmax=max(0.05, float(np.nanmax(diff)) if diff.size else 1.0), cmap="Reds")
    ax.set_xticks(range(len(names)))
    ax.set_yticks(range(len(names)))
    ax.set_xticklabels([str(n)[:16] for n in names], rotation=75, ha="right", fontsize=7)
    ax.set_yticklabels([str(n)[:16] for n in names], fontsize=7)
    ax.set_title(f"|association real - synthetic|  (Frobenius norm {np.linalg.norm(diff):.3f})", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def dcr_histogram(distances: dict, path: Path) -> Path:
    """Distance to the closest train row: synthetic rows vs holdout rows (the real-data baseline)."""
    syn, hold = distances["synthetic_to_train"], distances["holdout_to_train"]
    syn, hold = syn[np.isfinite(syn)], hold[np.isfinite(hold)]
    both = np.concatenate([syn, hold])
    hi = float(np.quantile(both, 0.99)) if len(both) else 1.0
    edges = np.linspace(0.0, max(hi, 1e-6), 50)
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(np.minimum(syn, hi), bins=edges, density=True, alpha=0.55, color=_SYN, label=f"synthetic -> train (median {np.median(syn):.3f})")
    ax.hist(np.minimum(hold, hi), bins=edges, density=True, alpha=0.55, color=_HOLD, label=f"holdout -> train (median {np.median(hold):.3f})")
    ax.set_xlabel("distance to closest train row (top 1% piled at the right end)", fontsize=8)
    ax.set_ylabel("density")
    ax.set_title("Distance to closest record (DCR)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(directory: str | Path, real: pd.DataFrame, synthetic: pd.DataFrame, columns: Columns,
                shape_scores: dict, association: Optional[tuple] = None, distances: Optional[dict] = None) -> list[Path]:
    """Write every figure into ``directory`` (created if needed); returns the files in order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (c, kind) in enumerate(columns.kinds.items()):
        score = shape_scores.get(c, {}).get("score")
        files.append(marginal_plot(real[c], synthetic[c], kind, directory / f"marginal_{i:02d}_{safe_name(c)}.png", score))
    if association is not None and len(columns.names) > 1:
        files.append(association_heatmap(association[0], association[1], columns.names, directory / "association_difference.png"))
    if distances is not None:
        files.append(dcr_histogram(distances, directory / "dcr.png"))
    return files
