#!/usr/bin/env bash
# Benchmark: `bitswarm torrent create` against mktorrent -t 2, transmission-create and libtorrent's
# creator, on (a) a page-cached 1 GiB file and (b) a page-cached tree of 20,000 files of about 8 KiB
# in 100 folders. Same piece size for every tool. Prints medians of RUNS runs (hyperfine), the rate
# in GB/s, the ratio to mktorrent, and the limit: one core's SHA-1 rate (openssl, measured in this
# run) times the cores. Usage: bench/torrent-create.sh   (RUNS=5 BENCH_DIR=/tmp/bitswarm-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DIR=${BENCH_DIR:-/tmp/bitswarm-bench}
CORES=$(nproc)
mkdir -p "$DIR"
scripts/install-deps
cargo build --release -q
B=$PWD/target/release/bitswarm

# Data, made once and reused.
[ -f "$DIR/big.bin" ] || head -c 1073741824 /dev/urandom > "$DIR/big.bin"
if [ ! -f "$DIR/tree/.done" ]; then
  python3 - "$DIR/tree" <<'PY'
import os, sys
base = sys.argv[1]; r = open('/dev/urandom', 'rb')
for d in range(100):
    os.makedirs(f'{base}/d{d:03}', exist_ok=True)
    for f in range(200):
        open(f'{base}/d{d:03}/f{f:03}.bin', 'wb').write(r.read(8192 + ((d * 200 + f) * 37) % 1024 - 512))
open(f'{base}/.done', 'w').close()
PY
fi
rm -f "$DIR/tree/.done.torrent"
# Page-cache everything (the benchmark is about hashing, not the disk).
cat "$DIR/big.bin" > /dev/null
find "$DIR/tree" -type f -exec cat {} + > /dev/null

SHA1=$(openssl speed -evp sha1 -bytes 1048576 -seconds 3 2>/dev/null | awk '/^sha1/ {print $2}' | tr -d k)
OUT="$DIR/out.torrent"
run() { # name piece_log2 path -> hyperfine json
  local label=$1 log=$2 src=$3 json=$4
  local piece=$((1 << log)) kib=$(((1 << log) / 1024))
  # `torrent verify` of the same data against a torrent made beforehand.
  local check="$DIR/check-$label.torrent"
  "$B" torrent create -q --force --no-date --piece-size "$piece" -o "$check" "$src" >/dev/null
  hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$json" --prepare "rm -f $OUT" \
    -n "bitswarm verify" "$B torrent verify -q $check -d $(dirname "$src")" \
    -n bitswarm "$B torrent create -q --no-date --piece-size $piece -t http://127.0.0.1:1/announce -o $OUT $src" \
    -n "mktorrent -t $CORES" "mktorrent -t $CORES -l $log -a http://127.0.0.1:1/announce -o $OUT $src" \
    -n transmission-create "transmission-create -s $kib -t http://127.0.0.1:1/announce -o $OUT $src" \
    -n libtorrent "/usr/bin/python3 bench/lt_create.py $src $OUT $piece" >/dev/null
}
run file 20 "$DIR/big.bin" "$DIR/create-file.json"
run tree 17 "$DIR/tree" "$DIR/create-tree.json"

python3 - "$DIR" "$SHA1" "$CORES" <<'PY'
import json, os, sys
d, sha1_k, cores = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
size = {"file": os.path.getsize(f"{d}/big.bin"),
        "tree": sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(f"{d}/tree") for f in fs if f != ".done")}
res = {k: {r["command"]: r["median"] for r in json.load(open(f"{d}/create-{k}.json"))["results"]} for k in size}
limit = sha1_k * 1000 * cores / 1e9
print(f"SHA-1 on one core (openssl): {sha1_k*1000/1e9:.2f} GB/s; limit for {cores} cores: {limit:.2f} GB/s")
print()
print("| tool | 1 GiB file: median s | GB/s | vs mktorrent | 20,000 files (%d MB): median s | GB/s | vs mktorrent |" % (size["tree"] // 10**6))
print("| --- | --- | --- | --- | --- | --- | --- |")
mk = [c for c in res["file"] if c.startswith("mktorrent")][0]
order = [t for t in res["file"] if t != "bitswarm verify"] + ["bitswarm verify"]
for tool in order:
    row = [tool]
    for k in ("file", "tree"):
        t = res[k][tool]
        row += [f"{t:.3f}", f"{size[k]/t/1e9:.2f}", f"{res[k][mk]/t:.2f}×"]
    print("| " + " | ".join(row) + " |")
print(f"| limit ({cores} × one core's SHA-1) | {size['file']/limit/1e9:.3f} | {limit:.2f} | | {size['tree']/limit/1e9:.3f} | {limit:.2f} | |")
b = res["file"]["bitswarm"]
print()
print(f"bitswarm on the file reaches {size['file']/b/1e9/limit*100:.0f}% of the limit; on the tree {res['tree'][mk]/res['tree']['bitswarm']:.2f}× mktorrent.")
PY
