#!/usr/bin/env bash
# The GPU checks of the runner, as one short script for a lent GPU machine:
#   1. `pytest -m gpu` (tests/test_runner_gpu.py and any other gpu-marked test),
#   2. `python benchmarks/train_throughput.py --quick` (our loop vs a bare loop, ResNet-50 at 224 px, bf16).
# Results go to $OUT (or benchmarks/out): nvidia-smi.txt, pytest_gpu.txt, throughput.txt, throughput.json.
#
# The GPU image has torch, timm, torchvision, scikit-learn, matplotlib, pytest and tensorboard, but not omegaconf
# or wandb. A wheel of omegaconf (2.4, pure Python, needs only PyYAML) can be carried in WHEELS (default: benchmarks/wheels,
# made with `pip wheel --no-deps omegaconf==2.4.0 -w benchmarks/wheels`; name the folder in `carry`);
# wandb is optional: runs log to metrics.jsonl and warn once without it.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out}"
WHEELS="${WHEELS:-benchmarks/wheels}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled WANDB_SILENT=true
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
if ! "$PY" -c "import omegaconf" 2>/dev/null; then
  "$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" omegaconf \
    > "$OUT/pip.txt" 2>&1 || echo "omegaconf missing and no wheels in $WHEELS" | tee -a "$OUT/pip.txt"
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/env.txt"
status=0
timeout "${PYTEST_TIMEOUT:-420}" "$PY" -m pytest -m gpu -q -rs -s -p no:cacheprovider tests/ 2>&1 \
  | tee "$OUT/pytest_gpu.txt" | tail -40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout "${BENCH_TIMEOUT:-240}" "$PY" benchmarks/train_throughput.py --quick --json "$OUT/throughput.json" 2>&1 \
  | tee "$OUT/throughput.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
