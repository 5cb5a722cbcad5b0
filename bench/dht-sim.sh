#!/usr/bin/env bash
# DHT lookups in a simulated network (issue 20, item 7a): NODES nodes of crates/dht on virtual
# time (no sockets), bootstrapped from three, then LOOKUPS get_peers lookups from random nodes;
# prints the median and p99 of the queries, responses and rounds a lookup takes, beside
# Kademlia's log2(N). Deterministic for a given SEED (the simulation replays exactly).
#
# Usage: bench/dht-sim.sh [NODES [LOOKUPS [SEED]]]   (defaults 10000 500 1)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -q -p bitswarm-dht --example sim_bench -- "${1:-10000}" "${2:-500}" "${3:-1}"
