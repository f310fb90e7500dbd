//! OS helpers for the harness: CPU pinning, machine facts, and the raw shared
//! page the physical-floor baselines ping-pong over.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::fs::MemfdFlags;
use rustix::mm::{MapFlags, ProtFlags};

/// Pins the calling thread (the whole process, when called before any other
/// thread starts) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: `cpu_set_t` is plain C data that is valid all-zero; CPU_SET only
    // writes inside it (it bounds-checks `cpu`); sched_setaffinity reads
    // exactly `size_of::<cpu_set_t>()` bytes from the pointer we pass.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The SCHED_FIFO priority `--fifo` runs every process of the benchmark at.
pub const FIFO_PRIORITY: i32 = 10;

/// Switches the calling process to SCHED_FIFO at [`FIFO_PRIORITY`], so
/// ordinary (SCHED_OTHER) processes cannot preempt it. Needs root or
/// CAP_SYS_NICE. The kernel's RT throttling (by default 950 ms per second)
/// still leaves other processes 5% of each CPU.
pub fn set_fifo() -> std::io::Result<()> {
    let p = libc::sched_param {
        sched_priority: FIFO_PRIORITY,
    };
    // SAFETY: `p` is a valid sched_param that outlives the call; pid 0 is
    // the calling process.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `pin_to_cpu`; sched_getaffinity writes at most
    // `size_of::<cpu_set_t>()` bytes into `set`; CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// What the report says about the machine.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// CPU model (`/proc/cpuinfo` "model name").
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// The 1-minute load average when the run started.
    pub load_start: f64,
    /// Whether a hypervisor flag is set (a VM: expect noisier tails).
    pub virtualized: bool,
}

impl Machine {
    /// Reads the facts from /proc.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let virtualized = cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.contains(" hypervisor"));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            load_start: load_average(),
            virtualized,
        }
    }
}

/// The 1-minute load average (0 when unreadable).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Offsets of the words in the raw page: each on its own 128-byte line (the
/// adjacent-line prefetcher pairs 64-byte lines on x86-64).
const PING: usize = 0;
const PONG: usize = 128;
const FPING: usize = 256;
const FPONG: usize = 384;
/// First of the lines the dependent-chain baseline chases through.
pub const CHAIN_BASE: usize = 512;
/// Size of the raw mapping.
const RAW_LEN: usize = 4096;

/// One shared page (a memfd, `MAP_SHARED`) holding the raw baselines' words:
/// two `AtomicU64` for the busy-spin floor and two `AtomicU32` futex words for
/// the blocking floor, each on its own cache line. The creator passes
/// [`RawPage::path`] to its peer, which opens the same memory through `/proc`.
pub struct RawPage {
    fd: OwnedFd,
    ptr: NonNull<u8>,
}

// SAFETY: the page is only accessed through atomics.
unsafe impl Send for RawPage {}

impl RawPage {
    /// Creates the memfd and maps it.
    pub fn create() -> std::io::Result<RawPage> {
        let fd = rustix::fs::memfd_create("bips-bench-raw", MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, RAW_LEN as u64)?;
        Self::map(fd)
    }

    /// Opens a page another process created, by its [`RawPage::path`].
    pub fn open(path: &str) -> std::io::Result<RawPage> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Self::map(OwnedFd::from(f))
    }

    fn map(fd: OwnedFd) -> std::io::Result<RawPage> {
        // SAFETY: a fresh shared mapping of RAW_LEN bytes of a file at least
        // that long; nothing else in this process aliases it; it is unmapped
        // in Drop and only touched through atomics meanwhile.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                RAW_LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd.as_fd(),
                0,
            )?
        };
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap null"))?;
        Ok(RawPage { fd, ptr })
    }

    /// A path another process of the same user can open: `/proc/PID/fd/N`.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: `off` is one of the constants above: 8-aligned (the mapping
        // is page-aligned) and in bounds; the memory lives as long as `self`
        // and is only ever accessed atomically by every process.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as in `word64`, 4-aligned.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// The busy-spin floor's words (ping written by the initiator, pong by the peer).
    pub fn spin_words(&self) -> (&AtomicU64, &AtomicU64) {
        (self.word64(PING), self.word64(PONG))
    }

    /// The `i`-th line of the dependent-chain baseline (`i < 8`).
    pub fn chain_word(&self, i: usize) -> &AtomicU64 {
        assert!(i < 8);
        self.word64(CHAIN_BASE + 128 * i)
    }

    /// The word at byte offset `off` (a multiple of 128 below the page size,
    /// as read back from the chain): bounds-checked.
    pub fn word_at(&self, off: usize) -> Option<&AtomicU64> {
        (off % 128 == 0 && off + 8 <= RAW_LEN).then(|| self.word64(off))
    }

    /// The blocking floor's futex words.
    pub fn futex_words(&self) -> (&AtomicU32, &AtomicU32) {
        (self.word32(FPING), self.word32(FPONG))
    }
}

impl Drop for RawPage {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range in `map`; no reference into it
        // outlives `self` (the word accessors borrow `self`).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), RAW_LEN) };
    }
}

/// Blocks while `word == expected` (a shared futex: no `FUTEX_PRIVATE_FLAG`,
/// so a wake from another process reaches it).
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    let _ =
        rustix::thread::futex::wait(word, rustix::thread::futex::Flags::empty(), expected, None);
}

/// Wakes one waiter of `word` in any process.
pub fn futex_wake(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), 1);
}
