"""The evaluation report: a read-only mapping of results with JSON, markdown, plots and a text table."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from tabdiff_jax.errors import ConfigError
from tabdiff_jax.evaluate import fairness as _fairness
from tabdiff_jax.evaluate import relations as _relations
from tabdiff_jax.io import atomic_path, write_json

# (section, key, label, what is ideal)
SUMMARY_ROWS = (
    ("fidelity", "shape", "shape (KS / TV complement)", "1"),
    ("fidelity", "trend", "trend (pair similarity)", "1"),
    ("fidelity", "correlation_diff", "correlation difference (Frobenius)", "0"),
    ("fidelity", "detection_auc", "detection ROC-AUC", "0.5"),
    ("fidelity", "logistic_detection_score", "logistic detection score (SDMetrics C2ST)", "1"),
    ("fidelity", "alpha_precision", "alpha-precision", "1"),
    ("fidelity", "beta_recall", "beta-recall", "1"),
    ("privacy", "dcr_median", "DCR median (synthetic -> train)", "~ holdout"),
    ("privacy", "dcr_holdout_median", "DCR median (holdout -> train)", "baseline"),
    ("privacy", "closer_to_train_share", "closer to train than holdout", "0.5"),
    ("privacy", "exact_copies", "exact copies of train rows", "0"),
    ("privacy", "mia_auc", "membership inference ROC-AUC", "0.5"),
)


def json_safe(obj: Any) -> Any:
    """A deep copy with NaN / inf replaced by ``None`` and numpy scalars by Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class Report(Mapping):
    """Results of :func:`tabdiff_jax.evaluate.evaluate` (``report["fidelity"]["shape"]`` etc.).

    Besides the mapping it keeps the (normalised) tables and distance arrays it needs for
    :meth:`plots`; those never enter :meth:`to_dict`.
    """

    def __init__(self, results: dict, artifacts: Optional[dict] = None):
        self._results = json_safe(results)
        self._artifacts = artifacts or {}
        self.plot_files: list[Path] = []

    def __getitem__(self, key: str) -> Any:
        return self._results[key]

    def __iter__(self):
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __repr__(self) -> str:
        return f"Report({', '.join(self._results)})"

    def to_dict(self) -> dict:
        """A deep copy of the results, JSON-able (missing values as ``None``)."""
        return copy.deepcopy(self._results)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as indented JSON, atomically (temporary file, then rename)."""
        return write_json(self.to_dict(), path)

    def plots(self, directory: str | os.PathLike) -> list[Path]:
        """Write the figures (see :mod:`tabdiff_jax.evaluate.plots`) into ``directory``; returns the files."""
        from tabdiff_jax.evaluate.plots import write_plots

        a = self._artifacts
        if not a:
            raise ConfigError("this report holds no tables to plot: it was built from results alone, not by evaluate()")
        self.plot_files = write_plots(directory, a["real"], a["synthetic"], a["columns"],
                                      self._results["details"]["columns"], a.get("association"), a.get("distances"))
        return list(self.plot_files)

    # ------------------------------------------------------------------------------ text
    def _summary_rows(self) -> list[tuple[str, str, str]]:
        rows = []
        utility = self._results.get("utility")
        if utility:
            metric = utility["metric"]
            rows.append((f"utility {metric}, train on real ({utility['model']})", _fmt(utility["real"][metric]), "reference"))
            rows.append((f"utility {metric}, train on synthetic", _fmt(utility["synthetic"][metric]), "= real"))
        rows += _fairness.summary_rows(self._results.get("fairness"))
        for section, key, label, ideal in SUMMARY_ROWS:
            values = self._results.get(section)
            if values is not None:
                rows.append((label, _fmt(values.get(key)), ideal))
        sd = (self._results.get("privacy") or {}).get("dcr_sdmetrics")
        if sd:
            rows.append(("SDMetrics DCRBaselineProtection", _fmt(sd.get("baseline_protection")), "1"))
            rows.append(("SDMetrics DCROverfittingProtection", _fmt(sd.get("overfitting_protection")), "1"))
        rows += _relations.summary_rows(self._results.get("relations"))
        return rows

    def summary_table(self) -> str:
        """The headline numbers as a fixed-width text table (what the command line prints)."""
        rows = [("metric", "value", "ideal")] + self._summary_rows()
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}".rstrip() for r in rows]
        lines.insert(1, "-" * (sum(widths) + 4))
        seconds = self._results.get("timings", {}).get("total")
        if seconds is not None:
            lines.append(f"(evaluated in {seconds:.1f} s)")
        return "\n".join(lines)

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """The report as markdown (linking the figures of the last :meth:`plots` call).

        With ``path`` the markdown is also written there (atomically), and figure links are made
        relative to its folder.
        """
        r = self._results
        base = Path(path).parent if path is not None else None
        out = ["# Synthetic data evaluation", ""]
        rows = r.get("rows", {})
        out.append("Rows: " + ", ".join(f"{k} {v}" for k, v in rows.items() if v is not None) +
                   (f"; target `{r['target']}` ({r['task']})" if r.get("target") else ""))
        out.append("")
        for note in r.get("notes", []):
            out.append(f"- {note}")
        out += ["", "## Summary", "", "| metric | value | ideal |", "|---|---:|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in self._summary_rows()]
        utility = r.get("utility")
        if utility:
            out += ["", f"## Utility ({utility['model']}, {utility['task']}, test rows {utility['test_rows']})", "",
                    "| trained on | " + " | ".join(k for k in utility["real"] if k not in ("train_rows", "fitted")) + " |",
                    "|---|" + "---:|" * (len(utility["real"]) - 2)]
            for key in ("real", "synthetic"):
                vals = [_fmt(v) for k, v in utility[key].items() if k not in ("train_rows", "fitted")]
                out.append(f"| {key} ({utility[key]['train_rows']} rows) | " + " | ".join(vals) + " |")
        out += _fairness.markdown_section(r.get("fairness"))
        out += _relations.markdown_section(r.get("relations"))
        details = r.get("details", {})
        if details.get("columns"):
            out += ["", "## Columns", "", "| column | kind | metric | score | missing real | missing synthetic |", "|---|---|---|---:|---:|---:|"]
            for c, d in details["columns"].items():
                out.append(f"| {c} | {d['kind']} | {d['metric']} | {_fmt(d['score'])} | "
                           f"{_fmt(d['real']['missing_share'], 3)} | {_fmt(d['synthetic']['missing_share'], 3)} |")
        pairs = [p for p in details.get("pairs", []) if p.get("score") is not None]
        if pairs:
            out += ["", "## Least similar column pairs", "", "| columns | metric | score | association real | association synthetic |",
                    "|---|---|---:|---:|---:|"]
            for p in sorted(pairs, key=lambda p: p["score"])[:10]:
                out.append(f"| {p['columns'][0]} / {p['columns'][1]} | {p['metric']} | {_fmt(p['score'])} | "
                           f"{_fmt(p['real_association'], 3)} | {_fmt(p['synthetic_association'], 3)} |")
        if self.plot_files:
            out += ["", "## Figures", ""]
            for f in self.plot_files:
                link = os.path.relpath(f, base) if base is not None else str(f)
                out.append(f"![{Path(f).stem}]({Path(link).as_posix()})")
        text = "\n".join(out) + "\n"
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text(text)
        return text
