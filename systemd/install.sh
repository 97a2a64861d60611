#!/usr/bin/env bash
# Install facedrop as a system service from this checkout (run as root; `make install-service`).
#
#   1. builds the wheel from the checkout (the editable install is for development only)
#   2. a system user `facedrop`, its group for the people who drop files
#   3. a virtual environment /opt/facedrop with the wheel (and TensorFlow's CUDA wheels: --gpu)
#   4. /etc/facedrop/facedrop.toml, the commented defaults (an existing one is kept)
#   5. the hardened unit (+ the GPU drop-in with --gpu); the root is /var/lib/facedrop
#
# Options: --gpu (NVIDIA), --dry-run (print the steps, change nothing), --no-start.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
PREFIX=${PREFIX:-/opt/facedrop}
GPU=0 DRY=0 START=1
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    --dry-run) DRY=1 ;;
    --no-start) START=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
run() { echo "+ $*"; if [ "$DRY" = 0 ]; then "$@"; fi; }

if [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo make install-service)" >&2; exit 2
fi
dist=$(mktemp -d)
trap 'rm -rf "$dist"' EXIT
run "$PYTHON" -m pip wheel --no-deps -q -w "$dist" .
if ! getent passwd facedrop >/dev/null; then
  run useradd --system --user-group --home-dir /var/lib/facedrop --no-create-home \
      --shell /usr/sbin/nologin facedrop
fi
run "$PYTHON" -m venv "$PREFIX"
run "$PREFIX/bin/pip" install -q --upgrade pip
extra=""; [ "$GPU" = 1 ] && extra="[gpu]"
wheel=$( (ls "$dist"/facedrop-*.whl 2>/dev/null || echo "$dist/facedrop.whl") | head -n1)
run "$PREFIX/bin/pip" install -q "${wheel}${extra}"
run install -d -m 0755 /etc/facedrop
if [ ! -e /etc/facedrop/facedrop.toml ]; then
  echo "+ write /etc/facedrop/facedrop.toml (the commented defaults)"
  if [ "$DRY" = 0 ]; then
    "$PREFIX/bin/python" -c 'from daemon.config import TEMPLATE; print(TEMPLATE, end="")' \
      > /etc/facedrop/facedrop.toml
  fi
fi
run install -m 0644 systemd/facedrop.service /etc/systemd/system/facedrop.service
if [ "$GPU" = 1 ]; then
  run install -d -m 0755 /etc/systemd/system/facedrop.service.d
  run install -m 0644 systemd/gpu.conf /etc/systemd/system/facedrop.service.d/gpu.conf
fi
run systemctl daemon-reload
if [ "$START" = 1 ]; then
  run systemctl enable --now facedrop
fi
echo "facedrop is installed: drop files under /var/lib/facedrop (group facedrop may write)."
echo "settings: /etc/facedrop/facedrop.toml   logs: journalctl -u facedrop -f"
echo "check it: $PREFIX/bin/facedrop status --root /var/lib/facedrop"
