#!/usr/bin/env bash
# Benchmarks Crawbl side by side with the Node peer (bench/node-peer: socket.io 4.8 + Redis
# adapter) and the raw floor (bench/floor: a bare websocket broadcaster), in one run on this
# machine, and prints a table with the ratios. Every target is started fresh for each scenario:
# Crawbl as separate processes (auth, conversation, runtime-proxy, two edges) on a new Postgres
# database and Redis, as production runs it; the peer as two Node processes on the same Redis;
# the floor as two processes (one could not hold 20k sockets under the 20,000-file limit).
#
#   scripts/bench.sh                       # every scenario below
#   scripts/bench.sh fan-out-10k storm-10k # some of them
#
# Scenarios: fan-out-1k fan-out-10k fan-out-20k (RATE events/s for SECONDS_PER_RUN s, default 10
# and 10), peak-10k (fan-out at PEAK_RATE, default 50/s: more than any target keeps up with, so
# it measures the most each delivers per second),
# idle-20k (RSS per idle socket), send-path (REST → message.new, 8 senders for 20 s),
# storm-10k (kill the edge holding 10k sockets; they move to the other), handshake (Crawbl only).
# TARGETS=crawbl,node,floor picks targets. Results also go to target/bench/results.jsonl.
# BENCH_PROFILE=1 records every server process (runtimes spawned later excepted) with `perf record` during each run and writes
# target/bench/SCENARIO-TARGET.perf.txt (the hottest symbols) beside the perf.data.
set -euo pipefail
cd "$(dirname "$0")/.."

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fan-out-1k fan-out-10k fan-out-20k peak-10k idle-20k send-path storm-10k)
targets=",${TARGETS:-crawbl,node,floor},"
rate=${RATE:-10}
peak_rate=${PEAK_RATE:-50}
seconds=${SECONDS_PER_RUN:-10}

bash scripts/ensure-services.sh >/dev/null
cargo build --release --locked -p crawbl -p crawbl-loadtest -p crawbl-floor
(cd bench/node-peer && npm ci --no-audit --no-fund --silent)
# Each worker process of the load tool holds up to 5,000 sockets; servers hold up to 20,000.
ulimit -n "$(ulimit -Hn)"

load=target/release/crawbl-load
mkdir -p target/bench
results=target/bench/results.jsonl
: >"$results"
# BENCH_SENDERS=N runs send-path with N closed-loop senders instead of 8 (the table's rows use 8).
# BENCH_LOGS=DIR keeps the servers' logs there (RUST_LOG for Crawbl: BENCH_RUST_LOG).
work=${BENCH_LOGS:-$(mktemp -d)}
mkdir -p "$work"
eval "$("$load" peer-key)"
export PEER_PUBLIC_KEY

pids=()
databases=()
stop_target() {
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}" 2>/dev/null || true
  for database in "${databases[@]}"; do
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
  done
  pids=() databases=() servers=() edges=()
}
trap 'stop_target; [ -n "${BENCH_LOGS:-}" ] || rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Sets `database` to a new, empty Postgres database, dropped when the target stops. (Not echoed:
# in a command substitution the `databases` list would not keep it, and it would never be dropped.)
fresh_database() {
  local name="crawbl_bench_$(date +%s)_$RANDOM"
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $name"
  databases+=("$name")
  database="postgres://postgres@127.0.0.1:5432/$name"
}
wait_for() { # URL: until it answers 2xx, for up to 30 s
  for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return; sleep 0.1; done
  echo "$1 did not answer; logs in $work:" >&2
  tail -n 20 "$work"/*.log >&2
  exit 1
}
wait_for_port() { # PORT: until it accepts connections, for up to 30 s
  for _ in $(seq 1 300); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return
    sleep 0.1
  done
  echo "nothing listens on port $1; logs in $work:" >&2
  tail -n 20 "$work"/*.log >&2
  exit 1
}
count_of() { # fan-out-10k → 10000, storm-50 → 50
  local count=${1##*-}
  case $count in *k) echo $((${count%k} * 1000)) ;; *) echo "$count" ;; esac
}
joined() { local IFS=,; echo "$*"; }

# Crawbl: every component in its own process, EDGES edge nodes. Sets edges and servers (pids).
# BENCH_DATABASE_URL: a database to use instead of a new one (scripts/bench-statements.sh).
start_crawbl() {
  local count=$1 database=${BENCH_DATABASE_URL:-} auth conversation proxy
  [ -n "$database" ] || fresh_database
  auth=$(free_port) conversation=$(free_port) proxy=$(free_port)
  export DATABASE_URL=$database REDIS_URL=redis://127.0.0.1:6379 RUST_LOG=${BENCH_RUST_LOG:-warn} \
    AUTH_URL=http://127.0.0.1:$auth CONVERSATION_URL=http://127.0.0.1:$conversation \
    RUNTIME_PROXY_URL=http://127.0.0.1:$proxy AUTH_LISTEN=127.0.0.1:$auth \
    CONVERSATION_LISTEN=127.0.0.1:$conversation RUNTIME_PROXY_LISTEN=127.0.0.1:$proxy \
    RUNTIME_COMMAND="$PWD/target/release/crawbl runtime-stub" SEND_LIMIT_PER_SECOND=0 \
    CRAWBL_SERVICE_TOKEN="bench-$(date +%s)-$RANDOM"
  for component in auth runtime-proxy conversation; do
    target/release/crawbl "$component" >"$work/$component.log" 2>&1 &
    pids+=($!)
  done
  for index in $(seq 1 "$count"); do
    local port
    port=$(free_port)
    # EDGE_PRELOAD: an allocator to compare with the built-in one (e.g. a libjemalloc.so path).
    LD_PRELOAD=${EDGE_PRELOAD:-} EDGE_LISTEN=127.0.0.1:$port target/release/crawbl edge \
      >"$work/edge-$index.log" 2>&1 &
    pids+=($!) servers+=($!) edges+=("http://127.0.0.1:$port")
  done
  for edge in "${edges[@]}"; do wait_for "$edge/readyz"; done
  unset DATABASE_URL
}

# The Node peer: COUNT nodes on the same Redis (and a Postgres database for the send route).
start_node() {
  local count=$1 database
  fresh_database
  for index in $(seq 1 "$count"); do
    local port
    port=$(free_port)
    PORT=$port REDIS_URL=redis://127.0.0.1:6379 DATABASE_URL=$database \
      node bench/node-peer/server.mjs >"$work/node-$index.log" 2>&1 &
    pids+=($!) servers+=($!) edges+=("http://127.0.0.1:$port")
  done
  for edge in "${edges[@]}"; do wait_for_port "${edge##*:}"; done
}

# The floor: COUNT processes sharing nothing (no Redis); each is published to directly. Sets
# floor_controls too.
start_floor() {
  local count=$1 controls=()
  for index in $(seq 1 "$count"); do
    local port control
    port=$(free_port) control=127.0.0.1:$(free_port)
    target/release/crawbl-floor serve "127.0.0.1:$port" "$control" >"$work/floor-$index.log" 2>&1 &
    pids+=($!) servers+=($!) edges+=("http://127.0.0.1:$port") controls+=("$control")
  done
  for edge in "${edges[@]}"; do wait_for_port "${edge##*:}"; done
  floor_controls=$(joined "${controls[@]}")
}

# The flags that make crawbl-load talk to TARGET as it was started.
target_flags() {
  case $1 in
    crawbl) echo --label crawbl ;;
    node) echo --label node --peer-seed "$PEER_SEED" ;;
    floor) echo --label floor --peer-seed "$PEER_SEED" ;;
  esac
}

run() { # SCENARIO TARGET
  local scenario=$1 target=$2 sockets
  servers=() edges=()
  case $target in
    crawbl) start_crawbl 2 ;;
    node) start_node 2 ;;
    floor) start_floor 2 ;;
  esac
  local common
  read -r -a common <<<"$(target_flags "$target")"
  local publish
  case $target in
    crawbl) publish=(--redis redis://127.0.0.1:6379) ;;
    node) publish=(--publish-command 'node bench/node-peer/publish.mjs workspace:bench $PUBLISH_RATE $PUBLISH_SECONDS') ;;
    floor) publish=(--publish-command "target/release/crawbl-floor publish $floor_controls") ;;
  esac
  echo
  echo "==> $scenario against $target ($(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg))"
  local profiler=
  if [ -n "${BENCH_PROFILE:-}" ]; then
    perf record -q -F 499 -g -o "target/bench/$scenario-$target.perf.data" -p "$(joined "${pids[@]}")" \
      2>"$work/perf.log" &
    profiler=$!
  fi
  if ! case $scenario in
    fan-out-* | peak-*)
      sockets=$(count_of "$scenario")
      local at=$rate
      [[ $scenario != peak-* ]] || at=$peak_rate
      "$load" fan-out --edge "$(joined "${edges[@]}")" "${publish[@]}" --sockets "$sockets" \
        --rate "$at" --seconds "$seconds" --pids "$(joined "${servers[@]}")" "${common[@]}" ;;
    idle-*)
      sockets=$(count_of "$scenario")
      "$load" idle --edge "$(joined "${edges[@]}")" --sockets "$sockets" \
        --pids "$(joined "${servers[@]}")" "${common[@]}" ;;
    send-path)
      "$load" send-path --edge "${edges[0]}" --senders "${BENCH_SENDERS:-8}" --seconds 20 "${common[@]}" ;;
    storm-*)
      sockets=$(count_of "$scenario")
      "$load" storm --edge "$(joined "${edges[@]}")" --kill-pid "${servers[0]}" \
        --sockets "$sockets" --rate 2 --seconds 10 "${common[@]}" ;;
    handshake)
      "$load" handshake --edge "${edges[0]}" --sockets 5000 "${common[@]}" ;;
  esac | tee "$work/out"; then
    echo "$scenario against $target failed; server logs:" >&2
    tail -n 20 "$work"/*.log >&2
  fi
  grep '^RESULT ' "$work/out" | cut -d' ' -f2- >>"$results" || true
  if [ -n "$profiler" ]; then
    kill -INT "$profiler" && wait "$profiler" || true
    perf report -i "target/bench/$scenario-$target.perf.data" --no-children --sort symbol \
      --stdio 2>/dev/null | grep -v '^$' | head -n 80 >"target/bench/$scenario-$target.perf.txt" || true
    echo "profile: target/bench/$scenario-$target.perf.txt"
  fi
  stop_target
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB; node $(node --version); load average $(cut -d' ' -f1 /proc/loadavg)"
for scenario in "${scenarios[@]}"; do
  for target in crawbl node floor; do
    case $scenario:$target in
      send-path:floor | storm-*:floor | handshake:node | handshake:floor) continue ;;
    esac
    if [[ $targets == *",$target,"* ]]; then run "$scenario" "$target"; fi
  done
done

echo
python3 scripts/bench-table.py "$results"
