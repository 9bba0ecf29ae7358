#!/usr/bin/env bash
# Set up (idempotent) and run the default test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
# headless Chromium renders the HTML reports in tests
if ! command -v chromium >/dev/null 2>&1; then
  ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: chromium not installed; report rendering tests will be skipped"
fi
# --db docker is tested for real: a Docker-compatible engine (podman's API service where no Docker
# answers) and the harness's PostGIS image built from distribution packages (no registry). Both stay
# up between runs on one machine; an unchanged image is not rebuilt.
if engine=$(bash scripts/container-engine.sh); then
  eval "$engine"
  export DOCKER_HOST
  command -v debootstrap >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null \
    || echo "setup: debootstrap not installed"
  $SUDO env DOCKER_HOST="$DOCKER_HOST" .venv/bin/txt2sql image build \
    || echo "setup: txt2sql image build failed; docker tests will be skipped unless postgis/postgis can be pulled"
else
  echo "setup: no container engine could be brought up; docker tests will be skipped"
fi
exec .venv/bin/python -m pytest "$@"
