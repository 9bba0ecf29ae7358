#!/usr/bin/env bash
# The reference-adapter sweep of docs/case-study.md on a 2-GPU machine (kind nvidia-h200-x2): six
# right-recipe candidates in three queues (two sharing GPU 0, one alone on GPU 1, whose s/step is the
# uncontended training speed), each followed by test and dev generations of the adapter it kept. No
# database there: each run keeps its best checkpoint by dev exact match; the candidate is then chosen
# here by dev execution accuracy (benchmarks/case_study/score.sh), and only then scored on test.
#
#   bash benchmarks/gpu/sweep.sh start      # after stage_gguf.sh receive/join; runs in the background
#   bash benchmarks/gpu/sweep.sh wait N     # waits up to N seconds, shows progress
#   bash benchmarks/gpu/sweep.sh collect    # generations + adapters into $OUT (8 files at most)
set -uo pipefail
cd "$(dirname "$0")/../.."
SWEEP=${TXT2SQL_SWEEP:-/root/sweep}
export PYTHONPATH=/root/site:$PWD PYTHONUNBUFFERED=1 TXT2SQL_CACHE=/root/txt2sql-cache
[ -f /root/txt2sql-gguf/env ] && . /root/txt2sql-gguf/env

# name | txt2sql finetune options beyond the common ones (all-linear LoRA r16, batch 16, cosine)
QUEUE_GPU1=(
  "e5|--lr 3e-4 --epochs 5"
  "const900|--lr 3e-4 --steps 900 --scheduler constant_with_warmup"
)
QUEUE_GPU0A=(
  "e6-neft|--lr 2e-4 --epochs 6 --lora-dropout 0.1 --neftune-alpha 5"
  "e4-lr5|--lr 5e-4 --epochs 4"
)
QUEUE_GPU0B=(
  "e8|--lr 3e-4 --epochs 8"
  "b32-e6|--lr 4e-4 --epochs 6 --batch-size 32"
)

candidate() {  # name options...
  local name=$1; shift
  echo "=== $name: $* ($(date +%T))"
  python3 -m harness.cli finetune --base-model embedded --dev-split dev --dev-db none --no-progress --evals 5 \
      --out "$SWEEP/$name" "$@" || { echo "=== $name FAILED"; return; }
  for split in test dev; do
    python3 benchmarks/gpu/generate.py --model "lora:$SWEEP/$name" --base-model embedded --split $split \
        --out "$SWEEP/gens/$name-$split.jsonl"
  done
  echo "=== $name done ($(date +%T))"
}

queue() {  # gpu entries...
  local gpu=$1; shift
  export CUDA_VISIBLE_DEVICES=$gpu
  for entry in "$@"; do
    # shellcheck disable=SC2086  # the options are words
    candidate "${entry%%|*}" ${entry#*|}
  done
  echo "QUEUE-DONE"
}

case "${1:-}" in
  start)
    mkdir -p "$SWEEP/gens"
    nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv
    fns="$(declare -f candidate queue); SWEEP=$SWEEP"
    (setsid bash -c "$fns; queue 1 $(printf '%q ' "${QUEUE_GPU1[@]}")" > "$SWEEP/log-gpu1" 2>&1 &)
    (setsid bash -c "$fns; queue 0 $(printf '%q ' "${QUEUE_GPU0A[@]}")" > "$SWEEP/log-gpu0a" 2>&1 &)
    (setsid bash -c "$fns; queue 0 $(printf '%q ' "${QUEUE_GPU0B[@]}")" > "$SWEEP/log-gpu0b" 2>&1 &)
    sleep 2; echo "started; logs in $SWEEP/log-*" ;;
  wait)
    end=$((SECONDS + ${2:-500}))
    while [ $SECONDS -lt $end ] && [ "$(cat "$SWEEP"/log-* 2>/dev/null | grep -c QUEUE-DONE)" -lt 3 ]; do
      sleep 10
    done
    grep -hE "^===|adapter written|\"seconds\"|Error|error" "$SWEEP"/log-* | tail -40
    [ "$(cat "$SWEEP"/log-* | grep -c QUEUE-DONE)" -ge 3 ] && echo "sweep complete" || echo "sweep still running" ;;
  collect)
    mkdir -p "$OUT"
    tar -C "$SWEEP" -czf "$OUT/gens.tgz" gens $(cd "$SWEEP" && ls log-* */txt2sql_curve.json 2>/dev/null)
    for entry in "${QUEUE_GPU1[@]}" "${QUEUE_GPU0A[@]}" "${QUEUE_GPU0B[@]}"; do
      name=${entry%%|*}
      [ -f "$SWEEP/$name/adapter_model.safetensors" ] && tar -C "$SWEEP" -czf "$OUT/$name.tgz" --exclude=checkpoints "$name"
    done
    ls -l "$OUT" ;;
  *) echo "usage: $0 start|wait SECONDS|collect" >&2; exit 2 ;;
esac
