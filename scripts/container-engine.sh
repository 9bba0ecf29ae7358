#!/usr/bin/env bash
# Bring up a Docker-compatible engine for `--db docker`, idempotently, and print the line that points
# the harness (and the docker CLI) at it:
#
#     eval "$(bash scripts/container-engine.sh)"      # then: txt2sql eval --db docker
#
# Where a Docker engine already answers (DOCKER_HOST, /var/run/docker.sock, or a podman service this
# script started earlier), it changes nothing. Otherwise (Debian 12) it installs podman and runc,
# writes the two settings such machines need into /etc/containers/containers.conf (crun's
# `setrlimit RLIMIT_NOFILE` is refused and crun refuses the hybrid cgroup layout: default_ulimits = [],
# runtime = "runc", cgroup_manager = "cgroupfs"), and starts podman's Docker API service on a unix
# socket. Only the export line goes to stdout; progress goes to stderr.
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
say() { echo "container-engine: $*" >&2; }

# podman's rootful service (rootless podman needs subordinate ids and a login session that CI machines
# lack); an ordinary user (with sudo) gets the socket, as Docker's `docker` group would give it.
SOCK=/run/podman/podman.sock
ROOTLESS="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/podman/podman.sock"

# GET /_ping on a unix socket (python3's standard library: no curl needed)
answers() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
reply = b""
while chunk := s.recv(4096):
    reply += chunk
sys.exit(0 if reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n")[0] else 1)
PY
}

# 1. an engine that already answers: nothing to do
for host in "${DOCKER_HOST:-}" unix:///var/run/docker.sock "unix://$SOCK" "unix://$ROOTLESS"; do
  case "$host" in
    unix://*)
      if [ -S "${host#unix://}" ] && answers "${host#unix://}"; then
        say "a Docker engine answers at $host; nothing to do"
        echo "export DOCKER_HOST=$host"
        exit 0
      fi ;;
    "") ;;
    *) if command -v docker >/dev/null && DOCKER_HOST="$host" docker version >/dev/null 2>&1; then
         say "a Docker engine answers at $host; nothing to do"; echo "export DOCKER_HOST=$host"; exit 0
       fi ;;
  esac
done

# 2. podman + runc from the distribution
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  say "apt-get install podman runc"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq podman runc >/dev/null
fi

# 3. settings, each written only when the file does not set that key already
CONF=/etc/containers/containers.conf
$SUDO mkdir -p /etc/containers
[ -f "$CONF" ] || echo "# written by txt2sql scripts/container-engine.sh" | $SUDO tee "$CONF" >/dev/null
set_key() {  # set_key SECTION KEY VALUE
  local section=$1 key=$2 value=$3
  if grep -Eq "^[[:space:]]*$key[[:space:]]*=" "$CONF"; then
    grep -Eq "^[[:space:]]*$key[[:space:]]*=[[:space:]]*$(printf '%s' "$value" | sed 's/[][]/\\&/g')[[:space:]]*$" "$CONF" \
      || say "note: $CONF already sets $key; left as it is (this machine may need $key = $value)"
    return
  fi
  if grep -q "^\[$section\]" "$CONF"; then
    $SUDO sed -i "/^\[$section\]/a $key = $value" "$CONF"
  else
    printf '\n[%s]\n%s = %s\n' "$section" "$key" "$value" | $SUDO tee -a "$CONF" >/dev/null
  fi
  say "$CONF: [$section] $key = $value"
}
set_key containers default_ulimits '[]'
set_key engine runtime '"runc"'
set_key engine cgroup_manager '"cgroupfs"'

# 4. podman's Docker API service, detached from this shell
if ! answers "$SOCK"; then
  LOG=/run/podman/service.log
  if $SUDO test -S "$SOCK" && pgrep -f "^podman system service" >/dev/null; then
    # a service that runs may still be starting: give it a while before calling it hung
    for _ in $(seq 1 50); do answers "$SOCK" && break; sleep 0.2; done
    if ! answers "$SOCK"; then
      say "a podman service runs but does not answer on $SOCK (seen after a killed CI run); restarting it"
      $SUDO pkill -f "^podman system service" || true
      sleep 1
    fi
  fi
  if $SUDO test -S "$SOCK" && ! pgrep -f "^podman system service" >/dev/null; then
    # a service that died (killed, out of memory) leaves its socket behind, and nothing answers there
    say "removing the stale socket $SOCK: no podman service runs"
    $SUDO rm -f "$SOCK"
  fi
  if ! $SUDO test -S "$SOCK"; then
    say "starting podman system service on unix://$SOCK (log: $LOG)"
    $SUDO mkdir -p /run/podman
    # from /: the service keeps its working directory, and a checkout deleted under it breaks conmon
    (cd / && $SUDO setsid sh -c "nohup podman system service --time=0 unix://$SOCK >$LOG 2>&1 </dev/null &")
    for _ in $(seq 1 50); do $SUDO test -S "$SOCK" && break; sleep 0.2; done
  fi
  if [ "$(id -u)" -ne 0 ]; then
    say "giving $(id -un) the socket $SOCK"
    $SUDO chmod 711 /run/podman
    $SUDO chown "$(id -u)" "$SOCK"
  fi
  for _ in $(seq 1 50); do answers "$SOCK" && break; sleep 0.2; done
  if ! answers "$SOCK"; then
    say "podman's service did not answer on $SOCK; its log:"; $SUDO tail -20 "$LOG" >&2 || true
    exit 1
  fi
fi
echo "export DOCKER_HOST=unix://$SOCK"
