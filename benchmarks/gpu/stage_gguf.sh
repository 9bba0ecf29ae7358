#!/usr/bin/env bash
# Carry the embedded model's GGUF (98 MB) to the GPU machine, where one call carries at most 64 MB:
#   here:   bash benchmarks/gpu/stage_gguf.sh split          -> .gpu/gguf-1 .gpu/gguf-2 .gpu/gguf-3 (git-ignored)
#   there:  bash benchmarks/gpu/stage_gguf.sh receive        (one call per part, carry=[".gpu/gguf-N"]; the
#                                                             part is copied to /root/txt2sql-gguf, which
#                                                             stays while the machine is warm)
#   here:   bash benchmarks/gpu/stage_gguf.sh wheels         -> .gpu/pywheels: the gguf reader transformers needs
#                                                             (not in the GPU image); carry it with a part,
#                                                             receive installs it into /root/site
#   there:  bash benchmarks/gpu/stage_gguf.sh join           (after the last part: joins, checks the sha256,
#                                                             writes the export line for TXT2SQL_EMBEDDED_GGUF
#                                                             to /root/txt2sql-gguf/env)
set -euo pipefail
cd "$(dirname "$0")/../.."
STORE=${TXT2SQL_GGUF_STORE:-/root/txt2sql-gguf}
case "${1:-}" in
  split)
    py=${PYTHON:-.venv/bin/python}
    gguf=$($py -c 'import harness.models.embedded as e; print(e.find_gguf(e.EMBEDDED[e.DEFAULT_EMBEDDED]))')
    rm -rf .gpu && mkdir -p .gpu/tmp
    (cd .gpu/tmp && split -n 3 -d -a 1 "$gguf" part-)
    sha=$(sha256sum "$gguf" | cut -d' ' -f1)
    for n in 0 1 2; do
      d=.gpu/gguf-$((n + 1)); mkdir -p "$d"
      mv ".gpu/tmp/part-$n" "$d/"
      printf '%s  %s\n' "$sha" "$(basename "$gguf")" > "$d/SHA256"
    done
    rmdir .gpu/tmp
    ls -l .gpu/gguf-*/ ;;
  wheels)
    py=${PYTHON:-.venv/bin/python}
    mkdir -p .gpu/pywheels && $py -m pip download --no-deps -q -d .gpu/pywheels gguf && ls -l .gpu/pywheels ;;
  receive)
    if [ -d .gpu/pywheels ]; then  # PYTHONPATH=/root/site:$PWD there
      python3 -m pip install -q --no-deps --target /root/site .gpu/pywheels/*.whl
    fi
    mkdir -p "$STORE"
    found=0
    for d in .gpu/gguf-*; do
      [ -d "$d" ] || continue
      cp "$d"/part-* "$d"/SHA256 "$STORE"/ && found=1
    done
    [ "$found" = 1 ] || { echo "no .gpu/gguf-N folder in this call: carry one" >&2; exit 2; }
    ls -l "$STORE" ;;
  join)
    name=$(cut -d' ' -f3 "$STORE/SHA256")
    for n in 0 1 2; do
      [ -f "$STORE/part-$n" ] || { echo "part $((n + 1)) of 3 missing in $STORE: receive it first" >&2; exit 2; }
    done
    cat "$STORE"/part-0 "$STORE"/part-1 "$STORE"/part-2 > "$STORE/$name"
    (cd "$STORE" && sha256sum -c SHA256) >&2
    echo "export TXT2SQL_EMBEDDED_GGUF=$STORE/$name" | tee "$STORE/env" ;;
  *)
    echo "usage: $0 split|wheels|receive|join" >&2; exit 2 ;;
esac
