//! # bips-gst — GStreamer elements over bips shared memory
//!
//! The plugin `bips` (`libgstbips.so`) has two elements:
//!
//! * `bipssink` publishes every buffer on a bips channel
//!   (`/dev/shm/bips.<channel>`), with its caps, timestamps, offsets and
//!   flags in the sample metadata ([`meta`] documents the layout) and, for
//!   raw video, a frame descriptor (shape, strides, pixel format, planes:
//!   [`video`]) that any bips consumer reads without GStreamer. It
//!   proposes upstream a buffer pool whose buffers are bips loans: a frame
//!   that upstream wrote into such a buffer is published in place, with no
//!   copy; any other buffer is copied once into a fresh loan. The `stats`,
//!   `zero-copy-buffers` and `copied-buffers` properties count both.
//! * `bipssrc` receives them in another process, sets the caps they carry
//!   (no hand-written caps), restores the timestamps, and ends the stream
//!   (EOS) when the producer leaves. Its output buffers are views of the
//!   shared buffers, no copy (a frame is copied only with `zero-copy=false`,
//!   or while downstream holds too many of them); the `zero-copy-buffers` and
//!   `copied-buffers` properties count both.
//!
//! ```text
//! gst-launch-1.0 videotestsrc ! video/x-raw,format=RGBA,width=1920,height=1080 \
//!     ! bipssink channel=camera
//! gst-launch-1.0 bipssrc channel=camera ! videoconvert ! autovideosink
//! ```
//!
//! A Python program reads the frames as NumPy arrays with `bips.gst.frames`,
//! which parses the same metadata layout; GStreamer is not needed there.
//!
//! Linking this crate as an rlib, [`plugin_register_static`] registers the
//! elements in-process (for tests and applications that embed them).

use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;

mod chan;
pub mod meta;
mod pool;
mod sink;
mod src;
pub mod video;

pub use sink::{BackpressureMode, BipsSink};
pub use src::BipsSrc;

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "bips",
        gst::DebugColorFlags::empty(),
        Some("bips shared-memory elements"),
    )
});

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "bipssink",
        gst::Rank::NONE,
        BipsSink::static_type(),
    )?;
    gst::Element::register(
        Some(plugin),
        "bipssrc",
        gst::Rank::NONE,
        BipsSrc::static_type(),
    )?;
    Ok(())
}

/// The plugin descriptor (`gst_plugin_bips_get_desc`, what GStreamer looks
/// for in `libgstbips.so`) and `plugin_register_static`.
#[allow(missing_docs)]
mod plugin {
    use super::plugin_init;

    gst::plugin_define!(
        bips,
        env!("CARGO_PKG_DESCRIPTION"),
        plugin_init,
        env!("CARGO_PKG_VERSION"),
        "MIT/X11",
        "bips",
        "bips",
        "https://example.invalid/bips"
    );
}

/// Registers `bipssink` and `bipssrc` in this process (when the crate is
/// linked in rather than loaded from `GST_PLUGIN_PATH`). Call after
/// `gst::init()`.
pub use plugin::plugin_register_static;
