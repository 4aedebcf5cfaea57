#!/usr/bin/env bash
# The speed benchmarks on a GPU machine, in one go (about 9 minutes on one H200; never past GPU_RUN_BUDGET_S).
#
#   bash benchmarks/gpu_run.sh                         # from the repository root, on the GPU machine
#   GPU_RUN_QUICK=1 PYTHON=.venv/bin/python OUT=/tmp/g bash benchmarks/gpu_run.sh   # tiny, on a CPU: the wiring
#
# Writes under $OUT (default ./gpu_out): gpu_log.txt (everything printed), speed_gpu.json + .png
# (benchmarks/speed.py: training steps/s and sampling rows/s against the PyTorch reference, both on the
# GPU), million_gpu.json (1,000,000 Adult rows sampled and decoded) and million10m_gpu.json (10,000,000,
# if the time allows), tabdiff_gpu.json + gpu_synth.tar (benchmarks/gpu_tabdiff.py: TabDiff's 50-step sampler
# against TabDDPM at T = 100, and Adult fits whose samples `python benchmarks/gpu_tabdiff.py --score OUT` scores
# on a machine with CatBoost). Copy the JSON files into benchmarks/results/ for benchmarks/report.py.
# Then `pytest tests/test_sampling_contract.py tests/test_samplers.py` checks the sampler on the GPU.
#
# Environment: PYTHON (default python3), OUT, GPU_RUN_QUICK=1 (tiny settings, for a CPU), GPU_RUN_BUDGET_S
# (seconds for the whole script, default 560). Each step gets a `timeout` cut to what is left of the budget,
# and a step that fails does not stop the next one. Wheels in .whl/ are installed to /tmp/site unless their
# modules import already: the machine's image lacks dp_accounting (+ dm_tree) and mbi (the sampling tests fit
# MST and AIM), so carry .whl with dp_accounting-0.6.0, dm_tree-0.1.10 (cp312) and mbi-2.0.0.

set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PYTHON=${PYTHON:-python3}
QUICK=${GPU_RUN_QUICK:-0}
BUDGET=${GPU_RUN_BUDGET_S:-560}
GRACE=10  # seconds between a step's TERM and its KILL
export PYTHONUNBUFFERED=1

left() { echo $((BUDGET - SECONDS)); }

# step NAME CAP_S CMD...: run CMD under a timeout of min(CAP_S, what is left), or skip it when under 30 s are left.
step() {
    local name=$1 cap=$2 rem t t0 rc
    shift 2
    rem=$(( $(left) - GRACE ))
    t=$(( cap < rem ? cap : rem ))
    if (( t < 30 )); then
        echo "=== SKIPPED $name: ${rem} s left of the ${BUDGET} s budget"
        return 0
    fi
    echo "=== $name: $(date -u +%H:%M:%S) UTC, timeout ${t} s"
    echo "+ $*"
    t0=$SECONDS
    timeout -k "$GRACE" "$t" "$@"
    rc=$?
    if (( rc == 124 || rc == 137 )); then
        echo "=== $name: TIMED OUT after $((SECONDS - t0)) s (what it wrote so far is kept)"
    else
        echo "=== $name: exit $rc after $((SECONDS - t0)) s"
    fi
    return 0
}

main() {
    echo "=== gpu_run.sh $(date -u +%Y-%m-%dT%H:%M:%SZ), quick=$QUICK, budget ${BUDGET} s, OUT=$OUT, PYTHON=$PYTHON"
    if ls .whl/*.whl >/dev/null 2>&1 && ! "$PYTHON" -c "import dp_accounting, tree, mbi" >/dev/null 2>&1; then
        echo "=== installing the carried wheels to /tmp/site"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || echo "=== wheel install FAILED (continuing)"
        export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    else
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    fi
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi
    else
        echo "(no nvidia-smi)"
    fi
    "$PYTHON" -c "
import jax, torch
print('jax', jax.__version__, 'backend', jax.default_backend(), jax.devices())
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
" || echo "=== jax / torch report FAILED"

    local speed million tests tabdiff
    if [[ "$QUICK" == 1 ]]; then
        speed=(--train-batches 64 --sample-batches 64 --timesteps 5 10 --repeats 2 --min-block-s 0.05
               --max-case-s 5 --no-paper-net --threads 1)
        million=(--million-rows 3000 --million-timesteps 5 --chunk-size 1024)
        million10=(--million-rows 5000 --million-timesteps 5 --chunk-size 2048)
        tests=(--co)  # collection only: the CPU run checks the wiring, not the tests
        tabdiff=(--quick)
    else
        # training at batch 4,096 (256-256-256 and the paper's 256-1024x4-256) and 16,384; sampling a batch of
        # 65,536 with T = 100 and 1000; both sides on the GPU (speed.py's default there).
        speed=(--train-batches 4096 16384 --sample-batches 65536 --timesteps 100 1000 --repeats 3
               --min-block-s 0.5 --max-case-s 20)
        million=(--million-rows 1000000 --million-timesteps 100 --chunk-size 65536)
        million10=(--million-rows 10000000 --million-timesteps 100 --chunk-size 65536)
        tests=()
        tabdiff=()
    fi

    step "speed (both on the GPU)" 150 "$PYTHON" benchmarks/speed.py "${speed[@]}" --no-merge \
        --out "$OUT/speed_gpu.json"
    step "1,000,000 rows" 75 "$PYTHON" benchmarks/speed.py --million --million-fit-steps 0 "${million[@]}" \
        --out "$OUT/million_gpu.json"
    step "TabDiff and TabDDPM on Adult" 200 "$PYTHON" benchmarks/gpu_tabdiff.py "${tabdiff[@]}" --out "$OUT"
    local files=(tests/test_samplers.py)
    [[ -f tests/test_sampling_contract.py ]] && files=(tests/test_sampling_contract.py "${files[@]}")
    [[ -f tests/test_sampling_contract.py ]] || echo "=== (tests/test_sampling_contract.py not there: skipped)"
    # --maxfail=5 rather than -x: one run on the GPU should show every failure it can, not only the first
    step "sampling tests on the GPU" 100 "$PYTHON" -m pytest -q --maxfail=5 "${tests[@]}" "${files[@]}"
    step "10,000,000 rows" 120 "$PYTHON" benchmarks/speed.py --million --million-fit-steps 0 "${million10[@]}" \
        --out "$OUT/million10m_gpu.json"

    rm -f "$OUT"/.*.tmp
    echo "=== done in ${SECONDS} s; files in $OUT:"
    ls -la "$OUT"
}

main 2>&1 | tee -a "$OUT/gpu_log.txt"
