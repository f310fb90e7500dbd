"""asyncio coroutines of ``Consumer.arecv``, ``async for`` and ``Producer.aloan``.

The wait objects (``_RecvWait``, ``_LoanWait``) are Rust: ``poll()`` receives
(or loans) if it can, else arms bips's doorbell reactor to make the wait's
eventfd readable when the channel's futex word changes (or the liveness slice
or the timeout passes) and returns ``None``. The coroutine then awaits the
eventfd through ``loop.add_reader``: the event loop keeps running and nothing
polls. ``end()`` in ``finally`` ends the wait on every way out.

Cancel safety: a sample is taken from the channel only by a ``poll()`` that
returns it, and it is returned at once, with no ``await`` in between; a
cancel can only land on the ``await`` of the eventfd, before anything was
received.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import _bips


def _ready(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


async def _drive(wait: Any) -> Any:
    loop = asyncio.get_running_loop()
    fd = wait.fileno()
    try:
        while True:
            got = wait.poll()
            if got is not None:
                return got
            fut = loop.create_future()
            loop.add_reader(fd, _ready, fut)
            try:
                await fut
            finally:
                loop.remove_reader(fd)
    finally:
        wait.end()


async def arecv(consumer: Any, timeout: "float | None" = None) -> Any:
    # Fast path: a sample is ready (no eventfd, no reactor).
    sample = consumer.try_recv()
    if sample is not None:
        return sample
    return await _drive(consumer._recv_wait(timeout))


async def anext(consumer: Any) -> Any:
    try:
        return await arecv(consumer)
    except _bips.Disconnected:
        raise StopAsyncIteration from None


async def aloan(wait: Any) -> Any:
    return await _drive(wait)
