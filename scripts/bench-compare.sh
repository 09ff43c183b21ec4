#!/usr/bin/env bash
# Before and after, measured in one run: the ingest and serve figures of scripts/bench.sh
# for a base revision (built in a git worktree, with its own bench.sh: the same command)
# and for this working tree, alternately, ROUNDS times each; then the median of each side
# and their ratio. Alternating spreads the machine's drift over both sides.
#
#   scripts/bench-compare.sh REV [ROUNDS]      e.g. scripts/bench-compare.sh a539de0 3
#
# Environment: BENCH_DIR (default target/bench-compare), ONLY (default ingest,serve), and
# what scripts/bench.sh reads (SERVE_RATE, ...). Nothing else may run meanwhile.
set -euo pipefail

REV=${1:?usage: scripts/bench-compare.sh REV [ROUNDS]}
ROUNDS=${2:-3}
ONLY=${ONLY:-ingest,serve}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-$ROOT/target/bench-compare}
BASE=$WORK/base
mkdir -p "$WORK"

log() { printf '\n== %s\n' "$*" >&2; }

if [ ! -d "$BASE/.git" ] && [ ! -f "$BASE/.git" ]; then
  git -C "$ROOT" worktree add --force --detach "$BASE" "$REV" >&2
else
  git -C "$BASE" checkout --quiet --detach "$REV"
fi
BASE_REV=$(git -C "$BASE" rev-parse --short HEAD)
HEAD_REV=$(git -C "$ROOT" rev-parse --short HEAD)
if [ -n "$(git -C "$ROOT" status --porcelain)" ]; then HEAD_REV="$HEAD_REV+changes"; fi

# Builds first (both release binaries and both benches), so that no round pays for one.
log "build $BASE_REV and $HEAD_REV"
for side in "$BASE" "$ROOT"; do
  (cd "$side" && cargo build --release --locked -p unseen >&2 &&
    cargo bench --locked -p unseen-generate --bench ingest --no-run >&2)
done

for round in $(seq "$ROUNDS"); do
  for side in base head; do
    dir=$ROOT
    [ "$side" = base ] && dir=$BASE
    log "round $round: $side"
    BENCH_DIR=$WORK/$side-$round "$dir/scripts/bench.sh" --only "$ONLY" --no-write \
      > "$WORK/$side-$round.txt" 2> "$WORK/$side-$round.err" || {
      echo "bench-compare: the $side run failed, see $WORK/$side-$round.err" >&2
      exit 1
    }
  done
done

python3 - "$WORK" "$ROUNDS" "$BASE_REV" "$HEAD_REV" <<'PY'
import re, statistics, sys
from pathlib import Path

work, rounds, base_rev, head_rev = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def figures(side, r):
    out = {}
    ingest = work / f"{side}-{r}" / "ingest.txt"
    if ingest.exists():
        for line in ingest.read_text().splitlines():
            m = re.match(r"BENCH (\w+)=([0-9.]+)$", line)
            if m and m.group(1).endswith("_pps"):
                out[m.group(1)] = float(m.group(2))
    for line in (work / f"{side}-{r}.txt").read_text().splitlines():
        m = re.match(r"\| (serve-loopback[\w-]*) \| [^|]* \| ([^|]*) \|", line)
        if not m:
            continue
        name, result = m.groups()
        pts = re.search(r"([0-9]+) points/s", result)
        cpu = re.search(r"([0-9]+) points per CPU-second", result)
        p99 = re.search(r"p99 ([0-9.]+) ?ms", result)
        if pts:
            out[f"{name} points/s"] = float(pts.group(1))
        if cpu:
            out[f"{name} points per server CPU-s"] = float(cpu.group(1))
        if p99:
            out[f"{name} p99 ms"] = float(p99.group(1))
    return out

runs = {side: [figures(side, r) for r in range(1, rounds + 1)] for side in ("base", "head")}
names = sorted({k for side in runs.values() for run in side for k in run})
print(f"base {base_rev}, head {head_rev}, {rounds} rounds each, alternating; medians")
print()
print("| figure | base | head | head / base |")
print("| --- | --- | --- | --- |")
for name in names:
    b = [run[name] for run in runs["base"] if name in run]
    h = [run[name] for run in runs["head"] if name in run]
    if not b or not h:
        continue
    mb, mh = statistics.median(b), statistics.median(h)
    print(f"| {name} | {mb:,.1f} | {mh:,.1f} | {mh / mb:.3f} |")
PY
