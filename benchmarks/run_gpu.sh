#!/usr/bin/env bash
# The GPU run of issue 7: the side-by-side benchmark on CUDA, then the test suite on the GPU.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR] [BENCH_SECONDS] [TEST_SECONDS]
#
# Needs a CUDA build of JAX (and of PyTorch for the torch peer). Writes into OUT_DIR (default benchmarks/results):
# gpu_env.txt (the GPU and the versions), gpu.{json,md} (the table; rewritten after every worker, so a run cut
# short keeps what it measured), bench_gpu.log, tests_gpu.log. Each stage is cut at its time limit.
set -u
out=${1:-benchmarks/results}
bench_s=${2:-900}
test_s=${3:-600}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # absolute, as the run moves to the repository root
cd "$(dirname "$0")/.."

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import sys, jax, jaxlib; print(sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cudnn', torch.backends.cudnn.version())"
} 2>&1 | tee "$out/gpu_env.txt"

# Configs in order of interest, so that a cut run keeps the main ones.
PYTHONUNBUFFERED=1 timeout "$bench_s" python3 -m benchmarks.bench_rnn --platform gpu \
    --configs medium large small gru_medium long --repeats 5 --min-time 0.05 --timeout 90 \
    --out "$out" --tag gpu 2>&1 | tee "$out/bench_gpu.log"

# The tests on the GPU: one line per test as it finishes (a cut run still says what passed). No preallocation, as
# several xdist workers share the device; f32 matmuls at full precision, as on CPU (XLA's GPU default is TF32).
XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_DEFAULT_MATMUL_PRECISION=highest PYTHONUNBUFFERED=1 \
    timeout "$test_s" python3 -m pytest -o addopts="" -v -n 8 --dist loadfile -p no:cacheprovider tests \
    2>&1 | tee "$out/tests_gpu.log" | grep -E "FAILED|ERROR|passed|failed" | tail -40
exit 0
