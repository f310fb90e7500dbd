//! The error type of `bips`.
//!
//! Every variant says what went wrong *and* what the user can do about it; the
//! messages are meant to be printed as they are.

use rustix::io::Errno;

/// Everything that can go wrong in `bips`.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a
/// `_` arm for the rest.
///
/// ```
/// use std::time::Duration;
/// use bips::{Consumer, Error};
/// match Consumer::open("no-such-channel") {
///     Err(Error::NotFound { name }) => println!("start the producer of {name} first"),
///     Err(Error::PermissionDenied { .. }) => println!("run as the producer's user"),
///     Err(e) => println!("{e}"),
///     Ok(c) => match c.recv_timeout(Duration::from_millis(10)) {
///         Err(Error::Timeout) => println!("no frame yet"),
///         Err(Error::Disconnected) => println!("producer gone"),
///         _ => {}
///     },
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The channel name is not usable: a name is 1 to 200 bytes of `[A-Za-z0-9._-]`,
    /// does not start with `.` and is not `.` or `..`.
    #[error(
        "invalid channel name {name:?}: {reason} \
         (use 1 to 200 bytes of [A-Za-z0-9._-], not starting with '.')"
    )]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// An option (or a combination of options) is not acceptable; the message
    /// says which one and why.
    #[error("invalid options: {0}")]
    InvalidOptions(String),

    /// A live producer already owns the channel.
    #[error(
        "channel {name:?} already has a live producer; stop that producer first, \
         or use another channel name"
    )]
    ChannelBusy {
        /// The channel name.
        name: String,
    },

    /// The channel does not exist.
    #[error(
        "channel {name:?} does not exist (no /dev/shm/bips.{name}); start its producer \
         first, or check the name with `bips list`"
    )]
    NotFound {
        /// The channel name.
        name: String,
    },

    /// The OS refused access to the channel's shared-memory object.
    #[error(
        "permission denied for channel {name:?} (/dev/shm/bips.{name}); check the owner \
         and mode of that file (`ls -l /dev/shm`), run as a user that may read and write \
         it, or create the channel with a mode that grants access"
    )]
    PermissionDenied {
        /// The channel name.
        name: String,
    },

    /// Not enough shared memory (ENOSPC / EFBIG / ENOMEM while sizing or mapping).
    #[error(
        "not enough shared memory for channel {name:?} ({bytes} bytes): /dev/shm too small? \
         Docker's default is 64 MiB, use --shm-size (or `df -h /dev/shm`, remove stale \
         channels with `bips clean`, or use fewer/smaller buffers); or no address space \
         left to map it (the process's limit `ulimit -v`, RLIMIT_AS)"
    )]
    NoSpace {
        /// The channel name.
        name: String,
        /// How many bytes were asked for.
        bytes: u64,
    },

    /// The operation did not complete within the given timeout.
    #[error("timed out; the peer is slow or gone (retry, or use a longer timeout)")]
    Timeout,

    /// This producer's channel was closed ([`crate::Producer::close`]): no
    /// more loans or publishes.
    #[error(
        "the channel was closed by its producer (Producer::close); create a new producer \
         to publish again"
    )]
    Closed,

    /// The producer has gone (shut down or died) and no samples remain.
    #[error(
        "disconnected: the producer has gone and every remaining sample was received; \
         open the channel again once a new producer runs"
    )]
    Disconnected,

    /// The channel's consumer table is full.
    #[error(
        "the channel already has its maximum of {max} consumers; close one, or create \
         the channel with a larger max_consumers"
    )]
    TooManyConsumers {
        /// The channel's consumer capacity.
        max: u32,
    },

    /// This consumer already holds as many samples as it may: the channel's
    /// `max_held` ([`crate::Options::max_held`]).
    #[error(
        "this consumer already holds {max} samples, the channel's limit (max_held = {max}); \
         drop (release) a sample before receiving another, or have the producer create the \
         channel with a larger max_held (up to 64)"
    )]
    HeldLimit {
        /// The channel's `max_held`: how many samples a consumer may hold at once.
        max: u32,
    },

    /// The channel's shared-memory object is owned by a user this process
    /// does not trust (invariant T2): any local user can create a name in
    /// `/dev/shm` while the real producer is down. See [`crate::OwnerPolicy`].
    #[error(
        "channel {name:?}: /dev/shm/bips.{name} is owned by uid {owner_uid}, not by this \
         process's effective uid {euid}, and uid {owner_uid} is not trusted: refusing it, \
         since any local user can create that name while the real producer is down. If \
         uid {owner_uid} runs your producer, trust it: Rust \
         `ConsumerOptions::trust_owner({owner_uid})` (a producer replacing a stale \
         channel: `Options::trust_owner({owner_uid})`), Python `trust_owner={owner_uid}`, \
         C `bips_consumer_options_trust_owner(opts, {owner_uid})` / \
         `bips_options_trust_owner`; trust_any_owner / `trust_any_owner=True` / \
         `bips_*_trust_any_owner` accepts every owner (containers with unknown uids). \
         Otherwise remove the impostor (`ls -ln /dev/shm/bips.{name}`, then `rm` it as \
         root or as uid {owner_uid}) and restart the producer"
    )]
    UntrustedOwner {
        /// The channel name.
        name: String,
        /// The owner of the object (`st_uid`).
        owner_uid: u32,
        /// This process's effective uid.
        euid: u32,
    },

    /// A stale object (its producer is dead) under the channel's name cannot
    /// be removed by this user: `/dev/shm` has the sticky bit, so only the
    /// object's owner or root may remove it (`EPERM`).
    #[error(
        "channel {name:?}: the stale /dev/shm/bips.{name} left by a dead producer of uid \
         {owner_uid} cannot be removed by uid {euid}: /dev/shm has the sticky bit, so only \
         its owner (uid {owner_uid}) or root may remove it. Run `bips clean` as root or as \
         uid {owner_uid}, or use another channel name"
    )]
    StaleNotRemovable {
        /// The channel name.
        name: String,
        /// The owner of the stale object (`st_uid`).
        owner_uid: u32,
        /// This process's effective uid.
        euid: u32,
    },

    /// Any other OS error.
    #[error("{op} failed for channel {name:?}: {source}")]
    Io {
        /// The operation that failed (e.g. `"shm_open"`, `"mmap"`).
        op: &'static str,
        /// The channel name.
        name: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// The segment is not a usable bips channel: bad magic, another layout
    /// version, impossible geometry, or a size that disagrees with its header.
    #[error(
        "channel {name:?} has an unusable layout: {source} (made by another bips \
         version, or not a bips channel; remove it with `bips clean` if stale)"
    )]
    Layout {
        /// The channel name.
        name: String,
        /// What the validation found.
        #[source]
        source: bips_core::LayoutError,
    },

    /// The channel does not carry the payload type this consumer requires.
    #[error(
        "channel {name:?} carries {found}, but this consumer requires {required}; \
         open the right channel, or update the producer or the consumer"
    )]
    TypeMismatch {
        /// The channel name.
        name: String,
        /// The type the consumer requires.
        required: String,
        /// The channel's type.
        found: String,
    },

    /// A frame/tensor descriptor is unusable: one set on a loan does not fit
    /// its buffer, one read from a sample is malformed or reaches past the
    /// sample (a buggy or hostile producer), or a typed view does not match.
    #[error("sample descriptor: {0}")]
    Descriptor(#[from] bips_core::DescriptorError),

    /// A value in the shared segment is impossible: a buggy or hostile process
    /// wrote into it. No memory was touched out of bounds; samples may be lost.
    #[error(
        "shared segment corrupt: {what}; a process wrote into it outside the bips \
         protocol. Recreate the channel"
    )]
    Corrupt {
        /// What was found wrong.
        what: &'static str,
    },
}

/// A `Result` whose error is [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Maps an errno from operation `op` on channel `name` to an [`Error`].
///
/// `ENOENT` -> [`Error::NotFound`], `EACCES`/`EPERM` -> [`Error::PermissionDenied`],
/// `ENOSPC`/`EFBIG`/`ENOMEM` -> [`Error::NoSpace`] (with `bytes`, the size that
/// was being allocated or mapped), `EMFILE`/`ENFILE` -> [`Error::Io`] naming the
/// limit that was hit, anything else -> [`Error::Io`].
#[allow(dead_code)] // used by the API layer as well as by `os`
pub(crate) fn from_errno(op: &'static str, name: &str, bytes: u64, e: Errno) -> Error {
    let name = name.to_owned();
    match e {
        Errno::NOENT => Error::NotFound { name },
        Errno::ACCESS | Errno::PERM => Error::PermissionDenied { name },
        Errno::NOSPC | Errno::FBIG | Errno::NOMEM => Error::NoSpace { name, bytes },
        Errno::MFILE => Error::Io {
            op,
            name,
            source: std::io::Error::other(
                "too many open files: this process reached its limit of open file \
                 descriptors (RLIMIT_NOFILE, `ulimit -n`); raise the limit or close files",
            ),
        },
        Errno::NFILE => Error::Io {
            op,
            name,
            source: std::io::Error::other(
                "too many open files in the system: the kernel's limit (fs.file-max) \
                 is reached; raise it (sysctl fs.file-max) or close files",
            ),
        },
        e => Error::Io {
            op,
            name,
            source: e.into(),
        },
    }
}

impl Error {
    /// The same error naming channel `to` instead (for errors met while
    /// working on a channel's staging object, which users never name).
    pub(crate) fn renamed(mut self, to: &str) -> Error {
        match &mut self {
            Error::InvalidName { name, .. }
            | Error::ChannelBusy { name }
            | Error::NotFound { name }
            | Error::PermissionDenied { name }
            | Error::NoSpace { name, .. }
            | Error::Io { name, .. }
            | Error::UntrustedOwner { name, .. }
            | Error::StaleNotRemovable { name, .. }
            | Error::Layout { name, .. } => *name = to.to_owned(),
            _ => {}
        }
        self
    }
}

/// Like [`from_errno`] for a `std::io::Error` (e.g. from [`crate::os::lock`]).
///
/// Errors that carry no OS error code become [`Error::Io`].
#[allow(dead_code)] // used by the API layer
pub(crate) fn from_io(op: &'static str, name: &str, bytes: u64, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        // A real errno (1..=4095); anything else is kept as it is.
        Some(raw @ 1..=4095) => from_errno(op, name, bytes, Errno::from_raw_os_error(raw)),
        _ => Error::Io {
            op,
            name: name.to_owned(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert!(matches!(
            from_errno("shm_open", "cam", 0, Errno::NOENT),
            Error::NotFound { name } if name == "cam"
        ));
        assert!(matches!(
            from_errno("shm_open", "cam", 0, Errno::ACCESS),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            from_errno("shm_open", "cam", 0, Errno::PERM),
            Error::PermissionDenied { .. }
        ));
        for e in [Errno::NOSPC, Errno::FBIG, Errno::NOMEM] {
            assert!(matches!(
                from_errno("ftruncate", "cam", 4096, e),
                Error::NoSpace { bytes: 4096, .. }
            ));
        }
        for (e, limit) in [
            (Errno::MFILE, "RLIMIT_NOFILE"),
            (Errno::NFILE, "fs.file-max"),
        ] {
            let e = from_errno("shm_open", "cam", 0, e);
            assert!(matches!(e, Error::Io { op: "shm_open", .. }), "{e:?}");
            assert!(e.to_string().contains(limit), "{e}");
        }
        let e = from_errno("mmap", "cam", 0, Errno::INVAL);
        assert!(matches!(e, Error::Io { op: "mmap", .. }));
        assert!(e.to_string().contains("mmap failed for channel \"cam\""));
        let e = from_io(
            "fcntl",
            "cam",
            0,
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(matches!(e, Error::NotFound { .. }));
        let e = from_io("x", "cam", 0, std::io::Error::other("no code"));
        assert!(matches!(e, Error::Io { op: "x", .. }));
    }

    #[test]
    fn messages_are_actionable() {
        let e = Error::NoSpace {
            name: "cam".into(),
            bytes: 1 << 20,
        };
        let s = e.to_string();
        assert!(s.contains("/dev/shm too small?"), "{s}");
        assert!(s.contains("--shm-size"), "{s}");
        assert!(s.contains("ulimit -v"), "{s}");
        let s = Error::NotFound { name: "cam".into() }.to_string();
        assert!(s.contains("/dev/shm/bips.cam"), "{s}");
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<Error>();
    }
}
