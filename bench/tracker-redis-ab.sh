#!/usr/bin/env bash
# Two builds of the tracker on one Redis, UDP: bitswarm A and B (each `tracker` on store.backend
# = "redis") alternate on the same redis-server, filled once with 1,000,000 peers over 1,000
# swarms and the load's own 100,000 peers, with opentracker in the same runs. Everything on
# CPU 0, udp_load on CPU 1 (as bench/tracker.sh). Prints each run's requests/s and CPU per request.
# Usage: bench/tracker-redis-ab.sh RUNS BITSWARM_A BITSWARM_B  (build udp_load first: cargo build
#        --release -p bitswarm-tracker --example udp_load)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=$1; A=$2; B=$3; LOAD=target/release/examples/udp_load; D=6
W=$(mktemp -d /tmp/rqab.XXXX); chmod 755 $W; PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf $W; }
trap cleanup EXIT
$LOAD --swarms 1000 --print-hashes > $W/hashes.hex
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
RS=$W/redis.sock
taskset -c 0 redis-server --port 0 --unixsocket $RS --unixsocketperm 700 --save "" --appendonly no --dir $W --daemonize no --loglevel warning > $W/redis.out 2>&1 &
RPID=$!; PIDS+=($RPID)
for _ in $(seq 100); do [ "$(redis-cli -s $RS ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
printf '[store]\nbackend = "redis"\nredis_url = "unix://%s"\n' $RS > $W/redis.toml
start() { taskset -c 0 $1 tracker --http 127.0.0.1:0 --udp 127.0.0.1:0 --config $W/redis.toml > $W/bs.$2.out 2>&1 & eval "P_$2=$!"; PIDS+=($!)
  for _ in $(seq 100); do grep -q '^UDP tracker listening' $W/bs.$2.out 2>/dev/null && break; sleep 0.1; done
  eval "U_$2=$(awk '/^UDP tracker listening/ {print $NF}' $W/bs.$2.out)"; }
start $A A; start $B B
port=$(python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
taskset -c 0 opentracker -i 127.0.0.1 -p $port -P $port -w $W/hashes.hex > $W/ot.out 2>&1 &
OPID=$!; PIDS+=($OPID); sleep 1
taskset -c 1 $LOAD --server 127.0.0.1:$port --sockets 8 --swarms 1000 --fill 1000000 >/dev/null
taskset -c 1 $LOAD --server $U_A --sockets 8 --swarms 1000 --fill 1000000 >/dev/null
# the load's own 100,000 peers, once, so that every measured run re-announces known peers
taskset -c 1 $LOAD --server $U_A --threads 1 --sockets 16 --window 8 --duration 4 >/dev/null
one() { # name pid addr
  local c0 r0 c1 r1 out r
  c0=$(ticks $2); r0=$(ticks $RPID); out=$(taskset -c 1 $LOAD --server $3 --threads 1 --sockets 16 --window 8 --duration $D 2>&1); c1=$(ticks $2); r1=$(ticks $RPID)
  r=$(echo "$out" | awk '{for(i=1;i<=NF;i++) if ($i=="responses/s:") print $(i+1)}')
  if [ "$1" = ot ]; then echo "ot run: $r rps, $(awk -v t=$((c1-c0)) -v r=$r -v d=$D 'BEGIN{printf "%.1f", t*1e6/100/(r*d)}') us/req"
  else echo "$1 run: $r rps, tracker $(awk -v t=$((c1-c0)) -v r=$r -v d=$D 'BEGIN{printf "%.1f", t*1e6/100/(r*d)}') us/req, redis $(awk -v t=$((r1-r0)) -v r=$r -v d=$D 'BEGIN{printf "%.1f", t*1e6/100/(r*d)}') us/req"; fi
}
for run in $(seq $RUNS); do
  one ot $OPID 127.0.0.1:$port
  one A $P_A $U_A
  one B $P_B $U_B
done
