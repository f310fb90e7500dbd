#!/usr/bin/env bash
# scripts/aarch64-python.sh — build the Python extension for aarch64 (Jetson) on this x86-64
# machine and run the bindings' pytest suite with it, in an aarch64 CPython under qemu-user.
#
#   bash scripts/aarch64-python.sh              # wheel + aarch64 Python + pytest
#   bash scripts/aarch64-python.sh -k zero_copy # extra arguments go to pytest
#   bash scripts/aarch64-python.sh --pyroot-only  # only step 2's aarch64 CPython (for
#                                                 # scripts/test-wheels.sh), then exit
#
# Not a stage of scripts/test.sh (it downloads an aarch64 Python from Debian's arm64 archive
# and aarch64 wheels from PyPI on first use); docs/JETSON.md explains what it proves.
#
# Steps:
# 1. `maturin build --release --target aarch64-unknown-linux-gnu` with the cross linker of
#    scripts/env-aarch64.sh. The extension is abi3 (abi3-py311), so PyO3 needs no target
#    interpreter and no PYO3_CROSS_* variables: the wheel is bips_ipc-*-cp311-abi3-*_aarch64.whl.
# 2. An aarch64 CPython 3.11 (Debian 12's arm64 packages, unpacked with `dpkg -x` into
#    target/aarch64/pyroot; apt uses its own lists there, the system's apt state is untouched)
#    and aarch64 wheels of numpy and pytest (`pip download --platform manylinux2014_aarch64`).
# 3. The Rust example producer/consumer for aarch64 (the cross-process tests run them), then
#    pytest on bindings/python/tests in the aarch64 Python, every process under qemu
#    (QEMU_LD_PREFIX=target/aarch64/pyroot; children start through binfmt_misc).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=aarch64-unknown-linux-gnu
OUT="$ROOT/target/aarch64"
PYROOT="$OUT/pyroot"     # aarch64 Debian files: libc, CPython 3.11 and its libraries
SITE="$OUT/pysite"       # the wheel, numpy and pytest, unpacked
APT_DIR="$OUT/apt-arm64" # apt lists and downloads for arm64, private to this script
DEBS=(libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libcrypt1
    python3.11-minimal libpython3.11-minimal libpython3.11-stdlib)

run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    "$@"
}

PYROOT_ONLY=0
if [[ ${1:-} == --pyroot-only ]]; then
    PYROOT_ONLY=1
    shift
fi

cd "$ROOT"
# maturin and a host Python with pip: the venv of scripts/setup.sh --python.
[[ -x $ROOT/.venv/bin/maturin ]] || run bash "$ROOT/scripts/setup.sh" --python
# shellcheck source=scripts/env-aarch64.sh
. "$ROOT/scripts/env-aarch64.sh"
export CARGO_TARGET_DIR="$OUT"

# 1. the wheel
if ((PYROOT_ONLY)); then :; else
rm -rf "$OUT/wheels"
run "$ROOT/.venv/bin/maturin" build --release --target "$TARGET" \
    --manifest-path "$ROOT/bindings/python/Cargo.toml" --out "$OUT/wheels"
wheel=$(ls "$OUT"/wheels/bips_ipc-*_aarch64.whl)
fi

# 2. aarch64 CPython 3.11, once
if [[ ! -x $PYROOT/usr/bin/python3.11 ]]; then
    apt_o=(-o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
        -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1
        -o APT::Sandbox::User=root)
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs"
    run apt-get -q "${apt_o[@]}" update
    (cd "$APT_DIR/debs" && run apt-get -q "${apt_o[@]}" download "${DEBS[@]}")
    rm -rf "$PYROOT"
    mkdir -p "$PYROOT"
    for deb in "$APT_DIR"/debs/*.deb; do dpkg -x "$deb" "$PYROOT"; done
fi
if ((PYROOT_ONLY)); then
    echo "aarch64-python: aarch64 CPython at $PYROOT/usr/bin/python3.11"
    exit 0
fi
rm -rf "$SITE"
mkdir -p "$SITE/dl"
run "$ROOT/.venv/bin/python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311 \
    -d "$SITE/dl" numpy pytest
for w in "$SITE"/dl/*.whl "$wheel"; do "$ROOT/.venv/bin/python" -m zipfile -e "$w" "$SITE"; done
chmod -R u+rwX "$SITE"

# 3. the example binaries, then pytest in the aarch64 Python
run cargo build --release -p bips --examples --target "$TARGET"
export QEMU_LD_PREFIX="$PYROOT" PYTHONPATH="$SITE"
export BIPS_EXAMPLES_DIR="$OUT/$TARGET/release/examples"
py=("$PYROOT/usr/bin/python3.11" -P) # -P: not the source tree's bips/ (an x86-64 build)
cd "$OUT"
run "${py[@]}" -c 'import bips, numpy, platform; print("bips from", bips.__file__, "on", platform.machine(), "numpy", numpy.__version__)'
leftovers() { find /dev/shm -maxdepth 1 -name 'bips.pytest-*' -printf '%f\n' 2>/dev/null | sort; }
before=$(leftovers)
rc=0
run "${py[@]}" -m pytest -p no:cacheprovider --rootdir "$ROOT/bindings/python" \
    -c "$ROOT/bindings/python/pyproject.toml" "$ROOT/bindings/python/tests" "$@" || rc=$?
left=$(comm -13 <(printf '%s\n' "$before") <(leftovers) | grep . || true)
if [[ -n $left ]]; then
    echo "aarch64-python: FAILED: test channels left in /dev/shm: $left" >&2
    rc=1
fi
exit "$rc"
