#!/usr/bin/env bash
# scripts/test-cli.sh — smoke tests of `bips list`, `bips inspect` and `bips clean` against
# real processes: a live producer + consumer, then the same channel after kill -9.
# Run by the `cli` stage of scripts/test.sh; needs the release build of bips and the
# bips examples (it builds them). Exits non-zero on the first failed check.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --release -p bips-cli
cargo build --release -p bips --examples
B="$ROOT/target/release"
BIPS="$B/bips"
NAME="clitest-$$-$RANDOM"
SHM="/dev/shm/bips.$NAME"
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f "$SHM" "$SHM-empty" "$SHM-link" "$SHM-fifo"
    if [[ -n ${SOCKS:-} ]]; then rm -rf "$SOCKS"; fi
}
trap cleanup EXIT

fail() { echo "cli: FAILED: $*"; exit 1; }
check() { echo "cli: ok: $*"; }

# Usage errors and a missing channel have their own exit codes.
set +e
"$BIPS" inspect "no-such-channel-$$" >/dev/null 2>&1; rc=$?
set -e
((rc == 3)) || fail "inspect of a missing channel exited $rc, expected 3"
set +e
"$BIPS" inspect 'bad/name' >/dev/null 2>&1; rc=$?
set -e
((rc == 2)) || fail "inspect of an invalid name exited $rc, expected 2"
check "exit codes (3: no such channel, 2: invalid name)"

# A live producer (example, 50 frames/s for a long time) and a consumer.
"$B/examples/producer" "$NAME" 1000000 50 >/dev/null &
PIDS+=($!)
PRODUCER=$!
for _ in $(seq 100); do [[ -e $SHM ]] && break; sleep 0.05; done
[[ -e $SHM ]] || fail "the producer did not create $SHM"
"$B/examples/consumer" "$NAME" >/dev/null &
PIDS+=($!)
CONSUMER=$!
sleep 1

out=$("$BIPS" list)
echo "$out"
grep -E "^$NAME .* alive .* 1/8 .* open" <<<"$out" >/dev/null ||
    fail "list does not show $NAME open with a live producer and 1 live consumer"
"$BIPS" list --json | python3 -c "
import json, sys
chans = {c['name']: c for c in json.load(sys.stdin)}
c = chans['$NAME']
assert c['producer_alive'] is True, c
assert c['consumers_alive'] == 1, c
assert c['geometry']['buffers'] == 4 and c['policy'] == 'block', c
assert c['backend'] == 'shm', c
t = c['payload_type']
assert (t['name'], t['version']) == ('image/rgb8', 1), t
assert t['descriptor']['shape'] == [480, 640, 3] and t['descriptor']['format'] == 'RGB', t
" || fail "list --json"
grep -E "^$NAME .* shm  image/rgb8 v1" <<<"$out" >/dev/null ||
    fail "list does not show the backend and the payload type of $NAME"
check "list / list --json show the live channel, its backend and payload type"

out=$("$BIPS" inspect "$NAME")
echo "$out"
grep -q "producer   alive" <<<"$out" || fail "inspect text"
grep -qF "type       image/rgb8 v1 (uint8 [480, 640, 3] RGB)" <<<"$out" || fail "inspect does not show the type"
"$BIPS" inspect "$NAME" --json | python3 -c "
import json, sys
c = json.load(sys.stdin)
assert c['head'] >= c['tail'] > 0 or c['head'] > 0, c
assert len(c['buffer_states']) == 4, c
live = [x for x in c['consumers'] if x['alive']]
assert len(live) == 1 and live[0]['active'], c
" || fail "inspect --json"
check "inspect / inspect --json: head, tail, consumer cursor, buffer states"

# In use: clean keeps it.
out=$("$BIPS" clean "$NAME")
grep -q "kept $SHM (in use)" <<<"$out" || fail "clean did not keep a channel in use: $out"
[[ -e $SHM ]] || fail "clean removed a channel in use"
check "clean keeps a channel in use"

# kill -9 both: the channel is stale; dry run first, then clean.
kill -9 "$CONSUMER" "$PRODUCER"
wait "$CONSUMER" "$PRODUCER" 2>/dev/null || true
out=$("$BIPS" list)
echo "$out"
grep -E "^$NAME .* dead .* 0/8 .* stale" <<<"$out" >/dev/null || fail "list does not show $NAME stale"
out=$("$BIPS" clean --dry-run "$NAME")
grep -q "would remove $SHM" <<<"$out" || fail "clean --dry-run: $out"
[[ -e $SHM ]] || fail "clean --dry-run removed the segment"
out=$("$BIPS" clean "$NAME")
grep -q "removed $SHM" <<<"$out" || fail "clean: $out"
[[ ! -e $SHM ]] || fail "clean left $SHM"
check "after kill -9: list says stale, clean --dry-run keeps it, clean removes it"

# Objects that are not (complete) channels: an empty one nobody locks is removed,
# a symlink and a FIFO are kept and named (never followed, opened or removed), and
# the sweep exits 0 (before, the empty object failed every sweep with exit 1).
: >"$SHM-empty"
ln -s /dev/null "$SHM-link"
mkfifo "$SHM-fifo"
out=$("$BIPS" list)
grep -q "^$NAME-link .*a symbolic link, not a bips channel" <<<"$out" || fail "list does not name the symlink: $out"
grep -q "^$NAME-empty .*is empty (0 bytes)" <<<"$out" || fail "list does not name the empty object: $out"
set +e
out=$("$BIPS" clean "$NAME-empty" "$NAME-link" "$NAME-fifo" 2>&1); rc=$?
set -e
echo "$out"
((rc == 0)) || fail "clean of an empty object, a symlink and a FIFO exited $rc: $out"
grep -q "removed $SHM-empty (empty object" <<<"$out" || fail "clean did not remove the empty object: $out"
grep -q "kept $SHM-link (a symbolic link, not a bips channel" <<<"$out" || fail "clean symlink label: $out"
grep -q "kept $SHM-fifo (a FIFO" <<<"$out" || fail "clean FIFO label: $out"
! grep -q "being created" <<<"$out" || fail "clean calls a dead object 'being created': $out"
[[ ! -e $SHM-empty && -L $SHM-link && -p $SHM-fifo ]] || fail "clean removed the wrong objects"
rm -f "$SHM-link" "$SHM-fifo"
check "clean removes an unlocked empty object, keeps and names a symlink and a FIFO (exit 0)"
# The memfd backend: a producer run with BIPS_BACKEND=memfd (its code unchanged) serves
# its channel from the socket directory; list/inspect show it; after kill -9 the stale
# socket is listed as such and clean removes it by its path.
SOCKS="$ROOT/target/cli-sockets-$$"
rm -rf "$SOCKS"
mkdir -p "$SOCKS"
export BIPS_SOCKET_DIR="$SOCKS"
BIPS_BACKEND=memfd "$B/examples/producer" "$NAME-m" 1000000 50 >/dev/null &
PIDS+=($!)
MPRODUCER=$!
for _ in $(seq 100); do [[ -S $SOCKS/bips.$NAME-m.sock ]] && break; sleep 0.05; done
[[ -S $SOCKS/bips.$NAME-m.sock ]] || fail "the memfd producer did not serve $SOCKS/bips.$NAME-m.sock"
[[ ! -e $SHM-m ]] || fail "a memfd channel made $SHM-m"
out=$("$BIPS" list)
echo "$out"
grep -E "^$NAME-m .* alive .* open +memfd  image/rgb8 v1" <<<"$out" >/dev/null || fail "list of a memfd channel: $out"
out=$("$BIPS" inspect "$NAME-m")
grep -q "backend    memfd" <<<"$out" || fail "inspect of a memfd channel: $out"
kill -9 "$MPRODUCER"
wait "$MPRODUCER" 2>/dev/null || true
out=$("$BIPS" list)
grep -q "^$NAME-m .*stale memfd channel" <<<"$out" || fail "list of a stale memfd socket: $out"
out=$("$BIPS" clean "$NAME-m")
grep -q "removed $SOCKS/bips.$NAME-m.sock (stale memfd channel socket)" <<<"$out" || fail "clean of a memfd socket: $out"
[[ -z $(ls -A "$SOCKS") ]] || fail "clean left $(ls -A "$SOCKS")"
rm -rf "$SOCKS"
unset BIPS_SOCKET_DIR
check "memfd channel: list/inspect show the backend; a stale socket is listed and cleaned"
echo "cli: all checks passed"
