#!/usr/bin/env bash
# The adapter sweeps of docs/case-study.md on a 2-GPU machine (kind nvidia-h200-x2). A plan file
# (benchmarks/gpu/sweeps/*.plan, chosen by TXT2SQL_SWEEP_PLAN; default reference.plan, the sweep that chose
# adapters/reference) names right-recipe candidates in queues; each is followed by test and dev generations
# of the adapter it kept. No database there: each run keeps its best checkpoint by dev exact match; the
# candidate is then chosen here by dev execution accuracy (benchmarks/case_study/score.sh), and only then
# scored on test. A plan that trains on GeoSQL-Bench (/root/geosql-*) imports it first from $GEOSQL.
#
#   bash benchmarks/gpu/sweep.sh start      # after stage_gguf.sh receive/join; runs in the background
#   bash benchmarks/gpu/sweep.sh wait N     # waits up to N seconds, shows progress
#   bash benchmarks/gpu/sweep.sh collect    # generations + adapters into $OUT (8 files at most)
set -uo pipefail
cd "$(dirname "$0")/../.."
SWEEP=${TXT2SQL_SWEEP:-/root/sweep}
export PYTHONPATH=/root/site:$PWD PYTHONUNBUFFERED=1 TXT2SQL_CACHE=/root/txt2sql-cache
[ -f /root/txt2sql-gguf/env ] && . /root/txt2sql-gguf/env

PLAN=${TXT2SQL_SWEEP_PLAN:-benchmarks/gpu/sweeps/reference.plan}
# One plan line: queue gpu name options... Lines of one queue run one after another on its GPU; queues
# run side by side. The plan is re-read by every sub-command, so start, wait and collect agree.
plan() { grep -vE '^[[:space:]]*(#|$)' "$PLAN"; }
queues() { plan | awk '{print $1}' | sort -u; }

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

queue() {  # queue-name
  plan | while read -r q gpu name options; do
    [ "$q" = "$1" ] || continue
    # shellcheck disable=SC2086  # the options are words
    CUDA_VISIBLE_DEVICES=$gpu candidate "$name" $options < /dev/null
  done
  echo "QUEUE-DONE"
}

case "${1:-}" in
  start)
    mkdir -p "$SWEEP/gens"
    nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv
    if grep -q /root/geosql- "$PLAN"; then  # the plan trains on GeoSQL-Bench: import it here, as a user would
      for kind in Explicit Underspecified; do
        python3 -m harness.cli import geosql-bench "${GEOSQL:-geosql-bench}/Syntax-level_SQL_Generation_Question_$kind.jsonl" \
            --out "/root/geosql-${kind,,}" | tail -1
      done
    fi
    fns="$(declare -f plan candidate queue); SWEEP=$SWEEP; PLAN=$PLAN"
    for q in $(queues); do
      (setsid bash -c "$fns; queue $q" > "$SWEEP/log-$q" 2>&1 &)
    done
    sleep 2; echo "started $(queues | wc -l) queues of $PLAN; logs in $SWEEP/log-*" ;;
  wait)
    end=$((SECONDS + ${2:-500}))
    n=$(queues | wc -l)
    while [ $SECONDS -lt $end ] && [ "$(cat "$SWEEP"/log-* 2>/dev/null | grep -c QUEUE-DONE)" -lt "$n" ]; do
      sleep 10
    done
    grep -hE "^===|adapter written|\"seconds\"|Error|error" "$SWEEP"/log-* | tail -40
    [ "$(cat "$SWEEP"/log-* | grep -c QUEUE-DONE)" -ge "$n" ] && echo "sweep complete" || echo "sweep still running" ;;
  collect)
    mkdir -p "$OUT"
    tar -C "$SWEEP" -czf "$OUT/gens.tgz" gens $(cd "$SWEEP" && ls log-* */txt2sql_curve.json 2>/dev/null)
    for name in $(plan | awk '{print $3}'); do
      [ -f "$SWEEP/$name/adapter_model.safetensors" ] && tar -C "$SWEEP" -czf "$OUT/$name.tgz" --exclude=checkpoints "$name"
    done
    ls -l "$OUT" ;;
  *) echo "usage: $0 start|wait SECONDS|collect" >&2; exit 2 ;;
esac
