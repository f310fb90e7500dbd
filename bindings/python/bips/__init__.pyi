"""Type stubs of bips (zero-copy shared-memory buffers between processes)."""

import enum
import os
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, final, overload

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

__version__: str
MAX_HELD: int
"""The default ``max_held`` of a channel (8)."""
MAX_HELD_LIMIT: int
"""The largest ``max_held`` a producer may choose (64)."""
HAS_BUFFER_PROTOCOL: bool
"""Whether this wheel has the buffer protocol (cp311-abi3: True; cp38-abi3: False)."""

Backpressure = Literal["block", "drop_oldest", "drop-oldest"]
WaitStrategy = Literal["spin_then_park", "spin-then-park", "spin", "park"]
StartAt = Literal["newest", "oldest", "next"]

class Backends(enum.IntEnum):
    """The transports of the BIPS API; bips has one, POSIX shared memory."""

    kShm = 0

class Error(Exception):
    """Base class of every bips error."""

class Timeout(Error, TimeoutError):
    """The call did not complete within its timeout."""

class Disconnected(Error):
    """The producer has gone and every remaining sample was received."""

class ChannelBusy(Error):
    """A live producer already owns this channel name."""

class NotFound(Error, FileNotFoundError):
    """The channel does not exist."""

class PermissionDenied(Error, PermissionError):
    """The OS refused access to /dev/shm/bips.<name>."""

class LayoutMismatch(Error):
    """The segment is not a usable bips channel (magic, version, geometry)."""

class Corrupt(Error):
    """A value in the shared segment is impossible (written outside the protocol)."""

class TooManyConsumers(Error):
    """The channel already has its maximum number of consumers."""

class HeldLimit(Error):
    """This consumer already holds the channel's ``max_held`` samples: release one first."""

class InvalidName(Error, ValueError):
    """The channel name is not 1 to 200 bytes of [A-Za-z0-9._-]."""

class InvalidOptions(Error, ValueError):
    """An option or a combination of options is not acceptable."""

class NoSpace(Error):
    """Not enough shared memory in /dev/shm for the channel."""

class TypeMismatch(Error):
    """The channel does not carry the payload type this consumer requires (``require_type=``)."""

class DescriptorError(Error, ValueError):
    """A frame/tensor descriptor is unusable (malformed, too big, or reaching past the sample)."""

@final
class Descriptor:
    """What a sample's bytes are: element type, shape, byte strides, offset, format, planes.

    ``dtype``: a name (``"uint8"``, ``"float32"``, ``"bfloat16"``, ...) or a NumPy
    dtype; ``strides`` in bytes (default C-contiguous); ``planes``:
    ``(offset, stride, rows, row_bytes)`` each. Raises :class:`DescriptorError`.
    """

    def __init__(
        self,
        dtype: object,
        shape: Sequence[int],
        strides: Sequence[int] | None = None,
        *,
        offset: int = 0,
        format: str | None = None,
        colorimetry: str | None = None,
        planes: Sequence[tuple[int, int, int, int]] | None = None,
    ) -> None: ...
    @property
    def dtype(self) -> str: ...
    @property
    def itemsize(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def strides(self) -> tuple[int, ...]:
        """Bytes between neighbours along each dimension."""
    @property
    def ndim(self) -> int: ...
    @property
    def offset(self) -> int:
        """Bytes from the buffer's start to element [0, ..., 0]."""
    @property
    def format(self) -> str | None:
        """Pixel format (``"RGBA"``, ``"GRAY16_LE"``, ``"NV12"``, ...)."""
    @property
    def colorimetry(self) -> str | None: ...
    @property
    def planes(self) -> list[tuple[int, int, int, int]]: ...
    @property
    def buffer_format(self) -> str | None:
        """PEP 3118 format (``"<B"``); ``None`` for bfloat16."""
    @property
    def typestr(self) -> str | None:
        """``__array_interface__`` typestr (``"|u1"``, ``"<f4"``); ``None`` for bfloat16."""
    @property
    def nbytes(self) -> int:
        """Bytes needed from the buffer's start."""
    @property
    def is_c_contiguous(self) -> bool: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class UntrustedOwner(PermissionDenied):
    """The channel's /dev/shm object is owned by a uid this process does not trust.

    By default only objects of this process's effective uid are opened; pass
    ``trust_owner=<uid>`` (or a list of uids) or ``trust_any_owner=True``.
    """

@final
class SampleMut(Buffer):
    """A loaned buffer, writable in place through the buffer protocol.

    Publish it with :meth:`publish` (or leave a ``with`` block cleanly); give it
    back unpublished with :meth:`discard` (or an exception in the ``with``
    block). Publishing raises ``BufferError`` while views of it are alive.
    """

    @property
    def capacity(self) -> int:
        """Bytes the buffer holds."""
    @property
    def meta_size(self) -> int:
        """Bytes of metadata ``publish`` accepts."""
    @property
    def done(self) -> bool:
        """Whether it was published or given back."""
    @property
    def seq(self) -> int | None:
        """The sequence number once published."""
    @property
    def descriptor(self) -> Descriptor | None:
        """The loan's descriptor (``loan(shape=...)`` or the channel's fixed one)."""
    @property
    def array(self) -> Any:
        """The NumPy array of a loan with a descriptor (made by bips; sealed read-only at publish)."""
    def publish(
        self,
        length: int | None = None,
        meta: Buffer | None = None,
        timestamp_ns: int | None = None,
    ) -> int:
        """Publishes the first ``length`` bytes (default all) with ``meta``; returns the sequence."""
    def discard(self) -> None:
        """Gives the buffer back unpublished."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...
    def __enter__(self) -> Any:
        """``self``; for ``loan(shape=...)``/``loan(descriptor=...)``, the NumPy array (``.array``)."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> bool: ...

@final
class Sample(Buffer):
    """A received sample: the producer's bytes in place, read-only (buffer protocol).

    Held (never rewritten by the producer) while this object or any view of it
    is alive. :meth:`release` gives it back early and raises ``BufferError``
    while views are alive.
    """

    @property
    def seq(self) -> int:
        """Sequence number, strictly increasing for this consumer."""
    @property
    def timestamp_ns(self) -> int:
        """The producer's timestamp (CLOCK_MONOTONIC ns, as ``time.monotonic_ns()``)."""
    @property
    def lagged(self) -> int:
        """Samples lost just before this one (``drop_oldest`` channels)."""
    @property
    def meta(self) -> bytes:
        """The per-sample metadata (``meta_size`` bytes, a copy)."""
    @property
    def released(self) -> bool:
        """Whether the sample was released."""
    @property
    def descriptor(self) -> Descriptor | None:
        """Its descriptor (own, else the channel's fixed one); DescriptorError if unusable."""
    @property
    def raw(self) -> memoryview:
        """The plain bytes, 1-D read-only (an export: keeps the sample held)."""
    @property
    def __array_interface__(self) -> dict[str, Any]:
        """Version 3; reading it pins the sample until it is freed."""
    def __array__(self, dtype: object = None, copy: bool | None = None) -> Any: ...
    def __dlpack__(
        self,
        *,
        stream: object = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> object:
        """A DLPack capsule (read-only for max_version >= (1, 0)); holds the sample."""
    def __dlpack_device__(self) -> tuple[int, int]:
        """``(1, 0)``: CPU."""
    def release(self) -> None:
        """Gives the buffer back; ``BufferError`` while views are alive."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...
    def __enter__(self) -> Sample: ...
    def __exit__(self, *args: object) -> bool: ...

@final
class Producer:
    """Creates channel ``name`` (``/dev/shm/bips.<name>``) with ``buffers`` buffers of ``size`` bytes.

    A stale object under ``name`` (its producer dead) is replaced only when its
    owner is this process's effective uid or trusted by ``trust_owner`` /
    ``trust_any_owner=True``; otherwise :class:`UntrustedOwner`.
    """

    @overload
    def __init__(
        self,
        backend: Backends,
        name: str,
        buffers: int,
        size: int,
        in_order: bool = True,
        /,
        **options: Any,
    ) -> None:
        """The BIPS spelling: ``in_order`` True is ``backpressure="block"``, False
        ``"drop_oldest"``; a leading ``/`` in ``name`` is dropped."""
    @overload
    def __init__(
        self,
        name: str,
        buffers: int,
        size: int,
        *,
        backpressure: Backpressure = "block",
        max_consumers: int = 8,
        meta_size: int = 64,
        max_held: int = 8,
        mode: int = 0o600,
        wait: WaitStrategy = "spin_then_park",
        ring_capacity: int | None = None,
        alignment: int | None = None,
        prefault: bool = False,
        trust_owner: int | Sequence[int] | None = None,
        trust_any_owner: bool = False,
        payload_type: tuple[str, int] | None = None,
        descriptor: Descriptor | None = None,
        backend: Literal["shm", "memfd"] = "shm",
        socket_dir: str | os.PathLike[str] | None = None,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def buffers(self) -> int: ...
    @property
    def buffer_size(self) -> int: ...
    @property
    def meta_size(self) -> int: ...
    @property
    def max_consumers(self) -> int: ...
    @property
    def max_held(self) -> int:
        """Samples one consumer may hold at once (the channel's ``max_held``)."""
    @property
    def payload_type(self) -> tuple[str, int] | None: ...
    @property
    def fixed_descriptor(self) -> Descriptor | None: ...
    @property
    def consumer_count(self) -> int:
        """Consumers attached right now."""
    @property
    def closed(self) -> bool: ...
    def loan(
        self,
        timeout: float | None = None,
        *,
        shape: Sequence[int] | None = None,
        dtype: object = None,
        strides: Sequence[int] | None = None,
        format: str | None = None,
        colorimetry: str | None = None,
        descriptor: Descriptor | None = None,
    ) -> SampleMut:
        """A free buffer, waiting at most ``timeout`` s (``None``: forever); raises Timeout.

        With ``shape``+``dtype`` (or ``descriptor``), ``with`` binds its NumPy array.
        """
    def send(
        self,
        array: Buffer,
        *,
        format: str | None = None,
        colorimetry: str | None = None,
        meta: Buffer | None = None,
        timestamp_ns: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Loans, copies ``array`` (any strides), describes and publishes it; returns the sequence."""
    def try_loan(self) -> SampleMut | None:
        """A free buffer if one is free now."""
    async def aloan(
        self, timeout: float | None = None, *, descriptor: Descriptor | None = None
    ) -> SampleMut:
        """``loan`` for asyncio: the event loop keeps running while it waits (no polling,
        no thread per wait); raises Timeout. Cancelling it leaves no buffer loaned."""
    def pull(self, timeout: float | None = None) -> SampleMut:
        """Alias of :meth:`loan`."""
    def Pull(self, timeout: float | None = None) -> SampleMut:
        """Alias of :meth:`loan` (BIPS API call shape)."""
    def push(
        self,
        buf: SampleMut,
        length: int | None = None,
        meta: Buffer | None = None,
        timestamp_ns: int | None = None,
    ) -> int:
        """Publishes ``buf``; returns its sequence number."""
    def Push(
        self,
        buf: SampleMut,
        length: int | None = None,
        meta: Buffer | None = None,
        timestamp_ns: int | None = None,
    ) -> int:
        """Alias of :meth:`push` (BIPS API call shape)."""
    def reap_dead_consumers(self) -> int:
        """Frees the entries of dead consumers; returns how many."""
    def close(self) -> None:
        """Closes the channel once no loan of it is alive (consumers drain, then Disconnected)."""
    def __enter__(self) -> Producer: ...
    def __exit__(self, *args: object) -> bool: ...

@final
class Consumer:
    """Opens channel ``name`` as a reader.

    Only a channel whose ``/dev/shm`` object is owned by this process's
    effective uid is opened (root: uid 0 only); another owner raises
    :class:`UntrustedOwner` unless ``trust_owner`` (a uid or a list of uids)
    or ``trust_any_owner=True`` trusts it.
    """

    @overload
    def __init__(
        self,
        backend: Backends,
        name: str,
        buffers: int,
        size: int,
        in_order: bool = True,
        /,
        **options: Any,
    ) -> None:
        """The BIPS spelling: raises LayoutMismatch unless the channel has ``buffers``
        buffers of ``size`` bytes and, with ``in_order`` True, is lossless
        (``"block"``); a leading ``/`` in ``name`` is dropped."""
    @overload
    def __init__(
        self,
        name: str,
        *,
        start: StartAt = "newest",
        wait: WaitStrategy = "spin_then_park",
        prefault: bool = False,
        trust_owner: int | Sequence[int] | None = None,
        trust_any_owner: bool = False,
        require_type: tuple[str, int] | None = None,
        socket_dir: str | os.PathLike[str] | None = None,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def buffers(self) -> int: ...
    @property
    def buffer_size(self) -> int: ...
    @property
    def meta_size(self) -> int: ...
    @property
    def max_consumers(self) -> int: ...
    @property
    def max_held(self) -> int:
        """Samples one consumer may hold at once (the channel's ``max_held``)."""
    @property
    def backpressure(self) -> Literal["block", "drop_oldest"]:
        """The channel's policy, set by its producer."""
    @property
    def payload_type(self) -> tuple[str, int] | None: ...
    @property
    def fixed_descriptor(self) -> Descriptor | None: ...
    @property
    def closed(self) -> bool: ...
    def recv(self, timeout: float | None = None) -> Sample:
        """The next sample, waiting at most ``timeout`` s; raises Timeout or Disconnected."""
    def try_recv(self) -> Sample | None:
        """The next sample if one is ready."""
    async def arecv(self, timeout: float | None = None) -> Sample:
        """``recv`` for asyncio: the event loop keeps running while it waits (no polling,
        no thread per wait); raises Timeout or Disconnected. Cancelling it
        (``task.cancel()``, ``asyncio.wait_for``) loses no sample."""
    def pull(self, timeout: float | None = None) -> Sample:
        """Alias of :meth:`recv`."""
    def Pull(self, timeout: float | None = None) -> Sample:
        """Alias of :meth:`recv` (BIPS API call shape)."""
    def push(self, sample: Sample) -> None:
        """Releases ``sample``."""
    def Push(self, sample: Sample) -> None:
        """Alias of :meth:`push` (BIPS API call shape)."""
    def close(self) -> None:
        """Detaches; live samples keep their buffers until released."""
    def __iter__(self) -> Iterator[Sample]: ...
    def __next__(self) -> Sample: ...
    def __aiter__(self) -> AsyncIterator[Sample]: ...
    async def __anext__(self) -> Sample:
        """``async for sample in consumer``: ends when the channel disconnects."""
    def __enter__(self) -> Consumer: ...
    def __exit__(self, *args: object) -> bool: ...

def list_channels() -> list[str]:
    """Names of the channels in /dev/shm (live or stale)."""

def now_ns() -> int:
    """CLOCK_MONOTONIC in nanoseconds (the clock of ``Sample.timestamp_ns``)."""

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
    "__version__",
    "list_channels",
    "now_ns",
]
