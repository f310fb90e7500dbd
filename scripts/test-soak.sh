#!/usr/bin/env bash
# scripts/test-soak.sh — a short chaos soak (`bips soak`): one producer and 4 consumer processes,
# Block then DropOldest (12 s each by default), consumers killed with SIGKILL every ~400 ms and
# the producer killed and restarted twice per policy. Asserts from the --json report: no
# corrupt sample, no loss in Block, no S4 violation, no producer stall, every killed consumer's
# entry reclaimed and every producer restart recovered, no child failure, nothing left in
# /dev/shm, exit status 0 — and that the chaos really happened (kills, restarts, measurements).
# First a self-test: faults injected on purpose (BIPS_SOAK_INJECT) must make the soak fail.
#
# Environment: BIPS_SOAK_SECONDS (default 24), BIPS_SOAK_SEED (default: random, printed).
# The report is kept in target/soak/short.json. Exits non-zero on the first failed check.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --release -p bips-cli
BIPS="$ROOT/target/release/bips"
OUT="$ROOT/target/soak"
mkdir -p "$OUT"
SECS=${BIPS_SOAK_SECONDS:-24}
SEED=${BIPS_SOAK_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
PID=""

cleanup() {
    if [[ -n $PID ]]; then
        kill -9 "$PID" 2>/dev/null || true # its children die with it (stdin EOF) or are cleaned below
        rm -f /dev/shm/bips.soak-"$PID"-*
    fi
}
trap cleanup EXIT

fail() { echo "soak: FAILED: $*"; exit 1; }

# soak JSON ARGS... — runs `bips soak ARGS... --json` into JSON; sets RC and PID.
soak() {
    local json=$1
    shift
    echo "+ bips soak $* --json > ${json#"$ROOT"/}"
    set +e
    "$BIPS" soak "$@" --json >"$json" &
    PID=$!
    wait "$PID"
    RC=$?
    set -e
    if compgen -G "/dev/shm/bips.soak-$PID-*" >/dev/null; then
        fail "the soak (pid $PID) left /dev/shm/bips.soak-$PID-* behind"
    fi
}

# 1. Self-test: the checker sees an injected corruption and an injected silent loss.
for inject in corrupt:corrupt skip:s4_violations; do
    what=${inject%%:*} field=${inject#*:}
    BIPS_SOAK_INJECT=$what soak "$OUT/selftest-$what.json" --seconds 2 --policy drop-oldest \
        --kill-every-ms 0 --producer-restarts 0 --seed "$SEED"
    ((RC == 1)) || fail "with BIPS_SOAK_INJECT=$what the soak exited $RC, expected 1"
    python3 - "$OUT/selftest-$what.json" "$field" <<'PY' || fail "self-test $what"
import json, sys
d = json.load(open(sys.argv[1]))
field = sys.argv[2]
assert d["ok"] is False, "ok is not false"
assert d["total"]["must_be_zero"][field] > 0, f"{field} is 0 although faults were injected"
print(f"soak: ok: self-test: injected faults are caught ({field} = {d['total']['must_be_zero'][field]})")
PY
done

# 2. The soak itself.
soak "$OUT/short.json" --seconds "$SECS" --policy both --consumers 4 --kill-every-ms 400 \
    --producer-restarts 2 --seed "$SEED"
python3 - "$OUT/short.json" "$RC" <<'PY' || fail "see above (report: target/soak/short.json, seed $SEED)"
import json, sys
d = json.load(open(sys.argv[1]))
rc = int(sys.argv[2])
bad = []
for p in d["policies"]:
    name = p["policy"]
    for k, v in p["must_be_zero"].items():
        if v:
            bad.append(f"{name}: {k} = {v}")
    if p["dev_shm_left"]:
        bad.append(f"{name}: /dev/shm entries left = {p['dev_shm_left']}")
    # The chaos must really have happened, and been measured.
    if p["sent"] == 0 or p["received"] == 0:
        bad.append(f"{name}: nothing sent or received")
    if p["consumer_kills"] < 3:
        bad.append(f"{name}: only {p['consumer_kills']} consumer kills")
    if p["producer_kills"] < 1:
        bad.append(f"{name}: no producer kill")
    if p["producer_recovery_ms"]["count"] < 1:
        bad.append(f"{name}: no producer restart recovery measured")
    if p["reclaim_ms"]["count"] < 1:
        bad.append(f"{name}: no reclaim measured")
    if name == "block" and p["dropped_by_policy"] != 0:
        bad.append(f"block: dropped_by_policy = {p['dropped_by_policy']} (Block never drops)")
if d["dev_shm_left"]:
    bad.append(f"/dev/shm entries left = {d['dev_shm_left']}")
if d["ok"] is not True:
    bad.append(f"ok is {d['ok']}: {d['failed']}")
if rc != 0:
    bad.append(f"exit status {rc}")
for e in d["total"]["events"]:
    print("soak: event:", e)
if bad:
    for b in bad:
        print("soak: FAILED:", b)
    sys.exit(1)
for p in d["policies"]:
    r, rec = p["reclaim_ms"], p["producer_recovery_ms"]
    print(f"soak: ok: {p['policy']}: sent {p['sent']}, received {p['received']}, dropped by policy "
          f"{p['dropped_by_policy']}, {p['consumer_kills']} consumer and {p['producer_kills']} producer "
          f"kills; reclaim {r['min']}/{r['median']}/{r['max']} ms, restart recovery "
          f"{rec['min']}/{rec['median']}/{rec['max']} ms (min/median/max)")
print("soak: ok: corrupt 0, lost in Block 0, S4 violations 0, child failures 0, /dev/shm clean")
PY
