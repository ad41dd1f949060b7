#!/usr/bin/env bash
# fedarena's GPU checks in one go, for a machine with CUDA (about 8 minutes on an H200):
#   1. every path with fl.device=cuda: tests/test_cuda.py (GPU vs CPU runs, CNN and
#      BatchNorm paths, local optimizers, lockstep, attack search, defense stages, DP,
#      client-side defenses), then the end-to-end
#      and lockstep checks with FEDARENA_TEST_DEVICE=cuda (every attack, every defense);
#   2. `fedarena bench` training and lockstep sections on the GPU (GPU time, utilization).
# Run it from the repository root. Results go to $OUT (default
# benchmarks/results/gpu-<UTC time>): at most 6 files, two folders deep.
# Python packages the machine lacks (fedarena needs pydantic): wheels in .whl/ are
# installed into /tmp/site first (benchmarks/README.md, "On a GPU machine").
# Data: FEDARENA_DATA (a folder holding fashion-mnist/ and mnist/) when set, else the
# bench's lockstep section uses generated data of the same shapes.
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA device: nothing to check"; exit 1; }
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, fedarena; print('torch', torch.__version__, '| fedarena', fedarena.__version__)"; } | tee "$OUT/machine.txt"
status=0
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/tests-cuda.log" || status=1
FEDARENA_TEST_DEVICE=cuda timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_lockstep.py \
    tests/test_end_to_end.py 2>&1 | tee "$OUT/tests-end-to-end-cuda.log" || status=1
timeout 240 python3 -m fedarena.cli bench --only training,lockstep --out "$OUT/bench" 2>&1 | tail -n 40 \
    | tee "$OUT/bench.log" || status=1
exit $status
