#!/usr/bin/env bash
# The full chat evaluations on one GPU (the 2-core CPU cannot do them in a session): IFEval's 541 prompts with
# lm-eval's 1,280-token budget, compared verdict by verdict with lm-eval's ifeval task, and XSTest's 450 prompts.
# Expected: a few minutes on one H100 for the bundled model; prints one JSON line per evaluation.
#   bash bench/gpu_chat_evals.sh [MODEL] [DATA_DIR]      (MODEL: 'bundled' or a tuned checkpoint dir)
set -euo pipefail
MODEL="${1:-bundled}"
DATA="${2:-${PRIMER_DATA:-../shared/benchmarks}}"
OUT="${OUT:-/tmp/primer-gpu-chat-evals}"
mkdir -p "$OUT"
python bench/ifeval.py --model "$MODEL" --data-dir "$DATA" --device cuda --batch-size 64 --output "$OUT/ifeval.json"
python -m primer eval "$MODEL" --tasks xstest --data-dir "$DATA" --device cuda --batch-size 64 --cache none \
  --output "$OUT/xstest.json" > "$OUT/xstest.txt"
python - "$OUT/xstest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["tasks"]["xstest"]["metrics"]
pick = {k: round(100 * v, 1) for k, v in m.items() if k.startswith(("compliance_rate,unsafe", "refusal_rate,safe"))}
print(json.dumps({"bench": "xstest", **pick}))
PY
