#!/usr/bin/env bash
# scripts/test-gst.sh — the GStreamer plugin (bindings/gst: bipssink, bipssrc) tested the
# way its users use it: gst-inspect-1.0 and gst-launch-1.0 pipelines in their own processes,
# a Python consumer (bips.gst.frames) on the other end, and the Rust pipeline tests.
#
#   bash scripts/test-gst.sh
#
# Needs GStreamer 1.22+ with its dev files, tools and base/good plugins (Debian:
# libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
# gstreamer1.0-plugins-base gstreamer1.0-plugins-good) and the .venv of
# scripts/setup.sh --python. Every check runs even after a failure; the last line reads
# `N passed, M failed`; the exit status is 1 when any check failed. Channels are unique
# (gsttest-<pid>-*) and nothing may be left in /dev/shm.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
PLUGIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
TMP=$(mktemp -d)
TAG="gsttest-$$"
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f /dev/shm/bips."$TAG"-*
    rm -rf "$TMP"
}
trap cleanup EXIT

PASSED=0
FAILED=0
FAILURES=()
pass() { echo "gst: ok: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "gst: FAILED: $*"; FAILED=$((FAILED + 1)); FAILURES+=("$*"); }

# run CMD... — echo the command, then run it.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    "$@"
}

# Only our plugin on the path (target/release also holds the Python module, which
# GStreamer's scanner would try and warn about), and a private registry cache (no stale
# entry of an older build, nothing written to ~/.cache).
mkdir -p "$TMP/plugins"
ln -s "$PLUGIN_DIR/libgstbips.so" "$TMP/plugins/libgstbips.so"
export GST_PLUGIN_PATH="$TMP/plugins"
export GST_REGISTRY="$TMP/registry.bin"

# ---------------------------------------------------------------------------- build
if run cargo build --release -p bips-gst && [[ -f $PLUGIN_DIR/libgstbips.so ]]; then
    pass "built $PLUGIN_DIR/libgstbips.so"
else
    fail "cargo build --release -p bips-gst (no libgstbips.so)"
fi

# ---------------------------------------------------------------------------- inspect
if out=$(gst-inspect-1.0 bips 2>&1) && grep -q 'bipssink' <<<"$out" && grep -q 'bipssrc' <<<"$out" &&
    gst-inspect-1.0 bipssink >/dev/null 2>&1 && gst-inspect-1.0 bipssrc >/dev/null 2>&1; then
    pass "gst-inspect-1.0 lists bipssink and bipssrc"
else
    echo "$out"
    fail "gst-inspect-1.0 does not list both elements (GST_PLUGIN_PATH=$GST_PLUGIN_PATH)"
fi

# ------------------------------------------------- zero-copy path, counted by bipssink
# videotestsrc allocates from the pool bipssink proposes: every frame is published in place.
log="$TMP/zero-copy.log"
if GST_DEBUG=bips:4 GST_DEBUG_NO_COLOR=1 timeout 60 gst-launch-1.0 -q videotestsrc num-buffers=30 \
    ! video/x-raw,format=RGBA,width=1920,height=1080 ! bipssink channel="$TAG-zc" sync=false \
    >"$log" 2>&1 && grep -q 'stopping: 30 zero-copy, 0 copied buffers' "$log"; then
    pass "videotestsrc ! bipssink: 30 of 30 buffers published without copy"
else
    tail -20 "$log"
    fail "videotestsrc ! bipssink did not report 30 zero-copy buffers"
fi

# ------------------------------------ bipssink process -> gst-launch bipssrc ! videoconvert
# Caps come from the channel (none written by hand); EOS when the producer leaves.
ch="$TAG-src"
timeout 60 gst-launch-1.0 -q videotestsrc num-buffers=40 \
    ! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 \
    ! bipssink channel="$ch" wait-for-consumers=1 sync=false >"$TMP/producer.log" 2>&1 &
PIDS+=($!)
producer=$!
out="$TMP/bipssrc.log"
timeout 60 gst-launch-1.0 -v bipssrc channel="$ch" timeout=20000000000 ! videoconvert \
    ! video/x-raw,format=GRAY8 ! fakesink silent=false >"$out" 2>&1
rc=$?
wait "$producer"
prc=$?
frames=$(grep -c 'fakesink0.*chain' "$out" || true)
if ((rc == 0 && prc == 0)) && grep -q 'Got EOS from element' "$out" &&
    grep -Eq 'GstBipsSrc:bipssrc0\.GstPad:src: caps = video/x-raw, format=\(string\)RGB, width=\(int\)640, height=\(int\)480' "$out" &&
    grep -Eq 'GstFakeSink:fakesink0\.GstPad:sink: caps = .*format=\(string\)GRAY8' "$out" &&
    ((frames == 40)); then
    pass "bipssrc ! videoconvert ! fakesink: RGB 640x480 caps from the channel, 40 frames, EOS when the producer left"
else
    grep -E 'caps =|EOS|ERROR|WARN' "$out" | head -20
    cat "$TMP/producer.log"
    fail "bipssrc pipeline (exit $rc, producer exit $prc, $frames frames of 40)"
fi

# ------------------------------ videotestsrc ! queue ! bipssink (block) -> bipssrc, at speed
# A queue puts pool acquires and renders on two threads: a loan waiting with the channel's
# mutex held starved render() (about 1 s per frame). 300 frames must pass well within 30 s.
ch="$TAG-queue"
timeout 60 gst-launch-1.0 -q videotestsrc num-buffers=300 \
    ! video/x-raw,format=RGBA,width=320,height=240,framerate=1000/1 \
    ! queue ! bipssink channel="$ch" buffers=4 backpressure=block wait-for-consumers=1 sync=false \
    >"$TMP/queue-producer.log" 2>&1 &
PIDS+=($!)
producer=$!
out="$TMP/queue-consumer.log"
start=$SECONDS
timeout 60 gst-launch-1.0 -v bipssrc channel="$ch" timeout=20000000000 \
    ! fakesink silent=false sync=false >"$out" 2>&1
rc=$?
wait "$producer"
prc=$?
took=$((SECONDS - start))
frames=$(grep -c 'fakesink0.*chain' "$out" || true)
if ((rc == 0 && prc == 0 && frames == 300 && took < 30)); then
    pass "videotestsrc ! queue ! bipssink -> bipssrc: 300 frames in ${took}s"
else
    grep -E 'ERROR|WARN' "$out" | head -10
    cat "$TMP/queue-producer.log"
    fail "queue ! bipssink pipeline (exit $rc, producer exit $prc, $frames frames of 300 in ${took}s)"
fi

# ---------------------------------------------------------------- Rust pipeline tests
if run cargo test --release -p bips-gst; then
    pass "cargo test -p bips-gst (zero-copy/copy counts, caps, timestamps, frame descriptors per format, strides, EOS, timeout, queue/mutex, hostile descriptors, bounded pool)"
else
    fail "cargo test -p bips-gst"
fi

# ------------------------------------------ Python: gst-launch ... ! bipssink -> bips.gst
if run bash "$ROOT/scripts/setup.sh" --python >"$TMP/setup.log" 2>&1 &&
    (
        export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
        unset PYTHONHOME
        run maturin develop --release --manifest-path "$ROOT/bindings/python/Cargo.toml"
    ); then
    if BIPS_GST_REQUIRE=1 BIPS_GST_PLUGIN_DIR="$TMP/plugins" \
        run "$VENV/bin/python" -m pytest "$ROOT/bindings/python/tests/test_gst.py" -q; then
        pass "pytest test_gst.py (1080p RGBA from videotestsrc, strides, GRAY8, lifetimes, metadata parser, plain NumPy from the frame descriptor: RGBA/GRAY16_LE/padded RGB/NV12)"
    else
        fail "pytest bindings/python/tests/test_gst.py"
    fi
else
    tail -20 "$TMP/setup.log"
    fail "could not prepare the Python venv (scripts/setup.sh --python, maturin develop)"
fi

# ------------------------------------------------------------------------ /dev/shm
left=$(find /dev/shm -maxdepth 1 \( -name "bips.$TAG-*" -o -name 'bips.gst-test-*' \
    -o -name 'bips.pytest-*-test_rgba_1080p*' -o -name 'bips.pytest-*-test_padded_rgb*' \
    -o -name 'bips.pytest-*-test_gray8*' -o -name 'bips.pytest-*-test_kept_frames*' \
    -o -name 'bips.pytest-*-test_timeout_when_no_channel*' -o -name 'bips.pytest-*-test_numpy_*' \
    -o -name 'bips.pytest-*-test_frames_gives*' \) -printf '%f\n' 2>/dev/null)
if [[ -z $left ]]; then
    pass "nothing left in /dev/shm"
else
    fail "left in /dev/shm: $left"
fi

echo
if ((FAILED > 0)); then
    printf 'gst: failed: %s\n' "${FAILURES[@]}"
fi
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
