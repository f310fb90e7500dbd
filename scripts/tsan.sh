#!/usr/bin/env bash
# scripts/tsan.sh — ThreadSanitizer run of the in-process tests.
#
#   bash scripts/tsan.sh            # bips-core tests, then the `bips` crate's lib + doc tests
#   bash scripts/tsan.sh core       # only bips-core
#   bash scripts/tsan.sh shim       # only the `bips` crate (std-shim)
#
# What runs (everything with -Zsanitizer=thread and a TSan-instrumented std, -Zbuild-std):
#   * bips-core: every integration test file (`--tests`: basic, threads, page64k,
#     proptest_layout; loom.rs is cfg(loom)-only and compiles to nothing here). threads.rs is
#     the one that matters: real threads standing in for processes, payload written and read
#     non-atomically, ordered only by the protocol's release/acquire (TSan checks exactly that).
#   * bips (std-shim): its unit tests (`--lib`: shm segments, OFD locks, shared futex, waiting)
#     and doc tests. Skipped: nothing at the moment (see SKIP_SHIM below).
# Not here: tests/ (bips-tests) spawn real processes — TSan sees one process only; the C and
# Python bindings.
#
# Fails (exit 1) on any test failure and on any "WARNING: ThreadSanitizer" report, even when
# the test itself passed (TSan makes a binary exit 66 after its tests; --no-fail-fast keeps
# the other test binaries running). The full output is kept in target/tsan/tsan-<part>.log.
#
# Needs: the nightly toolchain with the rust-src component (installed by scripts/setup.sh,
# which runs first). Uses its own target dir
# (target/tsan): an instrumented std is built once (cold run 2-5 min on 2 cores, depending on
# load), later runs reuse it (warm run ~45 s, mostly tests/threads.rs).
#
# Environment:
#   PROPTEST_CASES   cases per property in proptest_layout.rs (default here: 64). The file's
#                    own defaults (up to 1024) take 253 s instead of 16 s under TSan here and
#                    add nothing TSan can judge: the properties are single-threaded (its one
#                    threaded test, concurrent_hostile_writer_never_panics, is a plain #[test]
#                    and runs in full either way). Unset for a soak: PROPTEST_CASES=1024.
#   TSAN_OPTIONS     appended to this script's defaults.
#
# A note on fences: TSan does not model a standalone `atomic::fence` (it treats fence(SeqCst)
# as a no-op for happens-before). The protocol uses fences only to *decide* (store-load
# handshakes); every access to shared non-atomic data is ordered by a release store read by
# an acquire load. A report whose two stacks meet only across a fence would be a false
# positive of that kind; none has been seen (docs/RELIABILITY-fuzz.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PART=${1:-all}
case $PART in all | core | shim) ;; *)
    echo "usage: $0 [all|core|shim]" >&2
    exit 2
    ;;
esac

TARGET=x86_64-unknown-linux-gnu
[[ $(uname -m) == x86_64 ]] || {
    echo "tsan: only set up for x86_64 Linux (this is $(uname -m))" >&2
    exit 1
}

# The nightly toolchain and its rust-src come from scripts/setup.sh (idempotent, a quick no-op
# once done; it retries downloads and names what failed).
bash "$ROOT/scripts/setup.sh"

export CARGO_TARGET_DIR="$ROOT/target/tsan"
export RUSTFLAGS="-Zsanitizer=thread"
export RUSTDOCFLAGS="-Zsanitizer=thread"
export PROPTEST_CASES=${PROPTEST_CASES:-64}
# halt_on_error=0: collect every report of a run; the exit code and the grep below fail it.
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
mkdir -p "$CARGO_TARGET_DIR"

# Unit tests of the `bips` crate that TSan cannot model. Empty now; add `--skip NAME` pairs
# with a reason if one ever has to go.
SKIP_SHIM=()

FAILED=()

# run_part NAME CARGO-ARGS... — run one cargo test invocation under TSan, log it, judge it.
run_part() {
    local name=$1 log="$CARGO_TARGET_DIR/tsan-$1.log" rc=0 reports start
    shift
    start=$(date +%s)
    printf '+ RUSTFLAGS=%q CARGO_TARGET_DIR=%q' "$RUSTFLAGS" "$CARGO_TARGET_DIR"
    printf ' %q' cargo +nightly test -Zbuild-std --target "$TARGET" --no-fail-fast "$@"
    printf '\n'
    cargo +nightly test -Zbuild-std --target "$TARGET" --no-fail-fast "$@" 2>&1 | tee "$log" || rc=$?
    reports=$(grep -c '^WARNING: ThreadSanitizer' "$log" || true)
    echo "tsan[$name]: exit $rc, $reports ThreadSanitizer report(s), $(($(date +%s) - start)) s; log: $log"
    if ((rc != 0 || reports != 0)); then
        FAILED+=("$name")
        if ((reports != 0)); then
            grep -A3 '^WARNING: ThreadSanitizer' "$log" | head -40
        fi
    fi
}

if [[ $PART == all || $PART == core ]]; then
    run_part core -p bips-core --tests
fi
if [[ $PART == all || $PART == shim ]]; then
    run_part shim-lib -p bips --lib -- "${SKIP_SHIM[@]}"
    run_part shim-doc -p bips --doc
fi

if ((${#FAILED[@]})); then
    echo "tsan: FAILED: ${FAILED[*]}"
    exit 1
fi
echo "tsan: OK (no ThreadSanitizer report)"
