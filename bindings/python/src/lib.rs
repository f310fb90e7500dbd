//! Python bindings of `bips`: the native module `bips._bips`, re-exported by
//! the pure-Python package `bips` (`bindings/python/bips/__init__.py`).
//!
//! Built with maturin (`maturin develop --release -m bindings/python/Cargo.toml`),
//! which sets `PYO3_BUILD_EXTENSION_MODULE` (PyO3 0.30's replacement for the
//! `extension-module` feature). The crate has no Rust test targets, so
//! `cargo test --workspace` never links it.
//!
//! The safety argument (lifetimes, threads, buffer exports) is written at the
//! top of `consumer.rs`, `producer.rs` and `serial.rs`.

use std::time::{Duration, Instant};

use pyo3::prelude::*;

mod aio;
mod consumer;
mod errors;
#[cfg(feature = "abi3-py38")]
mod export;
mod frames;
mod producer;
mod send;
mod serial;

/// Whether this build has the buffer protocol: the cp311-abi3 wheel does;
/// the cp38-abi3 one (feature `abi3-py38`) cannot, since the stable ABI
/// before 3.11 has no `bf_getbuffer` slot (`bips.HAS_BUFFER_PROTOCOL`).
pub(crate) const HAS_BUFFER_PROTOCOL: bool = cfg!(not(feature = "abi3-py38"));

/// Longest time a blocking call stays in Rust without coming back for
/// signals (Ctrl-C), `close()` and other threads using the same object.
/// Longer than `bips`' 50 ms liveness slice, so a wait inside one slice still
/// notices a dead peer.
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// The deadline for `timeout` seconds (`None`: no deadline).
pub(crate) fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    let Some(t) = timeout else { return Ok(None) };
    if t.is_nan() || t < 0.0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be None or a number of seconds >= 0, not {t}"
        )));
    }
    // An absurdly long timeout is as good as none.
    Ok(Duration::try_from_secs_f64(t)
        .ok()
        .and_then(|d| Instant::now().checked_add(d)))
}

/// The next slice to block for, or `None` once `deadline` passed.
pub(crate) fn slice_until(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(SLICE),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(SLICE))
        }
    }
}

fn invalid(what: &str, value: &str, allowed: &str) -> PyErr {
    errors::new_err(
        errors::Kind::InvalidOptions,
        format!("invalid {what} {value:?}: use one of {allowed}"),
    )
}

pub(crate) fn parse_wait(s: &str) -> PyResult<bips::WaitStrategy> {
    match s.replace('-', "_").as_str() {
        "spin_then_park" => Ok(bips::WaitStrategy::default()),
        "spin" => Ok(bips::WaitStrategy::Spin),
        "park" => Ok(bips::WaitStrategy::Park),
        _ => Err(invalid("wait", s, "\"spin_then_park\", \"spin\", \"park\"")),
    }
}

pub(crate) fn parse_backpressure(s: &str) -> PyResult<bips::Backpressure> {
    match s.replace('-', "_").as_str() {
        "block" => Ok(bips::Backpressure::Block),
        "drop_oldest" => Ok(bips::Backpressure::DropOldest),
        _ => Err(invalid("backpressure", s, "\"block\", \"drop_oldest\"")),
    }
}

pub(crate) fn parse_start(s: &str) -> PyResult<bips::Start> {
    match s {
        "newest" => Ok(bips::Start::Newest),
        "oldest" => Ok(bips::Start::Oldest),
        "next" => Ok(bips::Start::Next),
        _ => Err(invalid("start", s, "\"newest\", \"oldest\", \"next\"")),
    }
}

/// The owner trust of the `trust_owner=` / `trust_any_owner=` keyword
/// arguments: `trust_owner` an int (a uid) or a sequence of ints.
pub(crate) fn parse_trust(
    trust_owner: Option<&Bound<'_, PyAny>>,
    trust_any_owner: bool,
) -> PyResult<bips::OwnerPolicy> {
    let uids: Vec<u32> = match trust_owner {
        None => Vec::new(),
        Some(v) if v.is_none() => Vec::new(),
        Some(v) => match v.extract::<u32>() {
            Ok(uid) => vec![uid],
            Err(_) if v.is_instance_of::<pyo3::types::PyString>() => {
                return Err(trust_invalid(v));
            }
            Err(_) => v.extract::<Vec<u32>>().map_err(|_| trust_invalid(v))?,
        },
    };
    if trust_any_owner {
        if !uids.is_empty() {
            return Err(errors::new_err(
                errors::Kind::InvalidOptions,
                "give trust_owner=<uid> or trust_any_owner=True, not both",
            ));
        }
        return Ok(bips::OwnerPolicy::Any);
    }
    Ok(uids
        .into_iter()
        .fold(bips::OwnerPolicy::default(), bips::OwnerPolicy::with_uid))
}

fn trust_invalid(v: &Bound<'_, PyAny>) -> PyErr {
    errors::new_err(
        errors::Kind::InvalidOptions,
        format!(
            "invalid trust_owner {}: use a uid (an int from 0 to 4294967295) or a list of uids",
            v.repr().map(|r| r.to_string()).unwrap_or_default()
        ),
    )
}

/// A payload type from the `payload_type=` / `require_type=` keywords.
pub(crate) fn payload_type(
    name: &str,
    version: u32,
    descriptor: Option<bips::Descriptor>,
) -> PyResult<bips::PayloadType> {
    let t = bips::PayloadType::new(name, version).map_err(|e| {
        errors::new_err(
            errors::Kind::InvalidOptions,
            format!("invalid payload type name {name:?}: {e} (1 to 63 printable ASCII bytes)"),
        )
    })?;
    Ok(match descriptor {
        Some(d) => t.with_descriptor(d),
        None => t,
    })
}

/// Names of the channels in `/dev/shm` (live or stale).
#[pyfunction]
fn list_channels() -> PyResult<Vec<String>> {
    Ok(bips::list_channels()?)
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `Sample.timestamp_ns`
/// (the same as `time.monotonic_ns()`).
#[pyfunction]
fn now_ns() -> u64 {
    bips::now_ns()
}

/// The native part of `bips`; import `bips` instead.
#[pymodule]
fn _bips(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<producer::Producer>()?;
    m.add_class::<producer::SampleMut>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<consumer::Sample>()?;
    m.add_class::<aio::RecvWait>()?;
    m.add_class::<aio::LoanWait>()?;
    m.add_class::<frames::PyDescriptor>()?;
    #[cfg(feature = "abi3-py38")]
    m.add_class::<export::Export>()?;
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(list_channels, m)?)?;
    m.add_function(wrap_pyfunction!(now_ns, m)?)?;
    m.add("MAX_HELD", bips::MAX_HELD)?;
    m.add("MAX_HELD_LIMIT", bips::MAX_HELD_LIMIT)?;
    m.add("HAS_BUFFER_PROTOCOL", HAS_BUFFER_PROTOCOL)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
