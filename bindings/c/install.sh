#!/usr/bin/env bash
# bindings/c/install.sh — build the bips C library and install it for C/C++ users.
#
#   bash bindings/c/install.sh                    # into /usr/local
#   bash bindings/c/install.sh --prefix DIR       # into DIR
#   bash bindings/c/install.sh --prefix DIR --no-build   # reuse target/release
#
# Installs:
#   DIR/lib/libbips.so.VERSION, libbips.so.0 -> it, libbips.so -> libbips.so.0
#   DIR/lib/libbips.a
#   DIR/include/bips.h, DIR/include/bips.hpp
#   DIR/lib/pkgconfig/bips.pc                      (pkg-config --cflags --libs bips)
#   DIR/lib/cmake/bips/bipsConfig.cmake, bipsConfigVersion.cmake
#                                                  (find_package(bips), target bips::bips)
#
# Why the rename: Cargo builds the crate bips-c as libbips_c.{so,a}, because the Rust
# crate `bips` it wraps already owns the library name `bips`. The files are installed as
# libbips.*, and the shared library carries the SONAME libbips.so.0 (bindings/c/build.rs),
# so programs link with -lbips and load libbips.so.0 at run time.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PREFIX=/usr/local
BUILD=1
while (($# > 0)); do
    case "$1" in
        --prefix) (($# >= 2)) || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
            PREFIX=$2; shift ;;
        --prefix=*) PREFIX=${1#--prefix=} ;;
        --no-build) BUILD=0 ;;
        -h | --help) sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
[[ -n $VERSION ]] || { echo "install.sh: no version in $ROOT/Cargo.toml" >&2; exit 1; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REL="$TARGET_DIR/release"

if ((BUILD)); then
    (cd "$ROOT" && cargo build --release -p bips-c)
fi
for f in libbips_c.so libbips_c.a; do
    [[ -f $REL/$f ]] || { echo "install.sh: $REL/$f missing (run without --no-build)" >&2; exit 1; }
done

LIB="$PREFIX/lib"
install -d "$LIB" "$PREFIX/include" "$LIB/pkgconfig" "$LIB/cmake/bips"
install -m 0755 "$REL/libbips_c.so" "$LIB/libbips.so.$VERSION"
ln -sfn "libbips.so.$VERSION" "$LIB/libbips.so.0"
ln -sfn "libbips.so.0" "$LIB/libbips.so"
install -m 0644 "$REL/libbips_c.a" "$LIB/libbips.a"
# The release profile ships without debug info, but a static library carries the standard
# library's objects as rustup ships them, with their debug info (24 MB -> 15 MB stripped).
if command -v strip >/dev/null; then strip --strip-debug "$LIB/libbips.a"; fi
install -m 0644 "$HERE/include/bips.h" "$HERE/include/bips.hpp" "$PREFIX/include/"

subst() { sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@VERSION@|$VERSION|g" "$1" >"$2"; }
subst "$HERE/cmake/bips.pc.in" "$LIB/pkgconfig/bips.pc"
subst "$HERE/cmake/bipsConfig.cmake.in" "$LIB/cmake/bips/bipsConfig.cmake"
subst "$HERE/cmake/bipsConfigVersion.cmake.in" "$LIB/cmake/bips/bipsConfigVersion.cmake"

echo "install.sh: bips $VERSION installed in $PREFIX"
echo "  pkg-config: PKG_CONFIG_PATH=$LIB/pkgconfig pkg-config --cflags --libs bips"
echo "  CMake:      -DCMAKE_PREFIX_PATH=$PREFIX, find_package(bips), target bips::bips"
