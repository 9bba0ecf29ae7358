#!/usr/bin/env bash
# Set up (idempotent) and run `txt2sql eval`; with no arguments: the embedded default model on the
# bundled Hangzhou benchmark. Extra arguments go to `txt2sql eval`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/txt2sql eval "$@"
