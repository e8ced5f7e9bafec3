#!/usr/bin/env bash
# Every check and test of the repository, as CI runs them: formatting, lints, then all tests
# against real Postgres and Redis (started or installed first when they are not running), and
# the JavaScript Socket.IO client (Node.js and npm, installed when missing) and the web console in
# Debian's Chromium (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

step "postgres and redis"
bash scripts/ensure-services.sh

step "javascript client packages (tests/js)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  # The end-to-end tests check the replay contract with the npm socket.io-client.
  echo "installing Node.js and npm (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
fi
(cd tests/js && npm ci --no-audit --no-fund)

step "chromium (the web console's browser test drives it headless with playwright-core)"
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  echo "installing Debian's chromium (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi
echo "using ${CHROMIUM:-/usr/bin/chromium}"

step "python client package (tests/python)"
python3 -c 'import socketio' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check "python-socketio[client]==5.18.1"

step "compose file"
if docker compose version >/dev/null 2>&1; then
  docker compose -f compose/docker-compose.yml config --quiet
  echo "docker compose config: ok"
else
  echo "note: \`docker compose\` is not available here, so \`docker compose config\` is skipped"
fi
# What compose cannot tell: every component is there and wired as the README says.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
python3 scripts/check-compose.py compose/docker-compose.yml

step "kubernetes manifests (every overlay rendered and validated against the official schemas)"
# kubectl renders them (kubectl kustomize); the check fails, never skips, when it is missing.
python3 -c 'import kubernetes_validate' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
python3 scripts/check-kubernetes.py

step "grpcurl (the README's gRPC examples run in the end-to-end tests)"
# grpcurl-rs: a grpcurl-compatible CLI from crates.io, built once (a few minutes) and then kept
# in ~/.cargo/bin. A grpcurl already on PATH is used as it is.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v grpcurl >/dev/null; then
  cargo install grpcurl-rs --version 0.2.1 --locked
fi
echo "using $(command -v grpcurl)"
export CRAWBL_REQUIRE_GRPCURL=1

step "schemathesis (property-based tests of the REST API, in the end-to-end tests)"
if ! python3 -m schemathesis.cli --version 2>/dev/null | grep -q "4.32.5"; then
  python3 -m pip install --quiet --disable-pip-version-check schemathesis==4.32.5
fi
# The interpreter's own scripts folder first: a version manager's shim appears only after a rehash.
SCHEMATHESIS=$(python3 -c 'import os, shutil, sysconfig; own = os.path.join(sysconfig.get_path("scripts"), "schemathesis"); print(own if os.path.exists(own) else shutil.which("schemathesis"))')
export SCHEMATHESIS CRAWBL_REQUIRE_SCHEMATHESIS=1
echo "using $SCHEMATHESIS ($("$SCHEMATHESIS" --version))"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "fuzz targets (a short bounded run; scripts/fuzz.sh 600 for the long one)"
# Without AddressSanitizer here: the build is much shorter, and the code forbids `unsafe`.
FUZZ_SANITIZER=none bash scripts/fuzz.sh 10

step "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"

# One closing line for the whole run (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "\nall tests: %d passed, %d failed\n", passed, failed }' "$log"
