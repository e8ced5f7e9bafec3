#!/usr/bin/env bash
# The fan-out scenario against the Node peer (bench/node-peer: socket.io 4.8 + Redis adapter,
# same token check, rooms and event shape), with NODES peer nodes behind the same Redis.
#   NODES=2 scripts/bench-peer.sh [--sockets 1000] [--rate 10] [--seconds 10] [--sources 4]
set -euo pipefail
cd "$(dirname "$0")/.."

rate=10 seconds=10
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --rate) rate=${args[i + 1]} ;;
    --seconds) seconds=${args[i + 1]} ;;
  esac
done

bash scripts/ensure-services.sh >/dev/null
cargo build --release --locked -p crawbl-loadtest
(cd bench/node-peer && npm install --no-audit --no-fund --silent)

eval "$(target/release/crawbl-load peer-key)"
export PEER_PUBLIC_KEY REDIS_URL=redis://127.0.0.1:6379
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pids=()
edges=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 "${NODES:-2}"); do
  port=$(free_port)
  PORT=$port node bench/node-peer/server.mjs >/dev/null &
  pids+=($!)
  edges+=("http://127.0.0.1:$port")
done
sleep 1

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1 /proc/loadavg); peer: node $(node --version), socket.io 4.8, ${NODES:-2} node(s)"
progress=$(mktemp)
target/release/crawbl-load fan-out --publisher external --peer-seed "$PEER_SEED" \
  --edge "$(IFS=,; echo "${edges[*]}")" "$@" 2>"$progress" &
load=$!
until grep -q "listening for" "$progress"; do
  kill -0 "$load" 2>/dev/null || { cat "$progress"; exit 1; }
  sleep 0.1
done
node bench/node-peer/publish.mjs workspace:bench "$rate" "$seconds" >/dev/null
wait "$load"
rm -f "$progress"
