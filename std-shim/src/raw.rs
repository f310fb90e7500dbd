//! The raw real-time API: the whole buffer table at once, and loans and
//! samples as plain owned values ([`RawLoan`](crate::RawLoan),
//! [`RawSample`](crate::RawSample)) that carry their buffer index.
//!
//! A control loop, a DMA engine or `cudaHostRegister` registers every
//! buffer's address once ([`Producer::buffers`](crate::Producer::buffers),
//! [`Consumer::buffers`](crate::Consumer::buffers)); afterwards each cycle
//! only asks which buffer to fill or read:
//!
//! ```
//! use bips::{Consumer, Options, Producer};
//! # let name = format!("doc-rawapi-{}", std::process::id());
//! let producer = Producer::create(&name, &Options::new(4, 4096))?;
//! let consumer = Consumer::open(&name)?;
//! let table = producer.buffers(); // once, at set-up: index -> address
//! let seen = consumer.buffers(); // the same buffers, in this process's mapping
//!
//! for cycle in 0..10u8 {
//!     let loan = producer.loan_raw()?; // no allocation, no system call
//!     let b = &table[loan.buffer_index() as usize];
//!     // SAFETY: the buffer is loaned to us until publish_raw.
//!     unsafe { b.ptr.write_bytes(cycle, 64) };
//!     producer.publish_raw(loan)?;
//!
//!     let sample = consumer.try_recv_raw()?.expect("published");
//!     let b = &seen[sample.buffer_index() as usize];
//!     assert_eq!(sample.as_ptr(), b.ptr.cast_const());
//!     // SAFETY: the sample is held until release_raw.
//!     assert_eq!(unsafe { *b.ptr }, cycle);
//!     consumer.release_raw(sample);
//! }
//! # Ok::<(), bips::Error>(())
//! ```

/// One buffer of a channel's pool, as mapped in this process: stable for the
/// life of the [`Producer`](crate::Producer) or [`Consumer`](crate::Consumer)
/// that listed it.
///
/// The producer may write a buffer only while it holds a loan of that index;
/// a consumer may read it only while it holds a sample of that index, and
/// never writes it. See [`crate::raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferInfo {
    /// The buffer's index in the pool (`0..buffers`), as carried by
    /// [`RawLoan::buffer_index`](crate::RawLoan::buffer_index) and
    /// [`RawSample::buffer_index`](crate::RawSample::buffer_index).
    pub index: u32,
    /// Its first byte, aligned to the channel's alignment (the page size by
    /// default).
    pub ptr: *mut u8,
    /// Its size in bytes (the channel's buffer size).
    pub capacity: usize,
    /// Its per-sample metadata area.
    pub meta: *mut u8,
    /// Bytes of metadata (the channel's `meta_size`).
    pub meta_len: usize,
}

// SAFETY: a BufferInfo is an index and addresses in a shared mapping: plain
// values with no thread-bound state. Dereferencing them is `unsafe` and
// governed by the loan/hold rules documented above, from any thread.
unsafe impl Send for BufferInfo {}
// SAFETY: as for Send; `&BufferInfo` only gives copies of those values.
unsafe impl Sync for BufferInfo {}

/// The table of `region`'s buffers.
pub(crate) fn table(region: &bips_core::Region<'_>) -> Vec<BufferInfo> {
    let g = region.geometry();
    (0..g.buffer_count)
        .map(|i| BufferInfo {
            index: i,
            ptr: region.buffer_ptr(i),
            capacity: g.buffer_size as usize,
            meta: region.meta_ptr(i),
            meta_len: g.meta_size as usize,
        })
        .collect()
}
