#!/usr/bin/env bash
# bindings/gst/bench.sh — bipssink/bipssrc vs shmsink/shmsrc (gstreamer1.0-plugins-bad), in
# the same run: per transport and frame size, a sender process (videotestsrc is-live=true,
# RGBA, solid colour ! sink) and a receiver process (src ! fakesink), both
# bindings/gst/examples/gst_bench.rs. Reports CPU time per frame of each process
# (getrusage, user+system, after a 10-frame warm-up) and the end-to-end latency: the sender
# stamps CLOCK_MONOTONIC into the frame just before its sink, the receiver reads it on
# arrival. `none` is the sender alone into fakesink: the cost of making the frames.
#
#   bash bindings/gst/bench.sh                   # 1080p and 4K, 30 fps, 160 frames each
#   FPS=60 FRAMES=300 bash bindings/gst/bench.sh
#
# Writes target/gst-bench/results.md (a Markdown table) and prints it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
FPS=${FPS:-30}
FRAMES=${FRAMES:-160}
OUT="$ROOT/target/gst-bench"
mkdir -p "$OUT"
# --lib too: building the examples alone does not refresh the cdylib (libgstbips.so).
cargo build --release -p bips-gst --lib --examples
B="$ROOT/target/release/examples/gst_bench"
# Only our plugin on the path (target/release also holds the Python module), and a fresh
# registry cache.
mkdir -p "$OUT/plugins"
ln -sf "$ROOT/target/release/libgstbips.so" "$OUT/plugins/"
export GST_PLUGIN_PATH="$OUT/plugins"
export GST_REGISTRY="$OUT/registry.bin"
rm -f "$GST_REGISTRY"
gst-inspect-1.0 shmsink >/dev/null 2>&1 || {
    echo "bench: shmsink missing: apt-get install gstreamer1.0-plugins-bad" >&2
    exit 1
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

rows=()
for size in "1920 1080" "3840 2160"; do
    read -r w h <<<"$size"
    base=$("$B" send none "bench-$$" "$w" "$h" "$FPS" "$FRAMES" | grep '^RESULT')
    for t in bips shm; do
        name="bench-$$-$t-$w"
        "$B" send "$t" "$name" "$w" "$h" "$FPS" "$FRAMES" >"$OUT/send.txt" &
        pid=$!
        sleep 0.5 # shmsrc needs the socket to exist
        recv=$("$B" recv "$t" "$name" "$w" "$h" "$FPS" "$FRAMES" | grep '^RESULT')
        wait "$pid"
        send=$(grep '^RESULT' "$OUT/send.txt")
        echo "$send"
        echo "$recv"
        rows+=("| ${w}x${h} | $t | $(field frames "$recv") | $(field cpu_us_per_frame "$send") | $(field cpu_us_per_frame "$base") | $(field cpu_us_per_frame "$recv") | $(field lat_p50_us "$recv") | $(field lat_p99_us "$recv") | $(field lat_max_us "$recv") | $(field zero_copy "$send") |")
    done
done
rm -f /dev/shm/bips.bench-$$-* /tmp/bench-$$-*
# shmsink's segments (/dev/shm/"shmpipe.<pid>.<n>") outlive their process when it does not
# shut down cleanly: remove those whose process is gone.
for f in /dev/shm/shmpipe.*; do
    [[ -e $f ]] || continue
    owner=$(sed -E 's/^shmpipe\. *([0-9]+)\..*/\1/' <<<"${f##*/}")
    if [[ $owner =~ ^[0-9]+$ && ! -d /proc/$owner ]]; then rm -f "$f"; fi
done

{
    echo "RGBA, ${FPS} fps live, ${FRAMES} frames per run (the first 10 left out); CPU in us per frame (user+system of the whole process); latency in us from the sender's sink pad to the receiver's fakesink."
    echo
    echo "| frame | transport | frames recv | sender CPU | of which making frames | receiver CPU | latency p50 | p99 | max | sender zero-copy |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
} >"$OUT/results.md"
echo
cat "$OUT/results.md"
