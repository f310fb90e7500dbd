//! The OS layer: POSIX shared memory, shared futexes and liveness locks.
//!
//! Linux only. Everything here is a thin, checked wrapper over a system call;
//! the protocol that gives the bytes meaning lives in `bips-core`.

pub(crate) mod futex;
pub(crate) mod lock;
pub(crate) mod shm;
