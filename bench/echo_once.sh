#!/usr/bin/env bash
# One unpinned 1 KiB echo measurement of one loop, for quick A/B comparisons
# of two builds (alternate them; never compare across runs of the full kit).
#
#   bench/echo_once.sh LOOP [--proto|--buffered|--streams|--sockets]
#   PERF=1 bench/echo_once.sh uvrs --proto    # also: perf record -g of the server
#                                             # for 6 s into /tmp/perf-LOOP.data
#
# The server (the shared kit's servers/echo.py in .bench-venv) runs on CPU 0,
# the kit's loadgen on CPU 1: 10 connections, 1 KiB, 6 s after 1 s of
# warm-up. Prints req/s and the CPU shares loadgen measured. Needs
# `python3 ../shared/bench/run setup` first.
set -euo pipefail
LOOP=${1:?loop}; MODE=${2:---proto}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${BENCH_KIT:-$ROOT/../shared/bench}
PY=$ROOT/.bench-venv/bin/python
LOADGEN=$ROOT/.bench-venv/.loadgen-target/release/loadgen
LOG=$(mktemp)
cd "$(mktemp -d)"  # no checkout on sys.path: the installed uvrs is measured
taskset -c 0 "$PY" "$KIT/servers/echo.py" "$MODE" --loop "$LOOP" --addr 127.0.0.1:0 \
    --max-seconds 40 >"$LOG" 2>&1 &
SRV=$!
trap 'kill $SRV 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 200); do grep -q READY "$LOG" && break; sleep 0.05; done
ADDR=$(awk '/^READY/ {print $3}' "$LOG")
if [ -n "${PERF:-}" ]; then
    perf record -F 999 -g -p $SRV -o "/tmp/perf-$LOOP.data" -- sleep 6 >/dev/null 2>&1 &
    PERF_PID=$!
fi
taskset -c 1 "$LOADGEN" echo --addr "$ADDR" -c 10 -s 1024 -d 6 -w 1 --server-pid $SRV --json |
    "$PY" -c "import json, sys; d = json.load(sys.stdin); print(f\"{d['rps']:.0f} req/s\", {k: v for k, v in d.items() if 'cpu' in k})"
if [ -n "${PERF_PID:-}" ]; then wait "$PERF_PID"; fi
