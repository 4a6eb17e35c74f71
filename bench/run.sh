#!/usr/bin/env bash
# make bench: starts a parleyd, runs the transport benchmarks against it,
# prints the tables and writes bench/results/latest.json. Bounded in time.
set -euo pipefail
B=${1:-build}
cd "$(dirname "$0")/.."
out=bench/results/latest.json
tmp=$(mktemp -d)
# --insecure-fast-kdf: benchmark users are provisioned at the minimum Argon2
# cost (the server logs a warning); real users always get the full cost.
# The rate limits are off: the load generator is one address sending far
# beyond what one person would.
./$B/parleyd --port 0 --listen 127.0.0.1 --data-dir "$tmp/data" --web-dir web \
    --insecure-fast-kdf --rate-frames 0 --rate-msgs 0 --rate-user-msgs 0 \
    --rate-handshakes 0 --rate-logins 0 --admit-rate 0 --max-user-conns 100000 >"$tmp/out" 2>"$tmp/err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do grep -q listening "$tmp/out" && break; sleep 0.1; done
port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$tmp/out")
echo "parleyd pid $pid port $port, $(nproc) cores, kernel $(uname -r)"
timeout 300 ./$B/bench/wsbench idle --port "$port" --pid "$pid" --conns "${IDLE_CONNS:-15000}" | tee "$tmp/idle"
sleep 2
timeout 120 ./$B/bench/wsbench echo --port "$port" --pid "$pid" --conns 100 --seconds "${ECHO_SECONDS:-10}" --size 200 | tee "$tmp/echo"
sleep 2
timeout 180 ./$B/bench/wsbench chat --port "$port" --pid "$pid" --pairs 500 --window 8 --seconds "${CHAT_SECONDS:-10}" | tee "$tmp/chat_flat"
sleep 2
timeout 180 ./$B/bench/wsbench chat --port "$port" --pid "$pid" --pairs 100 --rate 5000 --seconds "${CHAT_SECONDS:-10}" | tee "$tmp/chat_paced"
{
  printf '{"machine":{"cores":%s,"kernel":"%s"},"results":[' "$(nproc)" "$(uname -r)"
  sed -n 's/^json: //p' "$tmp/idle" "$tmp/echo" "$tmp/chat_flat" "$tmp/chat_paced" | paste -sd, -
  printf ']}\n'
} >"$out"
echo "wrote $out"
