#!/usr/bin/env bash
# scripts/test-c.sh — the C ABI (bindings/c) and the C++ wrapper, tested as C/C++ users use them.
#
#   bash scripts/test-c.sh
#
# Steps: cargo test of bips-c (misuse through the extern "C" functions, header currency);
# bindings/c/install.sh (cargo-c's `cargo cinstall` + the CMake package) into a temporary
# prefix, and what it installed (SONAME, links, headers under include/bips/, bips.pc, size,
# the CMake version check); then, against that installed package,
# programs compiled by gcc/g++ through pkg-config (shared and static) and through CMake
# find_package(bips), run as separate processes exchanging a checksummed stream
# (bindings/c/tests/c/checksum.h):
#   C++ producer -> Rust consumer, C++ producer -> Python consumer (NumPy view, zero copy),
#   Rust producer -> C99 consumer, C++ producer and C consumer built by CMake,
#   C++ producer under ASan+UBSan -> C consumer under ASan+UBSan,
#   the BIPS spelling (bindings/c/tests/c/cpp_seed.cpp): seed C++ producer -> seed C++
#   consumer, -> C and Python consumers, and its argument checks,
#   examples/cpp/capture_producer -> examples/cpp/consume.py;
#   examples/containers: each compose file's producer and consumer services run in their own
#   namespaces as different uids, sharing what the file shares (check.py; needs root);
# the misuse tests in C (plain, and under -fsanitize=address,undefined) and the C++ wrapper
# tests (C++17 and C++20, under ASan+UBSan). Needs gcc, g++, pkg-config, cmake (apt) and
# .venv with the bips Python module (made here with maturin if `import bips` fails).
# Frames (bindings/c/tests/c/frames.h): a C++ producer setting descriptors -> a C consumer
# (bips_descriptor) and a C++ consumer (typed views), and the in-process checks of
# cpp_frames.cpp (C++17, and C++23 under ASan+UBSan).
# Without exceptions (bindings/c/tests/c/cpp_noexcept.cpp, -fno-exceptions -fno-rtti, the C
# API from C++): its producer -> its consumer and a C consumer, a C++ producer -> it; and
# bips.hpp refusing -fno-exceptions with a message naming that route.
#
# Channel names carry this script's pid; nothing may be left in /dev/shm. Each check's
# output goes to target/test-c/NAME.log. Ends with `N passed, M failed`; exit 1 on failure.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
OUT="$ROOT/target/test-c"
WORK=$(mktemp -d /tmp/bips-test-c.XXXXXX)
PREFIX="$WORK/prefix"
BIN="$WORK/bin"
SRC="$ROOT/bindings/c/tests/c"
EX="$ROOT/examples/cpp"
TAG="ctest-$$"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PY="$ROOT/.venv/bin/python"
rm -rf "$OUT"
mkdir -p "$OUT" "$BIN"
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
FAILS=()
T0=$(date +%s)

run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    "$@"
}

# check NAME CMD... — run CMD (output to the log), count it.
check() {
    local name=$1 log="$OUT/$1.log" t
    shift
    t=$(date +%s.%N)
    if "$@" >"$log" 2>&1; then
        PASSED=$((PASSED + 1))
        printf 'ok    %-28s %6.1fs\n' "$name" "$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')"
    else
        FAILED=$((FAILED + 1))
        FAILS+=("$name")
        printf 'FAIL  %s (log: %s)\n' "$name" "${log#"$ROOT"/}"
        sed 's/^/      | /' "$log" | tail -n 25
    fi
}

finish() {
    printf 'test-c: %ss\n' "$(($(date +%s) - T0))"
    if ((FAILED > 0)); then printf 'test-c: failed: %s\n' "${FAILS[*]}"; fi
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    ((FAILED == 0))
    exit $?
}

# fatal NAME CMD... — a check the rest depends on: stop when it fails.
fatal() {
    check "$@"
    if [[ ${FAILS[*]:-} == *"$1"* ]]; then
        echo "test-c: cannot go on without '$1'"
        finish
    fi
}

tools() {
    local t missing=()
    for t in gcc g++ pkg-config cmake; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    if ((${#missing[@]} > 0)); then
        echo "missing tools: ${missing[*]} (Debian: apt-get install -y gcc g++ pkg-config cmake)"
        return 1
    fi
}

python_ready() {
    if [[ -x $PY ]] && "$PY" -c 'import bips, numpy' 2>/dev/null; then
        echo "reusing $PY (import bips works)"
        return 0
    fi
    run bash "$ROOT/scripts/setup.sh" --python &&
        VIRTUAL_ENV="$ROOT/.venv" PATH="$ROOT/.venv/bin:$PATH" \
            run maturin develop --release --manifest-path "$ROOT/bindings/python/Cargo.toml" &&
        "$PY" -c 'import bips, numpy'
}

build_rust() {
    run cargo build --release -p bips-c --examples &&
        run cargo build --release -p bips --example producer --example consumer &&
        run bash "$ROOT/bindings/c/install.sh" --prefix "$PREFIX"
}

# What cargo cinstall + install-cmake.cmake left in the prefix.
installed() {
    local version soname lib size cflags f
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
    soname="libbips.so.$(awk -F. '{ print ($1 == 0) ? "0." $2 : $1 }' <<<"$version")"
    lib="$PREFIX/lib/libbips.so.$version"
    (cd "$PREFIX" && find . \( -type f -o -type l \) | sort)
    for f in lib/libbips.a lib/pkgconfig/bips.pc include/bips/bips.h include/bips/bips.hpp \
        lib/cmake/bips/bipsConfig.cmake lib/cmake/bips/bipsConfigVersion.cmake; do
        [[ -f $PREFIX/$f ]] || { echo "missing: $f"; return 1; }
    done
    [[ ! -e $PREFIX/include/bips.h && ! -e $PREFIX/include/bips.hpp ]] ||
        { echo "a header at the top of include/ (it would collide with other projects')"; return 1; }
    [[ $(readlink "$PREFIX/lib/$soname") == "libbips.so.$version" &&
        $(readlink "$PREFIX/lib/libbips.so") == "libbips.so.$version" ]] ||
        { echo "links: $(ls -l "$PREFIX"/lib/libbips.so*)"; return 1; }
    run readelf -d "$lib" | grep -F "Library soname: [$soname]" || { echo "SONAME is not $soname"; return 1; }
    if readelf -S "$lib" "$PREFIX/lib/libbips.a" | grep -q '\.debug_'; then
        echo "debug info left in the installed libraries"
        return 1
    fi
    size=$(stat -c %s "$lib")
    echo "libbips.so: $size bytes, libbips.a: $(stat -c %s "$PREFIX/lib/libbips.a") bytes"
    ((size < 2 * 1024 * 1024)) || { echo "libbips.so is 2 MB or more"; return 1; }
    cflags=$(pkg-config --cflags bips)
    cflags=${cflags%% }
    [[ $cflags == "-I$PREFIX/include" ]] || { echo "pkg-config --cflags: '$cflags'"; return 1; }
    [[ $(pkg-config --modversion bips) == "$version" ]] || { echo "pkg-config version"; return 1; }
    echo "installed: SONAME $soname, headers in include/bips/, bips.pc $version"
}

export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
CFLAGS_C=(-std=c99 -Wall -Wextra -Werror -pedantic -O2)
CFLAGS_CXX=(-Wall -Wextra -Werror -O2)
# shellcheck disable=SC2054 # the comma belongs to the flag
SAN=(-g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

# Shared library via pkg-config (rpath to the temporary prefix), static via the .a
# named by pkg-config's libdir plus its Libs.private.
build_pkgconfig() {
    local cflags libs static libdir
    cflags=$(pkg-config --cflags bips) && libs=$(pkg-config --libs bips) &&
        libdir=$(pkg-config --variable=libdir bips) || return 1
    static="$libdir/libbips.a $(pkg-config --libs --static bips | sed 's/-lbips//; s/-L[^ ]*//')"
    echo "pkg-config: cflags '$cflags' libs '$libs' static '$static'"
    local rp="-Wl,-rpath,$libdir"
    # shellcheck disable=SC2086
    run g++ -std=c++17 "${CFLAGS_CXX[@]}" $cflags -I"$SRC" "$SRC/cpp_producer.cpp" -o "$BIN/cpp_producer" $libs $rp &&
        run gcc "${CFLAGS_C[@]}" $cflags -I"$SRC" "$SRC/c_consumer.c" -o "$BIN/c_consumer" $libs $rp &&
        run g++ -std=c++17 "${CFLAGS_CXX[@]}" $cflags -I"$SRC" "$SRC/cpp_seed.cpp" -o "$BIN/cpp_seed" $libs $rp &&
        run gcc "${CFLAGS_C[@]}" $cflags "$SRC/misuse.c" -o "$BIN/misuse" $libs $rp -lpthread &&
        run g++ -std=c++17 "${CFLAGS_CXX[@]}" $cflags -I"$SRC" "$SRC/cpp_frames.cpp" -o "$BIN/cpp_frames" $libs $rp &&
        run gcc "${CFLAGS_C[@]}" $cflags -I"$SRC" "$SRC/c_frames.c" -o "$BIN/c_frames" $libs $rp &&
        run gcc "${CFLAGS_C[@]}" $cflags "$SRC/misuse.c" -o "$BIN/misuse_static" $static &&
        run g++ -std=c++17 "${CFLAGS_CXX[@]}" $cflags "$EX/capture_producer.cpp" -o "$BIN/capture_producer" $libs $rp &&
        run g++ -std=c++17 "${CFLAGS_CXX[@]}" -fno-exceptions -fno-rtti $cflags -I"$SRC" "$SRC/cpp_noexcept.cpp" \
            -o "$BIN/cpp_noexcept" $libs $rp &&
        run readelf -d "$BIN/cpp_producer" | grep -F 'Shared library: [libbips.so.0.1]' &&
        echo "cpp_producer needs libbips.so.0.1 (the SONAME)"
}

# bips.hpp throws; built with -fno-exceptions it stops with a message naming the C API.
hpp_refuses_no_exceptions() {
    local cflags
    cflags=$(pkg-config --cflags bips) || return 1
    printf '#include <bips/bips.hpp>\nint main() { return 0; }\n' >"$WORK/nx.cpp"
    # shellcheck disable=SC2086
    if g++ -std=c++17 -fno-exceptions $cflags -c "$WORK/nx.cpp" -o "$WORK/nx.o" 2>"$WORK/nx.err"; then
        echo "bips.hpp compiled with -fno-exceptions"
        return 1
    fi
    cat "$WORK/nx.err"
    grep -q 'with -fno-exceptions include <bips/bips.h> and use the C API' "$WORK/nx.err"
}

build_sanitized() {
    local cflags static
    cflags=$(pkg-config --cflags bips) || return 1
    static="$(pkg-config --variable=libdir bips)/libbips.a -lpthread -ldl -lm"
    # shellcheck disable=SC2086
    run g++ -std=c++17 -Wall -Wextra -Werror "${SAN[@]}" $cflags -I"$SRC" "$SRC/cpp_producer.cpp" -o "$BIN/cpp_producer_asan" $static &&
        run gcc -std=c99 -Wall -Wextra -Werror "${SAN[@]}" $cflags -I"$SRC" "$SRC/c_consumer.c" -o "$BIN/c_consumer_asan" $static &&
        run gcc -std=c99 -Wall -Wextra -Werror "${SAN[@]}" $cflags "$SRC/misuse.c" -o "$BIN/misuse_asan" $static &&
        run g++ -std=c++17 -Wall -Wextra -Werror "${SAN[@]}" $cflags "$SRC/cpp_wrapper.cpp" -o "$BIN/cpp_wrapper17_asan" $static &&
        run g++ -std=c++20 -Wall -Wextra -Werror "${SAN[@]}" $cflags "$SRC/cpp_wrapper.cpp" -o "$BIN/cpp_wrapper20_asan" $static &&
        run g++ -std=c++23 -Wall -Wextra -Werror "${SAN[@]}" $cflags -I"$SRC" "$SRC/cpp_frames.cpp" -o "$BIN/cpp_frames23_asan" $static
}

build_cmake() {
    run cmake -S "$ROOT/bindings/c/tests/cmake" -B "$WORK/cmake" -DCMAKE_PREFIX_PATH="$PREFIX" \
        -DCMAKE_BUILD_TYPE=Release &&
        run cmake --build "$WORK/cmake" -j 2 &&
        cp "$WORK/cmake/cmake_cpp_producer" "$WORK/cmake/cmake_c_consumer" "$BIN/" &&
        run readelf -d "$BIN/cmake_cpp_producer" | grep -F 'Shared library: [libbips.so.0.1]'
}

# bipsConfigVersion.cmake (write_basic_package_version_file, SameMinorVersion before 1.0):
# find_package(bips 0.2) must not take 0.1.
cmake_version_check() {
    if run cmake -S "$ROOT/bindings/c/tests/cmake" -B "$WORK/cmake-0.2" -DCMAKE_PREFIX_PATH="$PREFIX" \
        -DBIPS_WANT=0.2 >"$WORK/cmake-0.2.log" 2>&1; then
        cat "$WORK/cmake-0.2.log"
        echo "find_package(bips 0.2) accepted bips 0.1"
        return 1
    fi
    cat "$WORK/cmake-0.2.log"
    grep -q 'but it set PACKAGE_VERSION_COMPATIBLE to FALSE\|not compatible\|version: 0.1.0' "$WORK/cmake-0.2.log"
}

# pair CHANNEL FRAMES PRODUCER_CMD -- CONSUMER_CMD [-- CONSUMER_CMD ...]
# Consumers get "CHANNEL FRAMES" appended, the producer "CHANNEL FRAMES NCONSUMERS".
# Every process must exit 0 and print the same "TOTAL <crc>" line.
pair() {
    local ch=$1 frames=$2
    shift 2
    local cmds=() cur=()
    while (($# > 0)); do
        if [[ $1 == -- ]]; then cmds+=("${cur[*]}"); cur=(); else cur+=("$1"); fi
        shift
    done
    cmds+=("${cur[*]}")
    local producer=${cmds[0]} n=$((${#cmds[@]} - 1)) pids=() i rc=0
    for ((i = 1; i <= n; i++)); do
        # shellcheck disable=SC2086
        timeout 60 ${cmds[i]} "$ch" "$frames" >"$WORK/$ch.$i.out" &
        pids+=($!)
    done
    # shellcheck disable=SC2086
    timeout 60 $producer "$ch" "$frames" "$n" >"$WORK/$ch.0.out" || { echo "producer failed: $producer"; rc=1; }
    for ((i = 0; i < n; i++)); do
        wait "${pids[i]}" || { echo "consumer failed: ${cmds[i + 1]}"; rc=1; }
    done
    local want got
    want=$(grep '^TOTAL' "$WORK/$ch.0.out")
    echo "producer: $want ($producer)"
    for ((i = 1; i <= n; i++)); do
        got=$(grep '^TOTAL' "$WORK/$ch.$i.out")
        echo "consumer: $got (${cmds[i]})"
        [[ -n $want && $got == "$want" ]] || { echo "checksum mismatch"; rc=1; }
    done
    return $rc
}

capture_to_python() {
    local ch="$TAG-capture"
    "$PY" "$EX/consume.py" "$ch" --frames 30 >"$WORK/capture.py.out" 2>&1 &
    local pid=$!
    # An odd width: RGB rows of 963 bytes padded to the producer's stride.
    timeout 60 "$BIN/capture_producer" "$ch" --frames 30 --width 321 --height 240 --fps 200 \
        --wait-consumers 1 || { echo "capture_producer failed"; wait $pid; return 1; }
    wait $pid || { cat "$WORK/capture.py.out"; return 1; }
    cat "$WORK/capture.py.out"
    grep -q "frames, all checked" "$WORK/capture.py.out"
}

# examples/containers: the two compose files' services run as Docker would run them
# (namespaces, uids, the shared /dev/shm or socket volume), by examples/containers/check.py.
containers() {
    local py b="$WORK/containers-bin"
    for py in /usr/bin/python3 python3; do
        if "$py" -c 'import yaml' 2>/dev/null; then break; fi
    done
    mkdir -p "$b" &&
        cp "$TARGET_DIR/release/examples/producer" "$b/bips-producer" &&
        cp "$TARGET_DIR/release/examples/consumer" "$b/bips-consumer" &&
        run "$py" "$ROOT/examples/containers/check.py" --bin "$b"
}

shm_clean() {
    local left
    left=$(find /dev/shm -maxdepth 1 -name "bips.$TAG*" -printf '%f\n')
    if [[ -n $left ]]; then
        echo "left in /dev/shm: $left"
        rm -f /dev/shm/bips."$TAG"*
        return 1
    fi
    echo "nothing left in /dev/shm"
}

fatal tools tools
check cargo-test run cargo test --release -p bips-c
fatal build-rust build_rust
check installed installed
fatal build-pkgconfig build_pkgconfig
check hpp-refuses-no-exceptions hpp_refuses_no_exceptions
check build-sanitized build_sanitized
check build-cmake build_cmake
check cmake-version-check cmake_version_check
check python-venv python_ready

check misuse-c "$BIN/misuse" "$TAG-m1"
check misuse-c-static "$BIN/misuse_static" "$TAG-m2"
check misuse-c-asan "$BIN/misuse_asan" "$TAG-m3"
check cpp-wrapper-17-asan "$BIN/cpp_wrapper17_asan" "$TAG-w17"
check cpp-wrapper-20-asan "$BIN/cpp_wrapper20_asan" "$TAG-w20"
check cpp-frames-checks "$BIN/cpp_frames" checks "$TAG-f17"
check cpp-frames-23-asan "$BIN/cpp_frames23_asan" checks "$TAG-f23"

RUST_CONSUMER="$TARGET_DIR/release/examples/checksum_consumer"
RUST_PRODUCER="$TARGET_DIR/release/examples/checksum_producer"
check cpp-to-rust pair "$TAG-p1" 500 "$BIN/cpp_producer" -- "$RUST_CONSUMER"
check cpp-to-python pair "$TAG-p2" 500 "$BIN/cpp_producer" -- "$PY $SRC/py_consumer.py"
check rust-to-c pair "$TAG-p3" 500 "$RUST_PRODUCER" -- "$BIN/c_consumer"
check cpp-to-rust-python-c pair "$TAG-p4" 300 "$BIN/cpp_producer" -- "$RUST_CONSUMER" -- \
    "$PY $SRC/py_consumer.py" -- "$BIN/c_consumer"
# The BIPS spelling (bips::Backends::kShm, Pull/Push, names "/CHANNEL"): its argument checks,
# then seed producer -> seed consumer, and -> consumers of the plain API (C, Python).
check cpp-seed-checks "$BIN/cpp_seed" checks "$TAG-s0"
check cpp-seed-pair pair "$TAG-s1" 300 "$BIN/cpp_seed producer" -- "$BIN/cpp_seed consumer"
check cpp-seed-to-c-python pair "$TAG-s2" 300 "$BIN/cpp_seed producer" -- "$BIN/c_consumer" -- \
    "$PY $SRC/py_consumer.py"
check cmake-cpp-to-c pair "$TAG-p5" 300 "$BIN/cmake_cpp_producer" -- "$BIN/cmake_c_consumer"
check asan-cpp-to-c pair "$TAG-p6" 300 "$BIN/cpp_producer_asan" -- "$BIN/c_consumer_asan"
check cpp-frames-to-c-cpp pair "$TAG-f1" 300 "$BIN/cpp_frames producer" -- "$BIN/c_frames" -- \
    "$BIN/cpp_frames consumer"
# Without exceptions: the C API from C++ (-fno-exceptions -fno-rtti).
check noexcept-cpp-to-cpp-c pair "$TAG-n1" 300 "$BIN/cpp_noexcept producer" -- "$BIN/cpp_noexcept consumer" -- \
    "$BIN/c_consumer"
check cpp-to-noexcept-cpp pair "$TAG-n2" 300 "$BIN/cpp_producer" -- "$BIN/cpp_noexcept consumer"
check capture-example-to-python capture_to_python
check containers containers
check shm-clean shm_clean

finish
