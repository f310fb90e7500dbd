#!/usr/bin/env bash
# scripts/build-wheels.sh — build the release wheels of the Python package (bips-ipc) into
# target/wheels/, for glibc >= 2.17 (manylinux2014) without containers: maturin with --zig.
#
#   bash scripts/build-wheels.sh                  # the four wheels below
#   bash scripts/build-wheels.sh --arch x86_64    # only one architecture (x86_64 or aarch64)
#
# Wheels (one source, bindings/python; pip picks the best tag the interpreter accepts):
#   bips_ipc-V-cp38-abi3-manylinux_2_17_ARCH.manylinux2014_ARCH.whl
#       CPython >= 3.8 (JetPack 5's 3.8, JetPack 6 / ROS 2 Humble's 3.10), cargo feature
#       abi3-py38: no buffer protocol (the stable ABI has none before 3.11); NumPy arrays
#       through __array__/__array_interface__, DLPack, Sample.raw (a memoryview).
#   bips_ipc-V-cp311-abi3-manylinux_2_17_ARCH.manylinux2014_ARCH.whl
#       CPython >= 3.11 (pip prefers it there): the buffer protocol too.
# for ARCH x86_64 and aarch64. Needs what `scripts/setup.sh --python` installs (.venv with
# maturin and ziglang; the aarch64-unknown-linux-gnu Rust target). Builds in
# target/wheels-build/FLAVOUR (zig's linker settings stay out of target/release). Prints each
# wheel's size and the size of the extension inside it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/target/wheels"
ARCHS=()
while (($#)); do
    case "$1" in
        --arch)
            (($# >= 2)) || { echo "build-wheels.sh: --arch needs x86_64 or aarch64" >&2; exit 2; }
            case "$2" in
                x86_64 | aarch64) ARCHS+=("$2") ;;
                *) echo "build-wheels.sh: unknown architecture '$2' (x86_64 or aarch64)" >&2; exit 2 ;;
            esac
            shift
            ;;
        -h | --help) sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build-wheels.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
((${#ARCHS[@]})) || ARCHS=(x86_64 aarch64)

run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    "$@"
}

cd "$ROOT"
if [[ ! -x $ROOT/.venv/bin/maturin ]] || ! "$ROOT/.venv/bin/python" -c 'import ziglang' 2>/dev/null; then
    run bash "$ROOT/scripts/setup.sh" --python
fi
# maturin runs zig as `python -m ziglang`: the venv's python must come first.
export PATH="$ROOT/.venv/bin:$PATH"

mkdir -p "$OUT"
for arch in "${ARCHS[@]}"; do
    rm -f "$OUT"/bips_ipc-*-cp*-abi3-*_"$arch".whl
    for flavour in cp38 cp311; do
        features=()
        [[ $flavour == cp38 ]] && features=(--features abi3-py38)
        t0=$(date +%s)
        # One target directory per flavour: the pyo3 features differ, and sharing one
        # rebuilt the extension (~40 s) every time the other flavour had been built.
        # The shipped release profile (no debug info, thin LTO), whatever the caller's
        # environment says: scripts/test.sh exports faster test settings with line tables,
        # which made 8.8 MB extensions instead of 0.9 MB.
        run env -u CARGO_PROFILE_RELEASE_LTO -u CARGO_PROFILE_RELEASE_CODEGEN_UNITS \
            -u CARGO_PROFILE_RELEASE_DEBUG \
            CARGO_TARGET_DIR="$ROOT/target/wheels-build/$flavour" maturin build --release --zig --compatibility manylinux2014 \
            --target "$arch-unknown-linux-gnu" -m "$ROOT/bindings/python/Cargo.toml" \
            --out "$OUT" "${features[@]}"
        echo "build-wheels: $flavour $arch built in $(($(date +%s) - t0)) s"
    done
done

# What was built: every wheel must be there, tagged as promised.
status=0
for arch in "${ARCHS[@]}"; do
    for flavour in cp38 cp311; do
        wheel=$(ls "$OUT"/bips_ipc-*-"$flavour"-abi3-*manylinux2014_"$arch"*.whl 2>/dev/null || true)
        if [[ -z $wheel ]]; then
            echo "build-wheels: FAILED: no $flavour-abi3 manylinux2014 $arch wheel in $OUT" >&2
            status=1
            continue
        fi
        ext=$(python -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
print(sum(i.file_size for i in z.infolist() if i.filename.endswith(".so")))' "$wheel")
        echo "build-wheels: $(basename "$wheel"): $(stat -c %s "$wheel") bytes, extension $ext bytes"
    done
done
exit "$status"
