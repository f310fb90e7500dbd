#!/usr/bin/env bash
# scripts/fuzz.sh — build and run the cargo-fuzz targets of bips-core for a fixed budget.
#
#   bash scripts/fuzz.sh                          # every target, 30 s each
#   bash scripts/fuzz.sh hostile_peer             # one target
#   BIPS_FUZZ_SECONDS=3600 bash scripts/fuzz.sh   # longer: one hour per target
#   BIPS_FUZZ_ARGS="-fork=2" BIPS_FUZZ_SECONDS=3600 bash scripts/fuzz.sh hostile_peer
#                                                 # extra libFuzzer flags (here: 2 workers)
#
# Targets (core/fuzz/fuzz_targets, logic in core/fuzz/src/lib.rs):
#   validate_segment  arbitrary bytes as a whole segment -> Region::attach answers Ok or a
#                     typed LayoutError; an accepted one survives a consumer and a producer.
#   hostile_peer      a formatted segment + a script of producer/consumer operations and
#                     hostile peer writes into the control part; every call answers Ok or a
#                     typed error, every sample/loan lies inside the data area (S3), S4 holds.
#                     Typed channels too: a peer rewriting the type block is refused by attach.
#   descriptor        a frame/tensor descriptor wire, sample lengths and a type block from
#                     another process: decode never panics, validate accepts only descriptors
#                     whose elements lie inside (own i128 check), typed views over an exactly
#                     sized allocation never reach past it (every element touched).
# Built with AddressSanitizer, debug assertions and overflow checks (cargo-fuzz defaults).
#
# Corpus: the committed seeds in core/fuzz/corpus/<target>/ are read only; what the fuzzer
# finds goes to target/fuzz-corpus/<target>/ (gitignored; kept between runs, so longer runs
# build on earlier ones; delete it to start over). Regenerate the seeds with
#   cargo test --manifest-path core/fuzz/Cargo.toml -- --ignored write_seeds
# and replay every committed corpus file on stable Rust (no libFuzzer) with
#   cargo test --manifest-path core/fuzz/Cargo.toml
#
# Running longer by hand (same corpus layout, from the repository root):
#   cd core && cargo +nightly fuzz run --target-dir ../target/fuzz hostile_peer \
#       ../target/fuzz-corpus/hostile_peer fuzz/corpus/hostile_peer -- \
#       -max_total_time=3600 -timeout=10 -fork=2
#
# Exit status: 0 when every target ran its budget clean; 1 on a crash, a timeout (a single
# input running > 10 s: a hang), an out-of-memory, a sanitizer report, or a failed build or
# install. A crash prints where its artifact is (target/fuzz-artifacts/<target>/) and how to
# reproduce it.
#
# Setup: nightly toolchain and cargo-fuzz, installed by scripts/setup.sh (run first; cargo-fuzz
# ~1-2 min the first time). A C++ compiler (g++) for libFuzzer.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ_DIR="$ROOT/core/fuzz"
SECS=${BIPS_FUZZ_SECONDS:-30}
EXTRA=${BIPS_FUZZ_ARGS:-}
ALL_TARGETS=(validate_segment hostile_peer descriptor)
if (($#)); then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

[[ $SECS =~ ^[0-9]+$ && $SECS -gt 0 ]] || {
    echo "fuzz: BIPS_FUZZ_SECONDS must be a positive integer (got '$SECS')" >&2
    exit 2
}
for t in "${TARGETS[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || {
        echo "fuzz: unknown target '$t' (known: ${ALL_TARGETS[*]})" >&2
        exit 2
    }
done

# The nightly toolchain and cargo-fuzz come from scripts/setup.sh (idempotent, a quick no-op
# once done; it retries downloads and names what failed).
bash "$ROOT/scripts/setup.sh"
echo "fuzz: $(cargo fuzz --version), $(rustup run nightly rustc --version)"

cd "$ROOT/core"
FUZZ=(cargo +nightly fuzz)
TARGET_DIR="$ROOT/target/fuzz"

echo "+ ${FUZZ[*]} build --target-dir $TARGET_DIR ${TARGETS[*]}"
start=$(date +%s)
for t in "${TARGETS[@]}"; do
    "${FUZZ[@]}" build --target-dir "$TARGET_DIR" "$t" ||
        { echo "fuzz: FAILED: build of $t" >&2; exit 1; }
done
echo "fuzz: build took $(($(date +%s) - start)) s"

FAILED=()
SUMMARY=()
for t in "${TARGETS[@]}"; do
    corpus="$ROOT/target/fuzz-corpus/$t"
    artifacts="$ROOT/target/fuzz-artifacts/$t"
    log="$ROOT/target/fuzz-logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    before=$(find "$artifacts" -type f | wc -l)
    # -timeout: one input running longer is a hang. -rss_limit_mb: ASan's quarantine keeps
    # the process near 1 GB; more is a leak. -print_final_stats: execs and exec/s.
    # shellcheck disable=SC2206 # EXTRA is a list of flags, split on purpose
    args=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts/" $EXTRA)
    echo "+ ${FUZZ[*]} run --target-dir $TARGET_DIR $t $corpus $FUZZ_DIR/corpus/$t -- ${args[*]}"
    rc=0
    "${FUZZ[@]}" run --target-dir "$TARGET_DIR" "$t" "$corpus" "$FUZZ_DIR/corpus/$t" \
        -- "${args[@]}" >"$log" 2>&1 || rc=$?
    # The fuzzer's output is long; show its start, its coverage pulses and its end.
    grep -E '^INFO: (Seed|Loaded|[ 0-9]+files)|^#[0-9]+.*(INITED|pulse|DONE)|^stat::|^Done|ERROR|panicked|SUMMARY|artifact|Test unit written' "$log" || true
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 | sed -n 's/.*\(cov: [0-9]*\).*\(ft: [0-9]*\).*\(corp: [0-9/]*[A-Za-z]*\).*/\1 \2 \3/p')
    after=$(find "$artifacts" -type f | wc -l)
    if ((rc != 0 || after != before)); then
        FAILED+=("$t")
        SUMMARY+=("$t: FAILED (exit $rc) after ${runs:-?} runs; log: $log")
        echo "fuzz: $t FAILED (exit $rc). Artifacts (newest first):"
        # shellcheck disable=SC2012 # libFuzzer names artifacts crash-<sha1> etc.
        ls -t "$artifacts"/* 2>/dev/null | head -5 | sed 's/^/  /' || true
        # shellcheck disable=SC2012
        newest=$(ls -t "$artifacts"/* 2>/dev/null | head -1 || true)
        if [[ -n $newest ]]; then
            echo "  reproduce: (cd core && cargo +nightly fuzz run --target-dir ../target/fuzz $t $newest)"
            echo "  decode:    (cd core && cargo +nightly fuzz fmt --target-dir ../target/fuzz $t $newest)"
            echo "  keep it:   cp $newest core/fuzz/corpus/$t/  (replayed on stable by"
            echo "             cargo test --manifest-path core/fuzz/Cargo.toml)"
        fi
    else
        SUMMARY+=("$t: ok, ${SECS} s, ${runs:-?} runs, ${eps:-?} exec/s, ${cov:-no coverage line}; corpus: $(find "$corpus" -type f | wc -l) files in $corpus")
    fi
done

echo
echo "fuzz summary:"
printf '  %s\n' "${SUMMARY[@]}"
if ((${#FAILED[@]})); then
    echo "fuzz: FAILED: ${FAILED[*]}"
    exit 1
fi
echo "fuzz: OK"
