#!/usr/bin/env bash
# Score the adapter study's generations here, with the real PostGIS, and replay the deployment story.
#   bash benchmarks/case_study/score.sh runs/study      # the folder the GPU study's tarballs were unpacked in
#   RUNS="e5 e8" SPLITS="dev" bash benchmarks/case_study/score.sh runs/sweep   # those runs only, no gates
# Prints one line per run (test split, and dev for the right-recipe candidates), then the two gates:
# the right-recipe adapter against base, and the team-recipe adapter against the deployed right recipe.
set -uo pipefail
cd "$(dirname "$0")/../.."
S=${1:?usage: $0 STUDY_DIR}
TXT2SQL=${TXT2SQL:-.venv/bin/txt2sql}
score() {  # name split
  local out="$S/eval-$1-$2"
  [ -f "$out/summary.json" ] || $TXT2SQL eval --model "replay:$S/gens/$1-$2.jsonl" --split "$2" --db "${TXT2SQL_DB:-local}" \
      --out "$out" --no-progress > "$out.log" 2>&1 || { echo "scoring $1 $2 failed: see $out.log" >&2; return 1; }
  python3 - "$out/summary.json" "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
st, fl = s["status_counts"], s["flag_counts"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {100 * s['execution_accuracy']:.1f} % | {100 * s['exact_match']:.1f} % | "
      f"{100 * s['degenerate_rate']:.1f} % | {100 * fl.get('truncated', 0) / s['n_scored']:.1f} % | "
      f"{fl.get('unknown_column', 0)} | {st.get('correct', 0)} / {st.get('wrong_result', 0)} / {st.get('exec_error', 0)}"
      f" / {st.get('refused', 0)} / {st.get('no_sql', 0)} / {st.get('degenerate', 0)} |")
PY
}
echo "| run | split | EX | EM | degenerate | truncated | unknown_column | correct / wrong / exec_error / refused / no_sql / degenerate |"
echo "|---|---|---|---|---|---|---|---|"
if [ -n "${RUNS:-}" ]; then  # a sweep (benchmarks/gpu/sweep.sh): each run on each split, no gates
  for split in ${SPLITS:-dev test}; do for r in $RUNS; do score "$r" "$split"; done; done
  exit 0
fi
for r in base cand-a cand-b team-recipe size-300 size-1000; do score $r test; done
for r in cand-a cand-b; do score $r dev; done
echo
echo "## gate: right recipe (candidate A) against base"
$TXT2SQL gate --baseline "$S/eval-base-test" --candidate "$S/eval-cand-a-test" --adapter "$S/cand-a"; echo "exit $?"
echo
echo "## gate: team recipe against the deployed right recipe"
$TXT2SQL gate --baseline "$S/eval-cand-a-test" --candidate "$S/eval-team-recipe-test" --adapter "$S/team-recipe"; echo "exit $?"
