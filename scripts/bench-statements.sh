#!/usr/bin/env bash
# What each SQL statement of the send path costs: `scripts/bench.sh send-path` for Crawbl (8
# senders, 20 s), its database on a private Postgres started in a temp folder with
# pg_stat_statements and auto_explain; then the 30 costliest statements (calls, total and mean
# ms, rows) and the plans of statements slower than AUTO_EXPLAIN_MS (default 1 ms) in the
# folder's pg.log; then the rows each table wrote (HOT updates wrote no index entry) and the WAL
# the run wrote. Never touches the machine's Postgres. BENCH_PG_SETTINGS adds server settings
# to try (e.g. "-c commit_delay=200 -c commit_siblings=2").
#   scripts/bench-statements.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/initdb" ] || { echo "Postgres server programs not found under /usr/lib/postgresql" >&2; exit 1; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work=$(mktemp -d)
[ "$(id -u)" -ne 0 ] || chown postgres "$work"
trap 'as_postgres "$bin/pg_ctl" -D "$work/data" stop -m fast >/dev/null 2>&1 || true; echo "pg.log (the slow plans): $work/pg.log"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "==> a private Postgres on port $port ($work)"
as_postgres "$bin/initdb" -D "$work/data" -A trust -U postgres >/dev/null
as_postgres "$bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start -o "-p $port -k $work \
  -c shared_preload_libraries=pg_stat_statements,auto_explain -c pg_stat_statements.track=all \
  -c auto_explain.log_min_duration=${AUTO_EXPLAIN_MS:-1}ms -c auto_explain.log_nested_statements=on \
  ${BENCH_PG_SETTINGS:-}" >/dev/null
sql() { psql -h 127.0.0.1 -p "$port" -U postgres -d bench -X "$@"; }
psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE bench"
sql -qc "CREATE EXTENSION pg_stat_statements"

# The stack's start-up (migrations, the load tool's sign-up) is counted too: a few statements
# against the run's hundreds of thousands.
BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:$port/bench TARGETS=crawbl bash scripts/bench.sh send-path

echo "==> the 30 costliest statements"
sql -c "SELECT calls, round(total_exec_time::numeric) AS total_ms, round(mean_exec_time::numeric, 3) AS mean_ms,
               rows, left(regexp_replace(query, '\s+', ' ', 'g'), 140) AS statement
        FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 30"
sql -Atc "SELECT 'all statements: ' || sum(calls) || ' calls, ' || round(sum(total_exec_time)::numeric) || ' ms'
          FROM pg_stat_statements"
echo "plans slower than ${AUTO_EXPLAIN_MS:-1} ms: $(grep -c 'duration:' "$work/pg.log" || true)"
echo "==> rows written per table (a HOT update writes no index entry)"
sql -c "SELECT relname AS table, n_tup_ins AS inserts, n_tup_upd AS updates, n_tup_hot_upd AS hot,
               n_tup_del AS deletes
        FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0
        ORDER BY n_tup_ins + n_tup_upd + n_tup_del DESC"
echo "==> WAL written"
sql -c "SELECT wal_records, wal_fpi AS full_page_images, pg_size_pretty(wal_bytes) AS wal_bytes,
               wal_sync AS syncs FROM pg_stat_wal"
