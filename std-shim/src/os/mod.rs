//! The OS layer: segments (POSIX shared memory or sealed memfds), shared
//! futexes and liveness locks.
//!
//! Linux only. Everything here is a thin, checked wrapper over a system call;
//! the protocol that gives the bytes meaning lives in `bips-core`.
//!
//! * [`name`]: channel names and their rules;
//! * [`shm`]: the POSIX shared-memory [`Segment`](shm::Segment) (create, open,
//!   map, stage, publish, unlink);
//! * [`map`]: mapping an object's fd ([`MapOptions`](map::MapOptions): prefault,
//!   `mlock`, huge pages), for every backend;
//! * [`memfd`]: sealed memfd segments (no name; sizes nobody can change);
//! * [`socket`]: the socket directory memfd channels are served from;
//! * [`dir`]: what is in `/dev/shm` (channels, staging objects);
//! * [`lock`]: OFD liveness locks; [`futex`]: shared-futex waits.

pub(crate) mod dir;
pub(crate) mod futex;
pub(crate) mod lock;
pub(crate) mod map;
pub(crate) mod memfd;
pub(crate) mod name;
pub(crate) mod shm;
pub(crate) mod socket;
