#!/usr/bin/env bash
# Issue 14 §4's GPU checks, as one script for a lent device machine (`run` tool, H200):
#   1. base preset: pairs/s, peak memory and MFU, eager and torch.compile, batch 256 and 512;
#   2. paper preset: pairs/s and peak memory at batch 256;
#   3. the default sample sky trained on the GPU (`astroclip run --device cuda`, short), its
#      evaluation.json beside the CPU run's (README: The default run on this sky).
# Results go to $OUT (the device tool fetches it) and, copied back here by hand, to
# bench/gpu/results/ (committed: not git-ignored). Each step has its own time limit, so one that
# runs long still leaves the others' JSON. Usage on the device:
#   OUT=$OUT bash bench/gpu_checks.sh            # about 10 minutes on an H200
# Needs a Python with torch (CUDA) and this project installed: PYTHON=/path/to/python to choose.
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-bench/gpu/results}
mkdir -p "$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> "$OUT/device.txt" 2>&1 || true

timeout 240 "$PY" bench/bench_gpu_train.py --preset base --batch-size 256 --steps 150 \
    --sweep-batch 512 --also-compile --compile-steps 100 --max-seconds 40 \
    --out "$OUT/base.json" 2>&1 | tail -20
timeout 150 "$PY" bench/bench_gpu_train.py --preset paper --batch-size 256 --steps 40 \
    --warmup 5 --max-seconds 40 --out "$OUT/paper.json" 2>&1 | tail -10
# The default sky: ingest on the CPUs, a short training on the GPU, the same evaluation.
export DAGSTER_HOME=${DAGSTER_HOME:-/tmp/astroclip-gpu-home}
mkdir -p "$DAGSTER_HOME"
timeout 330 "$PY" -m astroclip_core.cli run --storage /tmp/astroclip-gpu-sky --device cuda \
    > "$OUT/default_sky_gpu.log" 2>&1
echo "astroclip run --device cuda: exit $?" | tee -a "$OUT/device.txt"
find /tmp/astroclip-gpu-sky/reports -name evaluation.json -exec cp {} "$OUT/default_sky_gpu_evaluation.json" \;
ls -l "$OUT"
