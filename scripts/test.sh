#!/usr/bin/env bash
# The whole test suite, as CI runs it: starts the services if needed, sweeps what earlier
# interrupted runs left behind, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/start-services.sh

# Leftovers of test runs that were killed before their cleanup (databases, queues, keys named
# after a test id). Nothing else is touched.
psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'op\_test\_%'" 2>/dev/null |
  while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true; done || true
if command -v rabbitmqctl >/dev/null; then
  rabbitmqctl -q list_queues name 2>/dev/null | grep -E '^test\.[0-9a-f]{12}\.' |
    while read -r queue; do rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true; done || true
  # Broker users of tests/integration/settle.rs (op-test-<test id>).
  rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}' | grep -E '^op-test-[0-9a-f]{12}$' |
    while read -r user; do rabbitmqctl -q delete_user "$user" >/dev/null 2>&1 || true; done || true
fi
redis-cli -h 127.0.0.1 --scan --pattern 'test:*' 2>/dev/null | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null || true

# The chaos suite's cluster tests stop the private cluster (scripts/rabbitmq-cluster.sh)
# themselves; this also stops it after a failed or interrupted run (its data stays).
trap 'scripts/rabbitmq-cluster.sh stop >/dev/null 2>&1 || true' EXIT

# First every test that shares the services; then, alone and one at a time, the chaos suite,
# which kills and restarts those services (tests/chaos.rs, #[ignore]d in the first run).
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  cargo nextest run --workspace --run-ignored only --test-threads 1 --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
  cargo test --workspace --no-fail-fast "$@" -- --ignored --test-threads 1
fi
