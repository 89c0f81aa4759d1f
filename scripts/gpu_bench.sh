#!/usr/bin/env bash
# The benchmark on a CUDA machine with no package index (how the README's GPU
# figures were taken). Needs, beside the checkout: .whl/ (cp312 wheels of the
# dependencies that machine lacks) and .devtools/bin/redis-server (a copy of
# this machine's redis-server with its libraries). Writes to $OUT (default out/).
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PATH="$PWD/.devtools/bin:$PATH" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nproc
python3 -m voicegender bench --device cuda --model models/starter.pt --clips "${CLIPS:-2000}" --scale-clips "${SCALE_CLIPS:-1000}" \
  --baseline-clips 30 --limit-seconds 10 --workers "${WORKERS:-8}" --json 2> "$OUT/bench-cuda.log" | tee "$OUT/bench-cuda.json"
