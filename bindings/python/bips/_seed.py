"""The BIPS API's spelling, as a thin layer over the real classes.

Code written for BIPS runs with ``import bips``::

    producer = bips.Producer(bips.Backends.kShm, "/example", 10, 1024, True)
    buf = producer.Pull()           # a free buffer to fill (a SampleMut)
    ...
    producer.Push(buf)              # publishes it

    consumer = bips.Consumer(bips.Backends.kShm, "/example", 10, 1024, True)
    buf = consumer.Pull()           # the next buffer to read (a Sample)
    ...
    consumer.Push(buf)              # gives it back

``bips.Producer`` and ``bips.Consumer`` are these dispatchers: called with a
``bips.Backends`` member first they take the BIPS arguments, otherwise they
are the real constructors (``bips.Producer(name, buffers, size, **options)``,
``bips.Consumer(name, **options)``). Either way the object made is the real
``Producer``/``Consumer``, with ``Pull``/``Push`` and the whole API.

The BIPS arguments (backend, name, buffers, size, in_order):

* ``backend``: ``bips.Backends.kShm``, the one transport (POSIX shared memory).
* ``name``: a leading ``/`` (POSIX shm style) is dropped, so ``"/example"`` is
  the channel ``example`` (``/dev/shm/bips.example``). Only here: the real
  constructors keep refusing ``/`` in names.
* ``buffers``, ``size``: the pool. A consumer checks them against the
  channel's and raises :class:`bips.LayoutMismatch` when they differ.
* ``in_order`` (the name BIPS gives the flag): ``True`` is a lossless channel,
  every buffer reaches every consumer in order and the slowest consumer paces
  the producer (``backpressure="block"``); ``False`` is latest-wins, a slow
  consumer skips to newer buffers (``backpressure="drop_oldest"``). The
  producer sets the channel's policy; a consumer passing ``True`` requires a
  lossless channel (:class:`bips.LayoutMismatch` on a latest-wins one), while
  ``False`` accepts either.

Further keyword arguments go to the real constructor (``meta_size=``,
``start=``, ``trust_owner=``, ...). ``Pull(timeout)`` takes seconds, as the
real API does.
"""

from __future__ import annotations

import enum
from typing import Any

from . import _bips

__all__ = ["Backends", "Consumer", "Producer"]


class Backends(enum.IntEnum):
    """The transports of the BIPS API; bips has one, POSIX shared memory."""

    kShm = 0


def _channel_name(name: str) -> str:
    # POSIX shm names are spelled "/name"; bips names carry no slash.
    if isinstance(name, str) and name.startswith("/"):
        return name[1:]
    return name


def _seed_producer(
    backend: Backends, name: str, buffers: int, size: int, in_order: bool = True, **options: Any
) -> _bips.Producer:
    policy = "block" if in_order else "drop_oldest"
    return _bips.Producer(_channel_name(name), buffers, size, backpressure=policy, **options)


def _seed_consumer(
    backend: Backends, name: str, buffers: int, size: int, in_order: bool = True, **options: Any
) -> _bips.Consumer:
    consumer = _bips.Consumer(_channel_name(name), **options)
    problem = None
    if (consumer.buffers, consumer.buffer_size) != (buffers, size):
        problem = (
            f"channel {consumer.name!r} has {consumer.buffers} buffers of {consumer.buffer_size} bytes, "
            f"but this consumer was written for {buffers} buffers of {size} bytes: "
            "pass the producer's geometry (consumer.buffers, consumer.buffer_size)"
        )
    elif in_order and consumer.backpressure != "block":
        problem = (
            f"channel {consumer.name!r} is latest-wins (backpressure={consumer.backpressure!r}), "
            "but this consumer asked for in_order=True (every buffer, none skipped): "
            "pass in_order=False to read it, or make the producer lossless"
        )
    if problem is not None:
        consumer.close()
        raise _bips.LayoutMismatch(problem)
    return consumer


_SEED_DOC = """

Also ``{cls}(bips.Backends.kShm, name, buffers, size, in_order)``, the BIPS
API's spelling (``help(bips._seed)``).
"""


class _Dispatch(type):
    """``isinstance``/``issubclass`` and attribute look-ups go to the real class."""

    _real: type

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls._real)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls._real)

    def __getattr__(cls, name: str) -> Any:
        return getattr(cls._real, name)

    def __repr__(cls) -> str:
        return repr(cls._real)


class Producer(metaclass=_Dispatch):
    _real = _bips.Producer
    __doc__ = (_bips.Producer.__doc__ or "") + _SEED_DOC.format(cls="Producer")
    __module__ = "bips"

    def __new__(cls, *args: Any, **kwargs: Any) -> _bips.Producer:  # type: ignore[misc]
        if args and isinstance(args[0], Backends):
            return _seed_producer(*args, **kwargs)
        return _bips.Producer(*args, **kwargs)


class Consumer(metaclass=_Dispatch):
    _real = _bips.Consumer
    __doc__ = (_bips.Consumer.__doc__ or "") + _SEED_DOC.format(cls="Consumer")
    __module__ = "bips"

    def __new__(cls, *args: Any, **kwargs: Any) -> _bips.Consumer:  # type: ignore[misc]
        if args and isinstance(args[0], Backends):
            return _seed_consumer(*args, **kwargs)
        return _bips.Consumer(*args, **kwargs)
