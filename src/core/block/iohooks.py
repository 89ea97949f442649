"""What a :class:`~vmforge.block.backend.BlockBackend` does around each request
while block jobs watch it: dirty bitmaps, before-write notifiers, overlapping
requests kept apart, and draining.

A backend carries an :class:`IoHooks` only while something is attached (a
bitmap, a notifier, a job that serialises ranges); without one a request costs
its in-flight count (two list operations) and two attribute checks.

- **Dirty bitmaps** are marked after a write's data has landed, so a job that
  clears a chunk before reading it either reads the new data or sees the
  chunk dirty again (QEMU's ``bdrv_co_write_req_finish``).
- **Write notifiers** are called with ``(offset, length)`` before the data
  lands, on the writer's thread, and may block the write (backup's
  copy-before-write).
- **Serialising requests** (:meth:`RangeTracker.begin` with ``serialising``):
  a job copying a range and a guest write to it wait for each other instead
  of interleaving (QEMU's ``bdrv_mark_request_serialising``).
- **Drain** (:class:`Gate`): new requests wait, requests in flight finish; the
  draining thread alone may issue requests meanwhile (a pivot's last copy).
"""

from __future__ import annotations

from _thread import get_ident

from vmforge.lazy import lazy_contextmanager

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterator

    from vmforge.block.bitmap import DirtyBitmap

__all__ = ["Gate", "IoHooks", "RangeTracker", "WriteNotifier"]

#: called before a write (or zero-write, discard, growth) of ``(offset, length)`` lands
#: (the alias is the type checker's: collections.abc is not imported at start-up)
if TYPE_CHECKING:
    WriteNotifier = Callable[[int, int], None]
else:
    WriteNotifier = "Callable[[int, int], None]"


def _condition() -> threading.Condition:
    import threading

    return threading.Condition()


class Gate:
    """Requests in flight, and drained sections that stop new ones."""

    def __init__(self) -> None:
        #: one entry per request in progress (append and pop are atomic under the GIL)
        self.inflight: list[None] = []
        self.quiesced = 0
        self.owner: int | None = None

    @property
    def cond(self) -> threading.Condition:
        """The condition drained sections wait on, made on first use (threading is
        not imported by a command that drains nothing)."""
        cond = self.__dict__.get("_cond")
        if cond is None:        # setdefault: two threads' first uses share one
            cond = self.__dict__.setdefault("_cond", _condition())
        return cond

    def enter(self) -> None:
        self.inflight.append(None)
        if self.quiesced and self.owner != get_ident():
            self._wait()

    def leave(self) -> None:
        self.inflight.pop()
        if self.quiesced:
            with self.cond:
                self.cond.notify_all()

    def _wait(self) -> None:
        with self.cond:
            self.inflight.pop()
            self.cond.notify_all()
            me = get_ident()
            while self.quiesced and self.owner != me:
                self.cond.wait()
            self.inflight.append(None)

    @lazy_contextmanager
    def drained(self) -> Iterator[None]:
        """No request of another thread runs inside; those in flight finished first."""
        me = get_ident()
        with self.cond:
            while self.quiesced and self.owner != me:
                self.cond.wait()
            self.quiesced += 1
            self.owner = me
            while self.inflight:
                self.cond.wait(0.05)
        try:
            yield
        finally:
            with self.cond:
                self.quiesced -= 1
                if not self.quiesced:
                    self.owner = None
                self.cond.notify_all()


class _Request:
    __slots__ = ("end", "offset", "serialising", "thread")

    def __init__(self, offset: int, end: int, serialising: bool) -> None:
        self.offset = offset
        self.end = end
        self.serialising = serialising
        self.thread = get_ident()


class RangeTracker:
    """Requests in progress by range; a serialising one excludes overlapping others
    (those of the same thread excepted: a job's own I/O inside its range)."""

    def __init__(self) -> None:
        self._reqs: list[_Request] = []
        self._cond = _condition()
        #: serialising requests in progress (none: begin() never waits)
        self._serialising = 0

    def begin(self, offset: int, length: int, serialising: bool = False) -> _Request:
        req = _Request(offset, offset + max(length, 1), serialising)
        with self._cond:
            while self._conflict(req):
                self._cond.wait()
            self._reqs.append(req)
            self._serialising += serialising
        return req

    def _conflict(self, req: _Request) -> bool:
        if not req.serialising and not self._serialising:
            return False
        return any(r.offset < req.end and req.offset < r.end and r.thread != req.thread
                   and (r.serialising or req.serialising) for r in self._reqs)

    def end(self, req: _Request) -> None:
        with self._cond:
            self._reqs.remove(req)
            self._serialising -= req.serialising
            self._cond.notify_all()

    @lazy_contextmanager
    def serialised(self, offset: int, length: int) -> Iterator[None]:
        req = self.begin(offset, length, True)
        try:
            yield
        finally:
            self.end(req)


class IoHooks:
    """The bitmaps, notifiers and tracked requests of one backend."""

    def __init__(self) -> None:
        self.bitmaps: list[DirtyBitmap] = []
        self.notifiers: list[WriteNotifier] = []
        self.tracker = RangeTracker()
        #: users of range serialisation (jobs)
        self.serialisers = 0

    def empty(self) -> bool:
        return not (self.bitmaps or self.notifiers or self.serialisers)

    def write(self, offset: int, length: int, do: Callable[[], None]) -> None:
        """Run ``do`` (the write of the range) between the notifiers and the bitmaps,
        as a tracked request."""
        req = self.tracker.begin(offset, length)
        try:
            for notify in tuple(self.notifiers):
                notify(offset, length)
            do()
            for bm in tuple(self.bitmaps):
                bm.mark(offset, length)
        finally:
            self.tracker.end(req)

    def resized(self, old: int, new: int, do: Callable[[], None]) -> None:
        """A truncate: notifiers hear of a shrunk range before, bitmaps follow the size
        and mark what changed."""
        lo, hi = min(old, new), max(old, new)
        req = self.tracker.begin(lo, hi - lo)
        try:
            if new < old:
                for notify in tuple(self.notifiers):
                    notify(lo, hi - lo)
            do()
            for bm in tuple(self.bitmaps):
                bm.resize(new)
                bm.mark(lo, hi - lo)
        finally:
            self.tracker.end(req)
