# shellcheck shell=bash
# scripts/env-aarch64.sh — source this to build and test for aarch64 Linux (Jetson) on an
# x86-64 host without Docker: Debian's cross gcc links, qemu-user runs the tests.
#
#   . scripts/env-aarch64.sh
#   cargo test --workspace --release --target aarch64-unknown-linux-gnu
#
# Needs what scripts/setup.sh installs: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross,
# qemu-user-static (and binfmt_misc registration for tests that spawn child processes).
#
# Why environment variables and not a committed .cargo/config.toml: a config file applies
# to every cargo command run anywhere in the tree, for every developer and machine. Its
# `[target.aarch64-unknown-linux-gnu]` runner would then also hijack a NATIVE build on a
# Jetson, where aarch64-unknown-linux-gnu is the host target (there `cargo test` would go
# through a qemu that is not installed), and it would impose Debian's cross-linker name on
# everyone, including `cross`, whose images bring their own linker and runner. Sourcing
# this file is opt-in and scoped to one shell, so a plain `cargo test` on x86-64 (or on a
# Jetson) stays exactly as cargo makes it. The variables only affect builds that pass
# `--target aarch64-unknown-linux-gnu`.
#
# This file is sourced: it sets no shell options and exits nothing.

# Link with Debian's cross gcc (it finds the arm64 libc from libc6-dev-arm64-cross).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# `cargo test/run --target aarch64-unknown-linux-gnu` runs each binary as
# `qemu-aarch64-static <binary> <args>`.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
# Where qemu finds the aarch64 dynamic loader and libc (/lib/ld-linux-aarch64.so.1 is looked
# up under this prefix). Also read by qemu when the kernel starts an aarch64 child process
# through binfmt_misc, so spawned children find their libc too.
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
# For crates whose build scripts compile C with the `cc` crate (harmless when none does).
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
