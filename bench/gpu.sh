#!/usr/bin/env bash
# Every pending GPU measurement in one call, for the device machine (one H200, ~15 minutes a
# session): run from the repository root; the reports land in bench/ and, when $OUT is set, there.
#   bench/kernels.py --config small  -> bench/kernels.md        (whisper-small B=32, 1/8/32 adapters)
#   bench/kernels.py --config large  -> bench/kernels_large.md  (whisper-large-v3 B=16, 16 adapters)
# Each engine is checked against the reference on the GPU before it is timed (bf16 MMA for real).
set -euo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python - <<'PY'
import torch, triton, transformers, peft
print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
PY
timeout 330 python bench/kernels.py --config small --repeats 20
timeout 200 python bench/kernels.py --config large --repeats 10 || echo "large config did not finish"
if [ -n "${OUT:-}" ]; then cp bench/kernels*.md "$OUT"/; fi
