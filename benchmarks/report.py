"""The README's "Measured figures" section, generated from the JSON files in benchmarks/results/.

    python benchmarks/report.py            # print the markdown
    python benchmarks/report.py --write    # replace the section in README.md (between its markers)

Every table says which benchmark wrote it; a missing file leaves its table out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speed import speed_table  # benchmarks/ is on sys.path when this runs as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- figures:begin (benchmarks/report.py) -->", "<!-- figures:end -->"


def _load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _f(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.{digits}f}"


def _load_note(*values) -> str:
    vals = [float(v) for v in values if isinstance(v, (int, float))]
    return f"1-minute load average {min(vals):.1f}-{max(vals):.1f}" if vals else "load not recorded"


def speed_section() -> list[str]:
    s = _load("speed.json")
    if not s:
        return []
    m = s.get("machine", {})
    out = ["### TabDDPM vs the PyTorch reference (`benchmarks/speed.py`)", "",
           "Same architecture and weights, Adult's encoding (6 numbers, 8 categorical blocks, 102 categories, "
           "class-conditional); the PyTorch side is eager with a Python loop over timesteps, as the original. "
           f"Ours and PyTorch alternate in one run ({_load_note(m.get('load_start'), m.get('load_end'))}).", ""]
    return out + speed_table(s) + [""]


def gpu_speed_section() -> list[str]:
    """results/speed_gpu.json and results/million*_gpu.json, written by benchmarks/gpu_run.sh on a GPU machine."""
    s = _load("speed_gpu.json") or {}
    millions = sorted((m for m in (_load(p.name) for p in RESULTS.glob("million*_gpu.json")) if m and "million" in m),
                      key=lambda m: m["million"]["rows"])
    if not (s.get("train") or s.get("sample") or millions):
        return []
    m = s.get("machine") or millions[0]["million"]
    device = m.get("jax_device_kind") or m.get("backend", "?")
    out = [f"### On a GPU ({device}; `benchmarks/gpu_run.sh`)", ""]
    if s.get("train") or s.get("sample"):
        torch_where = m.get("torch_device_name") or m.get("torch_device", "?")
        like = str(m.get("torch_device", "cpu")).startswith("cpu") == (m.get("backend") == "cpu")
        out += [f"TabDDPM against the PyTorch reference as above, with JAX {m.get('jax', '?')} on {device} and PyTorch "
                f"{m.get('torch', '?')} on {torch_where} (`{m.get('torch_device', '?')}`)"
                + ("" if like else ": **not like for like**, PyTorch is not on the accelerator")
                + f". Float32 weights; matmul precision: JAX {m.get('jax_matmul_precision')} (XLA's default takes TF32 "
                  f"on this GPU), PyTorch \"{m.get('torch_matmul_precision', '?')}\". PyTorch's timers are read after "
                  "`synchronize()`; ours include copying the sampled rows to the host.", ""]
        out += speed_table({k: s[k] for k in ("train", "sample") if k in s}, cpu_time=False)
        if any("matmul_precision" not in r for r in s.get("sample", [])):
            out += ["", "The sampling rows were measured with XLA's default (TF32) products on both sides. That run also "
                        "showed TF32 moving sampled numbers by up to 1e-3 (relative) between chunk sizes, breaking the "
                        "sampling contract on the GPU; sampling has since been compiled with float32 products "
                        "(`tabdiff_jax.sampling.SAMPLING_MATMUL_PRECISION`), and these rows are not re-measured yet."]
        for e in s.get("errors", []):
            out += ["", f"Not measured: {e['task']} {e['net']} T = {e['T']} batch {e['batch']:,} ({e['error'][:100]})."]
    for mm in millions:
        out += speed_table({"million": mm["million"]})
    return out + [""]


def private_section() -> list[str]:
    """results/private.json (benchmarks/private.py): every private model on one footing."""
    from private import markdown as private_table  # benchmarks/ is on sys.path

    p = _load("private.json")
    if not p:
        return []
    loads = [x for e in p.values() if isinstance(e, dict) for x in e.get("load_average_1min", [])]
    return ["### Private models on Adult, nothing learned outside the budget (`benchmarks/private.py`)", "",
            "Public bounds and category lists only (the fit fails on any PrivacyWarning), delta 1e-5, each model's "
            "recipe as in `benchmarks/private.py`; as many rows sampled; CatBoost F1 macro on adult_test; detection "
            f"AUC of our boosted detector (0.5: indistinguishable); {_load_note(*loads)}.", "",
            private_table(p), ""]


def dpsgd_section() -> list[str]:
    d = _load("dpsgd.json")
    if not d:
        return []
    m = d.get("machine", {})
    load = m.get("load_average") or []
    out = ["### DP-SGD step (`benchmarks/dpsgd.py`, ms per step, Adam, C = 1, sigma = 1)", "",
           f"Threads: {m.get('threads', 'default')}; {_load_note(*load[:1])} at the start.", "",
           "| network | batch | non-private | DP book-keeping | DP vmap | Opacus non-private | Opacus ghost "
           "| ours DP / non-private | Opacus ghost / ours DP |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in d["results"]:
        ms, ra = r["ms_per_step"], r.get("ratios", {})
        g = lambda k: _f(ms.get(k), 1)
        out.append(f"| {r['network']} | {r['batch_size']:,} | {g('jax_nonprivate')} | {g('jax_ghost')} | "
                   f"{g('jax_vmap')} | {g('torch_nonprivate')} | {g('opacus_ghost')} | "
                   f"{_f(ra.get('ghost_over_nonprivate'), 2)} | {_f(ra.get('opacus_ghost_over_jax_ghost'), 2)} |")
    return out + [""]


def gan_speed_section() -> list[str]:
    g = _load("gan_speed.json")
    if not g or "speed" not in g:
        return []
    sp = g["speed"]
    return ["### GAN / TVAE epochs vs the `ctgan` package (`benchmarks/gan.py`, Adult, batch 500)", "",
            f"Median over interleaved rounds: our CTGAN-style WGAN-GP epoch is "
            f"{sp['speedup_ctgan_epoch_seconds_median']:.1f}x faster in wall time "
            f"({sp['speedup_ctgan_epoch_cpu_seconds_median']:.1f}x in CPU time) than ctgan's CTGAN; our TVAE "
            f"{sp['speedup_tvae_epoch_seconds_median']:.1f}x ({sp['speedup_tvae_epoch_cpu_seconds_median']:.1f}x "
            f"in CPU time).", ""]


def quality_section() -> list[str]:
    q = _load("gan_quality_adult.json")
    if not q or "quality" not in q or "adult" not in q["quality"]:
        return []
    a = q["quality"]["adult"]
    out = ["### Every model on Adult (`benchmarks/gan.py`: train 32,561 rows, sample as many, evaluate)", "",
           "Utility: CatBoost trained on the synthetic table, F1 macro on Adult's test split (real data: "
           f"{_f(next(iter(a['models'].values()))['utility_real'])}). DCR: median distance of a synthetic row to "
           "its closest training row; real holdout rows give "
           f"{_f(next(iter(a['models'].values()))['dcr'].get('dcr_holdout_median'))}. Fit time on 2 cores.", "",
           "| model | budget | F1 (synthetic) | shape | trend | detection AUC | DCR median | closer to train "
           "| fit (s) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e in a["models"].items():
        d = e.get("dcr", {})
        budget = e["epochs"] if isinstance(e["epochs"], str) else ("-" if e["epochs"] is None else f"{e['epochs']} epochs")
        if "epsilon" in e:
            budget += f", eps {e['epsilon']:g} (spent {e['epsilon_spent']:.2f})"
        out.append(f"| {name} | {budget} | {_f(e['utility_synthetic'])} | {_f(e['shape'])} | {_f(e['trend'])} | "
                   f"{_f(e.get('detection_auc'))} | {_f(d.get('dcr_median'))} | {_f(d.get('closer_to_train_share'))} "
                   f"| {_f(e.get('fit_seconds'), 0)} |")
    return out + [""]


def tabddpm_quality_section() -> list[str]:
    q = _load("quality_tabddpm.json")
    if not q:
        return []
    out = ["### TabDDPM on the paper's tables (`benchmarks/quality_tabddpm.py`, defaults: 8,000 steps, batch 1,024, "
           "T = 100, MLP 256-256; as many rows sampled as in the training split unless noted)", "",
           "| data | metric | real | TabDDPM (ours) | paper real / TabDDPM | shape | DCR median (holdout) | fit (s) "
           "| passes |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    base = ("adult", "california", "insurance", "abalone")
    tagged = sorted(k for k in q if k not in base and isinstance(q[k], dict) and "dataset" in q[k])
    for name in [b for b in base if b in q] + tagged:
        e = q[name]
        paper = e.get("paper_real_tabddpm") or ["-", "-"]
        if name not in base:  # a run with other settings (--tag): say which
            c = e.get("config", {})
            name = (f"{e['dataset']} ({e['steps']:,} steps, batch {e['batch_size']:,}, T = {c.get('num_timesteps')}, "
                    f"MLP {'-'.join(str(w) for w in c.get('hidden_dims', c.get('d_layers', [])))}"
                    + (f", {e['sample_factor']:g}x rows sampled" if e.get("sample_factor", 1) != 1 else "") + ")")
        out.append(f"| {name} | {e['metric']} | {_f(e['real'])} | {_f(e['synthetic'])} | {paper[0]} / {paper[1]} | "
                   f"{_f(e['shape'])} | {_f(e['dcr_median'])} ({_f(e['dcr_holdout_median'])}) | "
                   f"{_f(e['fit_seconds'], 0)} | {'yes' if e.get('pass') else 'no'} |")
    return out + [""]


def tabdiff_quality_section() -> list[str]:
    """results/quality_tabdiff.json (benchmarks/quality_tabdiff.py) next to the published Adult figures."""
    from quality_tabdiff import COLUMN_KINDS, PUBLISHED_ADULT, PUBLISHED_SOURCE, markdown_table

    q = _load("quality_tabdiff.json")
    if not q:
        return []
    out = ["### TabDiff and TabDDPM side by side (`benchmarks/quality_tabdiff.py`)", "",
           "Each model fitted on the training split with its defaults (or as the entry says), as many rows sampled; "
           "utility is CatBoost F1 macro / R2 on the test split (real data in brackets); boosted detection score "
           "= 1 - (2 AUC - 1) of our gradient-boosting detector (AUC in brackets); logistic detection score = "
           "SDMetrics' LogisticDetection (the C2ST of TabSyn and TabDiff); relations kept = the worst share of "
           "synthetic rows keeping an exact relation of the real table. Sample rows/s from a second, compiled "
           "call.", ""]
    runs = {k: v for k, v in q.items() if isinstance(v, dict) and "models" in v}
    notes = []
    for k, v in runs.items():
        m = v.get("machine", {})
        kinds = next((mm.get("column_kinds") for mm in v["models"].values() if mm.get("column_kinds")), None)
        flags = [n for n, flag in (("a --quick smoke run (200 steps), not a result", v.get("quick")),
                                   ("TabDiff given TabDDPM's train seconds", v.get("same_time"))) if flag]
        if kinds:
            flags.append("declared for both models: " + ", ".join(f"{c} {kind}" for c, kind in kinds.items()))
        elif v.get("dataset") in COLUMN_KINDS:
            flags.append("integer codes kept numbers (--numeric-codes): "
                         + ", ".join(COLUMN_KINDS[v["dataset"]]) + " numeric")
        notes.append(f"{k}: " + "; ".join(flags + [_load_note(*(m.get("load_average_at_start") or [])[:1],
                                                              *(m.get("load_average_at_end") or [])[:1])]))
    out += [markdown_table(runs), ""] + [f"- {n}" for n in notes] + [""]
    out += [f"Adult against the published figures ({PUBLISHED_SOURCE}). Ours: one model each, our evaluation "
            "(shape and trend with QualityReport's binning, equal to SDMetrics to 1e-6; boosted detection by "
            "scikit-learn's HistGradientBoosting where the paper used XGBoost):", "",
            "| model | shape | trend | boosted-detection score | logistic detection (C2ST) | alpha-precision "
            "| beta-recall | sampling steps |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in PUBLISHED_ADULT.items():
        out.append(f"| {name}, published | {_f(v['shape'])} | {_f(v['trend'])} | {_f(v['boosted_detection_score'], 2)} "
                   f"| {_f(v['logistic_detection_score'])} | {_f(v['alpha_precision'])} | {_f(v['beta_recall'])} "
                   f"| {v['sampling_steps'] or '-'} |")
    for key in sorted(k for k in runs if runs[k]["dataset"] == "adult"):
        for name, m in runs[key]["models"].items():
            steps = m.get("options", {}).get("num_sample_steps") or m.get("options", {}).get("num_timesteps")
            out.append(f"| {name}, ours ({key}) | {_f(m['shape'])} | {_f(m['trend'])} "
                       f"| {_f(m['boosted_detection_score'], 2)} | {_f(m['logistic_detection_score'])} "
                       f"| {_f(m['alpha_precision'])} | {_f(m['beta_recall'])} | {steps or '-'} |")
    return out + [""]


def evaluation_section() -> list[str]:
    ev, sm, pp = _load("evaluate.json"), _load("smote_adult.json"), _load("preprocess.json")
    out = []
    if ev:
        e30 = ev.get("evaluate_30k", {})
        out += ["### Evaluation, SMOTE and the preprocessor", "",
                f"- `benchmarks/evaluate.py`: shape + trend on Adult (16k vs 16k) {ev['quality']['speedup_best']}x "
                f"faster than SDMetrics' QualityReport, equal to it to 1e-6; DCR on 10,000 x 10,000 rows "
                f"{ev['dcr_sdmetrics']['ours']['wall_s']:.1f} s, about {ev['dcr_sdmetrics']['speedup_vs_extrapolated']:,.0f}x "
                f"faster than SDMetrics' DCR metrics (extrapolated from {ev['dcr_sdmetrics']['sdmetrics'][-1]['rows']:,} rows); "
                f"the whole evaluation of a 30,000-row table {e30.get('wall_s', float('nan')):.0f} s "
                f"({e30.get('utility_model', '?')} utility {e30.get('parts_wall_s', {}).get('utility', float('nan')):.0f} s of it)."]
    if sm:
        out += [f"- `benchmarks/smote_adult.py`: SMOTE on Adult F1 {sm['f1_smote']:.3f} against real {sm['f1_real']:.3f} "
                f"(paper .791 / .815), shape {sm['shape']:.3f}; DCR median {sm['dcr_median_smote_to_train']:.3f} "
                f"against {sm['dcr_median_holdout_to_train']:.3f} for real holdout rows (SMOTE copies neighbourhoods)."]
    if pp:
        q = pp["ours"]["quantile"]
        sp = pp.get("speedup_vs_ctgan")
        sp_text = ""
        if isinstance(sp, dict):
            vals = [v for v in sp.values() if isinstance(v, (int, float))]
            sp_text = f"; mode-specific normalisation {max(vals):.0f}x faster than ctgan's DataTransformer" if vals else ""
        elif isinstance(sp, (int, float)):
            sp_text = f"; mode-specific normalisation {sp:.0f}x faster than ctgan's DataTransformer"
        out += [f"- `benchmarks/preprocess.py`: Adult fit + encode + decode (quantile) {q['adult']['fit_encode_decode_s']:.2f} s "
                f"with compilation; 1,000,000 rows {q['big']['fit_encode_decode_s']:.2f} s{sp_text}."]
    return out + [""] if out else []


def markdown() -> str:
    lines = [BEGIN, ""]
    for part in (tabddpm_quality_section, tabdiff_quality_section, quality_section, private_section, speed_section,
                 gpu_speed_section, dpsgd_section, gan_speed_section, evaluation_section):
        lines += part()
    return "\n".join(lines + [END])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="replace the marked section of README.md")
    args = p.parse_args(argv)
    text = markdown()
    if not args.write:
        print(text)
        return
    readme = ROOT / "README.md"
    body = readme.read_text()
    if BEGIN not in body or END not in body:
        raise SystemExit(f"README.md has no {BEGIN!r} ... {END!r} markers")
    head, rest = body.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    import sys

    sys.path.insert(0, str(ROOT))
    from tabdiff_jax.io import atomic_path

    with atomic_path(readme) as tmp:
        tmp.write_text(head + text + tail)
    print(f"wrote the figures into {readme}")


if __name__ == "__main__":
    main()
