#!/usr/bin/env bash
# scripts/test.sh — the project's whole test suite, as CI runs it (.ci/run).
#
#   bash scripts/test.sh                       # setup, then every stage
#   bash scripts/test.sh --only test,loom      # setup, then just these stages
#   bash scripts/test.sh --skip miri,aarch64   # setup, then all stages but these
#   bash scripts/test.sh --no-setup --only fmt # same as adding --skip setup
#   bash scripts/test.sh --list                # print the stages and their commands
#
# Stages, in order: setup fmt clippy test demo python doc loom miri no_std aarch64. `setup` runs
# scripts/setup.sh (a quick no-op once everything is installed) and is skipped only by
# `--skip setup` / `--no-setup`. A failing stage does not stop the run: every selected stage
# runs, a summary table follows, and the last line reads `N passed, M failed` (stages
# counted; skipped ones are not). Exit status: 0 when no stage failed, 1 otherwise, 2 on a
# usage error. Each stage's output is shown as it runs and kept in target/test-logs/NAME.log.
#
# Environment:
#   BIPS_STAGE_TIMEOUT  seconds before a stage is killed (0 = never). Default: 0 when run
#                       from a terminal, 1800 otherwise (CI), so a hung test cannot eat
#                       the whole CI budget.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/test.sh"
LOG_DIR="$ROOT/target/test-logs"
BINFMT_STATUS="$ROOT/target/setup/binfmt.status"
STAGES=(setup fmt clippy test demo python doc loom miri no_std aarch64)

cd "$ROOT"

# ------------------------------------------------------------------------- stage bodies
# Each body runs in its own `bash scripts/test.sh __stage NAME` process (under `timeout`
# when a stage timeout applies), with `set -euo pipefail`, stdin from /dev/null.

# run CMD... — echo the command, then run it.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    "$@"
}

body_setup() { run bash "$ROOT/scripts/setup.sh"; }

body_fmt() { run cargo fmt --all -- --check; }

body_clippy() { run cargo clippy --workspace --all-targets -- -D warnings; }

body_test() { run cargo test --workspace --release; }

# demo: README's main-job command, shortened; it exits non-zero on any bad frame, a
# child failure or a /dev/shm entry left behind.
body_demo() {
    run cargo run --release -p bips-cli -- demo --seconds 1
    run cargo run --release -p bips-cli -- demo --seconds 1 --policy drop-oldest --consumers 3 --rate 2000
}

# python: the bindings built into .venv (scripts/setup.sh --python makes it) and their
# pytest suite, with Rust and Python processes on both ends of a channel.
body_python() { run bash "$ROOT/scripts/test-python.sh"; }

body_doc() { run env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps; }

# loom: its own target dir, because `--cfg loom` in RUSTFLAGS changes every crate's
# fingerprint and would otherwise throw away the normal build cache each time.
body_loom() {
    run env RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
        CARGO_TARGET_DIR="$ROOT/target/loom" \
        cargo test -p bips-core --release --test loom
}

# miri: cargo-miri already builds into target/miri (its own subdirectory of the target dir),
# so it never invalidates the normal build cache; no CARGO_TARGET_DIR needed.
body_miri() {
    run env MIRIFLAGS="-Zmiri-many-seeds=0..8 -Zmiri-permissive-provenance" \
        cargo +nightly miri test -p bips-core
}

# no_std: bips-core must build for a bare-metal 64-bit target, and must REFUSE a target
# without 64-bit atomics (sequences are 64-bit by design) with a compile_error! that says so.
body_no_std() {
    if ! run cargo build -p bips-core --target aarch64-unknown-none; then
        echo "no_std: FAILED: bips-core does not build for aarch64-unknown-none"
        return 1
    fi
    local log="$LOG_DIR/no_std-thumbv7em.log" rc
    echo "no_std: the next build must FAIL with a message containing '64-bit atomics':"
    set +e
    run cargo build -p bips-core --target thumbv7em-none-eabihf 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc == 0)); then
        echo "no_std: FAILED: bips-core built for thumbv7em-none-eabihf, which has no 64-bit atomics;"
        echo "no_std:         it must refuse such targets with compile_error! mentioning '64-bit atomics'"
        return 1
    fi
    if grep -q '64-bit atomics' "$log"; then
        echo "no_std: ok: aarch64-unknown-none builds; thumbv7em-none-eabihf is refused with the expected message"
        return 0
    fi
    echo "no_std: FAILED: the thumbv7em-none-eabihf build failed, but not with a message containing"
    echo "no_std:         '64-bit atomics' (see the errors above)"
    return 1
}

# aarch64: cross-link with Debian's gcc, run the tests under qemu-aarch64-static (the cargo
# runner); children spawned by the tests start through binfmt_misc.
body_aarch64() {
    # shellcheck source=scripts/env-aarch64.sh
    . "$ROOT/scripts/env-aarch64.sh"
    local note
    note=$(binfmt_note)
    if [[ -n $note ]]; then
        echo "aarch64: WARNING: $note"
    fi
    run env CARGO_TARGET_DIR="$ROOT/target/aarch64" \
        cargo test --workspace --release --target aarch64-unknown-linux-gnu
}

# binfmt_note — empty when setup registered qemu-aarch64 with binfmt_misc, else why not.
binfmt_note() {
    if [[ ! -f $BINFMT_STATUS ]]; then
        echo "binfmt_misc status unknown (scripts/setup.sh has not run); aarch64 tests that spawn child processes may fail with exit 127"
    elif [[ $(head -n1 "$BINFMT_STATUS") != ok ]]; then
        echo "binfmt_misc: $(head -n1 "$BINFMT_STATUS") — aarch64 tests that spawn child processes fail with exit 127"
    fi
}

# Internal entry point: `test.sh __stage NAME` runs one stage body.
if [[ ${1:-} == __stage ]]; then
    declare -F "body_${2:-}" >/dev/null || {
        echo "test.sh: no stage '${2:-}'" >&2
        exit 2
    }
    "body_$2"
    exit $?
fi

# ---------------------------------------------------------------------------- arguments

usage() { sed -n '2,20s/^# \{0,1\}//p' "$SELF"; }

die_usage() {
    echo "test.sh: $*" >&2
    echo "test.sh: stages are: ${STAGES[*]} (see --help)" >&2
    exit 2
}

ONLY=()
SKIP=()
add_names() { # add_names ARRAY_NAME "a,b,c"
    local -n into=$1
    local name list
    IFS=',' read -r -a list <<<"$2"
    for name in "${list[@]}"; do
        [[ -z $name ]] && continue
        is_stage "$name" || die_usage "unknown stage '$name'"
        into+=("$name")
    done
}
is_stage() {
    local s
    for s in "${STAGES[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}
contains() { # contains NEEDLE ITEMS...
    local needle=$1 s
    shift
    for s in "$@"; do [[ $s == "$needle" ]] && return 0; done
    return 1
}

while (($# > 0)); do
    case "$1" in
        --only) (($# >= 2)) || die_usage "--only needs a stage list"; add_names ONLY "$2"; shift ;;
        --only=*) add_names ONLY "${1#--only=}" ;;
        --skip) (($# >= 2)) || die_usage "--skip needs a stage list"; add_names SKIP "$2"; shift ;;
        --skip=*) add_names SKIP "${1#--skip=}" ;;
        --no-setup) SKIP+=(setup) ;;
        --list)
            for s in "${STAGES[@]}"; do
                printf '%s:\n' "$s"
                declare -f "body_$s" |
                    sed -n -e 's/ 2>&1 | tee .*//' -e 's/; then$//' -e 's/;$//' -e 's/^.*[ !]run /    /p'
            done
            exit 0
            ;;
        -h | --help) usage; exit 0 ;;
        *) die_usage "unknown argument '$1'" ;;
    esac
    shift
done

# selected NAME — is this stage to run? setup runs unless skipped, even with --only.
selected() {
    local name=$1
    if ((${#SKIP[@]} > 0)) && contains "$name" "${SKIP[@]}"; then return 1; fi
    [[ $name == setup ]] && return 0
    if ((${#ONLY[@]} > 0)); then
        contains "$name" "${ONLY[@]}"
        return
    fi
    return 0
}

# ------------------------------------------------------------------------------ runner

if [[ -n ${BIPS_STAGE_TIMEOUT:-} ]]; then
    [[ $BIPS_STAGE_TIMEOUT =~ ^[0-9]+$ ]] || die_usage "BIPS_STAGE_TIMEOUT must be a number of seconds"
    STAGE_TIMEOUT=$BIPS_STAGE_TIMEOUT
elif [[ -t 0 && -z ${CI:-} ]]; then
    STAGE_TIMEOUT=0 # interactive: Ctrl-C must reach cargo, so no `timeout` process group
else
    STAGE_TIMEOUT=1800
fi

# Keep colours when a person watches (the tee pipe would otherwise turn them off).
BOLD="" PLAIN=""
if [[ -t 1 && -z ${CI:-} ]]; then
    BOLD=$'\033[1m' PLAIN=$'\033[0m'
    if [[ -z ${CARGO_TERM_COLOR:-} ]]; then export CARGO_TERM_COLOR=always; fi
fi

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fs", b - a }'; }

mkdir -p "$LOG_DIR"
SELECTED=()
for s in "${STAGES[@]}"; do
    if selected "$s"; then SELECTED+=("$s"); fi
done

PASSED=0
FAILED=0
ROWS=()

stage() { # stage NAME — run one stage, tee its output, record pass/fail and time
    local name=$1 log="$LOG_DIR/$1.log" t0 rc n=$((PASSED + FAILED + 1))
    if ! selected "$name"; then
        ROWS+=("$name|skip|-|")
        return 0
    fi
    printf '\n%s==> [%d/%d] %s%s\n' "$BOLD" "$n" "${#SELECTED[@]}" "$name" "$PLAIN"
    local cmd=(bash "$SELF" __stage "$name")
    if ((STAGE_TIMEOUT > 0)); then
        cmd=(timeout --kill-after=30 "$STAGE_TIMEOUT" "${cmd[@]}")
    fi
    t0=$(now)
    set +e
    "${cmd[@]}" </dev/null 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    local took
    took=$(secs "$t0" "$(now)")
    local rel=${log#"$ROOT"/}
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        ROWS+=("$name|pass|$took|$rel")
        printf '<== %s: pass (%s)\n' "$name" "$took"
    else
        FAILED=$((FAILED + 1))
        local why="exit $rc"
        if ((STAGE_TIMEOUT > 0 && (rc == 124 || rc == 137))); then
            why="timed out after ${STAGE_TIMEOUT}s"
        fi
        ROWS+=("$name|FAIL ($why)|$took|$rel")
        printf '<== %s: FAIL, %s (%s) — log: %s\n' "$name" "$why" "$took" "$rel"
    fi
}

T_START=$(now)
printf 'bips test suite: %s (logs in %s)\n' "${SELECTED[*]}" "${LOG_DIR#"$ROOT"/}"
for s in "${STAGES[@]}"; do
    stage "$s"
done

{
    printf '\n==================== bips test summary ====================\n'
    printf '%-9s %-28s %8s  %s\n' STAGE RESULT TIME LOG
    for row in "${ROWS[@]}"; do
        IFS='|' read -r name result took log <<<"$row"
        printf '%-9s %-28s %8s  %s\n' "$name" "$result" "$took" "$log"
    done
    printf 'total time: %s\n' "$(secs "$T_START" "$(now)")"
    if contains aarch64 "${SELECTED[@]}"; then
        note=$(binfmt_note)
        if [[ -n $note ]]; then printf 'note: %s\n' "$note"; fi
    fi
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
} | tee "$LOG_DIR/summary.txt"

((FAILED == 0))
