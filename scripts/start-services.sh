#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ answer on their standard local ports: starts them if
# they are installed but stopped, installs them (Debian packages) if they are missing.
# Idempotent; safe to run when everything is already up.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name, seconds, command...
  local name=$1 seconds=$2; shift 2
  for _ in $(seq "$((seconds * 5))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$name did not come up within ${seconds}s"; return 1
}

apt_install() {
  log "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "$@" >/dev/null
}

start_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
    # Local development and CI only: trust connections from this host, as the machine's own
    # PostgreSQL does.
    local hba; hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  fi
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
}

start_redis() {
  if port_open 6379 && redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG; then return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for Redis 30 redis-cli -h 127.0.0.1 ping
}

start_rabbitmq() {
  if port_open 5672; then return; fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_for RabbitMQ 120 port_open 5672
}

start_postgres
start_redis
start_rabbitmq
log "PostgreSQL, Redis and RabbitMQ are up"
