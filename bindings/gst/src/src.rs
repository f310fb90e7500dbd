//! `bipssrc`: receives the samples of a bips channel written by `bipssink`
//! (or any producer using the [`crate::meta`] header) and pushes them with
//! the caps and timestamps they carry. The plane layout of a raw-video frame
//! comes from its frame descriptor, checked against the caps
//! ([`crate::video::check`]); a descriptor that is malformed or does not
//! match the caps is an element error.
//!
//! Zero copy: an output buffer's memory is the shared buffer itself (a
//! read-only `GstMemory` that owns the held sample and gives it back when
//! downstream frees the buffer). A consumer holds at most the channel's
//! `max_held` samples (8 unless its producer chose otherwise), and under
//! `Block` every held sample keeps a buffer from the producer, so at most
//! `min(max_held - 2, buffers - 1)` frames travel that
//! way at once; beyond that (downstream keeping many buffers) a frame is
//! copied into an ordinary buffer and released at once. `zero-copy=false`
//! always copies.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use crate::meta;
use crate::video;

glib::wrapper! {
    /// `bipssrc`: pushes the frames of a bips shared-memory channel.
    pub struct BipsSrc(ObjectSubclass<imp::BipsSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

/// The consumer, shared by `bipssrc` and the memories that hold its samples.
struct SrcChan {
    /// `bips::Consumer` is `!Sync`: receiving and releasing go through here.
    consumer: Mutex<bips::Consumer>,
    /// Samples freed (by downstream) while `create()` held `consumer`: the
    /// next receive slice releases them (a free never waits for a receive).
    pending: Mutex<Vec<bips::RawSample>>,
    /// Samples held by output memories now.
    held: AtomicUsize,
    /// At most this many held at once; frames beyond are copied.
    limit: usize,
}

impl SrcChan {
    fn new(consumer: bips::Consumer) -> Arc<SrcChan> {
        let buffers = consumer.geometry().buffer_count as usize;
        // The channel's own limit (1..=64), two holds kept in reserve as
        // before (the receive in `create()` takes one).
        let max_held = consumer.max_held() as usize;
        let limit = max_held.saturating_sub(2).min(buffers.saturating_sub(1));
        Arc::new(SrcChan {
            consumer: Mutex::new(consumer),
            pending: Mutex::new(Vec::with_capacity(max_held)),
            held: AtomicUsize::new(0),
            limit,
        })
    }

    /// Releases the samples parked in `pending` (caller holds `consumer`).
    fn settle(&self, consumer: &bips::Consumer) {
        let parked = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for raw in parked {
            consumer.release_raw(raw);
        }
    }

    fn release(&self, raw: bips::RawSample) {
        self.held.fetch_sub(1, Ordering::Relaxed);
        match self.consumer.try_lock() {
            Ok(consumer) => {
                consumer.release_raw(raw);
                self.settle(&consumer);
            }
            Err(_) => self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(raw),
        }
    }
}

/// The value wrapped by a zero-copy output `GstMemory`: one held sample.
struct SampleMem {
    raw: Option<bips::RawSample>,
    chan: Arc<SrcChan>,
}

impl AsRef<[u8]> for SampleMem {
    fn as_ref(&self) -> &[u8] {
        match &self.raw {
            // SAFETY: the sample is held (not released until this value
            // drops), so the producer does not write its buffer; `chan` keeps
            // the consumer, hence the mapping, alive; the length was checked
            // against the buffer size when the sample was received.
            Some(raw) => unsafe { raw.as_slice() },
            None => &[],
        }
    }
}

impl Drop for SampleMem {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.chan.release(raw);
        }
    }
}

mod imp {
    use super::*;

    /// How long one receive waits before looking at `unlock` again (and at
    /// samples parked by memories freed meanwhile): the longest a flush or
    /// state change waits for `create()`.
    const SLICE: Duration = Duration::from_millis(50);

    #[derive(Debug, Clone)]
    struct Settings {
        channel: Option<String>,
        /// ns; 0 = wait forever.
        timeout: u64,
        zero_copy: bool,
        /// A uid trusted besides this process's (and root's); -1: none.
        trust_owner: i64,
        trust_any_owner: bool,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                channel: None,
                timeout: 0,
                zero_copy: true,
                trust_owner: -1,
                trust_any_owner: false,
            }
        }
    }

    impl Settings {
        /// Whose channel objects this source attaches to (T2).
        fn owner_policy(&self) -> bips::OwnerPolicy {
            if self.trust_any_owner {
                return bips::OwnerPolicy::Any;
            }
            match u32::try_from(self.trust_owner) {
                Ok(uid) => bips::OwnerPolicy::default().with_uid(uid),
                Err(_) => bips::OwnerPolicy::default(),
            }
        }
    }

    struct State {
        chan: Option<Arc<SrcChan>>,
        caps_str: String,
        info: Option<gst_video::VideoInfo>,
        /// A private copy of the sample metadata being parsed (the channel's
        /// `meta_size` is at most 4096 bytes).
        meta_copy: Box<[u8; 4096]>,
    }

    impl Default for State {
        fn default() -> Self {
            State {
                chan: None,
                caps_str: String::new(),
                info: None,
                meta_copy: Box::new([0; 4096]),
            }
        }
    }

    #[derive(Default)]
    pub struct BipsSrc {
        settings: Mutex<Settings>,
        state: Mutex<State>,
        unlocked: AtomicBool,
        zero_copy: AtomicU64,
        copied: AtomicU64,
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[glib::object_subclass]
    impl ObjectSubclass for BipsSrc {
        const NAME: &'static str = "GstBipsSrc";
        type Type = super::BipsSrc;
        type ParentType = gst_base::PushSrc;
    }

    impl ObjectImpl for BipsSrc {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                vec![
                    glib::ParamSpecString::builder("channel")
                        .nick("Channel")
                        .blurb("bips channel name (/dev/shm/bips.<channel>)")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt64::builder("timeout")
                        .nick("Timeout")
                        .blurb(
                            "Nanoseconds to wait for the channel to appear and for each frame \
                             before failing with an error (0 = wait forever)",
                        )
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecBoolean::builder("zero-copy")
                        .nick("Zero copy")
                        .blurb("Output buffers wrap the shared buffers (false: copy every frame)")
                        .default_value(true)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecInt64::builder("trust-owner")
                        .nick("Trust owner")
                        .blurb(
                            "Also attach to a channel whose shared-memory object this uid owns \
                             (a producer running as another user; -1: only this process's uid \
                             and root)",
                        )
                        .minimum(-1)
                        .maximum(i64::from(u32::MAX))
                        .default_value(-1)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecBoolean::builder("trust-any-owner")
                        .nick("Trust any owner")
                        .blurb(
                            "Attach to the channel whoever owns its object (containers with \
                             unknown uids, on a machine whose users are all trusted)",
                        )
                        .default_value(false)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt64::builder("zero-copy-buffers")
                        .nick("Zero-copy buffers")
                        .blurb("Frames pushed as views of the shared buffers")
                        .read_only()
                        .build(),
                    glib::ParamSpecUInt64::builder("copied-buffers")
                        .nick("Copied buffers")
                        .blurb("Frames copied (zero-copy=false, or downstream held too many)")
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
                "timeout" => s.timeout = value.get().expect("type checked upstream"),
                "zero-copy" => s.zero_copy = value.get().expect("type checked upstream"),
                "trust-owner" => s.trust_owner = value.get().expect("type checked upstream"),
                "trust-any-owner" => {
                    s.trust_any_owner = value.get().expect("type checked upstream")
                }
                other => unreachable!("no writable property {other}"),
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            let s = lock(&self.settings);
            match pspec.name() {
                "channel" => s.channel.to_value(),
                "timeout" => s.timeout.to_value(),
                "zero-copy" => s.zero_copy.to_value(),
                "trust-owner" => s.trust_owner.to_value(),
                "trust-any-owner" => s.trust_any_owner.to_value(),
                "zero-copy-buffers" => self.zero_copy.load(Ordering::Relaxed).to_value(),
                "copied-buffers" => self.copied.load(Ordering::Relaxed).to_value(),
                other => unreachable!("no property {other}"),
            }
        }

        fn constructed(&self) {
            self.parent_constructed();
            let obj = self.obj();
            obj.set_format(gst::Format::Time);
            obj.set_live(true);
        }
    }

    impl GstObjectImpl for BipsSrc {}

    impl ElementImpl for BipsSrc {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "bips source",
                    "Source/Video/Network",
                    "Receives buffers, their caps and timestamps from a bips shared-memory \
                     channel written by bipssink; EOS when the producer leaves",
                    "bips developers",
                )
            });
            Some(&*META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                vec![gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &gst::Caps::new_any(),
                )
                .expect("valid pad template")]
            });
            TEMPLATES.as_ref()
        }
    }

    impl BipsSrc {
        fn open(
            name: &str,
            owner: bips::OwnerPolicy,
        ) -> Result<Option<bips::Consumer>, bips::Error> {
            // Park at once: frames come at video rates, where spinning
            // before sleeping burns CPU for no gain in latency.
            let opts = bips::ConsumerOptions::new()
                .start(bips::Start::Oldest)
                .wait(bips::WaitStrategy::Park)
                .trust(owner);
            match bips::Consumer::open_with(name, &opts) {
                Ok(c) => Ok(Some(c)),
                // Not there yet, or a stale segment its producer will replace.
                Err(bips::Error::NotFound { .. }) | Err(bips::Error::Disconnected) => Ok(None),
                Err(e) => Err(e),
            }
        }

        /// Turns one sample into an output buffer (a view of the shared
        /// buffer, or a copy), setting new caps first when the sample's
        /// differ from the current ones. A sample whose geometry cannot be
        /// trusted is an element error.
        fn buffer_of(
            &self,
            state: &mut State,
            chan: &Arc<SrcChan>,
            sample: bips::Sample<'_>,
            zero_copy: bool,
        ) -> Result<gst::Buffer, gst::FlowError> {
            // The producer (another process) may still be writing the
            // metadata area: parse a private copy, so what was checked is
            // what is used.
            let area = sample.meta();
            let n = area.len().min(state.meta_copy.len());
            state.meta_copy[..n].copy_from_slice(&area[..n]);
            let parsed = meta::read(&state.meta_copy[..n]).map(|(h, c)| (h, c.to_owned()));
            let (h, caps_str) = match parsed {
                Ok(m) => m,
                Err(e) => {
                    gst::element_imp_error!(self, gst::StreamError::Decode, ["{}", e]);
                    return Err(gst::FlowError::Error);
                }
            };
            let caps_str = caps_str.as_str();
            if !caps_str.is_empty() && caps_str != state.caps_str {
                let caps = gst::Caps::from_str(caps_str).map_err(|_| {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ["unparsable caps in sample metadata: {}", caps_str]
                    );
                    gst::FlowError::NotNegotiated
                })?;
                gst::debug!(crate::CAT, imp = self, "caps from the channel: {caps}");
                state.info = gst_video::VideoInfo::from_caps(&caps).ok();
                state.caps_str = caps_str.to_owned();
                self.obj().set_caps(&caps).map_err(|_| {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ["downstream refused caps {}", caps_str]
                    );
                    gst::FlowError::NotNegotiated
                })?;
            }
            // Raw video: the geometry comes from the sample's descriptor,
            // checked against the caps (see `crate::video::check`): a
            // descriptor that does not parse or fit the payload (another
            // process wrote it) or does not match the caps is an error,
            // never a GstVideoMeta announcing rows past the payload
            // (downstream elements such as videoconvert read every row it
            // announces, unchecked). A sample without one (a producer that
            // writes only the metadata header) has the caps' own layout,
            // which must fit the payload.
            let mut layout = None;
            if let Some(info) = &state.info {
                let fail = |kind: gst::StreamError, msg: String| {
                    gst::element_imp_error!(self, kind, ["{}", msg]);
                    gst::FlowError::Error
                };
                let found = match sample.descriptor() {
                    Ok(Some(d)) => {
                        video::check(info, &d).map_err(|e| fail(gst::StreamError::Format, e))?
                    }
                    Ok(None) => {
                        if sample.len() < info.size() {
                            return Err(fail(
                                gst::StreamError::Format,
                                format!(
                                    "a sample of {} bytes without a descriptor is shorter than \
                                     a {} {}x{} frame ({} bytes)",
                                    sample.len(),
                                    info.format(),
                                    info.width(),
                                    info.height(),
                                    info.size()
                                ),
                            ));
                        }
                        video::Layout::of_info(info)
                    }
                    Err(e) => {
                        return Err(fail(
                            gst::StreamError::Decode,
                            format!("malformed sample descriptor: {e}"),
                        ))
                    }
                };
                if found != video::Layout::of_info(info) {
                    layout = Some(found);
                }
            }
            let memory = if zero_copy && chan.held.load(Ordering::Relaxed) < chan.limit {
                chan.held.fetch_add(1, Ordering::Relaxed);
                self.zero_copy.fetch_add(1, Ordering::Relaxed);
                gst::Memory::from_slice(SampleMem {
                    raw: Some(sample.into_raw()),
                    chan: Arc::clone(chan),
                })
            } else {
                self.copied.fetch_add(1, Ordering::Relaxed);
                // Released when `sample` drops, at the end of this function.
                gst::Memory::from_slice(sample.as_slice().to_vec())
            };
            let mut buffer = gst::Buffer::new();
            {
                let b = buffer.get_mut().expect("a new buffer is writable");
                b.append_memory(memory);
                let t = |v: u64| (v != meta::NONE).then(|| gst::ClockTime::from_nseconds(v));
                b.set_pts(t(h.pts));
                b.set_dts(t(h.dts));
                b.set_duration(t(h.duration));
                if h.offset != meta::NONE {
                    b.set_offset(h.offset);
                }
                if h.offset_end != meta::NONE {
                    b.set_offset_end(h.offset_end);
                }
                b.set_flags(gst::BufferFlags::from_bits_truncate(h.flags));
                // Strides other than the caps' default ones travel as a
                // GstVideoMeta, as they would inside one process; the layout
                // was checked against the payload above.
                if let Some(l) = layout {
                    let info = state.info.as_ref().expect("checked with the info");
                    let _ = gst_video::VideoMeta::add_full(
                        b,
                        gst_video::VideoFrameFlags::empty(),
                        info.format(),
                        info.width(),
                        info.height(),
                        &l.offset[..l.n],
                        &l.stride[..l.n],
                    );
                }
            }
            Ok(buffer)
        }
    }

    impl BaseSrcImpl for BipsSrc {
        fn start(&self) -> Result<(), gst::ErrorMessage> {
            let owner = lock(&self.settings).owner_policy();
            let name = lock(&self.settings).channel.clone().ok_or_else(|| {
                gst::error_msg!(
                    gst::ResourceError::Settings,
                    ["bipssrc: set the channel property"]
                )
            })?;
            let mut state = lock(&self.state);
            *state = State::default();
            // Open now if the channel exists; else create() waits for it
            // (interruptibly), so a source may start before its producer.
            state.chan = Self::open(&name, owner)
                .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ["{}: {}", name, e]))?
                .map(SrcChan::new);
            Ok(())
        }

        fn stop(&self) -> Result<(), gst::ErrorMessage> {
            *lock(&self.state) = State::default();
            Ok(())
        }

        fn is_seekable(&self) -> bool {
            false
        }

        fn negotiate(&self) -> Result<(), gst::LoggableError> {
            // Caps come with the first sample (create() sets them).
            Ok(())
        }

        fn unlock(&self) -> Result<(), gst::ErrorMessage> {
            self.unlocked.store(true, Ordering::Release);
            Ok(())
        }

        fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
            self.unlocked.store(false, Ordering::Release);
            Ok(())
        }
    }

    impl PushSrcImpl for BipsSrc {
        fn create(
            &self,
            _buffer: Option<&mut gst::BufferRef>,
        ) -> Result<CreateSuccess, gst::FlowError> {
            let settings = lock(&self.settings).clone();
            let owner = settings.owner_policy();
            let name = settings.channel.unwrap_or_default();
            let deadline = (settings.timeout > 0)
                .then(|| Instant::now() + Duration::from_nanos(settings.timeout));
            let timed_out = |what: &str| {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Read,
                    ["no {} on channel {} within the timeout", what, name]
                );
                gst::FlowError::Error
            };
            let mut state = lock(&self.state);
            loop {
                if self.unlocked.load(Ordering::Acquire) {
                    return Err(gst::FlowError::Flushing);
                }
                let Some(chan) = state.chan.clone() else {
                    match Self::open(&name, owner.clone()) {
                        Ok(Some(c)) => state.chan = Some(SrcChan::new(c)),
                        Ok(None) => {
                            if deadline.is_some_and(|d| Instant::now() > d) {
                                return Err(timed_out("producer"));
                            }
                            std::thread::sleep(SLICE);
                        }
                        Err(e) => {
                            gst::element_imp_error!(
                                self,
                                gst::ResourceError::OpenRead,
                                ["{}: {}", name, e]
                            );
                            return Err(gst::FlowError::Error);
                        }
                    }
                    continue;
                };
                let got = {
                    let consumer = chan.consumer.lock().unwrap_or_else(|e| e.into_inner());
                    chan.settle(&consumer);
                    let got = match consumer.recv_timeout(SLICE) {
                        Ok(sample) => Ok(Some(self.buffer_of(
                            &mut state,
                            &chan,
                            sample,
                            settings.zero_copy,
                        ))),
                        Err(bips::Error::Timeout) => Ok(None),
                        Err(e) => Err(e),
                    };
                    got
                };
                match got {
                    Ok(Some(Ok(buffer))) => return Ok(CreateSuccess::NewBuffer(buffer)),
                    Ok(Some(Err(e))) => return Err(e),
                    Ok(None) => {
                        if deadline.is_some_and(|d| Instant::now() > d) {
                            return Err(timed_out("frame"));
                        }
                    }
                    Err(bips::Error::Disconnected) => {
                        gst::info!(crate::CAT, imp = self, "producer left: end of stream");
                        return Err(gst::FlowError::Eos);
                    }
                    Err(e) => {
                        gst::element_imp_error!(self, gst::ResourceError::Read, ["{}", e]);
                        return Err(gst::FlowError::Error);
                    }
                }
            }
        }
    }
}
