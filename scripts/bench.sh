#!/usr/bin/env bash
# Runs one `crawbl-load` scenario against a release build of the whole stack on Postgres + Redis
# (one process, each service on its own loopback gRPC port) and prints its figures.
#   scripts/bench.sh send-path [--senders 8] [--seconds 20]
#   scripts/bench.sh handshake [--sockets 2000] [--concurrency 64] [--users 10] [--cold 200]
#   scripts/bench.sh fan-out [--sockets 1000] [--rate 10] [--seconds 20] [--sources 4]
#   scripts/bench.sh idle [--sockets 5000] [--sources 4]   (RSS of the whole one-process stack)
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: scripts/bench.sh SCENARIO [crawbl-load flags...]}
shift

bash scripts/ensure-services.sh >/dev/null
cargo build --release --locked -p crawbl -p crawbl-loadtest

database="crawbl_bench_$(date +%s)"
psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $database"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
logs=$(mktemp)

DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database" \
REDIS_URL="redis://127.0.0.1:6379" \
EDGE_LISTEN="127.0.0.1:$port" AUTH_LISTEN=127.0.0.1:0 CONVERSATION_LISTEN=127.0.0.1:0 \
RUNTIME_PROXY_LISTEN=127.0.0.1:0 RUST_LOG=warn \
  target/release/crawbl >"$logs" 2>&1 &
stack=$!
cleanup() {
  kill "$stack" 2>/dev/null || true
  wait "$stack" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
  rm -f "$logs"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB, load average $(cut -d' ' -f1 /proc/loadavg)"
case "$scenario" in
  fan-out) set -- --redis redis://127.0.0.1:6379 "$@" ;;
  idle) set -- --pid "$stack" "$@" ;;
esac
target/release/crawbl-load "$scenario" --edge "http://127.0.0.1:$port" "$@"
