#!/usr/bin/env bash
# Benchmarks of unseen, one command from a clean clone:
#   1. in-process ingest (OTLP protobuf → findings) vs a bare prost decode of the same bytes
#   2. `unseen scan` of a large Splunk CSV vs DuckDB running the rule as SQL, same threads;
#      then (2b) vs DuckDB with every thread over a CSV of 200 k keys interleaved in time order
#   3. memory per tracked key (peak RSS of `unseen scan` over N unique keys)
#   4. `serve` over loopback, loaded by `unseen generate --send --preload`: as fast as it
#      answers, at an offered load of SERVE_RATE points/s (latency at the target's load),
#      and at that load with fleets of 14x and ~130x the keys (~1 M), already in the store
#   7. `serve` restarted on a state of N keys (put there by `baseline import`): the time to its
#      first acknowledgement, and its RSS per key
# Prints the machine and a table; a full run also updates the rows of BENCHMARKS.md.
#
#   scripts/bench.sh            full size (minutes; the scan CSV is ~75 M rows, ~13 GB on disk)
#   scripts/bench.sh --smoke    everything tiny, in seconds once built (what CI runs)
#   options: --no-write (leave BENCHMARKS.md alone), --profile (a perf profile of the scan),
#            --keep (keep the generated files), --only ingest,scan,scan-keys,scan-proto,memory,serve,api,replicas,restart
# Environment: BENCH_DIR (work directory, default target/bench), SCAN_ARGS (generator flags
# of the scan CSV), SCAN_KEYS and SCAN_TICKS (keys and collections of the 2b CSV, default
# 200000 and 100), KEYS (key counts for the memory figure, e.g. "1000000 10000000"),
# RESTART_KEYS (key counts of the restart figure, default "1000000 10000000"),
# BENCH_SERVE_CMD (how to start serve; `{port}`, `{admin}` and `{dir}` are replaced), SERVE_RATE
# (points/s of the rate-limited serve runs, default 500000), BENCH_POSTGRES (the database of
# the replica figures, default the local server's database `test`).
set -euo pipefail

ALL=ingest,scan,memory,serve,api,replicas,restart
SMOKE=0 WRITE=1 PROFILE=0 KEEP=0 ONLY=$ALL
while [ $# -gt 0 ]; do
  arg=$1
  shift
  case "$arg" in
    --only) ONLY=${1:?--only needs a list, e.g. scan,memory}; shift ;;
    --smoke) SMOKE=1 ;;
    --no-write) WRITE=0 ;;
    --profile) PROFILE=1 ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
# A smoke run measures nothing worth recording.
[ "$SMOKE" = 1 ] && WRITE=0

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=${BENCH_DIR:-$ROOT/target/bench}
mkdir -p "$WORK"
# Where cargo puts the binary: CARGO_TARGET_DIR when set (relative to the root, as cargo
# reads it), else target/.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
BIN=$TARGET_DIR/release/unseen
START=1767225600 # the generator's default --start, 2026-01-01T00:00:00Z
declare -A R

log() { printf '\n== %s\n' "$*" >&2; }
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }
bench_lines() { sed -n 's/^BENCH \([a-z_0-9]*\)=\(.*\)$/\1 \2/p'; }
collect() { while read -r k v; do R[$k]=$v; done < <(bench_lines < "$1"); }
rss_kb() { sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$1"; }
# N distinct keys (keys_csv N T) with realistic cardinalities and name lengths: 100 images
# per node (so N/100 nodes, EKS names) out of a catalog of 10,000 images (ECR paths), over
# 40 clusters, each seen once at T.
keys_csv() {
  awk -v n="$1" -v t="$2" 'BEGIN {
    print "_time,k8s.cluster.name,k8s.node.name,container.image.name"
    for (i = 0; i < n; i++) {
      node = int(i / 100); image = (node * 37 + i % 100) % 10000
      printf "%d,prod-eu-west-1-%02d,ip-10-%d-%d-%d.eu-west-1.compute.internal,123456789012.dkr.ecr.eu-west-1.amazonaws.com/team-%d/service-%d\n",
        t, node % 40, int(node / 62500) % 256, int(node / 250) % 250, node % 250, image % 97, image
    }
  }'
}

# ---- machine ---------------------------------------------------------------------------
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
MEM=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
MACHINE="$(nproc) CPUs ($CPU), $MEM RAM, $(uname -sr), $(rustc --version)"
log "machine: $MACHINE"

# ---- build -------------------------------------------------------------------------------
log "build (release)"
cargo build --release --locked -p unseen >&2

# ---- 1. in-process ingest vs prost -------------------------------------------------------
if wanted ingest; then
log "1. in-process ingest vs bare prost decode (one thread)"
if [ "$SMOKE" = 1 ]; then INGEST_ARGS=(--smoke); else INGEST_ARGS=(); fi
cargo bench --locked -p unseen-generate --bench ingest -- "${INGEST_ARGS[@]}" | tee "$WORK/ingest.txt"
collect "$WORK/ingest.txt"
fi

# ---- 2. scan vs DuckDB -------------------------------------------------------------------
AT=$((START + 35 * 86400))
if wanted scan || wanted scan-keys; then
VENV=$ROOT/target/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import duckdb' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "duckdb==2.0.0"
fi
fi
if wanted scan; then
log "2. unseen scan vs DuckDB over the same CSV"
if [ "$SMOKE" = 1 ]; then
  DAYS=35
  SCAN_ARGS=${SCAN_ARGS:-"--clusters 1 --nodes-per-cluster 3 --pods-per-node 4 --images 50 --interval 1h"}
else
  DAYS=35
  # ~1,500 containers scraped every minute for 35 days: ~75 M rows, ~13 GB.
  SCAN_ARGS=${SCAN_ARGS:-"--clusters 4 --nodes-per-cluster 10 --pods-per-node 20 --images 2000 --interval 60s"}
fi
CSV=$WORK/scan.csv
GEN_CMD="unseen generate $SCAN_ARGS --days $DAYS --seed 1 --format csv --out scan.csv"
# shellcheck disable=SC2086
"$BIN" generate $SCAN_ARGS --days "$DAYS" --seed 1 --format csv --out "$CSV" 2> "$WORK/gen.txt"
cat "$WORK/gen.txt" >&2
ROWS=$(sed -n 's/.*, \([0-9]*\) CSV rows.*/\1/p' "$WORK/gen.txt")
AT=$((START + DAYS * 86400))
sync # write the CSV back before timing the readers
"$VENV/bin/python" scripts/bench_lib.py scan-vs-duckdb --bin "$BIN" --csv "$CSV" --at "$AT" \
  --threads 1 --also-threads "$(nproc)" --rows "$ROWS" | tee "$WORK/scan.txt" || true
collect "$WORK/scan.txt"
R[scan_rows]=$ROWS
fi

# 2b. The shape of a real export, against DuckDB at its best: every thread, and a CSV of
# SCAN_KEYS distinct keys, each seen at SCAN_TICKS collections over the baseline window,
# every collection listing all keys in a different pseudo-random order (an export sorted
# by time has every key interleaved, so key lookups do not stay in the cache), plus 7 keys
# seen only in the last hour: the findings. Median of 3 alternating runs.
# (Also alone: `--only scan-keys`.)
if wanted scan || wanted scan-keys; then
if [ "$SMOKE" = 1 ]; then SCAN_KEYS=${SCAN_KEYS:-2000}; SCAN_TICKS=${SCAN_TICKS:-10}; else
  SCAN_KEYS=${SCAN_KEYS:-200000}; SCAN_TICKS=${SCAN_TICKS:-100}; fi
log "2b. unseen scan vs DuckDB with every thread, $SCAN_KEYS keys interleaved"
KEYS_CSV=$WORK/scan-keys.csv
awk -v k="$SCAN_KEYS" -v ticks="$SCAN_TICKS" -v at="$AT" 'BEGIN {
  print "_time,metric_name,host.name,k8s.cluster.name,k8s.node.name,container.image.name,_value"
  span = 30 * 86400 - 3600
  for (j = 0; j < ticks; j++) {
    t = at - 30 * 86400 + int(j * span / ticks)
    for (i = 0; i < k; i++) {
      key = (i * 7919 + j * 104729) % k  # a permutation of the keys: 7919 is a prime that divides no k used here
      node = int(key / 100); image = (node * 37 + key % 100) % 10000
      printf "%d,k8s.container.ready,collector-%d,prod-eu-west-1-%02d,ip-10-%d-%d-%d.eu-west-1.compute.internal,123456789012.dkr.ecr.eu-west-1.amazonaws.com/team-%d/service-%d,1\n",
        t, node % 7, node % 40, int(node / 62500) % 256, int(node / 250) % 250, node % 250, image % 97, image
    }
  }
  for (f = 0; f < 7; f++)
    printf "%d,k8s.container.ready,collector-0,prod-eu-west-1-00,ip-10-9-9-%d.eu-west-1.compute.internal,123456789012.dkr.ecr.eu-west-1.amazonaws.com/new/service-%d,1\n",
      at - 1800, f, f
}' > "$KEYS_CSV"
KEYS_ROWS=$((SCAN_KEYS * SCAN_TICKS + 7))
sync
"$VENV/bin/python" scripts/bench_lib.py scan-vs-duckdb --bin "$BIN" --csv "$KEYS_CSV" --at "$AT" \
  --threads "$(nproc)" --unseen-also-threads 1 --runs 3 --prefix keys --rows "$KEYS_ROWS" \
  | tee "$WORK/scan-keys.txt" || true
collect "$WORK/scan-keys.txt"
[ "$KEEP" = 1 ] || rm -f "$KEYS_CSV"
fi

# 2c. `scan` of OTLP protobuf end to end: an export of the k8s_cluster receiver's batches
# (every metric, not only the ready points), one thread, against a bare prost decode of
# the same bytes read into memory first. Median of 3 alternating runs. (Also alone:
# `--only scan-proto`.)
if wanted scan || wanted scan-proto; then
log "2c. unseen scan --format otlp-proto end to end vs bare prost decode"
if [ "$SMOKE" = 1 ]; then
  PROTO_ARGS=${PROTO_ARGS:-"--clusters 1 --nodes-per-cluster 2 --pods-per-node 4 --images 50 --interval 1h"}
else
  # ~260 containers scraped every minute for a day: ~0.37 M ready points, ~0.9 GB.
  PROTO_ARGS=${PROTO_ARGS:-"--clusters 1 --nodes-per-cluster 10 --pods-per-node 20 --images 2000 --interval 60s"}
fi
PROTO=$WORK/scan.otlp
# shellcheck disable=SC2086
"$BIN" generate $PROTO_ARGS --days 1 --seed 3 --format otlp-proto --out "$PROTO" 2> "$WORK/gen-proto.txt"
cat "$WORK/gen-proto.txt" >&2
cargo bench --locked -p unseen-generate --bench ingest --no-run >&2
sync
python3 scripts/bench_lib.py scan-proto --bin "$BIN" --file "$PROTO" --at $((START + 86400)) \
  --prost-cmd "cargo bench --locked -q -p unseen-generate --bench ingest -- --prost-file $PROTO --runs 1" \
  | tee "$WORK/scan-proto.txt"
collect "$WORK/scan-proto.txt"
R[scan_proto_args]=$PROTO_ARGS
[ "$KEEP" = 1 ] || rm -f "$PROTO"
fi

# ---- 3. memory per tracked key -----------------------------------------------------------
if wanted memory; then
log "3. memory per tracked key (peak RSS of unseen scan over N unique keys)"
if [ "$SMOKE" = 1 ]; then KEYS=${KEYS:-"10000 100000"}; else KEYS=${KEYS:-"1000000 10000000"}; fi
# Each key is seen two days before T: in the baseline, not in the current window, so every
# key is tracked to the end but none is a finding (findings would measure the output, not
# the state).
PREV_KEYS=0 PREV_RSS=0
for n in 1 $KEYS; do
  keys_csv "$n" "$((AT - 2 * 86400))" > "$WORK/keys.csv"
  # One thread: the state of one scan (ranges read on N threads each keep the keys they
  # see, up to N times as many when every key is in every range).
  /usr/bin/time -v "$BIN" scan --format csv --at "$AT" --output json --threads 1 "$WORK/keys.csv" \
    > /dev/null 2> "$WORK/keys-$n.time"
  rss=$(rss_kb "$WORK/keys-$n.time")
  if [ "$n" = 1 ]; then
    BASE_RSS=$rss
    echo "1 key: peak RSS $rss KiB (the process alone)"
  else
    per=$(( (rss - BASE_RSS) * 1024 / n ))
    R[mem_${n}_rss_kb]=$rss
    R[mem_${n}_bytes_per_key]=$per
    line="$n keys: peak RSS $rss KiB, $per bytes per key above the empty process"
    if [ "$PREV_KEYS" -gt 0 ]; then
      marginal=$(( (rss - PREV_RSS) * 1024 / (n - PREV_KEYS) ))
      R[mem_marginal_bytes_per_key]=$marginal
      line="$line, $marginal bytes per key between $PREV_KEYS and $n"
    fi
    echo "$line"
    PREV_KEYS=$n PREV_RSS=$rss
  fi
done
rm -f "$WORK/keys.csv"
fi

# ---- 4. serve over loopback --------------------------------------------------------------
# Three runs, each into a new server with an empty store: as fast as the server takes the
# requests (4 in flight: throughput); at the target's rate (an open load of SERVE_RATE
# points/s: latency at that load; a closed loop at saturation measures mostly its own
# queue, latency = requests in flight / throughput); and at that rate with a larger fleet.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
serve_run() { # serve_run NAME WARM FLEET [extra generate flags...]
  # WARM=1: first put the day before into the state with `baseline import` (how a fleet
  # of this size is started: its keys known, not a million findings), so that the measured
  # day finds every key in the store, with no incidents of a first day still open to close
  # during it (the steady state of a server that has run for a while). With
  # BENCH_SERVE_CMD, the import goes to {dir}/data: use that as the command's state.
  local name=$1 warm=$2 fleet=$3
  shift 3
  local port admin sdir cmd pid up sent cpu
  port=$(free_port)
  admin=$(free_port)
  sdir=$(mktemp -d "$WORK/serve.XXXX")
  cmd=${BENCH_SERVE_CMD:-"$BIN serve --otlp-http 127.0.0.1:{port} --otlp-grpc 127.0.0.1:0 --admin 127.0.0.1:{admin} --data {dir}/data --findings {dir}/findings.jsonl"}
  cmd=${cmd//\{port\}/$port}
  cmd=${cmd//\{admin\}/$admin}
  cmd=${cmd//\{dir\}/$sdir}
  if [ "$warm" = 1 ]; then
    # shellcheck disable=SC2086
    "$BIN" generate $fleet --start "now-2d" --out "$sdir/day-before.pb" 2> /dev/null
    "$BIN" baseline import --data "$sdir/data" "$sdir/day-before.pb" 2>&1 | sed 's/^/warm-up: /'
    rm -f "$sdir/day-before.pb"
  fi
  $cmd > "$WORK/serve-$name.log" 2>&1 &
  pid=$!
  up=0
  for _ in $(seq 100); do
    if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then up=1; break; fi
    sleep 0.1
  done
  if [ "$up" = 1 ]; then
    # --preload: the sender encodes the whole history first (~440 bytes per point in
    # memory), so that while it sends, its share of the two cores is the sending alone.
    # shellcheck disable=SC2086
    "$BIN" generate $fleet --start "now-1d" --send "http://127.0.0.1:$port" --concurrency 4 \
      --preload "$@" 2> "$WORK/send-$name.txt" || true
    cat "$WORK/send-$name.txt"
    # The server's own CPU time (user + system), to show what it costs per point.
    cpu=$(awk -v t="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / t }' "/proc/$pid/stat" 2> /dev/null || true)
    R[$name]=$(sed -n 's/^sent .* in \([0-9.]*\) s: \([0-9]*\) points\/s, \([0-9]*\) ready points\/s; latency p50 \([^,]*\), p99 \([^,]*\),.*/\2 points\/s (\3 ready\/s), ack p50 \4, p99 \5/p' "$WORK/send-$name.txt")
    sent=$(sed -n 's/^sent [0-9]* requests, \([0-9]*\) points.*/\1/p' "$WORK/send-$name.txt")
    if [ -n "${R[$name]}" ] && [ -n "$sent" ] && [ -n "$cpu" ]; then
      R[$name]="${R[$name]}; server CPU $cpu s, $(awk -v n="$sent" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", n / c; else printf "?" }') points per CPU-second"
    fi
    [ -n "${R[$name]}" ] || R[$name]="failed: see $WORK/send-$name.txt"
    R[${name}_rss_kb]=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2> /dev/null || true)
    R[${name}_hwm_kb]=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2> /dev/null || true)
    if [ -n "${R[${name}_rss_kb]}" ]; then
      R[$name]="${R[$name]}; RSS at the end $(( R[${name}_rss_kb] / 1024 )) MiB (peak $(( R[${name}_hwm_kb] / 1024 )) MiB)"
    fi
  else
    R[$name]="not available: \`$cmd\` did not listen on $port (set BENCH_SERVE_CMD)"
  fi
  # The server's metrics at the end (keys tracked, commit times), for the record.
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
    "http://127.0.0.1:$admin/metrics" > "$WORK/metrics-$name.txt" 2> /dev/null || true
  kill "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  rm -rf "$sdir"
}
if wanted serve; then
log "4. serve over loopback"
# The earlier figures wrote gigabytes; let the kernel write them back now rather than
# during the server's fsyncs.
sync
if [ "$SMOKE" = 1 ]; then
  SEND_ARGS="--clusters 1 --nodes-per-cluster 3 --days 1 --interval 1h"
  LARGE_ARGS="--clusters 2 --nodes-per-cluster 5 --days 1 --interval 6h"
  MILLION_ARGS="--clusters 2 --nodes-per-cluster 10 --days 1 --interval 12h"
  SERVE_RATE=${SERVE_RATE:-20000}
else
  SEND_ARGS="--clusters 4 --nodes-per-cluster 50 --pods-per-node 20 --images 2000 --days 1 --interval 5m"
  # 14 times the keys (~110 k), one collection an hour.
  LARGE_ARGS="--clusters 8 --nodes-per-cluster 250 --pods-per-node 30 --images 20000 --days 1 --interval 1h"
  # ~1 M keys (issue 13), two collections a day: each sends ~4.5 M points (a preloaded day
  # holds ~4 GB of request bodies).
  MILLION_ARGS="--clusters 20 --nodes-per-cluster 600 --pods-per-node 60 --images 20000 --days 1 --interval 12h"
  SERVE_RATE=${SERVE_RATE:-500000}
fi
if "$BIN" serve --help > /dev/null 2>&1; then
  log "4a. serve, as fast as it takes them"
  serve_run serve 0 "$SEND_ARGS"
  log "4b. serve at $SERVE_RATE points/s"
  serve_run serve_rate 0 "$SEND_ARGS" --rate "$SERVE_RATE"
  log "4c. serve at $SERVE_RATE points/s, a larger fleet, its keys already in the store"
  serve_run serve_large 1 "$LARGE_ARGS" --rate "$SERVE_RATE"
  R[serve_large_keys]=$(sed -n 's/^unseen_keys_tracked \([0-9]*\).*/\1/p' "$WORK/metrics-serve_large.txt" 2> /dev/null || true)
  log "4d. serve at $SERVE_RATE points/s, a fleet of about a million keys, its keys already in the store"
  serve_run serve_million 1 "$MILLION_ARGS" --rate "$SERVE_RATE"
  R[serve_million_keys]=$(sed -n 's/^unseen_keys_tracked \([0-9]*\).*/\1/p' "$WORK/metrics-serve_million.txt" 2> /dev/null || true)
else
  R[serve]="not available (this build has no \`unseen serve\`)"
  R[serve_rate]=${R[serve]}
  R[serve_large]=${R[serve]}
  R[serve_million]=${R[serve]}
fi
fi

# ---- 7. serve restarted on millions of keys ------------------------------------------------
# `baseline import` puts N keys (keys_csv, seen two days ago) into a new state; then `serve`
# is started on it and sent one export until it answers: the time from its start to that
# first acknowledgement (loading the key snapshot and replaying the log after it), and its
# RSS then, per key above a server started on an empty state. The import's own time and peak
# RSS are printed too.
if wanted restart; then
log "7. serve restarted on a state of N keys"
if [ "$SMOKE" = 1 ]; then RESTART_KEYS=${RESTART_KEYS:-"10000 100000"}; else RESTART_KEYS=${RESTART_KEYS:-"1000000 10000000"}; fi
"$BIN" generate --clusters 1 --nodes-per-cluster 1 --pods-per-node 1 --days 1 --interval 1d \
  --start now-1d --format otlp-proto --out "$WORK/one.otlp" 2> /dev/null
SEEN=$(( $(date +%s) - 2 * 86400 ))
for n in 0 $RESTART_KEYS; do
  rdir=$(mktemp -d "$WORK/restart.XXXX")
  if [ "$n" -gt 0 ]; then
    keys_csv "$n" "$SEEN" > "$WORK/restart-keys.csv"
    /usr/bin/time -v "$BIN" baseline import --data "$rdir/data" --max-keys $(( 2 * n )) --format csv \
      "$WORK/restart-keys.csv" > /dev/null 2> "$WORK/import-$n.time"
    rm -f "$WORK/restart-keys.csv"
    wall=$(sed -n 's/^[[:space:]]*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/import-$n.time")
    echo "$n keys imported in $wall, peak RSS $(( $(rss_kb "$WORK/import-$n.time") / 1024 )) MiB; state $(du -sh "$rdir/data" | cut -f1)"
  fi
  python3 scripts/bench_lib.py serve-restart --bin "$BIN" --data "$rdir/data" --body "$WORK/one.otlp" \
    --log "$WORK/restart-$n.log" --max-keys $(( 2 * n + 1000 )) --prefix "restart_$n" | tee "$WORK/restart-$n.txt"
  collect "$WORK/restart-$n.txt"
  if [ "$n" -gt 0 ]; then
    R[restart_${n}_bytes_per_key]=$(( (R[restart_${n}_rss_kb] - R[restart_0_rss_kb]) * 1024 / n ))
    R[restart_${n}_api_bytes_per_key]=$(( (R[restart_${n}_rss_api_kb] - R[restart_0_rss_api_kb]) * 1024 / n ))
    echo "$n keys: first ack after ${R[restart_${n}_first_ack_s]} s, RSS $(( R[restart_${n}_rss_kb] / 1024 )) MiB, ${R[restart_${n}_bytes_per_key]} bytes per key above an empty server; with the query API's key inventory (read by ${R[restart_${n}_api_s]} s) ${R[restart_${n}_api_bytes_per_key]} bytes per key"
  fi
  rm -rf "$rdir"
done
fi

# ---- 5. the query API with 100,000 findings ------------------------------------------------
# Every request a console page makes, over loopback, against the embedded store holding
# 100,000 findings (crates/api/benches/pages.rs); 50 times each: median, p99, worst.
if wanted api; then
log "5. query API pages with 100,000 findings in the state"
if [ "$SMOKE" = 1 ]; then API_ARGS=(--smoke); else API_ARGS=(); fi
cargo bench --locked -p unseen-api --bench pages -- "${API_ARGS[@]}" | tee "$WORK/api.txt"
collect "$WORK/api.txt"
fi

# ---- 6. replicas on PostgreSQL -----------------------------------------------------------
# 1, 2 and 3 `serve` replicas sharing one state in PostgreSQL, beside the embedded store:
# each replica gets a Collector of its own (a fleet of its own), all sending at once.
if wanted replicas; then
log "6. serve replicas on PostgreSQL, beside the embedded store"
if [ "$SMOKE" = 1 ]; then
  REPLICA_ARGS="--clusters 1 --nodes-per-cluster 3 --days 1 --interval 1h"
else
  REPLICA_ARGS="--clusters 1 --nodes-per-cluster 50 --pods-per-node 20 --images 2000 --days 1 --interval 5m"
fi
python3 scripts/bench_lib.py replicas --bin "$BIN" --gen "$REPLICA_ARGS" \
  --url "${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}" | tee "$WORK/replicas.txt"
collect "$WORK/replicas.txt"
fi

# ---- profiles (optional) -----------------------------------------------------------------
if [ "$PROFILE" = 1 ] && [ -f "$CSV" ]; then
  log "profiles"
  if perf stat -e cpu-clock true > /dev/null 2>&1; then
    perf record -q -e cpu-clock -o "$WORK/perf-scan.data" "$BIN" scan --format csv --at "$AT" \
      --output json "$CSV" > /dev/null 2>&1
    perf report -i "$WORK/perf-scan.data" --no-children --percent-limit 1 --stdio 2> /dev/null \
      | grep -v '^#' | grep -v '^$' | head -25 | tee "$WORK/profile-scan-csv.txt"
  else
    echo "perf not usable here; try valgrind --tool=callgrind"
  fi
fi

[ "$KEEP" = 1 ] || rm -f "${CSV:-}"

# ---- table -------------------------------------------------------------------------------
fmt() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
DATE=$(date -u +%Y-%m-%d)
ROWS_OUT=()
wanted ingest && ROWS_OUT+=(
  "| ingest-proto-prost | in-process: bare \`prost::Message::decode\` (opentelemetry-proto), ${R[ingest_ready_points]} ready points | $(fmt "${R[prost_ready_pps]}") ready points/s | reference | $DATE | \`cargo bench -p unseen-generate --bench ingest\` |"
  "| ingest-proto-decode | in-process: \`unseen_ingest::read_bytes\` (as \`scan\` reads a mapped protobuf file), decode only | $(fmt "${R[ingest_decode_ready_pps]}") ready points/s | ${R[ingest_decode_ratio]}× prost | $DATE | \`cargo bench -p unseen-generate --bench ingest\` |"
  "| ingest-proto-findings | in-process: decode → key → BatchScan → findings | $(fmt "${R[ingest_findings_ready_pps]}") ready points/s | ${R[ingest_findings_ratio]}× prost (target ≥ 2×, ≥ 1 M/s) | $DATE | \`cargo bench -p unseen-generate --bench ingest\` |"
  "| ingest-proto-bodies | in-process: the same from request bodies (\`read_request\`, as \`serve\` decodes) | $(fmt "${R[ingest_bodies_ready_pps]}") ready points/s | ${R[ingest_bodies_ratio]}× prost | $DATE | \`cargo bench -p unseen-generate --bench ingest\` |"
)
wanted scan && ROWS_OUT+=(
  "| scan-csv | \`unseen scan\` of a $(fmt "${R[scan_rows]}")-row CSV ($(( ${R[scan_bytes]} / 1000000 )) MB), 1 thread | ${R[scan_unseen_s]} s | ${R[scan_ratio]}× DuckDB ${R[duckdb_version]} at 1 thread (${R[scan_duckdb_s]} s; ${R[duckdb_all_threads]:-?} threads: ${R[duckdb_all_threads_s]:-?} s); outputs equal: ${R[scan_equal]} (target ≥ 2×) | $DATE | \`$GEN_CMD\`; \`unseen scan --format csv --at $AT --output json --threads 1 scan.csv\` |"
)
{ wanted scan || wanted scan-keys; } && ROWS_OUT+=(
  "| scan-csv-keys | \`unseen scan\` of a $(fmt "${R[keys_rows]}")-row CSV ($(( ${R[keys_bytes]} / 1000000 )) MB) of ${SCAN_KEYS} keys interleaved in time order, 7 findings, $(nproc) threads | ${R[keys_unseen_s]} s (1 thread: ${R[keys_unseen_threads_1_s]:-?} s) | ${R[keys_ratio]}× DuckDB ${R[duckdb_version]} at every thread ($(nproc): ${R[keys_duckdb_s]} s), medians of 3 alternating runs; outputs equal: ${R[keys_equal]} (target ≥ 2×, issue 13) | $DATE | \`scripts/bench.sh --only scan-keys\` (awk, section 2b); \`unseen scan --format csv --at $AT --output json --threads $(nproc) scan-keys.csv\` |"
)
LAST_KEYS=${KEYS:-}; LAST_KEYS=${LAST_KEYS##* }
wanted memory && for n in $KEYS; do
  extra=""
  [ "$n" = "$LAST_KEYS" ] && [ -n "${R[mem_marginal_bytes_per_key]:-}" ] &&
    extra="; ${R[mem_marginal_bytes_per_key]} bytes per added key above the smaller size"
  ROWS_OUT+=("| memory-$n-keys | peak RSS of \`unseen scan --threads 1\` over $n unique keys, above a one-key run | ${R[mem_${n}_bytes_per_key]} bytes/key ($(( ${R[mem_${n}_rss_kb]} / 1024 )) MiB peak)$extra | target ≤ 64 bytes/key at 10 M | $DATE | \`/usr/bin/time -v unseen scan\` (keys from \`scripts/bench.sh\`) |")
done
{ wanted scan || wanted scan-proto; } && ROWS_OUT+=(
  "| scan-proto | \`unseen scan --format otlp-proto\` end to end, one thread: a file of the k8s_cluster receiver's batches ($(fmt "${R[scan_proto_bytes]}") bytes, $(fmt "${R[scan_proto_ready_points]}") ready points among every metric) | ${R[scan_proto_s]} s, $(fmt "${R[scan_proto_ready_pps]}") ready points/s (user ${R[scan_proto_user_s]} s, system ${R[scan_proto_system_s]} s) | ${R[scan_proto_ratio]}× a bare prost decode of the same bytes in memory ($(fmt "${R[scan_proto_prost_ready_pps]}") ready points/s; target ≥ 1 M/s and ≥ 2×) | $DATE | \`unseen generate ${R[scan_proto_args]} --days 1 --seed 3 --format otlp-proto --out scan.otlp\`; \`unseen scan --format otlp-proto --at END scan.otlp\` |"
)
wanted serve && ROWS_OUT+=(
  "| serve-loopback | \`serve\` loaded by \`unseen generate --send --preload\` over loopback, 4 requests in flight, as fast as it answers | ${R[serve]} | target ≥ 500 k points/s | $DATE | \`unseen generate $SEND_ARGS --start now-1d --send URL --concurrency 4 --preload\` |"
  "| serve-loopback-at-rate | the same at an offered load of $SERVE_RATE points/s | ${R[serve_rate]} | target p99 < 50 ms at 500 k points/s | $DATE | \`unseen generate $SEND_ARGS --start now-1d --send URL --concurrency 4 --preload --rate $SERVE_RATE\` |"
  "| serve-loopback-large | at $SERVE_RATE points/s, a fleet with ${R[serve_large_keys]:-?} keys, the measured day after \`baseline import\` of the day before | ${R[serve_large]} | informational | $DATE | \`unseen generate $LARGE_ARGS --start now-2d --out F\`, \`unseen baseline import F\`, then \`--start now-1d --send URL --concurrency 4 --preload --rate $SERVE_RATE\` |"
  "| serve-loopback-million | at $SERVE_RATE points/s, a fleet with ${R[serve_million_keys]:-?} keys, the measured day after \`baseline import\` of the day before | ${R[serve_million]} | target p99 < 50 ms at 500 k points/s with 1 M keys (issue 13) | $DATE | \`unseen generate $MILLION_ARGS --start now-2d --out F\`, \`unseen baseline import F\`, then \`--start now-1d --send URL --concurrency 4 --preload --rate $SERVE_RATE\` |"
)
wanted restart && for n in $RESTART_KEYS; do
  ROWS_OUT+=("| serve-restart-$n-keys | \`serve\` started on a state of $n keys (\`baseline import\`ed): from its start to the first acknowledged export, then its RSS | first ack after ${R[restart_${n}_first_ack_s]} s; RSS then $(( R[restart_${n}_rss_kb] / 1024 )) MiB, ${R[restart_${n}_bytes_per_key]} bytes/key above an empty server ($(( R[restart_0_rss_kb] / 1024 )) MiB); with the query API's key inventory (read by ${R[restart_${n}_api_s]} s) ${R[restart_${n}_api_bytes_per_key]} bytes/key; peak $(( R[restart_${n}_hwm_kb] / 1024 )) MiB | target < 10 s and ≤ 64 bytes/key at 10 M (issue 13) | $DATE | \`scripts/bench.sh --only restart\` (section 7) |")
done
wanted replicas && for n in embedded_1 postgres_1 postgres_2 postgres_3; do
  ROWS_OUT+=("| replicas-$n | \`serve\` ${n/_/ × }, each replica fed its own fleet (\`$REPLICA_ARGS\`, seeds 1..N) at once over loopback, preloaded, 4 requests in flight each | ${R[replicas_${n}_pps]} points/s, ack p99 ${R[replicas_${n}_p99_ms]} ms; per 1,000 ready points ${R[replicas_${n}_trips_per_k]} database round trips, ${R[replicas_${n}_rows_per_k]} rows written; ${R[replicas_${n}_rows_per_commit]} rows per commit of ${R[replicas_${n}_points_per_commit]} ready points | issue 11 | $DATE | \`scripts/bench_lib.py replicas\` (bench.sh section 6) |")
done
wanted api && ROWS_OUT+=(
  "| api-pages | query API over loopback, the embedded store holding ${R[api_findings_total]} findings and ${R[api_incidents_total]} incidents: every request of the console's pages, 50 each | worst p99 ${R[api_worst_p99_ms]} ms (incident queue ${R[api_incidents_p99_ms]} ms, findings ${R[api_findings_p99_ms]} ms, filtered ${R[api_findings_namespace_p99_ms]} ms, incident ${R[api_incident_p99_ms]} ms, inventory ${R[api_images_p99_ms]} ms, image ${R[api_image_p99_ms]} ms, timeline ${R[api_timeline_p99_ms]} ms); the index of the history read in ${R[api_load_s]} s at start | target < 200 ms | $DATE | \`cargo bench -p unseen-api --bench pages\` |"
)

echo
echo "machine: $MACHINE"
echo
echo "| id | what | result | vs | date | command |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS_OUT[@]}"

if [ "$WRITE" = 1 ]; then
  # The machine line is the full run's: a run of some figures (--only) leaves it, and says
  # its machine in its rows instead.
  if [ "$ONLY" = "$ALL" ]; then
    printf '%s\n' "${ROWS_OUT[@]}" | python3 scripts/bench_lib.py update-md --file BENCHMARKS.md --machine "Last full run: $MACHINE"
  else
    printf '%s\n' "${ROWS_OUT[@]}" | sed "s/ | \([0-9]\{4\}-[0-9][0-9]-[0-9][0-9]\) | / | \1 ($(nproc) CPUs, ${CPU//\//\\/}) | /" \
      | python3 scripts/bench_lib.py update-md --file BENCHMARKS.md
  fi
  echo
  echo "BENCHMARKS.md updated"
fi
if wanted scan && { [ "${R[scan_equal]:-}" != "yes" ] || [ "${R[keys_equal]:-}" != "yes" ]; }; then
  echo "bench.sh: unseen and DuckDB disagree" >&2
  exit 4
fi
