"""Back-ends over host file descriptors: one I/O thread polls them.

:class:`FdNet` is the common part of the ``socket`` and ``tap`` back-ends.
The I/O thread ``poll()``s the descriptors its subclass names (plus a wake-up
pipe) and reads frames while the queue towards the frontend has room.  Guest
frames are written on the machine's thread straight from the buffers given
(memoryviews of guest RAM) with a non-blocking write; only what the host
cannot take at once is copied into the output queue, which the I/O thread
flushes when the descriptor becomes writable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections import deque
from collections.abc import Callable

from vmforge.net.backend import Frame, NetBackend, frame_length

__all__ = ["FdNet"]

log = logging.getLogger("vmforge.net")

POLLIN, POLLOUT = select.POLLIN, select.POLLOUT
POLLERR = select.POLLERR | select.POLLHUP | select.POLLNVAL


class FdNet(NetBackend):
    """A back-end whose traffic goes through one host descriptor at a time.

    Subclasses implement :meth:`_io_fd` (the descriptor frames go through, or
    None while there is none), :meth:`_write_now` (a non-blocking write of the
    buffers, returning the bytes written), :meth:`_read_ready` (read what is
    there, calling :meth:`_arrived` for each frame) and may add descriptors to
    poll with :meth:`_extra_fds` / :meth:`_extra_event`.  ``stream`` back-ends
    may write part of a frame; datagram ones (tap, UDP) write whole frames.
    """

    stream = False

    def __init__(self, id: str = "", *,
                 dispatch: Callable[[Callable[[], None]], object] | None = None) -> None:
        super().__init__(id, dispatch=dispatch)
        self._wq: deque[bytes] = deque()
        self._wq_bytes = 0
        self._wlock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the I/O thread (subclasses call it once their descriptors are open)."""
        self._thread = threading.Thread(target=self._loop, name=f"netdev-{self.id}",
                                        daemon=True)
        self._thread.start()

    # -- subclass hooks -----------------------------------------------------------------

    def _io_fd(self) -> int | None:
        raise NotImplementedError

    def _write_now(self, parts: Frame) -> int:
        """Write ``parts`` without blocking: bytes written (BlockingIOError: none)."""
        raise NotImplementedError

    def _read_ready(self) -> None:
        raise NotImplementedError

    def _extra_fds(self) -> list[tuple[int, int]]:
        """More ``(fd, events)`` to poll (a listening socket)."""
        return []

    def _extra_event(self, fd: int, events: int) -> None:
        """One of :meth:`_extra_fds` is ready."""

    def _io_error(self, exc: OSError) -> None:
        """Reading or writing the descriptor failed (default: log it)."""
        log.warning("netdev %s: %s", self.id, exc)

    def _wire(self, frame: Frame, length: int) -> Frame:
        """The buffers that carry one frame on the wire (a stream adds a length)."""
        return frame

    # -- guest -> outside ----------------------------------------------------------------

    def _send(self, frame: Frame, length: int) -> bool:
        with self._wlock:
            if self._io_fd() is None:
                return False  # nothing connected: the cable is unplugged
            parts = self._wire(frame, length)
            if self._wq:
                self._queue(parts, 0)
                return True
            total = frame_length(parts)
            try:
                done = self._write_now(parts)
            except BlockingIOError:
                done = 0
            except OSError as exc:
                self._io_error(exc)
                return False
            if done < total:
                self._queue(parts, done)
        return True

    def _queue(self, parts: Frame, skip: int) -> None:
        data = b"".join(bytes(p) for p in parts)[skip:]  # the guest's buffers go back
        if self.stream or skip == 0:
            self._wq.append(data)
            self._wq_bytes += len(data)
        self._wake()

    def _tx_pending(self) -> int:
        return self._wq_bytes

    def _flush(self) -> None:
        """Write queued data (the I/O thread, when the descriptor is writable)."""
        drained = False
        with self._wlock:
            while self._wq:
                head = self._wq[0]
                try:
                    done = self._write_now([head])
                except BlockingIOError:
                    break
                except OSError as exc:
                    self._io_error(exc)
                    done = len(head)  # a frame that cannot go is dropped
                if done < len(head):
                    self._wq[0] = head[done:]
                    self._wq_bytes -= done
                    break
                self._wq.popleft()
                self._wq_bytes -= len(head)
            drained = not self._wq
        if drained:
            self._tx_drained()

    def _drop_output(self) -> None:
        """Forget queued output (the connection went away)."""
        with self._wlock:
            self._wq.clear()
            self._wq_bytes = 0
        self._tx_drained()

    # -- the I/O thread ------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _rx_resumed(self) -> None:
        self._wake()

    def _loop(self) -> None:
        try:
            while not self.closed:
                self._poll_once(None)
        except Exception:
            log.exception("netdev %s: I/O thread failed", self.id)

    def _poll_once(self, timeout_ms: int | None) -> None:
        poller = select.poll()
        poller.register(self._wake_r, POLLIN)
        fd = self._io_fd()
        if fd is not None:
            events = POLLIN if self.rx_room() else 0
            if self._wq:
                events |= POLLOUT
            if events:
                poller.register(fd, events)
        extra = self._extra_fds()
        for efd, events in extra:
            poller.register(efd, events)
        ready = poller.poll(timeout_ms)
        extra_fds = {efd for efd, _ in extra}
        for rfd, events in ready:
            if self.closed:
                return
            if rfd == self._wake_r:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 4096)
            elif rfd in extra_fds:
                self._extra_event(rfd, events)
            elif rfd == self._io_fd():
                if events & POLLOUT:
                    self._flush()
                if events & (POLLIN | POLLERR):
                    self._read_ready()

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
