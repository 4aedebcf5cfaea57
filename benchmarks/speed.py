"""TabDDPM speed: tabdiff_jax against the eager PyTorch reference, on Adult's shapes, in one process.

Training steps/s (mixed loss + backward + AdamW, the batch drawn inside the step) and sampling rows/s
(the full ancestral chain, T = 1000 and 100) at batch sizes 256 .. 16,384, with the same weights on
both sides. Ours and PyTorch are timed in alternation in the same run (median of the repeats, warm-up
excluded), so both see the same machine load; compile time is reported apart. The PyTorch sampler's
per-step cost does not depend on ``t``, so for long chains it times a prefix of its loop and scales
it to ``T`` (``torch_steps_timed`` in the JSON says how many steps).

    python benchmarks/speed.py                 # full comparison -> results/speed.json, speed.png
    python benchmarks/speed.py --quick         # a subset, printed only (under a minute on 2 idle cores)
    python benchmarks/speed.py --million       # 1,000,000 Adult rows sampled + decoded: time, peak RSS
    python benchmarks/speed.py --threads 1     # both libraries single-threaded (an oversubscribed machine)
    python benchmarks/speed.py --torch-device cpu   # PyTorch on the CPU even where JAX has a GPU

The PyTorch side runs where JAX does: on ``cuda`` when JAX's default backend is a GPU and PyTorch sees
one (``--torch-device`` overrides), with float32 matmuls at PyTorch's "high" precision (TF32), which
is what XLA does by default on such GPUs; every PyTorch timer is read after ``synchronize``. On an
accelerator the default batches reach 65,536 rows (sampling) and 16,384 (training);
``benchmarks/gpu_run.sh`` runs a subset of them, the 1,000,000-row measurement and the sampling tests
on a GPU machine in one go.

The DP-SGD and GAN figures of their own benchmarks (results/dpsgd.json, results/gan*.json) are merged
into the JSON and the printed markdown when present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE))  # torch_reference: the name "benchmarks" is taken by a package of opacus
RESULTS = HERE / "results"
SMALL_NET = (256, 256, 256)
PAPER_NET = (256, 1024, 1024, 1024, 1024, 256)
BATCHES = (256, 1024, 4096, 16384)
ACCEL_SAMPLE_BATCHES = (1024, 4096, 16384, 65536)  # sampling batches when JAX runs on an accelerator
ADULT_SIZES = (9, 16, 7, 15, 6, 5, 2, 42)


# ---------------------------------------------------------------------------------------- machine
def rss_mib() -> float:
    """Resident set size of this process now (MiB)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


class RssMonitor:
    """Samples the RSS every few ms in a thread; ``with monitor.track(label):`` keeps the peak per label."""

    def __init__(self, interval_s: float = 0.02):
        self.peaks: dict[str, float] = {}
        self._label, self._stop = None, threading.Event()
        threading.Thread(target=self._run, args=(interval_s,), daemon=True).start()

    def _run(self, interval_s):
        while not self._stop.wait(interval_s):
            if self._label is not None:
                self._note(self._label)

    def _note(self, label):
        self.peaks[label] = max(self.peaks.get(label, 0.0), rss_mib())

    def track(self, label: str):
        monitor = self

        class _Track:
            def __enter__(self):
                monitor._note(label)
                monitor._label = label

            def __exit__(self, *exc):
                monitor._note(label)
                monitor._label = None

        return _Track()

    def close(self):
        self._stop.set()


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads in PyTorch and in XLA (must run before jax is imported)."""
    if "jax" in sys.modules:
        raise RuntimeError("--threads must be applied before jax is imported")
    eigen = "true" if n > 1 else "false"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={n}").strip()
    import torch

    torch.set_num_threads(n)


def default_torch_device() -> str:
    """"cuda" where PyTorch sees a CUDA GPU and JAX's default backend is a GPU, else "cpu"."""
    import jax
    import torch

    return "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"


def torch_synchronizer(device):
    """``sync()`` that waits for the work queued on ``device`` (a no-op on the CPU)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    module = getattr(torch, device.type, None)  # torch.mps, torch.xpu, ...
    sync = getattr(module, "synchronize", None) if device.type != "cpu" else None
    return sync if callable(sync) else (lambda: None)


def device_info(torch_device: str | None = None) -> dict:
    """Where each side runs: JAX's backend and device kind, and (unless None) PyTorch's device and matmul
    precision."""
    import jax

    devices = jax.devices()
    info = dict(backend=jax.default_backend(), jax_device_kind=devices[0].device_kind, jax_device_count=len(devices),
                jax_matmul_precision=str(getattr(jax.config, "jax_default_matmul_precision", None)))
    if torch_device is None:
        return info
    import torch

    info.update(torch_device=str(torch_device), torch_matmul_precision=torch.get_float32_matmul_precision())
    if torch.device(torch_device).type == "cuda":
        info["torch_device_name"] = torch.cuda.get_device_name(torch.device(torch_device))
        info["torch_cuda"] = torch.version.cuda
    else:
        info["torch_device_name"] = platform.processor() or platform.machine()
    return info


def machine_info(torch_device: str = "cpu") -> dict:
    import jax
    import torch

    return dict(platform=platform.platform(), cpus=os.cpu_count(), jax=jax.__version__, torch=torch.__version__,
                torch_threads=torch.get_num_threads(), xla_flags=os.environ.get("XLA_FLAGS", ""),
                load_start=load_now(), **device_info(torch_device))


# ------------------------------------------------------------------------------------------- data
def load_adult():
    """Adult as TabDDPM sees it: ``(x_num, x_cat, y, categorical_sizes, class_probs, source)``."""
    try:
        from tabdiff_jax import datasets
        from tabdiff_jax.preprocess import Preprocessor
        from tabdiff_jax.table import split_target

        train, _ = datasets.load("adult")
        feats, y = split_target(Preprocessor().fit(train, target="income").encode(train))
        x_num, x_cat, y = (np.asarray(a) for a in (feats.numeric, feats.categorical, y))
        sizes, source = feats.layout.categorical_sizes, "Adult (bundled), tabdiff_jax.Preprocessor encoding"
    except ImportError:  # no preprocessor: the same shapes, synthetic
        rng, n = np.random.default_rng(0), 32561
        x_num = rng.standard_normal((n, 6))
        x_cat = np.stack([rng.integers(0, k, n) for k in ADULT_SIZES], 1)
        y, sizes, source = rng.integers(0, 2, n), ADULT_SIZES, "synthetic, Adult's shapes"
    probs = np.bincount(y, minlength=2) / len(y)
    return x_num.astype(np.float32), x_cat.astype(np.int32), y.astype(np.int32), tuple(sizes), probs, source


# ------------------------------------------------------------------------------------ the two sides
class Pair:
    """Our model and the PyTorch reference with the same weights, on the same data.

    Each ``*_train`` / ``*_sample`` method returns ``run(k) -> seconds``: k training steps, k of our
    full sampling chains, or the first k reverse steps of the PyTorch sampler.
    """

    def __init__(self, data, d_layers, num_timesteps, seed=0, torch_device="cpu"):
        import jax
        import torch
        import torch_reference as tr
        from flax import nnx

        from tabdiff_jax.diffusion import tabddpm as D
        from tabdiff_jax.state import split_params

        x_num, x_cat, y, sizes, probs, _ = data
        self.T, self.probs = num_timesteps, probs
        self.cfg = D.DiffusionConfig(num_numeric=x_num.shape[1], categorical_sizes=sizes, num_classes=len(probs),
                                     num_timesteps=num_timesteps)
        self.graphdef, self.params = split_params(D.make_denoiser(self.cfg, hidden_dims=tuple(d_layers),
                                                                  rngs=nnx.Rngs(seed)))
        self.data = D.TableBatch(jax.device_put(x_num), jax.device_put(x_cat), jax.device_put(y))
        # The reference's parameters, buffers and data on torch_device; every timer is read after sync().
        dev = self.torch_device = torch.device(torch_device)
        self.sync = torch_synchronizer(dev)
        self.torch_diff = tr.GaussianMultinomialDiffusion(x_num.shape[1], sizes, tr.to_torch(self.params),
                                                          num_timesteps).to(dev)
        self.torch_data = (torch.from_numpy(x_num).to(dev), torch.from_numpy(x_cat).long().to(dev),
                           torch.from_numpy(y).long().to(dev))
        self.torch_probs = torch.tensor(probs, dtype=torch.float32, device=dev)
        self.sync()

    def ours_train(self, batch_size):
        import jax

        from tabdiff_jax.diffusion import tabddpm as D
        from tabdiff_jax.state import init_train_state

        opt = D.make_annealed_adamw(lr=2e-3, weight_decay=1e-4)
        step = D.make_train_step(self.graphdef, opt, self.cfg, batch_size=batch_size)  # jitted, state donated
        box = {"state": init_train_state(jax.tree.map(lambda a: a.copy(), self.params), opt), "calls": 0}

        def run(k):
            keys = jax.block_until_ready(jax.random.split(jax.random.key(box["calls"]), k))
            box["calls"] += 1
            t0, state = time.perf_counter(), box["state"]
            for i in range(k):
                state, _ = step(state, self.data, keys[i])
            box["state"] = jax.block_until_ready(state)
            return time.perf_counter() - t0

        return run

    def torch_train(self, batch_size):
        import torch_reference as tr

        opt = tr.make_optimizer(self.torch_diff, lr=2e-3, weight_decay=1e-4)

        def run(k):
            self.sync()
            t0 = time.perf_counter()
            for _ in range(k):
                tr.train_step(self.torch_diff, opt, *self.torch_data, batch_size)
            self.sync()
            return time.perf_counter() - t0

        return run

    def ours_sample(self, batch_size):
        import jax

        from tabdiff_jax.diffusion import samplers

        def run(k):
            t0 = time.perf_counter()
            for i in range(k):
                samplers.sample(self.params, self.graphdef, self.cfg, jax.random.key(i), batch_size,
                                class_probs=self.probs, chunk_size=batch_size)
            return time.perf_counter() - t0

        return run

    def torch_sample(self, batch_size):
        def run(k):
            self.sync()
            t0 = time.perf_counter()
            self.torch_diff.sample(batch_size, self.torch_probs, num_steps=k)
            self.sync()  # the rows stay on torch's device (ours are copied to the host: a few ms per chain)
            return time.perf_counter() - t0

        return run


class CompileClock:
    """Seconds JAX has spent tracing, lowering and compiling in this process (its monitoring events)."""

    def __init__(self):
        import jax

        self.total = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name, seconds, **_):
        if name.startswith("/jax/core/compile/"):
            self.total += seconds

    def __call__(self) -> float:
        return self.total


def compare(ours_run, torch_run, *, repeats, min_block_s, monitor, torch_cap=None, max_case_s=120.0,
            compile_clock=None, steady_estimate=False) -> dict:
    """Interleaved timing of two ``run(k) -> wall seconds`` callables, alternating which goes first.

    Ours' first call is timed apart (``first_s``), and the compile time is what ``compile_clock``
    (a :class:`CompileClock`) counted during it; PyTorch gets one untimed warm-up call. A
    timed block runs ``k`` units, ``k`` chosen so that it lasts ``min_block_s``; long units get fewer
    repeats (at least 2) so that a case takes about ``max_case_s``. Besides the wall time, the
    process CPU time of each block is kept: on an oversubscribed machine, with both sides on one
    thread, it counts the work done rather than the time spent waiting for a core.

    ``steady_estimate``: a side whose first (warm-up) call is shorter than ``min_block_s`` (ours: or
    mostly compilation) is called once more, untimed, and ``k`` comes from that second call: on an
    accelerator a step takes well under a millisecond while the first call holds the compilation (or
    CUDA's start-up), which would otherwise leave blocks of one step, timed mostly by dispatch.

    Returns:
      ``compile_s`` (first call minus steady state without a clock), ``first_s``, medians per unit
      ``ours_s``, ``torch_s``, ``ours_cpu_s``, ``torch_cpu_s``, and ``k_ours``, ``k_torch``, ``repeats``.
    """
    clock0 = compile_clock() if compile_clock else None
    with monitor.track("ours"):
        first = ours_run(1)
    compile_s = compile_clock() - clock0 if compile_clock else None
    with monitor.track("torch"):
        t_warm = torch_run(1)
    est_o, est_t = first, t_warm
    if steady_estimate and (first < min_block_s or (compile_s or 0.0) > 0.5 * first):
        with monitor.track("ours"):
            est_o = ours_run(1)
    if steady_estimate and t_warm < min_block_s:
        with monitor.track("torch"):
            est_t = torch_run(1)
    k_o = max(1, int(np.ceil(min_block_s / max(est_o, 1e-9))))
    k_t = max(1, int(np.ceil(min_block_s / max(est_t, 1e-9))))
    k_t = min(k_t, torch_cap) if torch_cap else k_t
    repeats = max(2, min(repeats, int(max_case_s // max(k_o * est_o + k_t * est_t, 1e-9))))
    times = {"ours": [], "torch": [], "ours_cpu": [], "torch_cpu": []}
    for r in range(repeats):
        order = [("ours", ours_run, k_o), ("torch", torch_run, k_t)]
        for label, run, k in (order if r % 2 == 0 else order[::-1]):
            with monitor.track(label):
                cpu0 = time.process_time()
                wall = run(k)
                times[label + "_cpu"].append((time.process_time() - cpu0) / k)
                times[label].append(wall / k)
    out = {f"{key}_s": statistics.median(values) for key, values in times.items()}
    if compile_s is None:
        compile_s = max(first - out["ours_s"], 0.0)
    return dict(out, compile_s=compile_s, first_s=first, k_ours=k_o, k_torch=k_t, repeats=repeats)


def bench_case(data, task, net, T, batch, args, monitor, clock) -> dict:
    """One row of the comparison: ``task`` is "train" (per step) or "sample" (per full chain)."""
    import jax
    import torch

    from tabdiff_jax.sampling import SAMPLING_MATMUL_PRECISION

    pair, load0 = Pair(data, net, T, torch_device=args.torch_device), load_now()
    runs = (pair.ours_train(batch), pair.torch_train(batch)) if task == "train" else \
        (pair.ours_sample(batch), pair.torch_sample(batch))
    before = torch.get_float32_matmul_precision()
    if task == "sample" and not args.torch_matmul_precision:  # ours samples with float32 products: so does torch
        torch.set_float32_matmul_precision("highest" if SAMPLING_MATMUL_PRECISION == "float32" else before)
    precision = {"ours": SAMPLING_MATMUL_PRECISION if task == "sample" else
                 str(getattr(jax.config, "jax_default_matmul_precision", None)),
                 "torch": torch.get_float32_matmul_precision()}
    try:
        c = compare(*runs, repeats=args.repeats, min_block_s=args.min_block_s, monitor=monitor,
                    torch_cap=T if task == "sample" else None, max_case_s=args.max_case_s, compile_clock=clock,
                    steady_estimate=True)
    finally:
        torch.set_float32_matmul_precision(before)
    rows = 1 if task == "train" else batch  # steps/s or rows/s
    scale = 1 if task == "train" else T  # a full PyTorch chain from its per-step time
    row = dict(task=task, net="-".join(map(str, net)), T=T, batch=batch, ours_ms=1e3 * c["ours_s"],
               torch_ms=1e3 * scale * c["torch_s"], ours_per_s=rows / c["ours_s"],
               torch_per_s=rows / (scale * c["torch_s"]), speedup=scale * c["torch_s"] / c["ours_s"],
               speedup_cpu_time=scale * c["torch_cpu_s"] / c["ours_cpu_s"],
               ours_cpu_ms=1e3 * c["ours_cpu_s"], torch_cpu_ms=1e3 * scale * c["torch_cpu_s"],
               compile_s=c["compile_s"], first_call_s=c["first_s"], units_per_block=[c["k_ours"], c["k_torch"]],
               repeats=c["repeats"], load_before=load0, load_after=load_now(), matmul_precision=precision)
    if task == "sample":
        row["torch_steps_timed"] = c["k_torch"]
    unit = "steps/s" if task == "train" else "rows/s"
    print(f"{task:6s} {row['net']:<22s} T={T:<5d} batch={batch:<6d} ours {row['ours_per_s']:10.1f} {unit}  torch "
          f"{row['torch_per_s']:10.1f} {unit}  x{row['speedup']:.2f} (CPU time x{row['speedup_cpu_time']:.2f})  "
          f"compile {row['compile_s']:.1f}s  load {load0}->{row['load_after']}", flush=True)
    return row


# ---------------------------------------------------------------------------------- 1,000,000 rows
def bench_million(args) -> dict:
    """``TabDDPM.fit`` (``--million-fit-steps`` steps) then ``sample(n)`` to a DataFrame: wall time, peak RSS."""
    from tabdiff_jax import datasets
    from tabdiff_jax.diffusion.samplers import default_chunk_size
    from tabdiff_jax.models.tabddpm import TabDDPM

    monitor = RssMonitor()
    rss0, load0 = rss_mib(), load_now()
    train, _ = datasets.load("adult")
    n, T = args.million_rows, args.million_timesteps
    chunk = args.chunk_size or default_chunk_size()  # the model's default unless given
    options = {"hidden_dims": list(SMALL_NET), "sample_chunk_size": chunk}
    model = TabDDPM(steps=args.million_fit_steps, batch_size=1024, num_timesteps=T, **options)
    model.fit(train, target="income", seed=0, progress=False)
    with monitor.track("million"):
        t0 = time.perf_counter()
        model.sample(chunk, seed=1)  # one chunk: compile + run
        first_chunk_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        df = model.sample(n, seed=0)
        total_s = time.perf_counter() - t0
    monitor.close()
    peak = max(monitor.peaks["million"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out = dict(rows=n, T=T, net="-".join(map(str, SMALL_NET)), chunk_size=chunk, fit_steps=args.million_fit_steps,
               total_s=total_s, rows_per_s=n / total_s, first_chunk_with_compile_s=first_chunk_s,
               rss_before_mib=rss0, peak_rss_mib=peak, dataframe_shape=list(df.shape),
               dtypes_match=bool((df.dtypes == train.dtypes[df.columns]).all()), threads=args.threads,
               load_before=load0, load_after=load_now(), cpus=os.cpu_count(), **device_info(),
               note="TabDDPM.fit(...).sample(n); the cost of sampling does not depend on the weights")
    print(f"{n:,} rows, T={T}: {total_s:.1f} s ({out['rows_per_s']:.0f} rows/s, sampled and decoded to a DataFrame "
          f"{tuple(df.shape)}), peak RSS {peak:.0f} MiB; load {load0} -> {out['load_after']}", flush=True)
    return out


# -------------------------------------------------------------------------------------- reporting
def merged_results() -> dict:
    """The DP-SGD and GAN benchmark files as they are, keyed by file name."""
    found = {}
    for path in sorted(RESULTS.glob("dpsgd.json")) + sorted(RESULTS.glob("gan*.json")):
        try:
            found[path.name] = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            found[path.name] = {"error": f"unreadable: {err}"}
    return found


def speed_table(result: dict, cpu_time: bool = True) -> list[str]:
    """The markdown table of the train / sample cases and the 1,000,000-row line (also used by report.py).

    ``cpu_time=False`` leaves out the CPU-time speed-up (on a GPU it measures the host's share only)."""
    lines = []
    rows = result.get("train", []) + result.get("sample", [])
    if rows:
        lines += ["| task | network | T | batch | tabdiff_jax | PyTorch reference | speed-up (wall) | "
                  + ("speed-up (CPU time) | " if cpu_time else "") + "compile (s) |",
                  "|---|---|---|---|---|---|---|" + ("---|" if cpu_time else "") + "---|"]
    for r in rows:
        unit = "steps/s" if r["task"] == "train" else "rows/s"
        lines.append(f"| {r['task']} | {r['net']} | {r['T']} | {r['batch']:,} | {r['ours_per_s']:,.1f} {unit} | "
                     f"{r['torch_per_s']:,.1f} {unit} | {r['speedup']:.2f}x | "
                     + (f"{r['speedup_cpu_time']:.2f}x | " if cpu_time else "") + f"{r['compile_s']:.1f} |")
    m = result.get("million")
    if m:
        total = f"{m['total_s']:.0f}" if m["total_s"] >= 100 else f"{m['total_s']:.1f}"
        lines += ["", f"{m['rows']:,} Adult rows (T = {m['T']}, {m['net']}, chunks of {m['chunk_size']:,}) sampled "
                  f"and decoded to a DataFrame: {total} s ({m['rows_per_s']:,.0f} rows/s), peak RSS "
                  f"{m['peak_rss_mib'] / 1024:.2f} GiB (load average {m['load_before']} -> {m['load_after']})."]
    return lines


def markdown(result: dict) -> str:
    lines = speed_table(result)
    for name, content in result.get("merged", {}).items():
        lines += ["", f"From {name}:"]
        for path, value in _summaries(content):
            key = "/".join(path)
            lines += ["", f"{key}:", value] if isinstance(value, str) else [f"- {key}: {value:.4g}"]
    return "\n".join(lines)


_SPEED_WORDS = ("speedup", "ratio", "per_s", "per_second", "slowdown", "_over_")


def _summaries(obj, path=()):
    """``(path, value)`` of the markdown tables and speed figures of a merged file.

    List items are named by their ``network`` / ``batch_size`` entries when they have them (dpsgd.json).
    """
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _summaries(value, path + (str(key),))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            label = "/".join(f"{item[k]}" for k in ("network", "batch_size") if isinstance(item, dict) and k in item)
            yield from _summaries(item, path + (label or str(i),))
    elif path and isinstance(obj, str) and path[-1] == "markdown":
        yield path, obj
    elif path and isinstance(obj, (int, float)) and not isinstance(obj, bool) \
            and any(w in path[-1].lower() for w in _SPEED_WORDS):
        yield path, float(obj)


def plot(result: dict, path: Path) -> None:
    """Speed-up over the PyTorch reference against the batch size (wall and CPU time), with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("train", 1000, "training step", 1.5), ("sample", 100, "sampling, T = 100", 3.0),
              ("sample", 1000, "sampling, T = 1000", 3.0)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, (task, T, title, target) in zip(axes, panels):
        rows = sorted((r for r in result.get(task, []) if r["T"] == T and r["net"] == "256-256-256"),
                      key=lambda r: r["batch"])
        batches = [r["batch"] for r in rows]
        ax.plot(batches, [r["speedup"] for r in rows], "o-", label="wall time")
        ax.plot(batches, [r.get("speedup_cpu_time", np.nan) for r in rows], "s--", label="CPU time")
        for r in result.get(task, []):
            if task == "train" and r["net"] != "256-256-256":
                ax.plot([r["batch"]], [r["speedup"]], "^", color="C2", label=f"wall, {r['net']}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(target, color="C3", ls=":", lw=1.2, label=f"target {target:g}x")
        ax.set(xscale="log", xlabel="batch size", title=title)
        ax.set_xticks(batches or [1], [f"{b:,}" for b in batches] or [""])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("tabdiff_jax / PyTorch reference")
    m = result["machine"]
    where = (f"{m['cpus']} CPU cores, {m['torch_threads']} thread(s)" if m.get("backend", "cpu") == "cpu" else
             f"JAX on {m.get('jax_device_kind')}, PyTorch on {m.get('torch_device_name', m.get('torch_device'))}")
    fig.suptitle(f"TabDDPM 256-256-256 on Adult's shapes vs the eager PyTorch reference: {where}, "
                 f"load average {m['load_start']} -> {m.get('load_end')}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="training at batch 4096, sampling T = 100 at 1024 (65,536 on an accelerator); no files")
    p.add_argument("--million", action="store_true", help="only the 1,000,000-row sampling + decoding measurement")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help=f"training and sampling batches (default {BATCHES}; sampling on an accelerator "
                        f"{ACCEL_SAMPLE_BATCHES})")
    p.add_argument("--train-batches", type=int, nargs="+", default=None, help="training batches (over --batch-sizes)")
    p.add_argument("--sample-batches", type=int, nargs="+", default=None, help="sampling batches (over --batch-sizes)")
    p.add_argument("--timesteps", type=int, nargs="+", default=None,
                   help="sampling chain lengths T (default 1000 100; --quick: 100)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default 5, quick 3)")
    p.add_argument("--min-block-s", type=float, default=None, help="least duration of a timed block (default 1)")
    p.add_argument("--max-case-s", type=float, default=120.0, help="fewer repeats (>= 2) for longer cases")
    p.add_argument("--max-chain-work", type=int, default=None,
                   help="skip sampling cases with T * batch above this (a T = 1000 chain of 16,384 rows takes "
                        "minutes per run on 2 cores) unless --all-cases; default 1000 * 4096, or 1000 * 65536 "
                        "when both sides run on an accelerator")
    p.add_argument("--all-cases", action="store_true")
    p.add_argument("--no-paper-net", action="store_true", help="skip the 256-1024x4-256 training case")
    p.add_argument("--torch-device", default=None,
                   help='device of the PyTorch reference: "cpu", "cuda", "cuda:1", ... (default: "cuda" when '
                        'PyTorch sees a CUDA GPU and JAX\'s default backend is "gpu", else "cpu")')
    p.add_argument("--torch-matmul-precision", choices=("highest", "high", "medium"), default=None,
                   help="torch.set_float32_matmul_precision on an accelerator (default: \"high\", TF32, as XLA's "
                        "default precision on such GPUs; \"highest\" if jax_default_matmul_precision is)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of both libraries (default: their own). 1 is the fair choice on an "
                        "oversubscribed machine, where multi-threaded barriers stall, PyTorch's most")
    p.add_argument("--million-rows", type=int, default=1_000_000)
    p.add_argument("--million-timesteps", type=int, default=100, help="T of the --million model")
    p.add_argument("--million-fit-steps", type=int, default=0, help="training steps before --million sampling")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="rows per compiled sampling call (--million; default: TabDDPM's, 2,048 on a CPU, 65,536 "
                        "on an accelerator)")
    p.add_argument("--no-merge", action="store_true",
                   help="leave results/dpsgd.json and gan*.json out of the JSON (a run on another machine)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/speed.json; --quick: none)")
    args = p.parse_args(argv)
    args.train_batches = args.train_batches or args.batch_sizes
    args.sample_batches = args.sample_batches or args.batch_sizes  # None: by device (resolve_devices)
    if args.quick:  # the acceptance's training batch and one sampling case
        args.train_batches = args.train_batches or [4096]
        args.timesteps = args.timesteps or [100]
        args.repeats, args.min_block_s = args.repeats or 3, args.min_block_s or 0.2
    args.timesteps = args.timesteps or [1000, 100]
    args.train_batches = args.train_batches or list(BATCHES)
    args.repeats, args.min_block_s = args.repeats or 5, args.min_block_s or 1.0
    if args.out is None and not args.quick:
        args.out = RESULTS / "speed.json"
    return args


def resolve_devices(args) -> None:
    """Fill the device-dependent defaults of ``args`` (after ``--threads``: this starts JAX's backends):
    PyTorch's device and matmul precision, the sampling batches, ``--max-chain-work``."""
    import jax
    import torch

    jax_accel = jax.default_backend() != "cpu"
    args.torch_device = args.torch_device or default_torch_device()
    device = torch.device(args.torch_device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--torch-device {args.torch_device}: PyTorch sees no CUDA device")
    torch_accel = device.type != "cpu"
    if torch_accel:  # XLA's DEFAULT precision takes TF32 matmuls on such GPUs; PyTorch's default does not
        jax_precision = str(getattr(jax.config, "jax_default_matmul_precision", None) or "").lower()
        torch.set_float32_matmul_precision(args.torch_matmul_precision
                                           or ("highest" if jax_precision in ("highest", "float32") else "high"))
    elif args.torch_matmul_precision:
        torch.set_float32_matmul_precision(args.torch_matmul_precision)
    if args.sample_batches is None:
        args.sample_batches = ([65536] if jax_accel else [1024]) if args.quick else \
            list(ACCEL_SAMPLE_BATCHES if jax_accel else BATCHES)
    if args.max_chain_work is None:
        args.max_chain_work = 1000 * (65536 if jax_accel and torch_accel else 4096)
    if jax_accel != torch_accel:
        print(f"note: JAX runs on {jax.default_backend()} and PyTorch on {device}: not a like-for-like comparison "
              "(--torch-device)", flush=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        set_threads(args.threads)
    if not args.million:  # both frameworks share the device: JAX would otherwise take 75% of its memory up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    t_start = time.perf_counter()
    old = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    if args.million:
        result = dict(old, million=bench_million(args))
    else:
        resolve_devices(args)
        data, monitor = load_adult(), RssMonitor()
        result = dict(machine=machine_info(args.torch_device), data=data[5], quick=args.quick, rss_start_mib=rss_mib())
        cases = [("train", SMALL_NET, 1000, b) for b in args.train_batches]
        if 4096 in args.train_batches and not (args.no_paper_net or args.quick):
            cases.append(("train", PAPER_NET, 1000, 4096))
        cases += [("sample", SMALL_NET, T, b) for T in args.timesteps for b in args.sample_batches
                  if T * b <= args.max_chain_work or args.all_cases]
        if "million" in old:  # keep a --million measurement made earlier
            result["million"] = old["million"]
        clock, result["train"], result["sample"] = CompileClock(), [], []
        for case in cases:
            try:
                result[case[0]].append(bench_case(data, *case, args, monitor, clock))
            except Exception as err:  # one failed case (out of memory, say) does not lose the others
                import traceback

                traceback.print_exc()
                result.setdefault("errors", []).append(dict(task=case[0], net="-".join(map(str, case[1])), T=case[2],
                                                            batch=case[3], error=f"{type(err).__name__}: {err}"))
            if args.out:  # after every case: a run stopped by a timeout keeps what it measured
                _write(result, args.out)
        monitor.close()
        result["peak_rss_mib"] = {k: round(v, 1) for k, v in monitor.peaks.items()}
        result["machine"]["load_end"] = load_now()
        result["merged"] = {} if args.no_merge else merged_results()
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
    print("\n" + markdown(result))
    for e in result.get("errors", []):
        print(f"FAILED: {e['task']} {e['net']} T={e['T']} batch={e['batch']}: {e['error']}")
    if "peak_rss_mib" in result and not args.million:
        print(f"\npeak RSS (MiB) while timing: {result['peak_rss_mib']}; load average {result['machine']['load_start']}"
              f" -> {result['machine']['load_end']}; wall {result['wall_s']} s")
    if args.out:
        _write(result, args.out)
        if result.get("train") or result.get("sample"):
            plot(result, args.out.with_suffix(".png"))
    return result


def _write(result: dict, path: Path) -> None:
    from tabdiff_jax.io import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, path)  # atomic: a killed run never leaves half a file


if __name__ == "__main__":
    main()
