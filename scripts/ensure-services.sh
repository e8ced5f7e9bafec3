#!/usr/bin/env bash
# Makes sure the Postgres and Redis the tests use are up on 127.0.0.1 (5432 and 6379): starts
# them when they are installed but stopped, installs them (Debian packages) when missing.
# Tests that stop or restart a server start private ones of their own; these are never touched.
set -euo pipefail

log() { printf '[ensure-services] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $* (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_postgres() {
  if command -v pg_isready >/dev/null && postgres_up; then
    log "postgres is up on 127.0.0.1:5432"
    return
  fi
  local fresh_install=no
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
    fresh_install=yes
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ "$fresh_install" = yes ]; then
    # The tests connect as postgres over TCP without a password, as on the CI machines.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  log "starting postgres $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do
    postgres_up && { log "postgres is up"; return; }
    sleep 0.5
  done
  log "postgres did not come up on 127.0.0.1:5432; see /var/log/postgresql/" >&2
  exit 1
}

ensure_redis() {
  if command -v redis-cli >/dev/null && redis_up; then
    log "redis is up on 127.0.0.1:6379"
    return
  fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no
  for _ in $(seq 1 40); do
    redis_up && { log "redis is up"; return; }
    sleep 0.25
  done
  log "redis did not come up on 127.0.0.1:6379" >&2
  exit 1
}

ensure_postgres
ensure_redis
