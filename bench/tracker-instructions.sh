#!/usr/bin/env bash
# Instructions per request of two `bitswarm tracker` builds, counted by callgrind (the same on a
# noisy machine, where requests per second are not): settles whether a change of the tracker
# costs its in-memory path anything. Each build runs under valgrind on loopback while the load
# of bench/tracker.sh goes at it for DURATION seconds: UDP (crates/tracker/examples/udp_load.rs,
# 80% announces, 10% scrapes, 10% connects), HTTP keep-alive and HTTP `Connection: close` (wrk
# with bench/announce.lua). Instructions are user space only (callgrind counts no kernel
# work); the start-up (about 1.5 million) is left in, a thousandth of a run. One request is in
# flight at a time: with more, how many a wake-up finds varies run to run, and so does the cost
# a request (±5% on UDP).
#
# Usage: bench/tracker-instructions.sh OLD_BINARY NEW_BINARY [DURATION]
#   e.g. git worktree add /tmp/old COMMIT && (cd /tmp/old && cargo build --release)
#        bench/tracker-instructions.sh /tmp/old/target/release/bitswarm target/release/bitswarm
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 DURATION=${3:-20}
for p in valgrind wrk; do command -v $p >/dev/null || { echo "missing $p: apt-get install -y $p" >&2; exit 1; }; done
cargo build --release -q -p bitswarm-tracker --example udp_load
LOAD=target/release/examples/udp_load
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
$LOAD --swarms 1000 --print-hashes | sed 's/../%&/g' > "$W/hashes.url"

run() { # $1 binary, $2 mode: udp | http | close; prints "instructions requests"
  valgrind --tool=callgrind --callgrind-out-file="$W/cg" "$1" tracker --http 127.0.0.1:0 --udp 127.0.0.1:0 \
    > "$W/out" 2>&1 &
  local vp=$!
  for _ in $(seq 600); do grep -q '^UDP tracker listening' "$W/out" 2>/dev/null && break; sleep 0.1; done
  local udp http n
  udp=$(awk '/^UDP tracker listening/ {print $NF}' "$W/out"); udp=${udp#udp://}
  http=$(awk '/^HTTP tracker listening/ {print $NF}' "$W/out"); http=${http#http://}; http=${http%%/*}
  case $2 in
    udp)
      $LOAD --server "$udp" --threads 1 --sockets 1 --window 1 --duration "$DURATION" --swarms 1000 \
        --peers 20000 > "$W/load" 2>&1
      n=$(awk -v d="$DURATION" '/responses\/s:/ {print $2 * d}' "$W/load") ;;
    http|close)
      local hdr=(); [ "$2" = close ] && hdr=(-H "Connection: close")
      HASHES="$W/hashes.url" wrk "${hdr[@]}" -t1 -c1 -d"${DURATION}s" -s bench/announce.lua "http://$http/announce" \
        > "$W/load" 2>&1
      n=$(awk '/requests in/ {print $1}' "$W/load") ;;
  esac
  kill -INT $vp; wait $vp || true
  echo "$(awk '/^summary:/ {print $2}' "$W/cg") $n"
}

echo "| load | old: instructions a request | new: instructions a request | new ÷ old |"
echo "| --- | --- | --- | --- |"
for mode in udp http close; do
  read -r oi on < <(run "$OLD" $mode)
  read -r ni nn < <(run "$NEW" $mode)
  awk -v m=$mode -v oi="$oi" -v on="$on" -v ni="$ni" -v nn="$nn" \
    'BEGIN { o = oi / on; n = ni / nn; printf "| %s | %.0f (%d requests) | %.0f (%d requests) | %.3f |\n", m, o, on, n, nn, n / o }'
done
