#!/usr/bin/env bash
# scripts/test-wheels.sh — build the release wheels and test them as users install them.
#
#   bash scripts/test-wheels.sh                # build, x86_64 suites, aarch64 smoke test
#   bash scripts/test-wheels.sh -k seed        # extra arguments go to pytest
#
# Steps:
# 1. scripts/build-wheels.sh: cp38-abi3 and cp311-abi3 manylinux2014 wheels, x86_64 and
#    aarch64, in target/wheels; auditwheel must call each manylinux_2_17 (glibc 2.17), and
#    each extension must be under 2 MB.
# 2. Each x86_64 wheel into a fresh venv (python3.11 -m venv --clear in target/wheel-venv/,
#    pip install numpy pytest and the wheel; no maturin develop), then the Python suite
#    (bindings/python/tests) against it, from target/ so that the source tree's bips/ is
#    not imported. On this machine's 3.11 the cp38-abi3 wheel runs exactly the code path
#    of CPython 3.8-3.10 (no buffer protocol: bips.HAS_BUFFER_PROTOCOL is False; the tests
#    that need it are skipped there, test_no_buffer_protocol.py covers its routes).
# 3. Each aarch64 wheel, installed by pip (--platform manylinux2014_aarch64 --target) with
#    numpy, imported by an aarch64 CPython 3.11 under qemu-user (scripts/aarch64-python.sh
#    --pyroot-only makes it), which runs a producer -> consumer round trip.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS="$ROOT/target/wheels"
VENVS="$ROOT/target/wheel-venv"
MAX_EXT=$((2 * 1024 * 1024))
cd "$ROOT"

run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    "$@"
}
now() { date +%s; }
T0=$(now)

# 1. the wheels
run bash "$ROOT/scripts/build-wheels.sh"
T_BUILD=$(now)
status=0
fail() {
    echo "test-wheels: FAILED: $*" >&2
    status=1
}
wheel_of() { # wheel_of cp38|cp311 x86_64|aarch64
    ls "$WHEELS"/bips_ipc-*-"$1"-abi3-*manylinux2014_"$2"*.whl
}
for arch in x86_64 aarch64; do
    for flavour in cp38 cp311; do
        w=$(wheel_of "$flavour" "$arch")
        out=$("$ROOT/.venv/bin/auditwheel" show "$w" 2>&1) || fail "auditwheel show $w: $out"
        tag=$(tr -s ' \n' ' ' <<<"$out" | grep -o 'consistent with the following platform tag: "[^"]*"' || true)
        if [[ $tag != *"manylinux_2_17_$arch"* ]]; then
            printf '%s\n' "$out"
            fail "$(basename "$w") is not manylinux2014 (manylinux_2_17_$arch) compliant"
        fi
        ext=$(unzip -l "$w" 'bips/_bips*.so' | awk '/_bips/ { print $1 }')
        echo "test-wheels: $(basename "$w"): auditwheel ${tag#*: }, extension $ext bytes"
        ((ext < MAX_EXT)) || fail "$(basename "$w"): the extension is $ext bytes (limit $MAX_EXT)"
    done
done

# 2. x86_64: a fresh venv per wheel, the suite against it
run cargo build --release -p bips --examples # the Rust peers of the cross-process tests
leftovers() { find /dev/shm -maxdepth 1 -name 'bips.pytest-*' -printf '%f\n' 2>/dev/null | sort; }
for flavour in cp38 cp311; do
    venv="$VENVS/$flavour"
    w=$(wheel_of "$flavour" x86_64)
    run python3.11 -m venv --clear "$venv"
    run "$venv/bin/python" -m pip install -q --disable-pip-version-check numpy pytest "$w"
    want=True
    [[ $flavour == cp38 ]] && want=False
    run "$venv/bin/python" -P -c "import bips, sys
print('bips', bips.__version__, 'from', bips.__file__, 'buffer protocol:', bips.HAS_BUFFER_PROTOCOL)
sys.exit(not (bips.__file__.startswith('$venv/') and bips.HAS_BUFFER_PROTOCOL == $want))" ||
        fail "$flavour: the venv's bips is not the installed wheel, or HAS_BUFFER_PROTOCOL is not $want"
    before=$(leftovers)
    rc=0
    (cd "$ROOT/target" && run "$venv/bin/python" -m pytest -p no:cacheprovider -q \
        --rootdir "$ROOT/bindings/python" -c "$ROOT/bindings/python/pyproject.toml" \
        "$ROOT/bindings/python/tests" "$@") || rc=$?
    ((rc == 0)) || fail "$flavour x86_64 wheel: pytest exit code $rc"
    left=$(comm -13 <(printf '%s\n' "$before") <(leftovers) | grep . || true)
    [[ -z $left ]] || fail "$flavour: test channels left in /dev/shm: $left"
done
T_X86=$(now)

# 3. aarch64: pip installs each wheel for aarch64, an aarch64 CPython imports it under qemu
run bash "$ROOT/scripts/aarch64-python.sh" --pyroot-only
PYROOT="$ROOT/target/aarch64/pyroot"
SMOKE='
import platform, subprocess, sys, time
import numpy as np
import bips
print("bips", bips.__version__, "on", platform.machine(), "buffer protocol:", bips.HAS_BUFFER_PROTOCOL)
assert platform.machine() == "aarch64" and bips.HAS_BUFFER_PROTOCOL == (sys.argv[2] == "cp311")
name = sys.argv[1]
with bips.Producer(name, 2, 4096) as p:
    child = subprocess.Popen([sys.executable, "-P", "-c", """
import sys, numpy as np, bips
with bips.Consumer(sys.argv[1]) as c:
    for s in c:
        a = np.asarray(s)
        print(s.seq, a.shape, int(a.sum()), flush=True)
        del a
""", name], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while p.consumer_count == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    with p.loan(shape=(32, 32), dtype=np.uint16) as frame:
        frame[:] = 3
    buf = p.loan()
    np.asarray(buf)[:8] = 1
    buf.publish(8)
    del frame  # a sealed frame keeps the channel open until it goes
out, _ = child.communicate(timeout=120)
assert child.returncode == 0 and out.split("\n")[:2] == ["0 (32, 32) 3072", "1 (8,) 8"], out
print("aarch64 round trip (producer -> consumer process):", out.replace("\n", "; "))
'
for flavour in cp38 cp311; do
    site="$VENVS/aarch64-$flavour"
    rm -rf "$site"
    w=$(wheel_of "$flavour" aarch64)
    run "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check --target "$site" \
        --only-binary=:all: --platform manylinux2014_aarch64 --python-version 3.11 \
        --implementation cp numpy "$w"
    (cd "$ROOT/target" && run env QEMU_LD_PREFIX="$PYROOT" PYTHONPATH="$site" \
        "$PYROOT/usr/bin/python3.11" -P -c "$SMOKE" "wheel-smoke-$$-$flavour" "$flavour") ||
        fail "$flavour aarch64 wheel: the round trip under qemu failed"
done
T_END=$(now)

echo "test-wheels: times: build $((T_BUILD - T0)) s, x86_64 venvs + suites $((T_X86 - T_BUILD)) s, aarch64 $((T_END - T_X86)) s, total $((T_END - T0)) s"
if ((status)); then
    exit 1
fi
echo "test-wheels: ok"
