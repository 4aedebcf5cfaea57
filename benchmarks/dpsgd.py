"""Time per step: non-private vs vmap DP-SGD vs ghost (book-keeping) DP-SGD, and Opacus on the same nets.

Networks: (a) the issue's reference MLP 110-256-256-256-110 with per-example MSE, (b) the
TableDiffusion network (5 noise levels per example, residual blocks with LayerNorm), (c) the
TabDDPM denoiser (eps-MSE at one random timestep per example). With torch + opacus installed, the
same MLP and TableDiffusion network run in PyTorch: plain step, Opacus standard hooks and Opacus
ghost clipping, in the same process, interleaved with the JAX runs.

Every step includes everything an optimiser step does (forward, backward, clipping, noise, Adam).
Compile time is reported separately; warm-up steps are excluded; steps are timed in rounds that
alternate between the methods (so that a busy machine slows all methods alike), with
``block_until_ready`` (JAX) at the end of each round; the median over rounds is reported.

    python benchmarks/dpsgd.py               # full: batch 256, 1024, 4096
    python benchmarks/dpsgd.py --quick       # batch 256 only, fewer rounds
    python benchmarks/dpsgd.py --threads 1   # both frameworks on one thread (stable on a busy machine)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _threads_from_argv(argv) -> int | None:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return None


# XLA reads its thread settings when jax starts, so they are set before the import.
_THREADS = _threads_from_argv(sys.argv[1:]) if __name__ == "__main__" else None
if _THREADS == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tabdiff_jax.diffusion.tablediffusion import TableDiffusionNet, make_loss  # noqa: E402
from tabdiff_jax.layers import Linear  # noqa: E402
from tabdiff_jax.privacy import make_nonprivate_step, make_private_step  # noqa: E402

DATA_DIM = 110
MLP_DIMS = (110, 256, 256, 256, 110)
TD_HIDDEN, TD_STEPS = (256, 256), 5


# ------------------------------------------------------------------------------ JAX networks
class MLP(nnx.Module):
    def __init__(self, dims, rngs):
        self.layers = nnx.List([Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def mlp_loss(model, batch, keys):
    x, y = batch
    return jnp.mean(jnp.square(model(x) - y), axis=-1)


def tabddpm_net_and_loss():
    from tabdiff_jax.diffusion.denoiser import TabDDPMDenoiser
    from tabdiff_jax.diffusion.schedules import make_schedule

    schedule = make_schedule(1000, "cosine")
    abar = jnp.asarray(schedule.alpha_bar, jnp.float32)

    def loss(model, batch, keys):
        x, y = batch
        t = jax.vmap(lambda k: jax.random.randint(k, (), 0, 1000))(keys)
        eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), (x.shape[-1],)))(keys)
        a = abar[t][:, None]
        xt = jnp.sqrt(a) * x + jnp.sqrt(1 - a) * eps
        labels = (y[:, 0] > 0).astype(jnp.int32)
        return jnp.mean(jnp.square(model(xt, t, labels) - eps), axis=-1)

    net = TabDDPMDenoiser(DATA_DIM, DATA_DIM, num_classes=2, rngs=nnx.Rngs(0))
    return net, loss


def jax_networks():
    nets = {
        "mlp_110-256x3-110": (MLP(MLP_DIMS, nnx.Rngs(0)), mlp_loss),
        "tablediffusion": (TableDiffusionNet(DATA_DIM + 1, DATA_DIM, TD_HIDDEN, rngs=nnx.Rngs(0)),
                           lambda m, b, k: make_loss(TD_STEPS)(m, b[0], k)),
    }
    try:
        nets["tabddpm_denoiser"] = tabddpm_net_and_loss()
    except ImportError as err:  # the TabDDPM denoiser is optional here
        print(f"skipping the TabDDPM denoiser: {err}")
    return nets


def jax_steps(net, loss, batch_size, vmap_microbatch):
    graphdef, params = nnx.split(net, nnx.Param)
    opt = optax.adam(1e-3)
    common = dict(l2_clip=1.0, noise_multiplier=1.0, expected_batch_size=float(batch_size), graphdef=graphdef)
    return params, {
        "jax_nonprivate": make_nonprivate_step(loss, opt, graphdef=graphdef),
        "jax_ghost": make_private_step(loss, opt, clipping="ghost", **common),
        "jax_vmap": make_private_step(loss, opt, clipping="vmap", microbatch_size=min(batch_size, vmap_microbatch), **common),
    }


class JaxRunner:
    """Compiles a step once (timed), then runs ``k`` steps per call, blocking at the end."""

    def __init__(self, step, params, batch, mask):
        self.batch, self.mask = batch, mask
        state = step.init(params)
        t0 = time.perf_counter()
        self.compiled = step.step.lower(state, batch, mask, jax.random.key(0)).compile()
        self.compile_s = time.perf_counter() - t0
        self.state = state
        self.i = 0

    def run(self, k):
        for _ in range(k):
            self.i += 1
            self.state, _ = self.compiled(self.state, self.batch, self.mask, jax.random.key(self.i))
        jax.block_until_ready(self.state)


# ---------------------------------------------------------------------------- torch networks
def torch_runners(name, batch_np, batch_size):
    """Plain / Opacus hooks / Opacus ghost steps for the PyTorch twin of network ``name``."""
    import torch
    from opacus import PrivacyEngine
    from torch import nn

    class PerExampleMSE(nn.Module):
        def __init__(self, dims=(1,)):
            super().__init__()
            self.reduction, self.dims = "mean", dims

        def forward(self, pred, target):
            per = ((pred - target) ** 2).mean(dim=self.dims)
            return per if self.reduction == "none" else (per.mean() if self.reduction == "mean" else per.sum())

    class Residual(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.fc, self.norm = nn.Linear(i, o), nn.LayerNorm(o)

        def forward(self, x):
            return torch.cat([torch.relu(self.norm(self.fc(x))), x], dim=-1)

    def build():
        torch.manual_seed(0)
        if name.startswith("mlp"):
            layers = []
            for a, b in zip(MLP_DIMS[:-2], MLP_DIMS[1:-1]):
                layers += [nn.Linear(a, b), nn.ReLU()]
            return nn.Sequential(*layers, nn.Linear(MLP_DIMS[-2], MLP_DIMS[-1]))
        width, blocks = DATA_DIM + 1, []
        for h in TD_HIDDEN:
            blocks.append(Residual(width, h))
            width += h
        return nn.Sequential(*blocks, nn.Linear(width, DATA_DIM))

    if name.startswith("mlp"):
        x, y = (torch.from_numpy(np.asarray(a)) for a in batch_np)
        criterion_dims = (1,)
    else:  # TableDiffusion: the noisy inputs and noise targets of T levels, drawn once (fixed batch)
        g = torch.Generator().manual_seed(0)
        x0 = torch.from_numpy(np.asarray(batch_np[0]))
        scales = torch.sqrt(torch.tensor([(1 - np.cos(np.pi * t / TD_STEPS)) / 2 + 0.1 for t in range(TD_STEPS)],
                                         dtype=torch.float32))
        y = torch.randn(batch_size, TD_STEPS, DATA_DIM, generator=g)
        xt = x0[:, None, :] + scales[None, :, None] * y
        x = torch.cat([xt, scales[None, :, None].expand(batch_size, TD_STEPS, 1)], dim=-1)
        criterion_dims = (1, 2)
    runners = {}

    def plain():
        model = build()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        crit = PerExampleMSE(criterion_dims)

        def step():
            opt.zero_grad(set_to_none=True)
            crit(model(x), y).backward()
            opt.step()
        return step

    def private(mode):
        model = build()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)
        engine = PrivacyEngine()
        crit = PerExampleMSE(criterion_dims)
        out = engine.make_private(module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
                                  max_grad_norm=1.0, poisson_sampling=False, grad_sample_mode=mode,
                                  criterion=crit)
        if mode == "ghost":
            model, opt, crit, _ = out
        else:
            model, opt, _ = out

        def step():
            opt.zero_grad(set_to_none=True)
            crit(model(x), y).backward()
            opt.step()
        return step

    runners["torch_nonprivate"] = plain()
    runners["opacus_hooks"] = private("hooks")
    runners["opacus_ghost"] = private("ghost")
    return runners


class TorchRunner:
    def __init__(self, step):
        self.step, self.compile_s = step, 0.0

    def run(self, k):
        for _ in range(k):
            self.step()


# ------------------------------------------------------------------------------------ main
def time_rounds(runners: dict, rounds: int, target_s: float) -> dict:
    """Median seconds per step of each runner over ``rounds`` interleaved rounds."""
    per_round = {}
    for name, r in runners.items():  # warm-up, and a step count so that a round lasts ~target_s
        r.run(2)
        t0 = time.perf_counter()
        r.run(1)
        per_round[name] = max(1, min(50, int(target_s / max(time.perf_counter() - t0, 1e-6))))
    times = {name: [] for name in runners}
    cpu = {name: [] for name in runners}
    for _ in range(rounds):
        for name, r in runners.items():
            k = per_round[name]
            t0, c0 = time.perf_counter(), time.process_time()
            r.run(k)
            times[name].append((time.perf_counter() - t0) / k)
            cpu[name].append((time.process_time() - c0) / k)
    return {name: {"median_ms": 1e3 * statistics.median(v), "min_ms": 1e3 * min(v),
                   "cpu_median_ms": 1e3 * statistics.median(cpu[name]),
                   "steps_per_round": per_round[name], "rounds": rounds} for name, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 256 only, 3 rounds")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--networks", nargs="+", default=None, help="subset of network names")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--round-seconds", type=float, default=0.3, help="target duration of one method's round")
    parser.add_argument("--vmap-microbatch", type=int, default=512, help="rows per vmap chunk (bounds memory)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch / Opacus")
    parser.add_argument("--threads", type=int, default=None,
                        help="1: run XLA and torch single-threaded (fair and stable when the machine is shared)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dpsgd.json"))
    args = parser.parse_args(argv)
    batch_sizes = [256] if args.quick else args.batch_sizes
    rounds = 3 if args.quick else args.rounds

    have_torch = False
    if not args.no_torch:
        try:
            import opacus  # noqa: F401
            import torch

            have_torch = True
            if args.threads:
                torch.set_num_threads(args.threads)
        except ImportError:
            print("torch / opacus not installed: JAX only")
    nets = jax_networks()
    if args.networks:
        nets = {k: v for k, v in nets.items() if k in args.networks}
    results = []
    rng = np.random.default_rng(0)
    for name, (net, loss) in nets.items():
        for b in batch_sizes:
            batch = (jnp.asarray(rng.normal(size=(b, DATA_DIM)), jnp.float32),
                     jnp.asarray(rng.normal(size=(b, DATA_DIM)), jnp.float32))
            mask = jnp.ones((b,), bool)
            params, steps = jax_steps(net, loss, b, args.vmap_microbatch)
            runners = {k: JaxRunner(s, params, batch, mask) for k, s in steps.items()}
            if have_torch and name in ("mlp_110-256x3-110", "tablediffusion"):
                runners.update({k: TorchRunner(s) for k, s in torch_runners(name, batch, b).items()})
            timed = time_rounds(runners, rounds, args.round_seconds)
            row = {"network": name, "batch_size": b,
                   "compile_s": {k: round(r.compile_s, 3) for k, r in runners.items() if r.compile_s},
                   "ms_per_step": {k: round(v["median_ms"], 3) for k, v in timed.items()},
                   "ms_per_step_min": {k: round(v["min_ms"], 3) for k, v in timed.items()},
                   "cpu_ms_per_step": {k: round(v["cpu_median_ms"], 3) for k, v in timed.items()},
                   "steps_per_round": {k: v["steps_per_round"] for k, v in timed.items()}}
            ms = row["ms_per_step"]
            row["ratios"] = {"ghost_over_nonprivate": ms["jax_ghost"] / ms["jax_nonprivate"],
                             "vmap_over_nonprivate": ms["jax_vmap"] / ms["jax_nonprivate"]}
            if "opacus_ghost" in ms:
                row["ratios"].update({"opacus_ghost_over_jax_ghost": ms["opacus_ghost"] / ms["jax_ghost"],
                                      "opacus_ghost_over_torch_nonprivate": ms["opacus_ghost"] / ms["torch_nonprivate"],
                                      "opacus_hooks_over_torch_nonprivate": ms["opacus_hooks"] / ms["torch_nonprivate"]})
            row["ratios"] = {k: round(v, 3) for k, v in row["ratios"].items()}
            results.append(row)
            print(json.dumps(row), flush=True)

    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
               "jax": jax.__version__, "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
               "load_average": os.getloadavg(), "threads": args.threads, "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if have_torch:
        import opacus
        import torch

        machine.update({"torch": torch.__version__, "opacus": opacus.__version__, "torch_threads": torch.get_num_threads()})
    out = {"benchmark": "dpsgd", "quick": args.quick, "machine": machine,
           "settings": {"l2_clip": 1.0, "noise_multiplier": 1.0, "optimizer": "adam", "rounds": rounds,
                        "vmap_microbatch": args.vmap_microbatch, "tablediffusion_levels": TD_STEPS,
                        "tablediffusion_hidden": TD_HIDDEN, "data_dim": DATA_DIM},
           "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print_table(results)
    print(f"wrote {args.out}")


def print_table(results):
    cols = ["jax_nonprivate", "jax_ghost", "jax_vmap", "torch_nonprivate", "opacus_hooks", "opacus_ghost"]
    head = f"{'network':20s} {'batch':>5s} " + " ".join(f"{c:>16s}" for c in cols) + f" {'ghost/np':>9s} {'opG/ourG':>9s}"
    print("\nms per step (median over rounds)")
    print(head)
    for r in results:
        ms = r["ms_per_step"]
        vals = " ".join(f"{ms[c]:16.2f}" if c in ms else f"{'-':>16s}" for c in cols)
        og = r["ratios"].get("opacus_ghost_over_jax_ghost")
        print(f"{r['network'][:20]:20s} {r['batch_size']:5d} {vals} {r['ratios']['ghost_over_nonprivate']:9.2f} "
              f"{(f'{og:9.2f}' if og else '        -')}")


if __name__ == "__main__":
    main()
