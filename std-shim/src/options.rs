//! Channel options: geometry, policy, waiting and mapping.

use std::path::PathBuf;
use std::time::Duration;

use bips_core::descriptor::PayloadType;
use bips_core::Geometry;

use crate::error::{Error, Result};
use crate::os::shm::{page_size, MapOptions};
use crate::trust::OwnerPolicy;

/// What the producer does when every buffer is still needed by a consumer.
///
/// * `Block` — lossless: the slowest live consumer paces the producer.
/// * `DropOldest` — latest wins: the producer never waits (unless every
///   buffer is held at once); slow consumers skip ahead and each sample
///   reports how many were lost before it ([`crate::Sample::lagged`]).
///
/// Either way a buffer a consumer holds is never rewritten.
pub use bips_core::Policy as Backpressure;

/// How a blocked call (`recv`, `loan`) waits.
///
/// ```
/// use bips::{Options, WaitStrategy};
/// // A control loop that must never enter the kernel while waiting:
/// let opts = Options::new(4, 1024).wait(WaitStrategy::Spin);
/// # let _ = opts;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Busy-poll; never sleeps (lowest latency, one core burnt while waiting).
    /// Timeouts and peer liveness are still checked.
    Spin,
    /// Busy-poll for `spin` first, then sleep on the shared futex.
    SpinThenPark {
        /// How long to poll before sleeping.
        spin: Duration,
    },
    /// Sleep on the shared futex at once (lowest CPU use).
    Park,
}

impl Default for WaitStrategy {
    /// `SpinThenPark` for 20 µs: a publish that follows within ~one wake-up
    /// time is caught without a system call.
    fn default() -> Self {
        WaitStrategy::SpinThenPark {
            spin: Duration::from_micros(20),
        }
    }
}

/// Where a channel's segment lives. Consumers find a channel whatever its
/// backend ([`crate::Consumer::open`] looks in `/dev/shm`, then in the
/// socket directory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// A POSIX shared-memory object, `/dev/shm/bips.<name>` (the default).
    #[default]
    Shm,
    /// A sealed memfd (its size fixed for good: no peer can truncate it),
    /// served to consumers over a Unix socket in the socket directory
    /// (`$BIPS_SOCKET_DIR`, else `$XDG_RUNTIME_DIR/bips`, else `/run/bips`):
    /// peers share that directory, not `/dev/shm`. Names up to 80 bytes.
    Memfd,
}

/// Environment variable that sets the default [`Backend`] of
/// [`Options::new`]: `shm` or `memfd` (run an application on sealed memfd
/// channels without changing its code). [`Options::backend`] overrides it.
pub const BACKEND_ENV: &str = "BIPS_BACKEND";

impl Backend {
    /// `$BIPS_BACKEND` (`shm` or `memfd`), else [`Backend::Shm`]. Another
    /// value is refused when the channel is created.
    fn from_env() -> Backend {
        match std::env::var(BACKEND_ENV).as_deref() {
            Ok("memfd") => Backend::Memfd,
            _ => Backend::Shm,
        }
    }

    /// Checks `$BIPS_BACKEND`: unset, `shm` or `memfd`.
    pub(crate) fn check_env() -> Result<()> {
        match std::env::var(BACKEND_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(()),
            Ok(v) if v == "shm" || v == "memfd" => Ok(()),
            Ok(v) => Err(Error::InvalidOptions(format!(
                "{BACKEND_ENV}={v:?}: the backend is \"shm\" or \"memfd\""
            ))),
            Err(_) => Err(Error::InvalidOptions(format!(
                "{BACKEND_ENV} is not valid UTF-8: the backend is \"shm\" or \"memfd\""
            ))),
        }
    }
}

/// Options for creating a channel: [`Options::new`] then builder methods.
///
/// ```
/// use bips::{Backpressure, Options};
/// let opts = Options::new(8, 1920 * 1080 * 3)
///     .backpressure(Backpressure::DropOldest)
///     .max_consumers(4)
///     .meta_size(64);
/// assert_eq!(opts.buffers(), 8);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) buffers: u32,
    pub(crate) buffer_size: u64,
    pub(crate) backpressure: Backpressure,
    pub(crate) max_consumers: u32,
    pub(crate) ring_capacity: Option<u32>,
    pub(crate) meta_size: u32,
    pub(crate) max_held: u32,
    pub(crate) alignment: Option<u32>,
    pub(crate) wait: WaitStrategy,
    pub(crate) mode: u32,
    pub(crate) map: MapOptions,
    pub(crate) owner: OwnerPolicy,
    pub(crate) payload: Option<PayloadType>,
    pub(crate) backend: Backend,
    pub(crate) socket_dir: Option<PathBuf>,
}

impl Options {
    /// A pool of `buffers` buffers of `buffer_size` bytes each; `Block`, 8
    /// consumers at most, 64 B of metadata per sample, page-aligned buffers,
    /// mode `0o600`, the default [`WaitStrategy`].
    pub fn new(buffers: u32, buffer_size: usize) -> Options {
        Options {
            buffers,
            buffer_size: buffer_size as u64,
            backpressure: Backpressure::Block,
            max_consumers: 8,
            ring_capacity: None,
            meta_size: 64,
            max_held: crate::MAX_HELD as u32,
            alignment: None,
            wait: WaitStrategy::default(),
            mode: 0o600,
            map: MapOptions::default(),
            owner: OwnerPolicy::default(),
            payload: None,
            backend: Backend::from_env(),
            socket_dir: None,
        }
    }

    /// Where the segment lives (default [`Backend::Shm`], or what
    /// [`BACKEND_ENV`] says).
    ///
    /// ```
    /// use bips::{Backend, Options};
    /// let opts = Options::new(4, 1 << 20).backend(Backend::Memfd);
    /// # let _ = opts;
    /// ```
    pub fn backend(mut self, backend: Backend) -> Options {
        self.backend = backend;
        self
    }

    /// The socket directory of a [`Backend::Memfd`] channel (default: see
    /// [`Backend::Memfd`]); its consumers must look in the same one.
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Options {
        self.socket_dir = Some(dir.into());
        self
    }

    /// Declares what the channel carries: a type name and version, and
    /// optionally one descriptor every sample has. Consumers see it
    /// ([`crate::Consumer::payload_type`], `bips list`) and may require it
    /// ([`ConsumerOptions::require_type`]). A fixed descriptor must fit a
    /// buffer.
    ///
    /// ```
    /// use bips::{DType, Descriptor, Options, PayloadType};
    /// let frame = Descriptor::image(480, 640, 3, DType::U8)?.with_format("BGR")?;
    /// let opts = Options::new(4, 480 * 640 * 3)
    ///     .payload_type(PayloadType::new("image/bgr8", 1)?.with_descriptor(frame));
    /// # let _ = opts;
    /// # Ok::<(), bips::DescriptorError>(())
    /// ```
    pub fn payload_type(mut self, t: PayloadType) -> Options {
        self.payload = Some(t);
        self
    }

    /// Sets the backpressure policy.
    pub fn backpressure(mut self, policy: Backpressure) -> Options {
        self.backpressure = policy;
        self
    }

    /// Sets the consumer table capacity (1..=1024).
    pub fn max_consumers(mut self, n: u32) -> Options {
        self.max_consumers = n;
        self
    }

    /// Sets the descriptor ring capacity: a power of two, at least `buffers`
    /// (default: the next power of two of `buffers`).
    pub fn ring_capacity(mut self, n: u32) -> Options {
        self.ring_capacity = Some(n);
        self
    }

    /// Sets the per-sample user metadata size in bytes (0..=4096).
    pub fn meta_size(mut self, bytes: u32) -> Options {
        self.meta_size = bytes;
        self
    }

    /// Sets how many samples one consumer may hold at once (1..=64, default
    /// [`crate::MAX_HELD`] = 8): a consumer that batches frames (inference
    /// over 16-64 frames) keeps them all in place. Beyond it, a receive fails
    /// with [`Error::HeldLimit`]. Up to 8 the holds share the consumer's
    /// entry line; beyond, each consumer gets a run of its own and the
    /// producer's scans read `n` words per consumer (BENCHMARKS.md measures
    /// the cost). Size the pool to match: held samples keep their buffers.
    ///
    /// ```
    /// use bips::{Consumer, Options, Producer};
    /// # let name = format!("doc-max-held-{}", std::process::id());
    /// let producer = Producer::create(&name, &Options::new(72, 64).max_held(64))?;
    /// let consumer = Consumer::open(&name)?;
    /// assert_eq!(consumer.max_held(), 64);
    /// # drop(consumer);
    /// # drop(producer);
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn max_held(mut self, n: u32) -> Options {
        self.max_held = n;
        self
    }

    /// Sets the buffer alignment: a power of two from 64 up to the page size
    /// (default: the page size, read at run time, so a buffer can be handed
    /// to DMA or `cudaHostRegister`).
    pub fn alignment(mut self, bytes: u32) -> Options {
        self.alignment = Some(bytes);
        self
    }

    /// Sets how the producer's blocking `loan` waits.
    pub fn wait(mut self, strategy: WaitStrategy) -> Options {
        self.wait = strategy;
        self
    }

    /// Sets the permission bits of `/dev/shm/bips.<name>` (default `0o600`;
    /// consumers need read and write access, so `0o660` shares with a group;
    /// consumers running as another user also trust this producer's uid with
    /// [`ConsumerOptions::trust_owner`]).
    pub fn mode(mut self, mode: u32) -> Options {
        self.mode = mode;
        self
    }

    /// Faults every page in at creation (`MAP_POPULATE`).
    pub fn prefault(mut self, on: bool) -> Options {
        self.map.prefault = on;
        self
    }

    /// Locks the segment in RAM (`mlock`); needs `RLIMIT_MEMLOCK` or `CAP_IPC_LOCK`.
    pub fn mlock(mut self, on: bool) -> Options {
        self.map.mlock = on;
        self
    }

    /// Asks for transparent huge pages (see the `bips` crate docs on `/dev/shm`'s
    /// `huge=` mount option).
    pub fn huge_pages(mut self, on: bool) -> Options {
        self.map.huge_pages = on;
        self
    }

    /// Also trusts objects owned by `uid` when a stale object (its producer
    /// dead) is found under the channel's name and must be replaced. By
    /// default only an object of this process's effective uid is replaced;
    /// another owner's gives [`Error::UntrustedOwner`]. Calls add up. See
    /// [`OwnerPolicy`].
    pub fn trust_owner(mut self, uid: u32) -> Options {
        self.owner = self.owner.with_uid(uid);
        self
    }

    /// Replaces a stale object whoever owns it ([`OwnerPolicy::Any`]).
    ///
    /// Only its owner or root can remove another user's object from `/dev/shm`
    /// (sticky bit): others get [`Error::StaleNotRemovable`] at once.
    pub fn trust_any_owner(mut self) -> Options {
        self.owner = OwnerPolicy::Any;
        self
    }

    /// Sets which owners of a stale object under the name are trusted.
    pub fn trust(mut self, policy: OwnerPolicy) -> Options {
        self.owner = policy;
        self
    }

    /// Which owners of a stale object under the name are trusted.
    pub fn owner_policy(&self) -> &OwnerPolicy {
        &self.owner
    }

    /// Buffers in the pool.
    pub fn buffers(&self) -> u32 {
        self.buffers
    }

    /// Bytes per buffer.
    pub fn buffer_size(&self) -> usize {
        self.buffer_size as usize
    }

    /// The geometry these options describe, checked.
    pub(crate) fn geometry(&self) -> Result<Geometry> {
        let page = page_size();
        let alignment = self.alignment.unwrap_or(page as u32);
        if alignment as usize > page {
            return Err(Error::InvalidOptions(format!(
                "alignment {alignment} exceeds the page size {page}: a mapping is only page-aligned"
            )));
        }
        let ring = match self.ring_capacity {
            Some(r) => r,
            None => self.buffers.checked_next_power_of_two().ok_or_else(|| {
                Error::InvalidOptions(format!("{} buffers is too many", self.buffers))
            })?,
        };
        let g = Geometry {
            buffer_count: self.buffers,
            buffer_size: self.buffer_size,
            alignment,
            ring_capacity: ring,
            max_consumers: self.max_consumers,
            meta_size: self.meta_size,
            policy: self.backpressure,
            max_held: self.max_held,
        };
        bips_core::Layout::new(g).map_err(|e| Error::InvalidOptions(e.to_string()))?;
        Ok(g)
    }
}

/// Options for opening a channel as a consumer.
///
/// ```
/// use bips::{ConsumerOptions, Start, WaitStrategy};
/// let opts = ConsumerOptions::new().start(Start::Oldest).wait(WaitStrategy::Park);
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConsumerOptions {
    pub(crate) start: bips_core::Start,
    pub(crate) wait: WaitStrategy,
    pub(crate) map: MapOptions,
    pub(crate) owner: OwnerPolicy,
    pub(crate) require: Option<PayloadType>,
    pub(crate) socket_dir: Option<PathBuf>,
}

impl ConsumerOptions {
    /// Start at the newest sample, default waiting, no mapping options.
    pub fn new() -> ConsumerOptions {
        ConsumerOptions::default()
    }

    /// Where to start reading (default [`bips_core::Start::Newest`]).
    pub fn start(mut self, start: bips_core::Start) -> ConsumerOptions {
        self.start = start;
        self
    }

    /// How `recv` waits.
    pub fn wait(mut self, strategy: WaitStrategy) -> ConsumerOptions {
        self.wait = strategy;
        self
    }

    /// Faults every page in at open (`MAP_POPULATE`).
    pub fn prefault(mut self, on: bool) -> ConsumerOptions {
        self.map.prefault = on;
        self
    }

    /// Locks the mapping in RAM (`mlock`).
    pub fn mlock(mut self, on: bool) -> ConsumerOptions {
        self.map.mlock = on;
        self
    }

    /// Also trusts channels whose object is owned by `uid` (by default only
    /// this process's effective uid: root included, which trusts uid 0 only);
    /// calls add up. For a producer running as another user. Another
    /// owner's object gives [`Error::UntrustedOwner`]. See [`OwnerPolicy`].
    ///
    /// ```
    /// use bips::ConsumerOptions;
    /// // The camera service runs as uid 1000; this consumer as root.
    /// let opts = ConsumerOptions::new().trust_owner(1000);
    /// # let _ = opts;
    /// ```
    pub fn trust_owner(mut self, uid: u32) -> ConsumerOptions {
        self.owner = self.owner.with_uid(uid);
        self
    }

    /// Trusts channels whoever owns them ([`OwnerPolicy::Any`]): for
    /// containers whose uids are not known in advance, on a machine whose
    /// local users are all trusted.
    pub fn trust_any_owner(mut self) -> ConsumerOptions {
        self.owner = OwnerPolicy::Any;
        self
    }

    /// Opens only a channel that declares this payload type: same name and
    /// version, and the same fixed descriptor if `t` has one. Any other
    /// channel (an untyped one included) gives [`crate::Error::TypeMismatch`].
    ///
    /// ```
    /// use bips::{ConsumerOptions, PayloadType};
    /// let opts = ConsumerOptions::new().require_type(PayloadType::new("image/bgr8", 1)?);
    /// # let _ = opts;
    /// # Ok::<(), bips::DescriptorError>(())
    /// ```
    pub fn require_type(mut self, t: PayloadType) -> ConsumerOptions {
        self.require = Some(t);
        self
    }

    /// Where to look for [`Backend::Memfd`] channels (default: see
    /// [`Backend::Memfd`]).
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> ConsumerOptions {
        self.socket_dir = Some(dir.into());
        self
    }

    /// Sets which owners of the channel's object are trusted.
    pub fn trust(mut self, policy: OwnerPolicy) -> ConsumerOptions {
        self.owner = policy;
        self
    }

    /// Which owners of the channel's object are trusted.
    pub fn owner_policy(&self) -> &OwnerPolicy {
        &self.owner
    }
}
