#!/usr/bin/env bash
# The prepared check for a machine with one CUDA GPU, in under 8 minutes:
#   1. a Python with torch and deqcert's dependencies (the checkout's .venv, the system
#      Python, or `make install`, which pip-installs the pinned torch 2.14.1 + torchvision);
#   2. the CUDA tests: tests/test_cuda.py and the CUDA tests of tests/test_solvers.py;
#   3. the host syncs of the sample loop, listed file:line (sync debug mode "warn");
#   4. benchmarks/gpu.py on 2 inputs per model at n = 10,000, batch 400.
# Everything is written under $OUT (or the first argument, or ./gpu-check-out).
# Exit status: 0 when every step passed, else the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu-check-out}}
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1
t0=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - t0 )) s)"; }
failed=0

step "python"
DEPS="import torch, torchvision, pydantic, scipy, safetensors, typer, rich, numpy, pytest"
if [ -x .venv/bin/python ] && .venv/bin/python -c "$DEPS" 2>/dev/null; then
  PY=.venv/bin/python
elif python3 -c "$DEPS" 2>/dev/null; then
  PY=python3
else
  timeout 300 make install || { echo "install failed"; exit 1; }
  PY=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import torch, deqcert; print('torch', torch.__version__, 'deqcert', deqcert.__version__)"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
if ! $PY -c "import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name(0))"; then
  echo "no CUDA device visible to torch: nothing to check"; exit 1
fi

step "CUDA tests"
timeout 240 $PY -m pytest -q -p no:cacheprovider -rsxX tests/test_cuda.py \
  "tests/test_solvers.py::test_cuda" --junitxml="$OUT_DIR/cuda-tests.xml" \
  | tee "$OUT_DIR/cuda-tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed=$((failed + 1))

step "host syncs in the sample loop"
timeout 120 $PY - "$OUT_DIR/syncs.txt" <<'PYEOF' || failed=$((failed + 1))
import sys
sys.path.insert(0, "tests")
from deqcert.data.sample import MnistSample
from test_cuda import _sample_loops, count_syncs
from deqcert import syncs as deqcert_syncs

lines = []
for name, loop in _sample_loops(MnistSample(split="test")).items():
    loop()  # warm-up
    with count_syncs() as syncs, deqcert_syncs.recording() as waits:
        loop()
    lines.append(f"{name}: {len(syncs)} host syncs in one sample loop (n0 = 0, n = 2000, batch 400)")
    lines.append(f"{name}: {len(waits)} lagged waits (event of an earlier step, queue not drained)")
    counts = {}
    for s in syncs:
        counts[s] = counts.get(s, 0) + 1
    lines += [f"  {c:5d} x {s}" for s, c in sorted(counts.items(), key=lambda kv: -kv[1])]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF

step "benchmark (2 inputs per model, n = 10,000, batch 400)"
timeout 300 $PY benchmarks/gpu.py --device cuda --inputs 2 --n 10000 --batch 400 \
  --out "$OUT_DIR/gpu-bench.md" || failed=$((failed + 1))

step "done: $failed step(s) failed"
exit "$failed"
