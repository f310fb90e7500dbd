//! The exception classes of the `bips` module and the mapping from
//! [`bips::Error`].
//!
//! Each class derives from `bips.Error`; where a built-in exception means the
//! same thing it is a second base, so `except TimeoutError` or
//! `except FileNotFoundError` work too.

use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyPermissionError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::PyTypeInfo;

/// The exception kinds, in the order of [`CLASSES`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Error,
    Timeout,
    Disconnected,
    ChannelBusy,
    NotFound,
    PermissionDenied,
    LayoutMismatch,
    Corrupt,
    TooManyConsumers,
    HeldLimit,
    InvalidName,
    InvalidOptions,
    NoSpace,
    UntrustedOwner,
    TypeMismatch,
    Descriptor,
}

/// Name, extra built-in base, docstring.
type ClassSpec = (
    &'static str,
    Option<fn(Python<'_>) -> Bound<'_, PyType>>,
    &'static str,
);

const CLASSES: [ClassSpec; 16] = [
    ("Error", None, "Base class of every bips error."),
    (
        "Timeout",
        Some(PyTimeoutError::type_object),
        "The call did not complete within its timeout (also a TimeoutError).",
    ),
    (
        "Disconnected",
        None,
        "The producer has gone (closed or died) and every remaining sample was received.",
    ),
    (
        "ChannelBusy",
        None,
        "A live producer already owns this channel name.",
    ),
    (
        "NotFound",
        Some(PyFileNotFoundError::type_object),
        "The channel does not exist (also a FileNotFoundError).",
    ),
    (
        "PermissionDenied",
        Some(PyPermissionError::type_object),
        "The OS refused access to /dev/shm/bips.<name> (also a PermissionError).",
    ),
    (
        "LayoutMismatch",
        None,
        "The segment is not a usable bips channel: bad magic, another layout version or impossible geometry.",
    ),
    (
        "Corrupt",
        None,
        "A value in the shared segment is impossible: a process wrote into it outside the protocol.",
    ),
    (
        "TooManyConsumers",
        None,
        "The channel already has its maximum number of consumers.",
    ),
    (
        "HeldLimit",
        None,
        "This consumer already holds as many samples as it may (8): release one first.",
    ),
    (
        "InvalidName",
        Some(PyValueError::type_object),
        "The channel name is not 1 to 200 bytes of [A-Za-z0-9._-] (also a ValueError).",
    ),
    (
        "InvalidOptions",
        Some(PyValueError::type_object),
        "An option or a combination of options is not acceptable (also a ValueError).",
    ),
    (
        "NoSpace",
        None,
        "Not enough shared memory in /dev/shm for the channel.",
    ),
    (
        "UntrustedOwner",
        None,
        "The channel's /dev/shm object is owned by a uid this process does not trust \
         (see trust_owner= / trust_any_owner=); a PermissionDenied.",
    ),
    (
        "TypeMismatch",
        None,
        "The channel does not carry the payload type this consumer requires (require_type=).",
    ),
    (
        "DescriptorError",
        Some(PyValueError::type_object),
        "A frame/tensor descriptor is unusable: malformed, too big for its buffer, or \
         (from another process) reaching past the sample (also a ValueError).",
    ),
];

static TYPES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

fn types(py: Python<'_>) -> PyResult<&Vec<Py<PyType>>> {
    TYPES.get_or_try_init(py, || {
        let type_ = py.get_type::<PyType>();
        let mut out: Vec<Py<PyType>> = Vec::with_capacity(CLASSES.len());
        for (name, extra, doc) in CLASSES {
            let dict = PyDict::new(py);
            dict.set_item("__module__", "bips")?;
            dict.set_item("__doc__", doc)?;
            let base = match (name, out.first()) {
                // A refusal of access too: `except bips.PermissionDenied`
                // (and `except PermissionError`) catch it.
                ("UntrustedOwner", _) => out[Kind::PermissionDenied as usize].bind(py).clone(),
                (_, Some(error)) => error.bind(py).clone(),
                (_, None) => PyException::type_object(py),
            };
            let bases = match extra {
                Some(builtin) => PyTuple::new(py, [base, builtin(py)])?,
                None => PyTuple::new(py, [base])?,
            };
            let class = type_.call1((name, bases, dict))?.cast_into::<PyType>()?;
            out.push(class.unbind());
        }
        Ok(out)
    })
}

/// Adds every exception class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    for ((name, _, _), class) in CLASSES.iter().zip(types(py)?) {
        m.add(*name, class.bind(py))?;
    }
    Ok(())
}

/// A new exception of `kind` with `msg`.
pub(crate) fn new_err(kind: Kind, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match types(py) {
        Ok(types) => PyErr::from_type(types[kind as usize].bind(py).clone(), msg),
        Err(e) => e,
    })
}

/// Whether `e` is an instance of the exception class of `kind`.
pub(crate) fn is_kind(py: Python<'_>, e: &PyErr, kind: Kind) -> bool {
    types(py).is_ok_and(|t| e.is_instance(py, t[kind as usize].bind(py)))
}

/// The Python exception for a `bips::Error`.
pub(crate) fn to_py(e: bips::Error) -> PyErr {
    use bips::Error as E;
    let kind = match &e {
        E::InvalidName { .. } => Kind::InvalidName,
        E::InvalidOptions(_) => Kind::InvalidOptions,
        E::ChannelBusy { .. } => Kind::ChannelBusy,
        E::NotFound { .. } => Kind::NotFound,
        E::PermissionDenied { .. } | E::StaleNotRemovable { .. } => Kind::PermissionDenied,
        E::UntrustedOwner { .. } => Kind::UntrustedOwner,
        E::NoSpace { .. } => Kind::NoSpace,
        E::Timeout => Kind::Timeout,
        E::Disconnected | E::Closed => Kind::Disconnected,
        E::TooManyConsumers { .. } => Kind::TooManyConsumers,
        E::HeldLimit { .. } => Kind::HeldLimit,
        E::Layout { .. } => Kind::LayoutMismatch,
        E::Corrupt { .. } => Kind::Corrupt,
        E::TypeMismatch { .. } => Kind::TypeMismatch,
        E::Descriptor(_) => Kind::Descriptor,
        _ => Kind::Error, // Io, and variants added later
    };
    new_err(kind, e.to_string())
}

/// `Result<T, bips::Error>` -> `PyResult<T>`.
pub(crate) trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for bips::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
