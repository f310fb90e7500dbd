//! `GstBipsPool`: the buffer pool `bipssink` proposes upstream.
//!
//! Every buffer it hands out owns one fresh bips loan (a `GstMemory` wrapping
//! a [`bips::RawLoan`]), so upstream writes its frame straight into shared
//! memory. When the buffer reaches `bipssink`'s `render()`, the sink takes
//! the loan out of the memory and publishes it: no copy. A buffer that never
//! reaches `render()` gives its loan back when it is freed.
//!
//! Buffers are not recycled: a buffer coming back to the pool is freed (its
//! loan published or given back), and the next `acquire` loans afresh. The
//! bips channel is the real pool; acquiring waits for one of its buffers
//! without holding the channel's mutex (see [`crate::chan`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gst::glib;

use gst::subclass::prelude::*;

use crate::chan::{Chan, Loaned, LOAN_POLL};

glib::wrapper! {
    /// The buffer pool of `bipssink`: buffers backed by bips loans.
    pub struct BipsPool(ObjectSubclass<imp::BipsPool>)
        @extends gst::BufferPool, gst::Object;
}

impl BipsPool {
    pub(crate) fn new(chan: Arc<Chan>) -> BipsPool {
        let pool: BipsPool = glib::Object::new();
        *pool.imp().chan.lock().unwrap_or_else(|e| e.into_inner()) = Some(chan);
        pool
    }
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct BipsPool {
        pub(super) chan: Mutex<Option<Arc<Chan>>>,
        size: AtomicUsize,
        flushing: AtomicBool,
    }

    impl BipsPool {
        fn chan(&self) -> Option<Arc<Chan>> {
            self.chan.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for BipsPool {
        const NAME: &'static str = "GstBipsPool";
        type Type = super::BipsPool;
        type ParentType = gst::BufferPool;
    }

    impl ObjectImpl for BipsPool {}
    impl GstObjectImpl for BipsPool {}

    impl BufferPoolImpl for BipsPool {
        fn set_config(&self, config: &mut gst::BufferPoolConfigRef) -> bool {
            let Some((caps, size, min, max)) = config.params() else {
                return false;
            };
            let Some(chan) = self.chan() else {
                return false;
            };
            if size as usize > chan.capacity() {
                gst::warning!(
                    crate::CAT,
                    imp = self,
                    "buffer size {size} exceeds the channel's {} bytes",
                    chan.capacity()
                );
                return false;
            }
            // The channel holds a fixed number of buffers: an upstream that
            // needs more at once (a decoder's references) would wait forever
            // for the next one. Refused (with what we can do written back
            // into the config), it falls back to its own pool, and bipssink
            // copies.
            let limit = chan.pool_max();
            if min > limit || max == 0 || max > limit {
                gst::info!(
                    crate::CAT,
                    imp = self,
                    "refusing a pool of {min}..{max} buffers: at most {limit}"
                );
                config.set_params(caps.as_ref(), size, min.min(limit), limit);
                return false;
            }
            self.size.store(size as usize, Ordering::Relaxed);
            self.parent_set_config(config)
        }

        fn start(&self) -> bool {
            // No preallocation: a preallocated buffer would sit on a loan.
            self.flushing.store(false, Ordering::Release);
            true
        }

        fn stop(&self) -> bool {
            true
        }

        fn flush_start(&self) {
            self.flushing.store(true, Ordering::Release);
            if let Some(chan) = self.chan() {
                chan.wake();
            }
        }

        fn flush_stop(&self) {
            self.flushing.store(false, Ordering::Release);
        }

        fn alloc_buffer(
            &self,
            params: Option<&gst::BufferPoolAcquireParams>,
        ) -> Result<gst::Buffer, gst::FlowError> {
            self.acquire_buffer(params)
        }

        fn acquire_buffer(
            &self,
            params: Option<&gst::BufferPoolAcquireParams>,
        ) -> Result<gst::Buffer, gst::FlowError> {
            let chan = self.chan().ok_or(gst::FlowError::Flushing)?;
            let dont_wait =
                params.is_some_and(|p| p.flags().contains(gst::BufferPoolAcquireFlags::DONTWAIT));
            let size = self.size.load(Ordering::Relaxed);
            loop {
                if self.flushing.load(Ordering::Acquire) {
                    return Err(gst::FlowError::Flushing);
                }
                let slice = if dont_wait {
                    std::time::Duration::ZERO
                } else {
                    LOAN_POLL
                };
                match chan.try_loan(slice) {
                    Ok(Loaned::Got(loan)) => {
                        let mut buffer = gst::Buffer::new();
                        buffer
                            .get_mut()
                            .expect("a new buffer is writable")
                            .append_memory(chan.wrap(loan, size));
                        return Ok(buffer);
                    }
                    Ok(Loaned::Busy) if dont_wait => return Err(gst::FlowError::Eos),
                    Ok(Loaned::Busy) => continue,
                    Err(e) => {
                        gst::error!(crate::CAT, imp = self, "loan failed: {e}");
                        return Err(gst::FlowError::Error);
                    }
                }
            }
        }

        fn release_buffer(&self, buffer: gst::Buffer) {
            // Never recycled: freeing the buffer frees its memory, which
            // gives back a loan that was not published.
            drop(buffer);
        }
    }
}
