#!/usr/bin/env bash
# Issue #15's "what a GPU run gives": the README's CPU recipe for IFEval (rejection sampling, then DPO, on IFEval-form
# prompts the policy's own samples answer and IFEval's checkers rank), at the scale 2 CPU cores could not afford
# (N prompts instead of 400, epochs instead of a step budget), then the tuned model against its base on all 541
# IFEval prompts, XSTest's 450 and ARC-Easy / PIQA (100), paired item by item (`primer compare`).
#
#   bash bench/gpu_tune.sh [MODEL] [DATA_DIR]           # N=1500 prompts: ~25 min on one H200 (see below)
#   N=250 bash bench/gpu_tune.sh                        # ~11 min on one H200
#   DEVICE=cpu N=4 LIMIT=2 bash bench/gpu_tune.sh       # checks the script on a CPU (~6 min on 2 busy cores)
#
# Prints the time elapsed after each part and `primer compare`'s differences; every file stays in $OUT (pairs,
# checkpoints, tune logs, eval results, compare-*.html). Needs primer importable (`pip install -e .`, or PYTHONPATH=src;
# on a machine without network, bench/gpu_carry.sh packs what it needs).
# Measured on one H200 (2026-11-29, torch 2.11, N=250): pairs 157 s (250 prompts x 4 samples, 196k tokens at 1,300
# tok/s: the 135M model's decode is launch-bound, ~20 ms a step at any batch up to 64), SFT 19 s, DPO 27 s, then each
# model's 541 IFEval prompts 4 min 7 s at 16 rows (before eval's chunks grew with --batch-size; fewer minutes now).
set -euo pipefail
MODEL="${1:-bundled}"
DATA="${2:-${PRIMER_DATA:-../shared/benchmarks}}"
N="${N:-1500}"
DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-/tmp/primer-gpu-tune}"
LIMIT="${LIMIT:-}"   # items per eval task (empty: IFEval and XSTest whole, ARC-Easy / PIQA 100)
P=(python -m primer)
mkdir -p "$OUT"
t0=$SECONDS
lap() { echo "== $1 ($((SECONDS - t0)) s elapsed)"; }

"${P[@]}" synth --kind preference --policy "$MODEL" --instructions "$N" --n "$N" --samples 4 --max-tokens 256 \
  --temperature 0.8 --batch-size 64 --device "$DEVICE" --data-dir "$DATA" --out "$OUT/pairs" --no-progress
lap "pairs sampled and ranked"
PAIRS="$OUT/pairs/data-00000.jsonl"
# SFT on the verified replies (a sample that passed every IFEval check and ended), then DPO on the pairs
"${P[@]}" tune sft "$MODEL" --data "$PAIRS,$OUT/pairs/rejects.jsonl" --out-dir "$OUT/sft" --epochs 3 --lr 1e-5 \
  --batch-size 8 --warmup-steps 3 --max-seq-len 512 --device "$DEVICE" --no-progress --log-every 10 > "$OUT/sft.log"
SFT=$(ls -d "$OUT"/sft/checkpoints/step_* | tail -n 1)
lap "SFT"
"${P[@]}" tune dpo "$SFT" --data "$PAIRS" --out-dir "$OUT/dpo" --epochs 2 --lr 5e-6 --beta 0.1 --batch-size 8 \
  --warmup-steps 5 --max-seq-len 512 --device "$DEVICE" --no-progress --log-every 10 > "$OUT/dpo.log"
TUNED=$(ls -d "$OUT"/dpo/checkpoints/step_* | tail -n 1)
lap "DPO"

# part by part, base then tuned, each compared at once: a run stopped early keeps every comparison it finished
for part in ifeval:ifeval xstest:xstest mc:arc_easy,piqa; do
  name="${part%%:*}"; tasks="${part#*:}"
  lim=(); if [ -n "$LIMIT" ]; then lim=(--limit "$LIMIT"); elif [ "$name" = mc ]; then lim=(--limit 100); fi
  tok=(--max-gen-tokens 256); [ "$name" = xstest ] && tok=(--max-gen-tokens 16)  # the refusal rule reads the opening
  for who in base tuned; do
    spec="$MODEL"; [ "$who" = tuned ] && spec="$TUNED"
    "${P[@]}" eval "$spec" --tasks "$tasks" "${lim[@]}" "${tok[@]}" --device "$DEVICE" --batch-size 64 \
      --data-dir "$DATA" --log-samples --cache "$OUT/eval-cache.sqlite" --output "$OUT/$who-$name.json" > /dev/null
  done
  "${P[@]}" compare "$OUT/base-$name.json" "$OUT/tuned-$name.json" --out "$OUT/compare-$name.html" --quiet
  lap "$name evaluated"
done
