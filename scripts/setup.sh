#!/usr/bin/env bash
# scripts/setup.sh — install what `scripts/test.sh` needs on a fresh Debian 12 machine.
#
#   bash scripts/setup.sh            # system packages, Rust targets/components, Miri, cargo-fuzz, cargo-c, binfmt
#   bash scripts/setup.sh --python   # ... and the Python venv at .venv (for bindings/python)
#
# Idempotent: every step checks before it installs, so a second run is a quick no-op.
# Every download is tried 3 times with backoff; a download that still fails stops the
# script with a message naming what failed. binfmt_misc registration of qemu-aarch64 is
# best effort (it needs a privileged host): when it cannot be done, setup warns, records it
# in target/setup/binfmt.status for scripts/test.sh to report, and still succeeds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR="$ROOT/target/setup"
BINFMT_STATUS="$STATE_DIR/binfmt.status"

# aarch64 cross + qemu; strace (syscall tests); C/C++ tests (g++, cmake, pkg-config; libssl-dev
# to build cargo-c; python3-yaml for examples/containers/check.py);
# GStreamer for bindings/gst (dev files to build the plugin, tools and base plugins to run
# pipelines, plugins-bad for shmsink/shmsrc in its benchmark); tmux for the `bips top`
# terminal tests (cli/tests/top.rs).
APT_PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static binfmt-support strace util-linux
    g++ cmake pkg-config libssl-dev python3-yaml
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools gstreamer1.0-plugins-base
    gstreamer1.0-plugins-bad
    tmux)
RUST_TARGETS=(aarch64-unknown-linux-gnu aarch64-unknown-none thumbv7em-none-eabihf)
NIGHTLY_COMPONENTS=(miri rust-src)
# ziglang: `maturin build --zig` links the wheels against glibc 2.17 (manylinux2014,
# scripts/build-wheels.sh); auditwheel checks that they are manylinux2014-compliant.
# mcap, protobuf: reading `bips record` files from Python (the python stage).
# eclipse-zenoh: the `bridge` stage reads what `bips bridge publish` sends from Python
# (examples/zenoh/read_bridge.py; a prebuilt wheel, its 1.x protocol speaks to zenoh-rs 1.10).
PYTHON_PACKAGES=(maturin numpy pytest ziglang auditwheel mcap protobuf eclipse-zenoh)
AARCH64_SYSROOT=/usr/aarch64-linux-gnu

TRIES=3         # attempts per download
FIRST_DELAY=3   # seconds before the 2nd attempt; doubled before each further one

WANT_PYTHON=0
usage() {
    sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}
for arg in "$@"; do
    case "$arg" in
        --python) WANT_PYTHON=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------------------- helpers

log() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[setup] ERROR: %s\n' "$*" >&2
    exit 1
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# retry DESCRIPTION CMD... — run CMD up to $TRIES times with exponential backoff.
# Returns CMD's last exit code; the caller decides whether that is fatal.
retry() {
    local what=$1
    shift
    local attempt=1 delay=$FIRST_DELAY rc
    while :; do
        "$@" && return 0
        rc=$?
        if ((attempt >= TRIES)); then
            printf '[setup] ERROR: %s failed %d times (last exit code %d)\n' "$what" "$attempt" "$rc" >&2
            return "$rc"
        fi
        warn "$what failed (exit code $rc, try $attempt/$TRIES); retrying in ${delay}s"
        sleep "$delay"
        attempt=$((attempt + 1))
        delay=$((delay * 2))
    done
}

# Root is needed for apt and binfmt_misc. We normally are root; elsewhere fall back to sudo.
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
fi
as_root() {
    if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        echo "not root and no sudo available to run: $*" >&2
        return 1
    fi
    "${SUDO[@]}" "$@"
}

# ------------------------------------------------------------------------ apt packages

apt_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

apt_get() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q \
        -o Acquire::Retries=2 -o DPkg::Lock::Timeout=120 "$@"
}

setup_apt() {
    local missing=() p
    if command -v dpkg-query >/dev/null 2>&1; then
        for p in "${APT_PACKAGES[@]}"; do
            apt_installed "$p" || missing+=("$p")
        done
    else
        die "dpkg-query not found: this script installs Debian packages (${APT_PACKAGES[*]}); install their equivalents by hand"
    fi
    if ((${#missing[@]} == 0)); then
        log "apt: all present (${APT_PACKAGES[*]})"
        return 0
    fi
    log "apt: installing ${missing[*]}"
    # `apt-get update` only when something is missing (the first run on a fresh machine).
    retry "apt-get update" apt_get update ||
        die "could not download the Debian package lists (apt-get update). Check access to the Debian mirror in /etc/apt/sources.list*, then re-run scripts/setup.sh"
    retry "apt-get install ${missing[*]}" apt_get install -y --no-install-recommends "${missing[@]}" ||
        die "could not download/install the Debian packages: ${missing[*]}. Check access to the Debian mirror, then re-run scripts/setup.sh"
    for p in "${missing[@]}"; do
        apt_installed "$p" || die "apt-get reported success but package '$p' is still not installed"
    done
    STEPS_DONE+=("apt: ${missing[*]}")
}

# ------------------------------------------------------------------------ Rust (rustup)

setup_rust() {
    command -v rustup >/dev/null 2>&1 ||
        die "rustup not found on PATH: install the Rust toolchain with rustup first (https://rustup.rs), then re-run"

    # Targets go to the toolchain that `cargo` uses in this repository (stable by default;
    # a rust-toolchain.toml added later would be honoured).
    local toolchain installed missing=() t
    toolchain=$(cd "$ROOT" && rustup show active-toolchain 2>/dev/null | awk 'NR == 1 { print $1 }')
    [[ -n $toolchain ]] || toolchain=stable
    installed=$(rustup target list --installed --toolchain "$toolchain")
    for t in "${RUST_TARGETS[@]}"; do
        grep -qx "$t" <<<"$installed" || missing+=("$t")
    done
    if ((${#missing[@]} == 0)); then
        log "rust: targets present on $toolchain (${RUST_TARGETS[*]})"
    else
        log "rust: adding targets ${missing[*]} to $toolchain"
        retry "rustup target add ${missing[*]}" rustup target add --toolchain "$toolchain" "${missing[@]}" ||
            die "could not download the Rust targets ${missing[*]} (rustup target add --toolchain $toolchain). Check network access, then re-run scripts/setup.sh"
        STEPS_DONE+=("rust targets: ${missing[*]}")
    fi

    # Nightly (Miri lives only there).
    if ! rustup toolchain list | grep -q '^nightly-'; then
        log "rust: installing the nightly toolchain (minimal profile)"
        retry "rustup toolchain install nightly" rustup toolchain install nightly --profile minimal ||
            die "could not download the nightly Rust toolchain (rustup toolchain install nightly). Check network access, then re-run scripts/setup.sh"
        STEPS_DONE+=("rust: nightly toolchain")
    fi
    local comps c
    missing=()
    comps=$(rustup component list --installed --toolchain nightly)
    for c in "${NIGHTLY_COMPONENTS[@]}"; do
        # Installed components are listed as e.g. `miri-x86_64-unknown-linux-gnu`, `rust-src`.
        grep -Eq "^${c}(-|\$)" <<<"$comps" || missing+=("$c")
    done
    if ((${#missing[@]} == 0)); then
        log "rust: nightly components present (${NIGHTLY_COMPONENTS[*]})"
    else
        log "rust: adding nightly components ${missing[*]}"
        retry "rustup component add ${missing[*]}" rustup component add --toolchain nightly "${missing[@]}" ||
            die "could not download the nightly components ${missing[*]} (rustup component add --toolchain nightly). Check network access, then re-run scripts/setup.sh"
        STEPS_DONE+=("rust nightly components: ${missing[*]}")
    fi

    setup_miri_sysroot
}

# `cargo miri setup` builds Miri's sysroot once per nightly (it fetches the standard
# library's dependencies from crates.io). A stamp with the nightly and Miri versions lets
# later runs skip it without even starting cargo-miri; a new nightly re-runs it.
setup_miri_sysroot() {
    local cache stamp want
    cache=${XDG_CACHE_HOME:-$HOME/.cache}
    stamp="$cache/bips/miri-setup.stamp"
    want="$(rustc +nightly -V) / $(cargo +nightly miri --version 2>/dev/null || echo 'miri ?')"
    if [[ -f $stamp && $(cat "$stamp") == "$want" && -d $cache/miri ]]; then
        log "miri: sysroot ready ($want)"
        return 0
    fi
    log "miri: building the sysroot (cargo +nightly miri setup)"
    retry "cargo +nightly miri setup" cargo +nightly miri setup ||
        die "cargo +nightly miri setup failed (it downloads std's dependencies from crates.io). Check network access, then re-run scripts/setup.sh"
    mkdir -p "$(dirname "$stamp")"
    printf '%s' "$want" >"$stamp"
    STEPS_DONE+=("miri sysroot")
}

# ------------------------------------------------------------- cargo tools (crates.io)

# cargo-fuzz runs the fuzz targets of core/fuzz (scripts/fuzz.sh), built from crates.io.
CARGO_FUZZ_VERSION=0.13.2

# cargo-c builds and installs the C library (bindings/c/install.sh runs `cargo cinstall`:
# libbips.so with its SONAME, libbips.a, the headers, bips.pc). It embeds cargo itself as a
# library, so building it is the longest install here: 14 min of CPU (31 min of wall time on
# the shared 2-core VM under a load of 7; ~8-10 min when the machine is otherwise idle), once
# per machine: later runs find it installed. 0.10.24 is the newest release that builds with Rust 1.95 (its rust-version).
CARGO_C_VERSION=0.10.24+cargo-0.98.0

setup_cargo_tools() {
    if cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
        log "cargo-fuzz: present ($(cargo fuzz --version 2>/dev/null))"
    else
        log "cargo-fuzz: cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked (~1-2 min)"
        retry "cargo install cargo-fuzz" cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked ||
            die "could not download/build cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (cargo install cargo-fuzz). Check network access, then re-run scripts/setup.sh"
        STEPS_DONE+=("cargo-fuzz $CARGO_FUZZ_VERSION")
    fi
    if cargo cinstall --version 2>/dev/null | grep -qF "${CARGO_C_VERSION%%+*}"; then
        log "cargo-c: present ($(cargo cinstall --version 2>/dev/null | head -n1))"
    else
        log "cargo-c: cargo install cargo-c --version $CARGO_C_VERSION --locked (~10 min of CPU, once)"
        retry "cargo install cargo-c" cargo install cargo-c --version "=$CARGO_C_VERSION" --locked ||
            die "could not download/build cargo-c $CARGO_C_VERSION from crates.io (cargo install cargo-c; it needs libssl-dev and pkg-config). Check network access, then re-run scripts/setup.sh"
        STEPS_DONE+=("cargo-c $CARGO_C_VERSION")
    fi
}

# ------------------------------------------------- binfmt_misc (run aarch64 binaries directly)

BINFMT_DIR=/proc/sys/fs/binfmt_misc
BINFMT_NOTE=""

record_binfmt() { # record_binfmt ok|unavailable [REASON]
    mkdir -p "$STATE_DIR"
    if [[ $1 == ok ]]; then
        echo ok >"$BINFMT_STATUS"
    else
        printf 'unavailable: %s\n' "$2" >"$BINFMT_STATUS"
        BINFMT_NOTE=$2
        warn "binfmt: $2"
        warn "binfmt: aarch64 tests that spawn aarch64 child processes will fail (exit 127);"
        warn "binfmt: the rest of the aarch64 stage still runs through qemu-aarch64-static."
    fi
}

# A probe that does what the aarch64 tests do: it re-executes itself through
# /proc/self/exe (like `Command::new(std::env::current_exe())`) and checks the child ran.
write_probe_source() {
    cat >"$1" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0) return 42;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) { perror("readlink /proc/self/exe"); return 1; }
    self[n] = '\0';
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) { execl(self, self, "child", (char *)0); perror("execl"); _exit(127); }
    int st = 0;
    if (waitpid(pid, &st, 0) < 0) { perror("waitpid"); return 1; }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 42) {
        fprintf(stderr, "aarch64 child did not run (status %d)\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        return 1;
    }
    puts("aarch64 parent spawned aarch64 child: ok");
    return 0;
}
EOF
}

binfmt_probe_build() {
    local dir="$STATE_DIR/binfmt-probe"
    mkdir -p "$dir"
    if [[ ! -x $dir/probe-static || ! -x $dir/probe-dynamic ]]; then
        write_probe_source "$dir/probe.c"
        aarch64-linux-gnu-gcc -O1 -static -o "$dir/probe-static" "$dir/probe.c" &&
            aarch64-linux-gnu-gcc -O1 -o "$dir/probe-dynamic" "$dir/probe.c" || return 1
    fi
}

# Run the probes DIRECTLY (./prog): only binfmt_misc can make the kernel start qemu.
binfmt_probe_run() {
    local dir="$STATE_DIR/binfmt-probe" out
    out=$("$dir/probe-static" 2>&1) || {
        printf '%s\n' "$out" >&2
        return 1
    }
    # Dynamically linked, as Rust test binaries are: needs QEMU_LD_PREFIX for the loader.
    out=$(QEMU_LD_PREFIX=$AARCH64_SYSROOT "$dir/probe-dynamic" 2>&1) || {
        printf '%s\n' "$out" >&2
        return 2
    }
}

binfmt_enabled() {
    [[ -r $BINFMT_DIR/qemu-aarch64 ]] && head -n1 "$BINFMT_DIR/qemu-aarch64" | grep -qx enabled
}

setup_binfmt() {
    if ! binfmt_probe_build; then
        record_binfmt unavailable "could not compile the aarch64 probe with aarch64-linux-gnu-gcc"
        return 0
    fi
    # Whatever registered it (this script, systemd-binfmt, the host of a container), it
    # is enough that the probes run directly.
    if binfmt_probe_run 2>/dev/null; then
        log "binfmt: qemu-aarch64 registered; an aarch64 binary spawns aarch64 children (checked)"
        record_binfmt ok
        return 0
    fi

    if ! mountpoint -q "$BINFMT_DIR" 2>/dev/null; then
        log "binfmt: mounting binfmt_misc at $BINFMT_DIR"
        if ! as_root mount -t binfmt_misc binfmt_misc "$BINFMT_DIR"; then
            record_binfmt unavailable "cannot mount binfmt_misc at $BINFMT_DIR (unprivileged container?)"
            return 0
        fi
    fi
    if [[ -e $BINFMT_DIR/qemu-aarch64 ]] && ! binfmt_enabled; then
        # Registered but switched off (`echo 0 > ...`): update-binfmts would only answer
        # "already enabled in kernel", so switch the entry back on directly.
        log "binfmt: re-enabling the disabled qemu-aarch64 entry"
        echo 1 | as_root tee "$BINFMT_DIR/qemu-aarch64" >/dev/null || true
    fi
    if [[ ! -e $BINFMT_DIR/qemu-aarch64 ]]; then
        log "binfmt: update-binfmts --enable qemu-aarch64"
        local out
        if ! out=$(as_root update-binfmts --enable qemu-aarch64 2>&1); then
            if ! grep -qi 'already enabled' <<<"$out"; then
                printf '%s\n' "$out" >&2
                record_binfmt unavailable "update-binfmts --enable qemu-aarch64 failed"
                return 0
            fi
        fi
        if [[ -n $out ]]; then printf '%s\n' "$out"; fi
    fi
    if ! binfmt_enabled; then
        record_binfmt unavailable "qemu-aarch64 is not enabled in $BINFMT_DIR after update-binfmts"
        return 0
    fi
    local rc=0
    binfmt_probe_run || rc=$?
    case $rc in
        0)
            log "binfmt: qemu-aarch64 registered; an aarch64 binary spawns aarch64 children (checked)"
            record_binfmt ok
            STEPS_DONE+=("binfmt: qemu-aarch64")
            ;;
        1) record_binfmt unavailable "qemu-aarch64 is registered but a static aarch64 binary does not run directly" ;;
        *) record_binfmt unavailable "a dynamic aarch64 binary does not run directly even with QEMU_LD_PREFIX=$AARCH64_SYSROOT" ;;
    esac
}

# ------------------------------------------------------- Python venv (only with --python)

setup_python() {
    local venv="$ROOT/.venv" py=python3.11
    command -v "$py" >/dev/null 2>&1 ||
        die "$py not found: the Python bindings need CPython 3.11 (apt-get install python3.11 python3.11-venv)"
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c '' 2>/dev/null; then
        log "python: creating $venv with $py -m venv"
        "$py" -m venv --clear "$venv" || die "could not create the venv at $venv ($py -m venv; on Debian: apt-get install python3.11-venv)"
        STEPS_DONE+=("python: .venv")
    fi
    # One interpreter start (not one `pip show` each) keeps the second run fast.
    local missing=()
    read -r -a missing < <("$venv/bin/python" - "${PYTHON_PACKAGES[@]}" <<'PY'
import sys
from importlib import metadata
missing = []
for name in sys.argv[1:]:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        missing.append(name)
print(" ".join(missing))
PY
    ) || true
    if ((${#missing[@]} == 0)); then
        log "python: .venv has ${PYTHON_PACKAGES[*]}"
        return 0
    fi
    log "python: pip install ${missing[*]}"
    retry "pip install ${missing[*]}" "$venv/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}" ||
        die "could not download the Python packages ${missing[*]} from PyPI (pip install). Check network access, then re-run scripts/setup.sh --python"
    STEPS_DONE+=("python: ${missing[*]}")
}

# -------------------------------------------------------------------------------- main

main() {
    local t0
    t0=$(now)
    STEPS_DONE=()
    setup_apt
    setup_rust
    setup_cargo_tools
    setup_binfmt
    if ((WANT_PYTHON)); then
        setup_python
    fi

    local summary="nothing to install" step
    if ((${#STEPS_DONE[@]} > 0)); then
        summary="installed:"
        for step in "${STEPS_DONE[@]}"; do summary+=" [$step]"; done
    fi
    if [[ -n $BINFMT_NOTE ]]; then
        log "done in $(elapsed "$t0") ($summary) — WARNING: binfmt unavailable: $BINFMT_NOTE"
    else
        log "done in $(elapsed "$t0") ($summary)"
    fi
}

main
