#!/usr/bin/env bash
# Tidemark ingest benchmark: one command, one run, one table (docs/performance.md).
#
#   bench/run.sh            full run: wrk ceiling (nginx), InfluxDB 1.6, Prometheus remote
#                           write, Tidemark JSON and gzip JSON at 64 and 1,000 connections
#   bench/run.sh c10k       10,000 keep-alive connections to ingest + 10,000 to the API
#   bench/run.sh profile    Tidemark JSON at 64 connections with `perf record` on ingest
#
# Installs what is missing from Debian's packages (wrk, influxdb, prometheus, nginx-light,
# python3-snappy, linux-perf for `profile`), builds tidemark (release), starts everything on
# 127.0.0.1, stops everything it started on exit. Results: target/bench/bench-<mode>-<time>.json
# and target/bench/latest-<mode>.json. Tuning: BENCH_* variables, see bench/bench.py (CFG).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-full}"
case "$mode" in full|c10k|profile) ;; *) echo "usage: bench/run.sh [full|c10k|profile]" >&2; exit 2;; esac

fail() { echo "bench/run.sh: $*" >&2; exit 1; }
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1

# --- tools (Debian packages) ----------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v influxd >/dev/null || need+=(influxdb)
command -v prometheus >/dev/null || need+=(prometheus)
command -v nginx >/dev/null || need+=(nginx-light)
command -v psql >/dev/null || need+=(postgresql-client)
command -v redis-cli >/dev/null || need+=(redis-tools)
[ -x "$PY" ] || need+=(python3)
{ [ -x "$PY" ] && "$PY" -c 'import snappy' 2>/dev/null; } || need+=(python3-snappy)
if [ "$mode" = profile ] && ! perf --version >/dev/null 2>&1; then need+=(linux-perf); fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "bench/run.sh: installing ${need[*]}"
  # Package scripts must not start the system's own influxdb/prometheus/nginx services.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

TANSU="${TANSU:-$HOME/.cargo/bin/tansu}"
if [ ! -x "$TANSU" ]; then
  command -v tansu >/dev/null && TANSU="$(command -v tansu)" || {
    echo "bench/run.sh: installing the tansu broker (one time, ~20 minutes on 2 cores)"
    cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
    TANSU="$HOME/.cargo/bin/tansu"
  }
fi
export TANSU

pg_isready -h 127.0.0.1 -p 5432 -q || fail "PostgreSQL is not answering on 127.0.0.1:5432"
[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ] || fail "Redis is not answering on 127.0.0.1:6379"

# --- tidemark ---------------------------------------------------------------------------
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  cargo build --release --bin tidemark
fi
export TIDEMARK_BIN="${TIDEMARK_BIN:-$PWD/target/release/tidemark}"
[ -x "$TIDEMARK_BIN" ] || fail "no tidemark binary at $TIDEMARK_BIN"

# --- limits -----------------------------------------------------------------------------
# 1,000 (and 10,000) connections need as many descriptors in wrk and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile="$(ulimit -n)"
if [ "$mode" = c10k ] && [ "$nofile" -lt $(( ${BENCH_C10K_CONNS:-10000} + 1000 )) ]; then
  fail "open-file limit is $nofile; c10k needs ${BENCH_C10K_CONNS:-10000} + 1000 per process"
fi

# --- run (everything started is stopped on exit) -----------------------------------------
mkdir -p target/bench
export BENCH_PIDFILE="$PWD/target/bench/.pids.$$"
: > "$BENCH_PIDFILE"
cleanup() {
  if [ -f "$BENCH_PIDFILE" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true
    done < "$BENCH_PIDFILE"
    sleep 1
    while read -r pid; do
      [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
    done < "$BENCH_PIDFILE"
    rm -f "$BENCH_PIDFILE"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$PY" bench/bench.py "$mode"
