#!/usr/bin/env bash
# Tracker benchmark: bitswarm tracker against opentracker (and aquatic when built), same
# machine, same run, same load generators.
#   Cores: every tracker runs on CPU 0 alone (taskset), the load generator on the other CPUs,
#          so each tracker gets the same core and the ratios compare servers, not how they
#          share a core with the load generator. TRACKER_CPUS and LOAD_CPUS (taskset lists)
#          choose others: on a bigger machine TRACKER_CPUS=0-1 LOAD_CPUS=2-7 gives every
#          tracker the same two cores. bitswarm runs a worker per core it may use; opentracker
#          is given as many UDP workers (listen.udp.workers; it serves HTTP on one thread
#          whatever it has) and aquatic as many socket workers; wrk gets a thread and 64
#          connections per load CPU, aquatic's load tester a worker per load CPU.
#   HTTP: wrk -t1 -c64 with announces over 1,000 swarms, keep-alive and Connection: close.
#         Close mode also runs against crates/tracker/examples/close_floor.rs, a server that
#         only accepts, reads, writes a canned reply and closes: the most any tracker could
#         show in that row here.
#   UDP:  crates/tracker/examples/udp_load.rs (a polling thread per load CPU x 16 sockets, 8
#         in flight each; 80% announce, 10% scrape, 10% connect over the same 1,000 swarms, announces
#         from 100,000 peers); aquatic's own load tester too, against the open trackers
#         (opentracker's whitelist refuses it).
#         Before the UDP runs bitswarm and opentracker are restarted (aquatic_udp has served
#         nothing yet) and every tracker is given the same 1,000,000 peers.
#   Memory: RSS after 1,000,000 peers over 100,000 swarms were announced over UDP.
#   Redis (store.backend = "redis"): one bitswarm instance on a redis-server, and two instances
#         on the same redis-server, the load split evenly between them (two wrk, two udp_load
#         at once). redis-server runs on the trackers' CPUs too (it is part of the tracker
#         there), on a Unix socket, without persistence; it is given the same 1,000,000 peers
#         before the UDP runs. Its memory per peer: INFO memory's used_memory (less what an
#         empty server uses) over the peers stored, for those 1,000 swarms of 1,000 peers and
#         for 1,000,000 peers over 100,000 swarms. Where Redis's time goes: INFO commandstats over
#         each one-instance run. SKIP_REDIS=1 leaves this out.
# Medians of RUNS runs (default 3), and each run's own ratio to opentracker (its trackers are
# measured seconds apart). Results: bench/results/tracker-DATE.md (raw output in
# bench/results/raw/, not committed).
# Usage: bench/tracker.sh [RUNS]   Env: DURATION (s, default 6), FILL_PEERS (default 1000000),
#                                       SKIP_MEMORY=1, SKIP_REDIS=1, TRACKER_CPUS (default 0), LOAD_CPUS
#                                       (default the others), REPORT (the results file).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
DURATION=${DURATION:-6}
ANCHORS=${ANCHORS:-$HOME/.cache/bitswarm-anchors/bin}
for p in wrk opentracker; do command -v $p >/dev/null || { echo "missing $p: apt-get install -y wrk opentracker" >&2; exit 1; }; done
if [ "${SKIP_REDIS:-0}" != 1 ]; then
  for p in redis-server redis-cli; do command -v $p >/dev/null || { echo "missing $p: apt-get install -y redis-server (or SKIP_REDIS=1)" >&2; exit 1; }; done
fi

cargo build --release -q -p bitswarm
cargo build --release -q -p bitswarm-tracker --example udp_load --example close_floor
BIN=target/release/bitswarm
LOAD=target/release/examples/udp_load
# CPU 0 for the trackers, the rest for the load generators (unless told otherwise).
if [ "$(nproc)" -ge 2 ]; then
  last=$(( $(nproc) - 1 )); TRACKER_CPUS=${TRACKER_CPUS:-0}; LOAD_CPUS=${LOAD_CPUS:-$([ $last -eq 1 ] && echo 1 || echo 1-$last)}
  ON_TRACKER=(taskset -c "$TRACKER_CPUS"); ON_LOAD=(taskset -c "$LOAD_CPUS")
  TRACKER_N=$("${ON_TRACKER[@]}" nproc); LOAD_THREADS=$("${ON_LOAD[@]}" nproc)
  CORES="each tracker on CPU $TRACKER_CPUS, the load generators on CPU $LOAD_CPUS"
else
  echo "one CPU: trackers and load generators share it" >&2; ON_TRACKER=(); ON_LOAD=(); LOAD_THREADS=1; TRACKER_N=1
  CORES="trackers and load generators sharing the one CPU"
fi
WRK_CONNS=$(( 64 * LOAD_THREADS ))
W=$(mktemp -d /tmp/bitswarm-bench.XXXXXX)
chmod 755 "$W"   # opentracker drops to user nobody before it reads its whitelist
RAW=bench/results/raw
mkdir -p "$RAW"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket
for _ in range(100):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
rss_kib() { awk '/^VmRSS/ {print $2}' /proc/$1/status; }

# 1,000 swarms: hex for opentracker's whitelist, percent-encoded for wrk.
$LOAD --swarms 1000 --print-hashes > "$W/hashes.hex"
sed 's/../%&/g' "$W/hashes.hex" > "$W/hashes.url"

# --- start the trackers ---
start_bitswarm() { # $1: config file (may be empty)
  local out="$W/bitswarm.$RANDOM.out"
  "${ON_TRACKER[@]}" "$BIN" tracker --http 127.0.0.1:0 --udp 127.0.0.1:0 ${1:+--config "$1"} > "$out" 2>&1 &
  local pid=$!; PIDS+=($pid)
  for _ in $(seq 100); do grep -q '^UDP tracker listening' "$out" 2>/dev/null && break; sleep 0.1; done
  BS_PID=$pid
  BS_HTTP=$(awk '/^HTTP tracker listening/ {print $NF}' "$out")
  BS_UDP=$(awk '/^UDP tracker listening/ {print $NF}' "$out")
}
start_opentracker() { # $1: whitelist
  local port conf=(); port=$(free_port)
  if [ "$TRACKER_N" -gt 1 ]; then # before the addresses: it applies to the sockets bound after it
    echo "listen.udp.workers $TRACKER_N" > "$W/opentracker.conf"; conf=(-f "$W/opentracker.conf")
  fi
  "${ON_TRACKER[@]}" opentracker "${conf[@]}" -i 127.0.0.1 -p "$port" -P "$port" -w "$1" > "$W/opentracker.$port.out" 2>&1 &
  OT_PID=$!; PIDS+=($OT_PID); OT_PORT=$port
  wait_port "$port"
}
start_aquatic_udp() {
  local port; port=$(free_port)
  "$ANCHORS/aquatic_udp" -p | sed -e "s/^address = .*/address = \"127.0.0.1:$port\"/" \
    -e "s/^socket_workers = .*/socket_workers = $TRACKER_N/" > "$W/aq_udp.toml"
  "${ON_TRACKER[@]}" "$ANCHORS/aquatic_udp" -c "$W/aq_udp.toml" > "$W/aq_udp.out" 2>&1 &
  AQU_PID=$!; PIDS+=($AQU_PID); AQU_PORT=$port; sleep 0.5
}
start_aquatic_http() {
  local port; port=$(free_port)
  "$ANCHORS/aquatic_http" -p | sed -e "s/^address = .*/address = \"127.0.0.1:$port\"/" \
    -e "s/^socket_workers = .*/socket_workers = $TRACKER_N/" > "$W/aq_http.toml"
  "${ON_TRACKER[@]}" "$ANCHORS/aquatic_http" -c "$W/aq_http.toml" > "$W/aq_http.out" 2>&1 &
  AQH_PID=$!; PIDS+=($AQH_PID); AQH_PORT=$port
  wait_port "$port"
}

# The floor of the close-mode rows: accept, read, canned reply, close (no tracker; see
# crates/tracker/examples/close_floor.rs), on the trackers' cores with a thread per core.
"${ON_TRACKER[@]}" target/release/examples/close_floor "$TRACKER_N" > "$W/floor.out" &
FLOOR_PID=$!; PIDS+=($FLOOR_PID)
for _ in $(seq 100); do grep -q '^listening on' "$W/floor.out" 2>/dev/null && break; sleep 0.1; done
FLOOR_ADDR=$(awk '/^listening on/ {print $NF}' "$W/floor.out")
[ -n "$FLOOR_ADDR" ] || { echo "close_floor did not start: $(cat "$W/floor.out")" >&2; exit 1; }

# bitswarm with its defaults (a worker thread per core it may use: one here).
start_bitswarm ""
start_opentracker "$W/hashes.hex"
HTTP_TARGETS=("bitswarm http://$BS_HTTP $BS_PID" "opentracker http://127.0.0.1:$OT_PORT $OT_PID")
UDP_TARGETS=("bitswarm $BS_UDP $BS_PID" "opentracker 127.0.0.1:$OT_PORT $OT_PID")
if [ -x "$ANCHORS/aquatic_http" ]; then start_aquatic_http; HTTP_TARGETS+=("aquatic_http http://127.0.0.1:$AQH_PORT $AQH_PID"); fi
HTTP_TARGETS+=("floor http://$FLOOR_ADDR $FLOOR_PID")
if [ -x "$ANCHORS/aquatic_udp" ]; then start_aquatic_udp; UDP_TARGETS+=("aquatic_udp 127.0.0.1:$AQU_PORT $AQU_PID"); fi
# CPU time (user + system, all threads, in clock ticks) a tracker process has used.
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
# Server CPU microseconds per request: ticks used during a run / requests answered in it.
us_per_req() { awk -v t="$1" -v r="$2" -v d="$DURATION" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (r > 0) printf "%.1f", t * 1e6 / hz / (r * d); else print "n/a" }'; }

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}'; }

# Sanity: opentracker must have served announces, not refusals.
ot_check() {
  local body
  for _ in $(seq 50); do # the whitelist is loaded in the background after the port opens
    body=$(curl -s "http://127.0.0.1:$OT_PORT/announce?info_hash=$(head -1 "$W/hashes.url")&peer_id=-SANITY-0123456789ab&port=1&left=0&compact=1" | head -c 200 | tr -c '[:print:]' '.')
    case "$body" in *complete*) return 0;; esac
    sleep 0.1
  done
  echo "opentracker does not serve a whitelisted hash ($body): the benchmark would be invalid" >&2
  exit 1
}

# --- HTTP ---
ot_check
for run in $(seq "$RUNS"); do
  for t in "${HTTP_TARGETS[@]}"; do
    set -- $t; name=$1; url=$2; pid=$3
    for mode in keepalive close; do
      [ "$name" = floor ] && [ $mode = keepalive ] && continue # it closes every connection
      hdr=(); [ $mode = close ] && hdr=(-H "Connection: close")
      out="$RAW/http-$name-$mode-$run.txt"
      c0=$(cpu_ticks "$pid")
      HASHES="$W/hashes.url" "${ON_LOAD[@]}" wrk -t"$LOAD_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --latency "${hdr[@]}" -s bench/announce.lua "$url" > "$out" 2>&1 || true
      c1=$(cpu_ticks "$pid")
      rps=$(awk '/^Requests\/sec/ {print $2}' "$out"); p99=$(awk '$1=="99%" {print $2}' "$out" | to_ms)
      cpu=$(us_per_req $((c1 - c0)) "${rps:-0}")
      errs=$(awk '/Non-2xx|Socket errors/ {print}' "$out" | tr '\n' ' ')
      echo "http $name $mode run $run: ${rps:-0} req/s, p99 ${p99:-?} ms, server CPU ${cpu} us/request ${errs}"
      echo "$rps" >> "$W/http-$name-$mode.rps"; echo "$p99" >> "$W/http-$name-$mode.p99"; echo "$cpu" >> "$W/http-$name-$mode.cpu"
    done
  done
done
ot_check

# --- UDP ---
# Every tracker starts the UDP runs from the same store: a fresh process (aquatic_udp has served
# nothing yet) holding the same 1,000,000 peers over the 1,000 swarms (FILL_PEERS), as a busy
# public tracker would. Without
# this, each would hold what its own HTTP runs left: random peers in proportion to its HTTP speed.
FILL_PEERS=${FILL_PEERS:-1000000}
kill "$BS_PID" "$OT_PID" 2>/dev/null || true
start_bitswarm ""
start_opentracker "$W/hashes.hex"
ot_check
UDP_TARGETS=("bitswarm $BS_UDP $BS_PID" "opentracker 127.0.0.1:$OT_PORT $OT_PID")
if [ -x "$ANCHORS/aquatic_udp" ]; then UDP_TARGETS+=("aquatic_udp 127.0.0.1:$AQU_PORT $AQU_PID"); fi
for t in "${UDP_TARGETS[@]}"; do
  set -- $t
  echo "udp $1: $("${ON_LOAD[@]}" $LOAD --server "$2" --sockets 8 --swarms 1000 --fill "$FILL_PEERS")"
done
for run in $(seq "$RUNS"); do
  for t in "${UDP_TARGETS[@]}"; do
    set -- $t; name=$1; addr=$2; pid=$3
    out="$RAW/udp-$name-$run.txt"
    c0=$(cpu_ticks "$pid")
    "${ON_LOAD[@]}" $LOAD --server "$addr" --threads "$LOAD_THREADS" --sockets 16 --window 8 --duration "$DURATION" > "$out" 2>&1
    c1=$(cpu_ticks "$pid")
    rps=$(awk '{for(i=1;i<=NF;i++) if ($i=="responses/s:") print $(i+1)}' "$out")
    p99=$(awk '{for(i=1;i<=NF;i++) if ($i=="p99:") print $(i+1)/1000}' "$out")
    cpu=$(us_per_req $((c1 - c0)) "${rps:-0}")
    echo "udp $name run $run: $(cat "$out")  server CPU: $cpu us/request"
    echo "$rps" >> "$W/udp-$name.rps"; echo "$p99" >> "$W/udp-$name.p99"; echo "$cpu" >> "$W/udp-$name.cpu"
  done
  if [ -x "$ANCHORS/aquatic_udp_load_test" ]; then
    for t in "${UDP_TARGETS[@]}"; do
      set -- $t; name=$1; addr=$2
      [ "$name" = opentracker ] && continue
      "$ANCHORS/aquatic_udp_load_test" -p | sed -e "s/^server_address = .*/server_address = \"$addr\"/" \
        -e "s/^duration = .*/duration = $DURATION/" -e "s/^workers = .*/workers = $LOAD_THREADS/" > "$W/aq_load.toml"
      out="$RAW/udp-aqload-$name-$run.txt"
      "${ON_LOAD[@]}" "$ANCHORS/aquatic_udp_load_test" -c "$W/aq_load.toml" > "$out" 2>&1 || true
      rps=$(awk -F': ' '/Average responses per second/ {gsub(/[^0-9.]/,"",$2); print $2}' "$out" | tail -1)
      echo "udp (aquatic load test) $name run $run: ${rps:-?} responses/s"
      echo "$rps" >> "$W/aqload-$name.rps"
    done
  fi
done

# --- Redis: one instance, and two instances on one Redis ---
REDIS_ROWS=()
if [ "${SKIP_REDIS:-0}" != 1 ]; then
  kill "$BS_PID" 2>/dev/null || true # the in-memory instance's peers are measured: free its core
  RS="$W/redis.sock"
  "${ON_TRACKER[@]}" redis-server --port 0 --unixsocket "$RS" --unixsocketperm 700 --save "" --appendonly no \
    --dir "$W" --daemonize no --loglevel warning > "$W/redis.out" 2>&1 &
  REDIS_PID=$!; PIDS+=($REDIS_PID)
  for _ in $(seq 100); do [ "$(redis-cli -s "$RS" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
  [ "$(redis-cli -s "$RS" ping 2>/dev/null)" = PONG ] || { echo "redis-server did not start: $(cat "$W/redis.out")" >&2; exit 1; }
  used_memory() { redis-cli -s "$RS" info memory | awk -F: '/^used_memory:/ {print $2+0}'; }
  redis_peers() { redis-cli -s "$RS" hmget bs:totals s l | awk '{s += $1} END {print s+0}'; }
  EMPTY_MEM=$(used_memory)
  printf '[store]\nbackend = "redis"\nredis_url = "unix://%s"\n' "$RS" > "$W/redis.toml"
  start_bitswarm "$W/redis.toml"; R1_PID=$BS_PID; R1_HTTP=$BS_HTTP; R1_UDP=$BS_UDP
  start_bitswarm "$W/redis.toml"; R2_PID=$BS_PID; R2_HTTP=$BS_HTTP; R2_UDP=$BS_UDP
  sum_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done; echo $t; }
  # Redis's own share of a run: its CPU ticks then (r0, r1) over the requests answered.
  redis_share() { us_per_req $(($2 - $1)) "${3:-0}"; }
  # Where Redis's time went in a one-instance run: INFO commandstats (reset before the run), each
  # command's microseconds over the requests answered, the calls of the Lua code first.
  stats_reset() { redis-cli -s "$RS" config resetstat > /dev/null; }
  stats_save() { # $1: file, $2: requests/s
    redis-cli -s "$RS" info commandstats | tr -d '\r' | awk -F'[:,=]' -v n="${2:-0}" -v d="$DURATION" '
      /^cmdstat_/ && n > 0 { sub(/^cmdstat_/, "", $1); if ($1 ~ /^(config|info)/) next
        printf "%s %.2f %.2f\n", $1, $5 / (n * d), $3 / (n * d) }' | sort -k2 -gr > "$1"
  }
  stats_line() { # $1: file: "fcall 30.1 us (0.04 calls), of which zadd 9.1 us (1.1 calls), ..."
    awk 'NR == 1 { printf "%s %.1f us (%.2f calls a request)", $1, $2, $3; next } NR <= 7 { printf ", %s %.1f us (%.2f)", $1, $2, $3 }' "$1"
  }
  half=$(( WRK_CONNS / 2 ))
  for run in $(seq "$RUNS"); do
    # HTTP keep-alive: one instance, then two at once (half the connections each).
    stats_reset; c0=$(sum_ticks "$R1_PID" "$REDIS_PID"); r0=$(cpu_ticks "$REDIS_PID")
    HASHES="$W/hashes.url" "${ON_LOAD[@]}" wrk -t"$LOAD_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --latency -s bench/announce.lua "http://$R1_HTTP" > "$RAW/http-redis1-$run.txt" 2>&1 || true
    c1=$(sum_ticks "$R1_PID" "$REDIS_PID"); r1=$(cpu_ticks "$REDIS_PID")
    rps=$(awk '/^Requests\/sec/ {print $2}' "$RAW/http-redis1-$run.txt"); cpu=$(us_per_req $((c1 - c0)) "${rps:-0}"); rcpu=$(redis_share "$r0" "$r1" "$rps")
    stats_save "$RAW/redis-cmdstats-http-$run.txt" "$rps"
    echo "http redis, one instance, run $run: ${rps:-0} req/s, server CPU (tracker + Redis) $cpu us/request, of which Redis $rcpu; $(stats_line "$RAW/redis-cmdstats-http-$run.txt")"
    echo "$rps" >> "$W/http-redis1.rps"; echo "$cpu" >> "$W/http-redis1.cpu"; echo "$rcpu" >> "$W/http-redis1.rcpu"
    c0=$(sum_ticks "$R1_PID" "$R2_PID" "$REDIS_PID"); r0=$(cpu_ticks "$REDIS_PID")
    two=()
    for addr in "$R1_HTTP" "$R2_HTTP"; do
      HASHES="$W/hashes.url" "${ON_LOAD[@]}" wrk -t"$LOAD_THREADS" -c"$half" -d"${DURATION}s" --latency -s bench/announce.lua "http://$addr" > "$RAW/http-redis2-$((${#two[@]} + 1))-$run.txt" 2>&1 &
      two+=($!)
    done
    wait "${two[@]}" 2>/dev/null || true
    c1=$(sum_ticks "$R1_PID" "$R2_PID" "$REDIS_PID"); r1=$(cpu_ticks "$REDIS_PID")
    rps=$(cat "$RAW"/http-redis2-[12]-$run.txt | awk '/^Requests\/sec/ {s += $2} END {print s+0}'); cpu=$(us_per_req $((c1 - c0)) "${rps:-0}"); rcpu=$(redis_share "$r0" "$r1" "$rps")
    echo "http redis, two instances, run $run: $rps req/s, server CPU (trackers + Redis) $cpu us/request, of which Redis $rcpu"
    echo "$rps" >> "$W/http-redis2.rps"; echo "$cpu" >> "$W/http-redis2.cpu"; echo "$rcpu" >> "$W/http-redis2.rcpu"
  done
  echo "udp redis: $("${ON_LOAD[@]}" $LOAD --server "$R1_UDP" --sockets 8 --swarms 1000 --fill "$FILL_PEERS")"
  peers=$(redis_peers)
  mem=$(used_memory)
  REDIS_MEM_BIG=$(awk -v m="$mem" -v e="$EMPTY_MEM" -v p="$peers" 'BEGIN { if (p > 0) printf "%.0f", (m - e) / p; else print "n/a" }')
  echo "redis memory: $mem bytes for $peers peers over 1,000 swarms: $REDIS_MEM_BIG bytes per peer"
  for run in $(seq "$RUNS"); do
    stats_reset; c0=$(sum_ticks "$R1_PID" "$REDIS_PID"); r0=$(cpu_ticks "$REDIS_PID")
    "${ON_LOAD[@]}" $LOAD --server "$R1_UDP" --threads "$LOAD_THREADS" --sockets 16 --window 8 --duration "$DURATION" > "$RAW/udp-redis1-$run.txt" 2>&1
    c1=$(sum_ticks "$R1_PID" "$REDIS_PID"); r1=$(cpu_ticks "$REDIS_PID")
    rps=$(awk '{for(i=1;i<=NF;i++) if ($i=="responses/s:") print $(i+1)}' "$RAW/udp-redis1-$run.txt"); cpu=$(us_per_req $((c1 - c0)) "${rps:-0}"); rcpu=$(redis_share "$r0" "$r1" "$rps")
    stats_save "$RAW/redis-cmdstats-udp-$run.txt" "$rps"
    echo "udp redis, one instance, run $run: $(cat "$RAW/udp-redis1-$run.txt")  server CPU (tracker + Redis): $cpu us/request, of which Redis $rcpu; $(stats_line "$RAW/redis-cmdstats-udp-$run.txt")"
    echo "$rps" >> "$W/udp-redis1.rps"; echo "$cpu" >> "$W/udp-redis1.cpu"; echo "$rcpu" >> "$W/udp-redis1.rcpu"
    c0=$(sum_ticks "$R1_PID" "$R2_PID" "$REDIS_PID"); r0=$(cpu_ticks "$REDIS_PID")
    two=()
    for addr in "$R1_UDP" "$R2_UDP"; do
      "${ON_LOAD[@]}" $LOAD --server "$addr" --threads "$LOAD_THREADS" --sockets 8 --window 8 --duration "$DURATION" > "$RAW/udp-redis2-$((${#two[@]} + 1))-$run.txt" 2>&1 &
      two+=($!)
    done
    wait "${two[@]}" 2>/dev/null || true
    c1=$(sum_ticks "$R1_PID" "$R2_PID" "$REDIS_PID"); r1=$(cpu_ticks "$REDIS_PID")
    rps=$(cat "$RAW"/udp-redis2-[12]-$run.txt | awk '{for(i=1;i<=NF;i++) if ($i=="responses/s:") s += $(i+1)} END {print s+0}'); cpu=$(us_per_req $((c1 - c0)) "${rps:-0}"); rcpu=$(redis_share "$r0" "$r1" "$rps")
    echo "udp redis, two instances, run $run: $rps responses/s, server CPU (trackers + Redis) $cpu us/request, of which Redis $rcpu"
    echo "$rps" >> "$W/udp-redis2.rps"; echo "$cpu" >> "$W/udp-redis2.cpu"; echo "$rcpu" >> "$W/udp-redis2.rcpu"
  done
  # Memory per peer with small swarms, as for the in-memory trackers below.
  redis-cli -s "$RS" flushall > /dev/null
  [ -f "$W/hashes100k.hex" ] || $LOAD --swarms 100000 --print-hashes > "$W/hashes100k.hex"
  EMPTY_MEM=$(used_memory)
  $LOAD --server "$R1_UDP" --sockets 8 --swarms 100000 --fill 1000000 > "$RAW/mem-redis.txt" 2>&1
  mem=$(used_memory)
  peers=$(redis_peers)
  REDIS_MEM_SMALL=$(awk -v m="$mem" -v e="$EMPTY_MEM" -v p="$peers" 'BEGIN { if (p > 0) printf "%.0f", (m - e) / p; else print "n/a" }')
  echo "redis memory: $mem bytes for $peers peers over 100,000 swarms: $REDIS_MEM_SMALL bytes per peer ($(cat "$RAW/mem-redis.txt"))"
  kill "$R1_PID" "$R2_PID" "$REDIS_PID" 2>/dev/null || true
fi

# --- memory: 1,000,000 peers over 100,000 swarms ---
MEM=()
if [ "${SKIP_MEMORY:-0}" != 1 ]; then
  $LOAD --swarms 100000 --print-hashes > "$W/hashes100k.hex"
  fill_rss() { # name pid addr
    local before after; before=$(rss_kib "$2")
    $LOAD --server "$3" --sockets 8 --swarms 100000 --fill 1000000 > "$RAW/mem-$1.txt" 2>&1
    after=$(rss_kib "$2")
    echo "memory $1: RSS $before KiB before, $after KiB after 1,000,000 peers ($(cat "$RAW/mem-$1.txt"))"
    MEM+=("| $1 | $((before / 1024)) | $((after / 1024)) | $(( (after - before) * 1024 / 1000000 )) |")
  }
  start_bitswarm ""; fill_rss bitswarm "$BS_PID" "$BS_UDP"
  curl -s "http://$BS_HTTP/stats" > "$RAW/mem-bitswarm-stats.json" || true
  start_opentracker "$W/hashes100k.hex"; fill_rss opentracker "$OT_PID" "127.0.0.1:$OT_PORT"
  if [ -x "$ANCHORS/aquatic_udp" ]; then start_aquatic_udp; fill_rss aquatic_udp "$AQU_PID" "127.0.0.1:$AQU_PORT"; fi
fi

# --- table ---
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
DATE=$(date -u +%Y-%m-%d)
REPORT=${REPORT:-bench/results/tracker-$DATE.md}
{
  echo "Tracker benchmark, $DATE, $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), loopback, medians of $RUNS runs of ${DURATION}s; $CORES."
  echo
  echo "| load | tracker | requests/s | vs opentracker | p99 latency (ms) | server CPU per request (us) |"
  echo "| --- | --- | ---: | ---: | ---: | ---: |"
  for mode in keepalive close; do
    ot=$(median < "$W/http-opentracker-$mode.rps")
    for t in "${HTTP_TARGETS[@]}"; do
      set -- $t; name=$1
      [ -f "$W/http-$name-$mode.rps" ] || continue
      r=$(median < "$W/http-$name-$mode.rps"); p=$(median < "$W/http-$name-$mode.p99"); c=$(median < "$W/http-$name-$mode.cpu")
      label="HTTP announce, wrk -c$WRK_CONNS, keep-alive"; [ $mode = close ] && label="HTTP announce, wrk -c$WRK_CONNS, Connection: close"
      [ "$name" = floor ] && name="floor: no tracker, only accept, read, canned reply, close"
      echo "| $label | $name | ${r%.*} | $(ratio "$r" "$ot")x | $p | $c |"
    done
  done
  ot=$(median < "$W/udp-opentracker.rps")
  for t in "${UDP_TARGETS[@]}"; do
    set -- $t; name=$1
    r=$(median < "$W/udp-$name.rps"); p=$(median < "$W/udp-$name.p99"); c=$(median < "$W/udp-$name.cpu")
    echo "| UDP, udp_load 16 sockets$([ "$LOAD_THREADS" -gt 1 ] && echo " x $LOAD_THREADS threads"), 80% announce | $name | ${r%.*} | $(ratio "$r" "$ot")x | $p | $c |"
  done
  for t in "${UDP_TARGETS[@]}"; do
    set -- $t; name=$1
    [ -f "$W/aqload-$name.rps" ] || continue
    r=$(median < "$W/aqload-$name.rps")
    echo "| UDP, aquatic_udp_load_test ($LOAD_THREADS worker$([ "$LOAD_THREADS" -gt 1 ] && echo s)) | $name | ${r%.*} | | | |"
  done
  # Each run measures every tracker within seconds of the others, so a run's own ratio shares
  # the machine's state of the moment; their median and range say more than medians divided.
  echo
  echo "Each run's own ratio to opentracker (median, and range over the $RUNS runs):"
  per_run() { # label, file, opentracker's file
    local r; r=$(paste "$2" "$3" | awk '$2 > 0 {printf "%.2f\n", $1 / $2}')
    [ -n "$r" ] && echo "- $1: $(echo "$r" | median | xargs printf "%.2f")x ($(echo "$r" | sort -g | head -1)x to $(echo "$r" | sort -g | tail -1)x)"
  }
  for t in "${HTTP_TARGETS[@]}"; do
    set -- $t; [ "$1" = opentracker ] && continue
    [ "$1" = floor ] || per_run "$1, HTTP keep-alive" "$W/http-$1-keepalive.rps" "$W/http-opentracker-keepalive.rps"
    per_run "$1, HTTP close" "$W/http-$1-close.rps" "$W/http-opentracker-close.rps"
  done
  for t in "${UDP_TARGETS[@]}"; do
    set -- $t; [ "$1" = opentracker ] && continue
    per_run "$1, UDP" "$W/udp-$1.rps" "$W/udp-opentracker.rps"
  done
  if [ -f "$W/udp-redis1.rps" ]; then
    echo
    echo "On Redis (store.backend = \"redis\"; redis-server on the trackers' CPUs too):"
    echo
    echo "| load | setup | requests/s | vs opentracker | vs bitswarm in memory | server CPU per request, trackers + Redis (us) | of which Redis (us) |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    ot=$(median < "$W/http-opentracker-keepalive.rps"); bm=$(median < "$W/http-bitswarm-keepalive.rps")
    for n in 1 2; do
      r=$(median < "$W/http-redis$n.rps"); c=$(median < "$W/http-redis$n.cpu"); rc=$(median < "$W/http-redis$n.rcpu")
      echo "| HTTP announce, wrk -c$WRK_CONNS, keep-alive | $([ $n = 1 ] && echo "one instance" || echo "two instances, one Redis") | ${r%.*} | $(ratio "$r" "$ot")x | $(ratio "$r" "$bm")x | $c | $rc |"
    done
    ot=$(median < "$W/udp-opentracker.rps"); bm=$(median < "$W/udp-bitswarm.rps")
    for n in 1 2; do
      r=$(median < "$W/udp-redis$n.rps"); c=$(median < "$W/udp-redis$n.cpu"); rc=$(median < "$W/udp-redis$n.rcpu")
      echo "| UDP, udp_load 16 sockets, 80% announce | $([ $n = 1 ] && echo "one instance" || echo "two instances, one Redis") | ${r%.*} | $(ratio "$r" "$ot")x | $(ratio "$r" "$bm")x | $c | $rc |"
    done
    echo
    echo "Redis's memory per peer (INFO memory used_memory over the peers stored): $REDIS_MEM_BIG bytes with 1,000 swarms of 1,000 peers, $REDIS_MEM_SMALL bytes with 100,000 swarms of 10."
    echo
    echo "Where Redis's time went, one instance, run $RUNS (INFO commandstats, wall-clock microseconds per request answered, and calls per request):"
    echo "- HTTP: $(stats_line "$RAW/redis-cmdstats-http-$RUNS.txt")"
    echo "- UDP: $(stats_line "$RAW/redis-cmdstats-udp-$RUNS.txt")"
  fi
  if [ ${#MEM[@]} -gt 0 ]; then
    echo
    echo "| 1,000,000 peers over 100,000 swarms (UDP) | RSS before (MiB) | RSS after (MiB) | bytes per peer (growth) |"
    echo "| --- | ---: | ---: | ---: |"
    printf '%s\n' "${MEM[@]}"
  fi
} > "$REPORT"
echo
cat "$REPORT"
echo "(written to $REPORT)"
