#!/usr/bin/env bash
# bindings/c/install.sh — build the bips C library and install it for C/C++ users.
#
#   bash bindings/c/install.sh                    # into /usr/local
#   bash bindings/c/install.sh --prefix DIR       # into DIR
#
# Needs cargo-c (`cargo install cargo-c`; scripts/setup.sh installs the pinned version)
# and cmake. Three steps, each done by the ecosystem's own tool:
#   1. `cargo cinstall --release -p bips-c` (cargo-c, configured in bindings/c/Cargo.toml):
#        DIR/lib/libbips.so.0.1.0, libbips.so.0.1 -> it (the SONAME), libbips.so -> it
#        DIR/lib/libbips.a
#        DIR/include/bips/bips.h, DIR/include/bips/bips.hpp   (#include <bips/bips.h>)
#        DIR/lib/pkgconfig/bips.pc                   (pkg-config --cflags --libs bips)
#   2. `cmake -P bindings/c/cmake/install-cmake.cmake` (CMakePackageConfigHelpers):
#        DIR/lib/cmake/bips/bipsConfig.cmake, bipsConfigVersion.cmake
#                                                    (find_package(bips), bips::bips, bips::bips_static)
#   3. strip: the static library's debug info (the standard library's objects carry theirs
#      as rustup ships them: 8.8 MB -> 3.8 MB), the shared library's debug info (a build
#      asking for line tables, as scripts/test.sh does, puts them there) and local symbols
#      (713 KB -> 579 KB).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PREFIX=/usr/local
while (($# > 0)); do
    case "$1" in
        --prefix) (($# >= 2)) || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
            PREFIX=$2; shift ;;
        --prefix=*) PREFIX=${1#--prefix=} ;;
        -h | --help) sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
cargo cinstall --version >/dev/null 2>&1 ||
    { echo "install.sh: cargo-c is missing: cargo install cargo-c (or bash scripts/setup.sh)" >&2; exit 1; }
command -v cmake >/dev/null ||
    { echo "install.sh: cmake is missing (Debian: apt-get install cmake)" >&2; exit 1; }
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
[[ -n $VERSION ]] || { echo "install.sh: no version in $ROOT/Cargo.toml" >&2; exit 1; }

# --libdir lib: the same layout on every distribution (cargo-c would otherwise pick
# lib/x86_64-linux-gnu under /usr on Debian).
# --target-dir: cargo-c builds with flags of its own (--cfg cargo_c), also for the host's
# proc macros and build scripts; in the workspace's target dir that would rebuild them on
# every switch between `cargo cinstall` and a plain `cargo build`/`cargo test`.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo cinstall --release -p bips-c --target-dir "$TARGET_DIR/cargo-c" \
    --prefix "$PREFIX" --libdir "$PREFIX/lib")
cmake -DPREFIX="$PREFIX" -DVERSION="$VERSION" -P "$HERE/cmake/install-cmake.cmake"
if command -v strip >/dev/null; then
    strip --strip-debug "$PREFIX/lib/libbips.a"
    # The shared library also loses its local symbol table (.symtab, ~130 KB); the exported
    # bips_* functions are dynamic symbols and stay.
    strip --strip-unneeded "$PREFIX/lib/libbips.so.$VERSION"
fi

echo "install.sh: bips $VERSION installed in $PREFIX"
echo "  pkg-config: PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig pkg-config --cflags --libs bips"
echo "  CMake:      -DCMAKE_PREFIX_PATH=$PREFIX, find_package(bips), target bips::bips"
echo "  C/C++:      #include <bips/bips.h> / #include <bips/bips.hpp>"
