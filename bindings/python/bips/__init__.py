"""bips — zero-copy shared-memory buffers between processes.

One :class:`Producer` fills buffers from a fixed pool in POSIX shared memory
(``/dev/shm/bips.<name>``) and publishes them; any number of :class:`Consumer`
objects, in any process (Rust, C++ or Python), read the very same bytes in
place. Buffers support the Python buffer protocol, so NumPy arrays, memoryviews
and PyTorch tensors are views of the shared memory, not copies::

    import numpy as np
    import bips

    # Process A
    producer = bips.Producer("camera", buffers=4, size=640 * 480 * 3)
    with producer.loan() as buf:                   # a free buffer, in shared memory
        np.frombuffer(buf, np.uint8)[:] = 255      # write the pixels in place
    # leaving the block published it

    # Process B
    consumer = bips.Consumer("camera")
    for sample in consumer:                        # ends when the producer leaves
        frame = np.frombuffer(sample, np.uint8).reshape(480, 640, 3)  # no copy
        print(sample.seq, frame.mean())

Blocking calls release the GIL. A sample stays held (the producer never
rewrites its buffer) while the ``Sample`` or any view of it is alive;
``Sample.release()`` gives it back early and raises ``BufferError`` while views
exist. Errors are subclasses of :class:`bips.Error`.

Two wheels: ``cp311-abi3`` (CPython >= 3.11) has the buffer protocol;
``cp38-abi3`` (CPython 3.8-3.10: JetPack 5 and 6, ROS 2 Humble) cannot, the
stable ABI has none before 3.11 (:data:`HAS_BUFFER_PROTOCOL` is ``False``):
there use ``np.asarray(sample)`` / ``np.asarray(buf)`` (zero copy, same
lifetime rules), ``np.from_dlpack(sample)``, ``sample.raw`` and
``producer.loan(shape=..., dtype=...)``, not ``memoryview(sample)`` or
``np.frombuffer(sample)``.

The BIPS API's spelling works too (``bips._seed`` says what its arguments
mean)::

    producer = bips.Producer(bips.Backends.kShm, "/example", 10, 1024, True)
    buf = producer.Pull(); ...; producer.Push(buf)
"""

from ._bips import (
    HAS_BUFFER_PROTOCOL,
    MAX_HELD,
    MAX_HELD_LIMIT,
    ChannelBusy,
    Corrupt,
    Descriptor,
    DescriptorError,
    Disconnected,
    Error,
    HeldLimit,
    InvalidName,
    InvalidOptions,
    LayoutMismatch,
    NoSpace,
    NotFound,
    PermissionDenied,
    Sample,
    SampleMut,
    Timeout,
    TooManyConsumers,
    TypeMismatch,
    UntrustedOwner,
    __version__,
    list_channels,
    now_ns,
)
from ._seed import Backends, Consumer, Producer

__all__ = [
    "HAS_BUFFER_PROTOCOL",
    "MAX_HELD",
    "MAX_HELD_LIMIT",
    "Backends",
    "ChannelBusy",
    "Consumer",
    "Corrupt",
    "Descriptor",
    "DescriptorError",
    "Disconnected",
    "Error",
    "HeldLimit",
    "InvalidName",
    "InvalidOptions",
    "LayoutMismatch",
    "NoSpace",
    "NotFound",
    "PermissionDenied",
    "Producer",
    "Sample",
    "SampleMut",
    "Timeout",
    "TooManyConsumers",
    "TypeMismatch",
    "UntrustedOwner",
    "__version__",
    "list_channels",
    "now_ns",
]
