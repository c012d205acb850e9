#!/usr/bin/env bash
# The GPU measurements of the benchmark suite, as one script for a lent GPU machine (results to $OUT):
#   1. pytest -m gpu (skip with SKIP_TESTS=1 when benchmarks/gpu_check.sh already ran them in the session),
#   2. ResNet-50 training throughput, 224 px, bf16 + channels_last, runner vs bare loop, with and without
#      torch.compile (benchmarks/train_throughput.py --quick --compile),
#   3. FeedbackNet(resnet50, deconv) at steps 1, 2, 4 against the backbone (benchmarks/overheads.py --only steps),
#   4. the per-kind, readout and data-generation ratios on the GPU and on the machine's CPU
#      (benchmarks/overheads.py --quick [--device cpu]).
# The GPU image lacks omegaconf: a wheel is installed from WHEELS (see benchmarks/gpu_check.sh).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out}"; WHEELS="${WHEELS:-benchmarks/wheels}"; PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled WANDB_SILENT=true PYTHONUNBUFFERED=1
"$PY" -c "import omegaconf" 2>/dev/null || "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" omegaconf
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.txt" 2>&1 || true
status=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${PYTEST_TIMEOUT:-300}" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests/ 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -5
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
timeout "${BENCH_TIMEOUT:-240}" "$PY" benchmarks/train_throughput.py --quick --compile --json "$OUT/throughput.json" 2>&1 \
  | tee "$OUT/throughput.txt" || status=1
timeout 120 "$PY" benchmarks/overheads.py --only steps --quick --json "$OUT/steps.json" 2>&1 | tee "$OUT/steps.txt" || status=1
timeout 150 "$PY" benchmarks/overheads.py --quick --json "$OUT/overheads_gpu.json" 2>&1 | tee "$OUT/overheads_gpu.txt" || status=1
timeout 150 "$PY" benchmarks/overheads.py --quick --device cpu --json "$OUT/overheads_cpu.json" 2>&1 \
  | tee "$OUT/overheads_cpu.txt" || status=1
exit $status
