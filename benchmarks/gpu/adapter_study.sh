#!/usr/bin/env bash
# The adapter study of docs/case-study.md, on the GPU machine (no database there: dev checkpoints are
# chosen by exact match; everything generated comes back and is scored here with the real PostGIS).
#
#   bash benchmarks/gpu/adapter_study.sh start     # after stage_gguf.sh receive/join; runs in the background
#   bash benchmarks/gpu/adapter_study.sh wait N    # waits up to N seconds, shows progress
#   bash benchmarks/gpu/adapter_study.sh collect   # packs adapters + generations into $OUT
#
# Runs: three right-recipe candidates (txt2sql finetune, all-linear LoRA r16, chosen later on dev
# execution accuracy), the team's recipe (benchmarks/case_study/team_recipe.py), the data-size study
# (300 and 1,000 train questions with candidate A's settings), and test + dev generations of each and of
# the base model, with benchmarks/gpu/generate.py.
set -uo pipefail
cd "$(dirname "$0")/../.."
STUDY=${TXT2SQL_STUDY:-/root/study}
export PYTHONPATH=/root/site:$PWD PYTHONUNBUFFERED=1 TXT2SQL_CACHE=/root/txt2sql-cache
[ -f /root/txt2sql-gguf/env ] && . /root/txt2sql-gguf/env

run_all() {
  set -x
  python3 -c 'from harness.models.embedded import resolve_model_ref as r; print(r("embedded"))'
  common=(--base-model embedded --dev-split dev --dev-db none --no-progress --evals 6)
  python3 -m harness.cli finetune "${common[@]}" --out "$STUDY/cand-a" --lr 3e-4 --epochs 2
  python3 -m harness.cli finetune "${common[@]}" --out "$STUDY/cand-b" --lr 1e-3 --epochs 1
  python3 -m harness.cli finetune "${common[@]}" --out "$STUDY/cand-c" --lr 3e-4 --epochs 3 \
      --lora-dropout 0.1 --neftune-alpha 5
  python3 benchmarks/case_study/team_recipe.py --out "$STUDY/team-recipe" --epochs 2
  python3 -m harness.cli finetune "${common[@]}" --out "$STUDY/size-300" --lr 3e-4 --limit 300 --steps 200
  python3 -m harness.cli finetune "${common[@]}" --out "$STUDY/size-1000" --lr 3e-4 --limit 1000 --steps 200
  mkdir -p "$STUDY/gens"
  python3 benchmarks/gpu/generate.py --model embedded --split test --out "$STUDY/gens/base-test.jsonl"
  for a in cand-a cand-b cand-c team-recipe size-300 size-1000; do
    for split in test dev; do
      python3 benchmarks/gpu/generate.py --model "lora:$STUDY/$a" --base-model embedded --split $split \
          --out "$STUDY/gens/$a-$split.jsonl"
    done
  done
  echo STUDY-DONE
}

case "${1:-}" in
  start)
    mkdir -p "$STUDY"
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
    python3 -c 'import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)'
    (setsid bash -c "$(declare -f run_all); STUDY=$STUDY; run_all" > "$STUDY/log" 2>&1 &)
    sleep 2; echo "started; log in $STUDY/log" ;;
  wait)
    end=$((SECONDS + ${2:-500}))
    while [ $SECONDS -lt $end ] && ! grep -q STUDY-DONE "$STUDY/log" 2>/dev/null; do sleep 10; done
    grep -E "^\+ python3|adapter written|team-recipe adapter|\"seconds\"|Error|error" "$STUDY/log" | tail -40
    grep -q STUDY-DONE "$STUDY/log" && echo "study complete" || echo "study still running" ;;
  collect)
    mkdir -p "$OUT"
    for a in cand-a cand-b cand-c team-recipe; do
      [ -d "$STUDY/$a" ] && tar -C "$STUDY" -czf "$OUT/$a.tgz" --exclude=checkpoints "$a"
    done
    tar -C "$STUDY" -czf "$OUT/rest.tgz" gens log $(cd "$STUDY" && ls -d size-*/txt2sql_curve.json 2>/dev/null)
    ls -l "$OUT" ;;
  *) echo "usage: $0 start|wait SECONDS|collect" >&2; exit 2 ;;
esac
