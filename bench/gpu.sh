#!/usr/bin/env bash
# Every pending GPU measurement in one call, for the device machine (one H200, ~15 minutes a
# session): run from the repository root; the reports land in bench/ and, when $OUT is set, there.
#   the bank's mixed-batch test on CUDA  -> the fused kernel decodes token for token like separate runs
#   bench/adapter_kernels.py --config small      -> bench/kernels.md        (whisper-small B=32, 1/8/32 adapters)
#   bench/adapter_kernels.py --config large      -> bench/kernels_large.md  (whisper-large-v3 B=16, 16 adapters)
# Each engine is checked against the reference on the GPU before it is timed (bf16 MMA for real).
# One step failing does not stop the next; each one's log comes back under $OUT.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
logs="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
python - <<'PY'
import torch, triton, transformers, peft
print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
PY
timeout 120 python -m pytest -q -p no:cacheprovider tests/unit/test_bank.py -k "cuda" 2>&1 | tail -15 | tee "$logs/cuda_tests.log"
timeout 320 python bench/adapter_kernels.py --config small --repeats 20 2>&1 | tee "$logs/small.log" | grep -v "^  check" | tail -40
timeout $((585 - SECONDS)) python bench/adapter_kernels.py --config large --repeats 10 > "$logs/large.log" 2>&1 || echo "large config did not finish"
tail -12 "$logs/large.log"
if [ -n "${OUT:-}" ]; then cp bench/kernels*.md "$OUT"/ 2>/dev/null; fi
