//! `bipssink`: publishes every buffer on a bips channel, caps and timestamps
//! in the sample metadata ([`crate::meta`]), and for raw video the frame
//! descriptor ([`crate::video`]) on a channel typed `video/x-raw` v1.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use crate::chan::{Chan, Loaned, LOAN_POLL};
use crate::meta;
use crate::pool::BipsPool;
use crate::video;

glib::wrapper! {
    /// `bipssink`: publishes buffers on a bips shared-memory channel.
    pub struct BipsSink(ObjectSubclass<imp::BipsSink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

/// `bipssink`'s `backpressure` property: the channel's policy.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBipsBackpressure")]
pub enum BackpressureMode {
    /// Lossless: the slowest consumer paces the pipeline.
    #[enum_value(
        name = "Block: lossless, the slowest consumer paces the pipeline",
        nick = "block"
    )]
    Block = 0,
    /// Latest wins: the sink never waits for a consumer, slow ones skip frames.
    #[enum_value(
        name = "DropOldest: latest wins, slow consumers skip frames",
        nick = "drop-oldest"
    )]
    DropOldest = 1,
}

impl From<BackpressureMode> for bips::Backpressure {
    fn from(m: BackpressureMode) -> bips::Backpressure {
        match m {
            BackpressureMode::Block => bips::Backpressure::Block,
            BackpressureMode::DropOldest => bips::Backpressure::DropOldest,
        }
    }
}

mod imp {
    use super::*;

    const DEFAULT_BUFFERS: u32 = 4;
    const DEFAULT_MAX_CONSUMERS: u32 = 8;

    #[derive(Debug, Clone)]
    struct Settings {
        channel: Option<String>,
        buffers: u32,
        buffer_size: u32,
        backpressure: BackpressureMode,
        max_consumers: u32,
        meta_size: u32,
        wait_for_consumers: u32,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                channel: None,
                buffers: DEFAULT_BUFFERS,
                buffer_size: 0,
                backpressure: BackpressureMode::Block,
                max_consumers: DEFAULT_MAX_CONSUMERS,
                meta_size: meta::DEFAULT_META_SIZE,
                wait_for_consumers: 0,
            }
        }
    }

    #[derive(Default)]
    struct State {
        chan: Option<Arc<Chan>>,
        /// The caps string, as written into every sample's metadata.
        caps: Arc<[u8]>,
        /// Frame size the caps imply (0 = not raw video).
        frame_size: usize,
        /// The caps, when raw video: every sample gets a descriptor.
        info: Option<gst_video::VideoInfo>,
        /// The caps' colorimetry string (for the descriptor).
        colorimetry: Option<String>,
        waited: bool,
    }

    #[derive(Default)]
    pub struct BipsSink {
        settings: Mutex<Settings>,
        state: Mutex<State>,
        unlocked: AtomicBool,
        zero_copy: AtomicU64,
        copied: AtomicU64,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for BipsSink {
        const NAME: &'static str = "GstBipsSink";
        type Type = super::BipsSink;
        type ParentType = gst_base::BaseSink;
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    impl ObjectImpl for BipsSink {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                vec![
                    glib::ParamSpecString::builder("channel")
                        .nick("Channel")
                        .blurb("bips channel name (/dev/shm/bips.<channel>)")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt::builder("buffers")
                        .nick("Buffers")
                        .blurb("Buffers in the shared pool")
                        .minimum(2)
                        .maximum(1024)
                        .default_value(DEFAULT_BUFFERS)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt::builder("buffer-size")
                        .nick("Buffer size")
                        .blurb("Bytes per buffer (0 = from the caps, or the first buffer)")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecEnum::builder_with_default(
                        "backpressure",
                        BackpressureMode::Block,
                    )
                    .nick("Backpressure")
                    .blurb("What to do when every buffer is still needed by a consumer")
                    .mutable_ready()
                    .build(),
                    glib::ParamSpecUInt::builder("max-consumers")
                        .nick("Max consumers")
                        .blurb("Consumers that may attach at once")
                        .minimum(1)
                        .maximum(1024)
                        .default_value(DEFAULT_MAX_CONSUMERS)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt::builder("meta-size")
                        .nick("Metadata size")
                        .blurb("Bytes of per-sample metadata (header + caps string)")
                        .minimum(meta::HEADER_LEN as u32 + 64)
                        .maximum(4096)
                        .default_value(meta::DEFAULT_META_SIZE)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt::builder("wait-for-consumers")
                        .nick("Wait for consumers")
                        .blurb("Hold the first buffer until this many consumers attached")
                        .maximum(1024)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt64::builder("zero-copy-buffers")
                        .nick("Zero-copy buffers")
                        .blurb("Buffers published in place (written by upstream into the pool)")
                        .read_only()
                        .build(),
                    glib::ParamSpecUInt64::builder("copied-buffers")
                        .nick("Copied buffers")
                        .blurb("Buffers copied once into a fresh loan")
                        .read_only()
                        .build(),
                    glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                        .nick("Statistics")
                        .blurb("zero-copy-buffers, copied-buffers, consumers")
                        .read_only()
                        .build(),
                ]
            });
            PROPS.as_ref()
        }

        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            let mut s = lock(&self.settings);
            match pspec.name() {
                "channel" => s.channel = value.get().expect("type checked upstream"),
                "buffers" => s.buffers = value.get().expect("type checked upstream"),
                "buffer-size" => s.buffer_size = value.get().expect("type checked upstream"),
                "backpressure" => s.backpressure = value.get().expect("type checked upstream"),
                "max-consumers" => s.max_consumers = value.get().expect("type checked upstream"),
                "meta-size" => s.meta_size = value.get().expect("type checked upstream"),
                "wait-for-consumers" => {
                    s.wait_for_consumers = value.get().expect("type checked upstream")
                }
                other => unreachable!("no writable property {other}"),
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            let s = lock(&self.settings);
            match pspec.name() {
                "channel" => s.channel.to_value(),
                "buffers" => s.buffers.to_value(),
                "buffer-size" => s.buffer_size.to_value(),
                "backpressure" => s.backpressure.to_value(),
                "max-consumers" => s.max_consumers.to_value(),
                "meta-size" => s.meta_size.to_value(),
                "wait-for-consumers" => s.wait_for_consumers.to_value(),
                "zero-copy-buffers" => self.zero_copy.load(Ordering::Relaxed).to_value(),
                "copied-buffers" => self.copied.load(Ordering::Relaxed).to_value(),
                "stats" => {
                    drop(s);
                    let consumers = lock(&self.state)
                        .chan
                        .as_ref()
                        .map_or(0, |c| c.consumer_count() as u32);
                    gst::Structure::builder("bipssink-stats")
                        .field("zero-copy-buffers", self.zero_copy.load(Ordering::Relaxed))
                        .field("copied-buffers", self.copied.load(Ordering::Relaxed))
                        .field("consumers", consumers)
                        .build()
                        .to_value()
                }
                other => unreachable!("no property {other}"),
            }
        }

        fn constructed(&self) {
            self.parent_constructed();
            // The last sample would keep a reference to a buffer already
            // published, whose bytes the producer may reuse.
            self.obj().set_property("enable-last-sample", false);
        }
    }

    impl GstObjectImpl for BipsSink {}

    impl ElementImpl for BipsSink {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "bips sink",
                    "Sink/Video/Network",
                    "Publishes buffers, their caps and timestamps on a bips shared-memory \
                     channel; upstream writing into the proposed pool is published without copy",
                    "bips developers",
                )
            });
            Some(&*META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                vec![gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &gst::Caps::new_any(),
                )
                .expect("valid pad template")]
            });
            TEMPLATES.as_ref()
        }
    }

    impl BipsSink {
        /// The channel, created (or re-created, bigger) so that a buffer of
        /// `needed` bytes fits.
        /// A channel created for raw video declares the payload type
        /// [`video::PAYLOAD_TYPE`].
        fn ensure_chan(
            &self,
            state: &mut State,
            needed: usize,
            video: bool,
        ) -> Result<Arc<Chan>, String> {
            if let Some(chan) = &state.chan {
                if chan.capacity() >= needed {
                    return Ok(Arc::clone(chan));
                }
                // Caps grew: a new channel under the same name. Consumers of
                // the old one drain it and see the end of the stream.
                gst::info!(
                    crate::CAT,
                    imp = self,
                    "buffers grow from {} to {needed} bytes: re-creating the channel",
                    chan.capacity()
                );
                state.chan = None;
            }
            let s = lock(&self.settings).clone();
            let name = s
                .channel
                .ok_or_else(|| "the channel property is not set".to_owned())?;
            let size = needed.max(s.buffer_size as usize).max(1);
            let mut opts = bips::Options::new(s.buffers, size)
                .backpressure(s.backpressure.into())
                .max_consumers(s.max_consumers)
                .meta_size(s.meta_size);
            if video {
                let (name, version) = video::PAYLOAD_TYPE;
                let t = bips::PayloadType::new(name, version).map_err(|e| e.to_string())?;
                opts = opts.payload_type(t);
            }
            let producer = bips::Producer::create(&name, &opts).map_err(|e| e.to_string())?;
            gst::info!(
                crate::CAT,
                imp = self,
                "created channel {name}: {} buffers of {size} bytes",
                s.buffers
            );
            let chan = Chan::new(producer);
            state.chan = Some(Arc::clone(&chan));
            Ok(chan)
        }

        fn error_msg(&self, what: &str) -> gst::ErrorMessage {
            gst::error_msg!(gst::ResourceError::OpenWrite, ["{}", what])
        }

        /// Waits (interruptibly) until enough consumers attached.
        fn wait_for_consumers(&self, chan: &Chan) -> Result<(), gst::FlowError> {
            let want = lock(&self.settings).wait_for_consumers as usize;
            while chan.consumer_count() < want {
                if self.unlocked.load(Ordering::Acquire) {
                    self.obj().wait_preroll()?;
                    continue;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        }

        /// A loan for the copy path, waiting (interruptibly) under `Block`.
        fn loan(&self, chan: &Chan) -> Result<bips::RawLoan, gst::FlowError> {
            loop {
                if self.unlocked.load(Ordering::Acquire) {
                    self.obj().wait_preroll()?;
                }
                match chan.try_loan(LOAN_POLL) {
                    Ok(Loaned::Got(l)) => return Ok(l),
                    Ok(Loaned::Busy) => continue,
                    Err(e) => {
                        gst::element_imp_error!(self, gst::ResourceError::Write, ["loan: {}", e]);
                        return Err(gst::FlowError::Error);
                    }
                }
            }
        }

        /// The loan of `buffer`'s only memory, if that memory is a pool
        /// memory of `chan` nobody else references: it can be published as
        /// it is.
        fn zero_copy_loan(chan: &Chan, buffer: &gst::Buffer) -> Option<bips::RawLoan> {
            if buffer.n_memory() != 1 || !buffer.is_writable() || !buffer.is_all_memory_writable() {
                return None;
            }
            let mem = buffer.peek_memory(0);
            if mem.parent().is_some() || mem.offset() != 0 {
                return None;
            }
            chan.take_pool_loan(mem.as_ptr() as usize)
        }

        /// The descriptor of a raw-video `buffer` (see [`crate::video`]): its
        /// `GstVideoMeta`'s plane layout, else the caps' one; it must fit
        /// the buffer. `None` for formats without one (tiled).
        fn descriptor(
            &self,
            info: &gst_video::VideoInfo,
            colorimetry: Option<&str>,
            buffer: &gst::Buffer,
        ) -> Result<Option<bips::Descriptor>, String> {
            let layout = buffer.meta::<gst_video::VideoMeta>().map_or_else(
                || video::Layout::of_info(info),
                |vm| video::Layout::of_meta(&vm),
            );
            let Some(d) = video::describe(info, colorimetry, &layout)? else {
                return Ok(None);
            };
            d.validate(buffer.size() as u64).map_err(|e| {
                format!(
                    "a buffer of {} bytes does not hold the {:?} {}x{} frame its caps (and \
                     GstVideoMeta) describe: {e}",
                    buffer.size(),
                    info.format(),
                    info.width(),
                    info.height()
                )
            })?;
            Ok(Some(d))
        }

        fn header(&self, buffer: &gst::Buffer) -> meta::Header {
            let ns = |t: Option<gst::ClockTime>| t.map_or(meta::NONE, |t| t.nseconds());
            let segment = self.obj().segment();
            let running_time = buffer
                .pts()
                .and_then(|pts| {
                    segment
                        .downcast_ref::<gst::ClockTime>()
                        .and_then(|s| s.to_running_time(pts))
                })
                .map_or(meta::NONE, |t| t.nseconds());
            let off = |v: u64| if v == u64::MAX { meta::NONE } else { v };
            meta::Header {
                pts: ns(buffer.pts()),
                dts: ns(buffer.dts()),
                duration: ns(buffer.duration()),
                offset: off(buffer.offset()),
                offset_end: off(buffer.offset_end()),
                flags: buffer.flags().bits(),
                base_time: ns(self.obj().base_time()),
                running_time,
            }
        }
    }

    impl BaseSinkImpl for BipsSink {
        fn start(&self) -> Result<(), gst::ErrorMessage> {
            let s = lock(&self.settings).clone();
            if s.channel.is_none() {
                return Err(self.error_msg("bipssink: set the channel property"));
            }
            if s.wait_for_consumers > s.max_consumers {
                // render() would wait forever: no more can attach.
                return Err(gst::error_msg!(
                    gst::ResourceError::Settings,
                    [
                        "bipssink: wait-for-consumers ({}) exceeds max-consumers ({})",
                        s.wait_for_consumers,
                        s.max_consumers
                    ]
                ));
            }
            self.zero_copy.store(0, Ordering::Relaxed);
            self.copied.store(0, Ordering::Relaxed);
            *lock(&self.state) = State::default();
            Ok(())
        }

        fn stop(&self) -> Result<(), gst::ErrorMessage> {
            let state = std::mem::take(&mut *lock(&self.state));
            gst::info!(
                crate::CAT,
                imp = self,
                "stopping: {} zero-copy, {} copied buffers",
                self.zero_copy.load(Ordering::Relaxed),
                self.copied.load(Ordering::Relaxed)
            );
            // The channel closes once the pool memories upstream still holds
            // are gone too.
            drop(state);
            Ok(())
        }

        fn unlock(&self) -> Result<(), gst::ErrorMessage> {
            self.unlocked.store(true, Ordering::Release);
            if let Some(chan) = &lock(&self.state).chan {
                chan.wake();
            }
            Ok(())
        }

        fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
            self.unlocked.store(false, Ordering::Release);
            Ok(())
        }

        fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
            let mut state = lock(&self.state);
            state.caps = caps.to_string().into_bytes().into();
            let meta_size = lock(&self.settings).meta_size as usize;
            if meta::HEADER_LEN + state.caps.len() > meta_size {
                return Err(gst::loggable_error!(
                    crate::CAT,
                    "caps string of {} bytes does not fit meta-size {meta_size}: raise meta-size",
                    state.caps.len()
                ));
            }
            state.frame_size = 0;
            state.info = None;
            state.colorimetry = None;
            if let Ok(info) = gst_video::VideoInfo::from_caps(caps) {
                state.frame_size = info.size();
                state.colorimetry = video::caps_colorimetry(caps);
                let size = info.size();
                state.info = Some(info);
                self.ensure_chan(&mut state, size, true)
                    .map_err(|e| gst::loggable_error!(crate::CAT, "{}", e))?;
            }
            Ok(())
        }

        fn propose_allocation(
            &self,
            query: &mut gst::query::Allocation,
        ) -> Result<(), gst::LoggableError> {
            query.add_allocation_meta::<gst_video::VideoMeta>(None);
            let (caps, need_pool) = query.get_owned();
            let Some(caps) = caps else {
                return Ok(());
            };
            if !need_pool {
                return Ok(());
            }
            let Ok(info) = gst_video::VideoInfo::from_caps(&caps) else {
                // Not raw video in system memory: no pool, render() copies.
                return Ok(());
            };
            let size = info.size();
            let chan = {
                let mut state = lock(&self.state);
                self.ensure_chan(&mut state, size, true)
                    .map_err(|e| gst::loggable_error!(crate::CAT, "{}", e))?
            };
            // At most all buffers but one in upstream's hands at once (the
            // copy path needs one); an upstream that needs more uses its own
            // pool (see the pool's set_config).
            let max = chan.pool_max();
            let pool = BipsPool::new(chan);
            let mut config = pool.config();
            config.set_params(Some(&caps), size as u32, 0, max);
            pool.set_config(config)
                .map_err(|e| gst::loggable_error!(crate::CAT, "pool config: {}", e))?;
            query.add_allocation_pool(
                Some(pool.upcast_ref::<gst::BufferPool>()),
                size as u32,
                0,
                max,
            );
            Ok(())
        }

        fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
            let (chan, caps, waited, desc) = {
                let mut state = lock(&self.state);
                let needed = buffer.size().max(state.frame_size);
                let desc = match &state.info {
                    Some(info) => match self.descriptor(info, state.colorimetry.as_deref(), buffer)
                    {
                        Ok(d) => d,
                        Err(e) => {
                            gst::element_imp_error!(self, gst::StreamError::Format, ["{}", e]);
                            return Err(gst::FlowError::Error);
                        }
                    },
                    None => None,
                };
                let video = state.info.is_some();
                let chan = match state.chan.clone() {
                    Some(c) => c,
                    None => match self.ensure_chan(&mut state, needed, video) {
                        Ok(c) => c,
                        Err(e) => {
                            gst::element_imp_error!(self, gst::ResourceError::OpenWrite, ["{}", e]);
                            return Err(gst::FlowError::Error);
                        }
                    },
                };
                let waited = std::mem::replace(&mut state.waited, true);
                (chan, Arc::clone(&state.caps), waited, desc)
            };
            if !waited {
                self.wait_for_consumers(&chan)?;
            }
            if buffer.size() > chan.capacity() {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Write,
                    [
                        "buffer of {} bytes exceeds the channel's {} bytes: set buffer-size",
                        buffer.size(),
                        chan.capacity()
                    ]
                );
                return Err(gst::FlowError::Error);
            }
            let header = self.header(buffer);
            let (mut loan, zero_copy) = match Self::zero_copy_loan(&chan, buffer) {
                Some(l) => (l, true),
                None => (self.loan(&chan)?, false),
            };
            if !zero_copy {
                let map = buffer.map_readable().map_err(|_| {
                    gst::element_imp_error!(self, gst::ResourceError::Read, ["cannot map buffer"]);
                    gst::FlowError::Error
                })?;
                // SAFETY: `loan` is outstanding and its producer alive (held by
                // `chan`); nobody else has a view of its bytes.
                unsafe { loan.as_mut_slice()[..map.len()].copy_from_slice(&map) };
            }
            // SAFETY: as above; the metadata area belongs to the loan too.
            let meta_area = unsafe { loan.meta_mut() };
            let written = meta::write(meta_area, &header, &caps)
                .map_err(|e| e.to_string())
                .and_then(|()| loan.set_len(buffer.size()).map_err(|e| e.to_string()))
                .and_then(|()| match &desc {
                    Some(d) => chan
                        .set_descriptor(&mut loan, d)
                        .map_err(|e| format!("frame descriptor: {e}")),
                    None => Ok(()),
                });
            if let Err(e) = written {
                chan.unloan(loan);
                gst::element_imp_error!(self, gst::ResourceError::Write, ["{}", e]);
                return Err(gst::FlowError::Error);
            }
            if let Err(e) = chan.publish(loan) {
                gst::element_imp_error!(self, gst::ResourceError::Write, ["publish: {}", e]);
                return Err(gst::FlowError::Error);
            }
            if zero_copy {
                self.zero_copy.fetch_add(1, Ordering::Relaxed);
            } else {
                self.copied.fetch_add(1, Ordering::Relaxed);
            }
            Ok(gst::FlowSuccess::Ok)
        }
    }
}
