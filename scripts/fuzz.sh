#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target of fuzz/ (the decoders and `differential`) for a fixed
# time each, one after the other, into the checked-in corpus (fuzz/corpus/<target>/), then
# minimizes each corpus so that what git keeps stays small. Prints a Markdown table of what
# each target did (executions, exec/s, corpus kept, crashes) and exits non-zero if any target
# crashed (or failed to run), naming the artifact and the command that replays it.
# docs/fuzzing.md has the results of a run and how to add a target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 60
#   nice -n 19 scripts/fuzz.sh 600           on a machine that is also used for other work
#
# Environment: CARGO_TARGET_DIR (where the fuzz build goes; default fuzz/target),
# FUZZ_TARGETS (a space-separated subset of `cargo fuzz list`, default all of them),
# FUZZ_ARGS (more libFuzzer flags for every target, e.g. "-max_len=16384").
# Run it on an idle core: the numbers it prints are per core, and halve when it shares one.
# Installs cargo-fuzz if it is missing; needs only the stable toolchain (below).
set -euo pipefail

SECONDS_PER_TARGET=${1:-60}
case "$SECONDS_PER_TARGET" in
  '' | *[!0-9]* | 0) echo "fuzz.sh: SECONDS_PER_TARGET must be a positive integer, not '$SECONDS_PER_TARGET'" >&2; exit 2 ;;
esac

CALLER=$PWD
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# cargo fuzz is run from fuzz/: it finds the project from there, and the paths it prints
# (artifacts/<target>/crash-...) are relative to it, as in fuzz/README.md.
cd "$ROOT/fuzz"
START=$(date +%s)
# libFuzzer's -jobs log (below) is written to the current directory: never leave one behind.
trap 'rm -f "$ROOT"/fuzz/fuzz-*.log' EXIT

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, -Cpasses=sancov-module...) to
# rustc. RUSTC_BOOTSTRAP=1 lets the stable compiler take them: stable is the one toolchain a
# fresh machine is sure to have, so nothing here depends on nightly.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# One set of build flags for build, run and cmin alike: cargo fuzz rebuilds whenever they
# differ. -O is a release build (what makes fuzzing fast: optimized, one codegen unit); -a
# adds debug assertions and overflow checks, so that an arithmetic overflow on a hostile
# length or offset panics here instead of wrapping silently, as it would in a release build
# of unseen. It costs some speed, and finds a class of bugs that -O alone cannot.
# AddressSanitizer is cargo fuzz's default and stays on.
BUILD=(-O -a)
# cargo would read CARGO_TARGET_DIR by itself; passing it explicitly puts it in the
# commands this script prints. A relative one is taken from where the script was started.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR=$CALLER/$CARGO_TARGET_DIR ;; esac
  BUILD+=(--target-dir "$CARGO_TARGET_DIR")
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/fuzz/target}
# The fuzzer's full output, one file per target, and the table (git-ignored, in the target dir).
LOGS=$TARGET_DIR/fuzz-logs
mkdir -p "$LOGS"

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
  mapfile -t TARGETS < <(cargo fuzz list)
fi
[ "${#TARGETS[@]}" -gt 0 ] || { echo "fuzz.sh: no fuzz targets" >&2; exit 2; }

echo "== building ${#TARGETS[@]} fuzz targets (cargo fuzz build ${BUILD[*]})" >&2
cargo fuzz build "${BUILD[@]}"

# The dictionary of a target: the tokens its decoder branches on, which random mutation
# rarely spells out. Protobuf tags, CSV names and gzip's magic (differential.dict) for the
# binary and CSV decoders and the differential target (whose modes are those); OTLP/JSON
# and YAML field names (otlp_json.dict) for the text decoders; both for auto-detection.
dict_for() {
  case "$1" in
    differential | otlp_proto | otlp_proto_request | csv) echo differential.dict ;;
    otlp_json | otlp_yaml) echo otlp_json.dict ;;
    auto)
      # libFuzzer takes one -dict: both files, each token once.
      awk '!seen[$0]++' differential.dict otlp_json.dict >"$LOGS/auto.dict"
      echo "$LOGS/auto.dict" ;;
    *) ;; # a new target fuzzes without one until it is given one here
  esac
}

# The largest input libFuzzer makes. Its default, the largest corpus input but at least
# 4096 bytes, is exactly the targets' record limit (4 KiB, fuzz/src/invariants.rs), and a
# record is over it only when longer: a line, row, YAML document or request body over the
# limit could never be made. 8192 reaches those paths, and is what the differential
# target's corpus was fuzzed at (fuzz/README.md). libFuzzer still starts with short inputs
# and lets them grow (-len_control), from the longest one in the kept corpus.
MAX_LEN=8192

# The files and bytes of a directory's regular files: "FILES BYTES".
size_of() {
  find "$1" -maxdepth 1 -type f -printf '%s\n' | awk '{n++; b+=$1} END {printf "%d %d\n", n, b}'
}

# The names of the files in a directory, sorted.
names_in() {
  find "$1" -maxdepth 1 -type f -printf '%f\n' | sort
}

# The last value of a libFuzzer final stat (-print_final_stats=1) in a log, or "?".
stat_of() {
  local value
  value=$(grep -o "^stat::$1: *[0-9]*" "$2" | tail -n 1 | awk '{print $2}')
  echo "${value:-?}"
}

ROWS=()
FAILED=()
for target in "${TARGETS[@]}"; do
  corpus=corpus/$target
  artifacts=artifacts/$target
  log=$LOGS/$target.log
  mkdir -p "$corpus" "$artifacts"
  read -r files_before bytes_before < <(size_of "$corpus")
  before=$(names_in "$artifacts")

  args=(
    -max_total_time="$SECONDS_PER_TARGET"
    -print_final_stats=1
    # One fuzzing process, one core. libFuzzer runs it as a child writing ./fuzz-0.log,
    # which it copies to its own output when the child ends (so the log below has it all).
    -jobs=1 -workers=1
    # An input that takes 30 s is a hang worth a timeout artifact (libFuzzer's default is
    # 1200 s, longer than a whole run).
    -timeout=30
    -max_len="$MAX_LEN"
  )
  read -r -a extra <<<"${FUZZ_ARGS:-}"
  args+=("${extra[@]}")
  dict=$(dict_for "$target")
  [ -n "$dict" ] && args+=(-dict="$dict")

  echo "== $target: fuzzing for ${SECONDS_PER_TARGET} s from $files_before inputs (log: $log)" >&2
  # New inputs go into the first directory only: seeds/ (one small valid input per format)
  # is read, never written.
  status=0
  cargo fuzz run "${BUILD[@]}" "$target" "$corpus" seeds -- "${args[@]}" >"$log" 2>&1 || status=$?
  rm -f fuzz-*.log

  # Minimize into a set cover of the edges: a plain merge keeps every input with a new hit
  # count, thousands of files; these two flags keep hundreds. It
  # runs even after a crash (the merge skips inputs that crash), so the corpus stays small.
  echo "== $target: minimizing the corpus" >&2
  cmin_status=0
  cargo fuzz cmin "${BUILD[@]}" "$target" "$corpus" -- -set_cover_merge=1 -use_counters=0 \
    >"$LOGS/$target.cmin.log" 2>&1 || cmin_status=$?
  if [ "$cmin_status" != 0 ] || grep -q '^Failed to minimize corpus' "$LOGS/$target.cmin.log"; then
    FAILED+=("$target: cargo fuzz cmin failed, see $LOGS/$target.cmin.log")
  fi
  read -r files bytes < <(size_of "$corpus")

  # A crash, leak, timeout or out-of-memory input is a new file in artifacts/<target>/.
  new=$(comm -13 <(echo "$before") <(names_in "$artifacts") | sed '/^$/d')
  if [ -n "$new" ]; then
    result="**crash**: $(echo "$new" | sed "s|^|\`$artifacts/|; s|\$|\`|" | paste -sd ' ' -)"
    # What went wrong, as the log says it: a Rust panic's location and message, or the
    # sanitizer's or libFuzzer's one-line report (leak, timeout, out-of-memory).
    why=$(grep -m 1 -A 1 'panicked at' "$log" || grep -m 1 -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)' "$log" || true)
    [ -n "$why" ] && why=$'\n    '$(echo "$why" | paste -sd ' ' -)
    while read -r artifact; do
      FAILED+=("$target: $artifacts/$artifact; reproduce (in fuzz/): RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD[*]} $target $artifacts/$artifact$why")
    done <<<"$new"
  elif [ "$status" != 0 ]; then
    result="**failed** (exit $status, no artifact)"
    FAILED+=("$target: cargo fuzz run exited $status without an artifact, see $log")
  else
    result="no crash"
  fi

  ROWS+=("| \`$target\` | $(stat_of number_of_executed_units "$log") | $(stat_of average_exec_per_sec "$log") | $(stat_of new_units_added "$log") | $files_before → $files | $bytes_before → $bytes | $(stat_of peak_rss_mb "$log") | $result |")
done

ELAPSED=$(($(date +%s) - START))
{
  echo
  echo "Fuzzed ${SECONDS_PER_TARGET} s per target (cargo fuzz ${BUILD[*]}, one process), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${ELAPSED} s in all."
  echo
  echo "| target | executions | exec/s | new inputs | corpus files (before → after cmin) | corpus bytes (before → after) | peak RSS MB | result |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  printf '%s\n' "${ROWS[@]}"
} | tee "$LOGS/summary.md"
read -r all_files all_bytes < <(find corpus -type f -printf '%s\n' | awk '{n++; b+=$1} END {printf "%d %d\n", n, b}')
echo
echo "Corpus kept in fuzz/corpus/: $all_files files, $all_bytes bytes. Logs: $LOGS/"

if [ "${#FAILED[@]}" -gt 0 ]; then
  echo >&2
  echo "fuzz.sh: ${#FAILED[@]} problem(s):" >&2
  printf '  %s\n' "${FAILED[@]}" >&2
  exit 1
fi
