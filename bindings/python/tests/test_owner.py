"""T2: a consumer attaches only to a channel whose owner it trusts.

Another user's channel is made by a forked child that drops to uid 65534
(nobody) before creating it with mode 0o666, as an impostor could while the
real producer is down. Needs root; skipped otherwise.
"""

from __future__ import annotations

import os

import pytest

import bips

from conftest import shm_path, needs_buffer_protocol

OTHER = 65534

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (to create a channel as uid 65534)"
)


class ForeignProducer:
    """A producer of ``name`` in a child running as uid ``OTHER``.

    ``stop(leave=True)`` ends the child without closing the channel: its
    object stays behind, stale, as after a crash.
    """

    def __init__(self, name: str) -> None:
        ready_r, ready_w = os.pipe()
        self.order_r, self.order_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            code = 1
            try:
                os.setgroups([])
                os.setresgid(OTHER, OTHER, OTHER)
                os.setresuid(OTHER, OTHER, OTHER)
                p = bips.Producer(name, 2, 64, mode=0o666)
                os.write(ready_w, b"R")
                order = os.read(self.order_r, 1)
                if order == b"P":
                    buf = p.loan()
                    with memoryview(buf) as view:
                        view[:3] = b"\x07\x08\x09"
                    buf.publish(3)
                    os.write(ready_w, b"D")
                    order = os.read(self.order_r, 1)
                if order != b"L":
                    p.close()
                code = 0
            finally:
                os._exit(code)
        os.close(ready_w)
        self.ready_r = ready_r
        assert os.read(ready_r, 1) == b"R", "the child failed to create the channel"
        assert shm_path(name).stat().st_uid == OTHER

    def publish(self) -> None:
        os.write(self.order_w, b"P")
        assert os.read(self.ready_r, 1) == b"D"

    def stop(self, leave: bool = False) -> None:
        os.write(self.order_w, b"L" if leave else b"Q")
        _, status = os.waitpid(self.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@needs_buffer_protocol
def test_consumer_refuses_another_owner_unless_trusted(channel):
    kid = ForeignProducer(channel)
    try:
        with pytest.raises(bips.UntrustedOwner) as e:
            bips.Consumer(channel)
        msg = str(e.value)
        assert "owned by uid 65534" in msg and "trust_owner=65534" in msg, msg
        # A refusal of access: both of these catch it too.
        assert isinstance(e.value, bips.PermissionDenied)
        assert isinstance(e.value, PermissionError)
        with pytest.raises(bips.UntrustedOwner):
            bips.Consumer(channel, trust_owner=1234)

        consumers = [
            bips.Consumer(channel, trust_owner=OTHER, start="oldest"),
            bips.Consumer(channel, trust_owner=[1234, OTHER], start="oldest"),
            bips.Consumer(channel, trust_any_owner=True, start="oldest"),
        ]
        kid.publish()
        for c in consumers:
            with c.recv(timeout=5) as s:
                assert bytes(s) == b"\x07\x08\x09"
            c.close()

        for bad in ("65534", -1, 2**32, [OTHER, "x"]):
            with pytest.raises(bips.InvalidOptions, match="trust_owner"):
                bips.Consumer(channel, trust_owner=bad)
        with pytest.raises(ValueError, match="not both"):
            bips.Consumer(channel, trust_owner=OTHER, trust_any_owner=True)
    finally:
        kid.stop()
    assert not shm_path(channel).exists()


def test_producer_replaces_another_owners_stale_object_only_when_trusted(channel):
    ForeignProducer(channel).stop(leave=True)
    path = shm_path(channel)
    assert path.stat().st_uid == OTHER, "the stale object stays"
    with pytest.raises(bips.UntrustedOwner, match="uid 65534"):
        bips.Producer(channel, 2, 64)
    assert path.stat().st_uid == OTHER, "not replaced"
    p = bips.Producer(channel, 2, 64, trust_owner=OTHER)
    assert path.stat().st_uid == 0, "replaced by ours"
    p.close()
    assert not path.exists()
