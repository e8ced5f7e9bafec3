#!/usr/bin/env bash
# What each SQL statement of the send path costs: the send-path scenario (8 senders, 20 s) against
# a private Postgres started in a temp folder with pg_stat_statements and auto_explain, then the
# 30 costliest statements (calls, total and mean ms, rows) and the plans of statements slower than
# AUTO_EXPLAIN_MS (default 1 ms) in the folder's pg.log. Never touches the machine's Postgres.
#   scripts/bench-statements.sh            (needs `cargo build --release -p crawbl -p crawbl-loadtest`)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/initdb" ] || { echo "Postgres server programs not found under /usr/lib/postgresql" >&2; exit 1; }
for program in target/release/crawbl target/release/crawbl-load; do
  [ -x "$program" ] || { echo "$program is missing: cargo build --release -p crawbl -p crawbl-loadtest" >&2; exit 1; }
done
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
[ "$(id -u)" -ne 0 ] || chown postgres "$work"
pids=()
cleanup() {
  [ ${#pids[@]} -eq 0 ] || { kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; } || true
  as_postgres "$bin/pg_ctl" -D "$work/data" stop -m fast >/dev/null 2>&1 || true
  echo "logs (pg.log has the slow plans): $work"
}
trap cleanup EXIT

port=$(free_port)
echo "==> a private Postgres on port $port ($work)"
as_postgres "$bin/initdb" -D "$work/data" -A trust -U postgres >/dev/null
as_postgres "$bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start -o "-p $port -k $work \
  -c shared_preload_libraries=pg_stat_statements,auto_explain -c pg_stat_statements.track=all \
  -c auto_explain.log_min_duration=${AUTO_EXPLAIN_MS:-1}ms -c auto_explain.log_nested_statements=on" >/dev/null
sql() { psql -h 127.0.0.1 -p "$port" -U postgres -d bench -X "$@"; }
psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE bench"
sql -qc "CREATE EXTENSION pg_stat_statements"

echo "==> the services and one edge"
auth=$(free_port) conversation=$(free_port) proxy=$(free_port) edge=$(free_port)
export DATABASE_URL=postgres://postgres@127.0.0.1:$port/bench REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379} \
  RUST_LOG=warn AUTH_URL=http://127.0.0.1:$auth CONVERSATION_URL=http://127.0.0.1:$conversation \
  RUNTIME_PROXY_URL=http://127.0.0.1:$proxy AUTH_LISTEN=127.0.0.1:$auth \
  CONVERSATION_LISTEN=127.0.0.1:$conversation RUNTIME_PROXY_LISTEN=127.0.0.1:$proxy \
  RUNTIME_COMMAND="$PWD/target/release/crawbl runtime-stub" SEND_LIMIT_PER_SECOND=0 \
  CRAWBL_SERVICE_TOKEN="bench-$(date +%s)-$RANDOM"
for component in auth runtime-proxy conversation; do
  target/release/crawbl "$component" >"$work/$component.log" 2>&1 &
  pids+=($!)
done
EDGE_LISTEN=127.0.0.1:$edge target/release/crawbl edge >"$work/edge.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$edge/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$edge/readyz" >/dev/null || { echo "the edge did not become ready; logs in $work" >&2; exit 1; }

eval "$(target/release/crawbl-load peer-key)"
export PEER_PUBLIC_KEY
sql -qAtc "SELECT pg_stat_statements_reset()" >/dev/null
echo "==> send-path: 8 senders for 20 s"
target/release/crawbl-load send-path --edge "http://127.0.0.1:$edge" --senders 8 --seconds 20 --label crawbl

echo "==> the 30 costliest statements"
sql -c "SELECT calls, round(total_exec_time::numeric) AS total_ms, round(mean_exec_time::numeric, 3) AS mean_ms,
               rows, left(regexp_replace(query, '\s+', ' ', 'g'), 140) AS statement
        FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 30"
sql -Atc "SELECT 'all statements: ' || sum(calls) || ' calls, ' || round(sum(total_exec_time)::numeric) || ' ms'
          FROM pg_stat_statements"
echo "plans slower than ${AUTO_EXPLAIN_MS:-1} ms: $(grep -c 'duration:' "$work/pg.log" || true) (in $work/pg.log)"
