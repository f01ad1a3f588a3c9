#!/usr/bin/env bash
# Runs Tidemark's tests on this machine. With no argument, or `all`, the whole suite:
# checks that PostgreSQL and Redis are up, installs the tansu broker when missing, starts
# it on loopback for the black-box tests, runs every test, and stops the broker again.
# One layer at a time (README, "Tests"):
#   unit    needs nothing (the crates' own unit tests)
#   local   needs PostgreSQL and Redis (and runs the unit tests too)
#   broker  the black-box tests on the broker this script starts
#   chaos   the chaos scenarios, one at a time, on that broker
# Further arguments go to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."

layer=all
case "${1:-}" in
  all | unit | local | broker | chaos) layer="$1"; shift ;;
esac

if command -v cargo-nextest >/dev/null; then
  runner=(cargo nextest run --no-fail-fast)
  only() { echo -E "test(/^$1::/)"; }
  skip_layers=(-E 'not test(/^(broker|chaos)::/)')
else
  runner=(cargo test --no-fail-fast)
  only() { echo "--" "$1::"; }
  skip_layers=(-- --skip broker:: --skip chaos::)
fi

if [ "$layer" = unit ]; then
  exec "${runner[@]}" --workspace --lib --bins "$@"
fi

TANSU_PORT="${TANSU_PORT:-19092}"
export TIDEMARK_TEST_BROKERS="127.0.0.1:${TANSU_PORT}"
export TIDEMARK_TEST_DATABASE_URL="${TIDEMARK_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export TIDEMARK_TEST_REDIS_URL="${TIDEMARK_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

fail() { echo "test.sh: $*" >&2; exit 1; }

pg_isready -h 127.0.0.1 -p 5432 -q || fail "PostgreSQL is not answering on 127.0.0.1:5432; start it first"
[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ] || fail "Redis is not answering on 127.0.0.1:6379; start it first"

# Databases and Redis keys left by earlier runs (each test makes its own).
psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'tm\_it\_%'" |
  while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'it????????????:*' | xargs -r redis-cli -h 127.0.0.1 -p 6379 del >/dev/null

if [ "$layer" = local ]; then
  exec "${runner[@]}" --workspace --lib --bins --tests "${skip_layers[@]}" "$@"
fi

if ! command -v tansu >/dev/null; then
  echo "test.sh: installing the tansu broker (one time, ~20 minutes on 2 cores)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
fi

if (echo > "/dev/tcp/127.0.0.1/${TANSU_PORT}") 2>/dev/null; then
  fail "port ${TANSU_PORT} is taken; stop what listens there or set TANSU_PORT"
fi
log="$(mktemp -t tansu.XXXXXX.log)"
tansu broker --listener-url "tcp://127.0.0.1:${TANSU_PORT}" \
  --advertised-listener-url "tcp://127.0.0.1:${TANSU_PORT}" \
  --storage-engine memory://tansu/ >"$log" 2>&1 &
tansu_pid=$!
trap 'kill "$tansu_pid" 2>/dev/null || true; wait "$tansu_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  (echo > "/dev/tcp/127.0.0.1/${TANSU_PORT}") 2>/dev/null && break
  kill -0 "$tansu_pid" 2>/dev/null || { cat "$log"; fail "tansu exited at start"; }
  sleep 0.2
done
echo "test.sh: tansu broker on ${TIDEMARK_TEST_BROKERS} (log: $log)"

case "$layer" in
  all) "${runner[@]}" --workspace "$@" ;;
  # shellcheck disable=SC2046 # the filter is one or two words by design
  broker | chaos) "${runner[@]}" -p tidemark --test it $(only "$layer") "$@" ;;
esac
