#!/usr/bin/env bash
# scripts/test-python.sh — build the Python bindings into .venv and run their tests.
#
#   bash scripts/test-python.sh                 # setup, build, every Python test
#   bash scripts/test-python.sh -k zero_copy    # extra arguments go to pytest
#
# Steps: `scripts/setup.sh --python` (creates .venv with maturin, numpy and pytest;
# a quick no-op once done), `cargo build --release -p bips --examples` (the Rust
# producer/consumer the cross-process tests run) and `-p bips-cli` (the `bips`
# command, whose MCAP recordings a test reads), `maturin develop --release` of
# bindings/python into .venv, then pytest on bindings/python/tests. Exits non-zero
# when any step fails, when pytest collects no test (its exit code 5), or when a
# test channel is left behind in /dev/shm.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
cd "$ROOT"

# run CMD... — echo the command, then run it.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    "$@"
}

run bash "$ROOT/scripts/setup.sh" --python

# The venv's tools, and maturin installs into it.
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
unset PYTHONHOME

run cargo build --release -p bips --examples
# The `bips` command, for test_mcap_record.py (`bips record` read with the mcap package).
run cargo build --release -p bips-cli
# The distribution was named `bips` before it became `bips-ipc` (pyproject.toml); a venv
# made then still lists it: remove it, so that one installation provides `import bips`.
if python -m pip show bips >/dev/null 2>&1; then
    run python -m pip uninstall -y -q bips
fi
run maturin develop --release --manifest-path "$ROOT/bindings/python/Cargo.toml"

# The installed package must be the one just built (not a stale copy elsewhere).
run python -c 'import bips, sys; print("bips", bips.__version__, "from", bips.__file__); sys.exit(0)'

rc=0
run python -m pytest "$ROOT/bindings/python/tests" "$@" || rc=$?
case $rc in
    0) ;;
    5)
        echo "test-python: FAILED: pytest collected no test (exit code 5)" >&2
        exit 1
        ;;
    *)
        echo "test-python: FAILED: pytest exit code $rc" >&2
        exit "$rc"
        ;;
esac

left=$(find /dev/shm -maxdepth 1 -name 'bips.pytest-*' -printf '%f\n' 2>/dev/null || true)
if [[ -n $left ]]; then
    echo "test-python: FAILED: test channels left in /dev/shm:" >&2
    printf '  %s\n' $left >&2
    exit 1
fi
echo "test-python: ok"
