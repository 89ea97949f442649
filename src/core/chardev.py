"""Character back-ends: the host end of a guest's serial port (QEMU's chardev).

A device (a UART, a virtio console) is the *frontend*; it writes guest output
with :meth:`CharBackend.write` and receives host input through the frontend
protocol (:class:`CharFrontend`)::

    uart = Ns16550a(chardev=BufferChar())
    uart.chardev.feed(b"root\\n")           # input, delivered as the FIFO has room
    uart.chardev.wait_for(b"login:", 5.0)  # guest output

Input has flow control: the back-end only hands the frontend as many bytes as
``frontend.can_receive()`` allows and keeps the rest queued, so no byte is
lost however fast it arrives.  A frontend calls :meth:`CharBackend.accept_input`
when it has room again (QEMU's ``qemu_chr_fe_accept_input``).

Threads: input may be delivered from the back-end's reader thread (``StdioChar``)
or from the thread that calls :meth:`BufferChar.feed`/``accept_input``; one
thread delivers at a time, in order.  A frontend therefore guards its state with
its own lock, and must not call back into the back-end while holding that lock.
A machine that wants new input handled on its own loop sets
:attr:`CharBackend.dispatch` to a function that schedules a callable there.

Implementations: :class:`NullChar`, :class:`BufferChar`, :class:`FileChar`,
:class:`StdioChar`; :func:`chardev_from_spec` parses QEMU's ``-serial`` values.
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import os
import select
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Callable

from vmforge.errors import VmforgeError

TYPE_CHECKING = False
if TYPE_CHECKING:   # (socket and what it imports, ~3 ms, when a socket is asked for)
    import re
    import socket
    from typing import Any, Protocol, runtime_checkable
else:
    from vmforge.typing_runtime import Protocol, runtime_checkable

__all__ = [
    "BufferChar",
    "CharBackend",
    "CharFrontend",
    "ChardevError",
    "DeliveryPump",
    "FileChar",
    "NullChar",
    "SocketChar",
    "StdioChar",
    "chardev_from_spec",
]


class ChardevError(VmforgeError, ValueError):
    """A character back-end was specified or used wrongly."""


@runtime_checkable
class CharFrontend(Protocol):
    """What a back-end asks of the device it feeds.

    A frontend may also define ``receive_break() -> None`` to hear a line
    break (it is queued in order with the bytes and needs ``can_receive() >= 1``).
    """

    def can_receive(self) -> int:
        """How many bytes the frontend takes now (0: none, keep them queued)."""
        ...

    def receive(self, data: bytes) -> None:
        """Take ``data`` (never longer than the last ``can_receive()``)."""
        ...


class _Break:
    """Queue marker for a line break."""

    def __repr__(self) -> str:
        return "BREAK"


_BREAK = _Break()


class DeliveryPump:
    """Calls ``deliver`` on one thread at a time, each time it is called.

    The input queues of back-ends (this module's, and network back-ends') are
    filled by host threads and drained into a frontend by ``deliver``.  A call
    while another thread is delivering does not wait: it is noted, and that
    thread delivers once more before it stops, so no wake-up is lost and what
    is queued never overtakes itself.
    """

    def __init__(self, deliver: Callable[[], None]) -> None:
        self._deliver = deliver
        self._lock = threading.Lock()
        self._running = False
        self._wanted = False

    def __call__(self) -> None:
        with self._lock:
            self._wanted = True
            if self._running:
                return
            self._running = True
        try:
            while True:
                with self._lock:
                    if not self._wanted:
                        self._running = False
                        return
                    self._wanted = False
                self._deliver()
        except BaseException:
            with self._lock:
                self._running = False
            raise


class CharBackend:
    """Base class: output sink plus a flow-controlled input queue.

    Subclasses implement :meth:`_write` for output and call :meth:`_push_input`
    (or :meth:`send_break`) when host input arrives.
    """

    def __init__(self) -> None:
        self._out_lock = threading.Lock()
        self._in_lock = threading.Lock()
        self._queue: deque[bytes | _Break] = deque()
        self._queued = 0
        self._frontend: CharFrontend | None = None
        #: delivers queued input to the frontend, one thread at a time
        self._pump = DeliveryPump(self._deliver)
        self.closed = False
        #: None: deliver new input on the thread it arrives on; else a function
        #: that runs the delivery callable it is given on the machine's loop.
        self.dispatch: Callable[[Callable[[], None]], object] | None = None

    # -- output ---------------------------------------------------------------

    def write(self, data: bytes) -> int:
        """Send guest output ``data`` to the host; returns the bytes taken."""
        if self.closed or not data:
            return 0
        raw = bytes(data)
        with self._out_lock:
            self._write(raw)
        return len(raw)

    def _write(self, data: bytes) -> None:
        """Subclass hook: put ``data`` on the host side (called under a lock)."""

    # -- input ----------------------------------------------------------------

    @property
    def frontend(self) -> CharFrontend | None:
        """The device currently attached, if any."""
        return self._frontend

    def attach(self, frontend: CharFrontend | None) -> None:
        """Make ``frontend`` the receiver of input (None detaches); queued input
        is delivered to it as far as it has room, through ``dispatch`` where there
        is one (on the machine's thread, once it runs: a device attached while its
        machine is being built gets typed-ahead input after its power-on reset,
        not before it, where the reset would drop it)."""
        self._frontend = frontend
        if frontend is not None:
            self._arrived()

    def detach(self) -> None:
        """Stop delivering input; it stays queued for the next frontend."""
        self._frontend = None

    def accept_input(self) -> None:
        """The frontend has room again: deliver what is queued."""
        self._pump()

    @property
    def pending_input(self) -> int:
        """Bytes of input queued and not yet taken by the frontend."""
        with self._in_lock:
            return self._queued

    def send_break(self) -> None:
        """Queue a line break, in order with the input bytes."""
        with self._in_lock:
            self._queue.append(_BREAK)
        self._arrived()

    def _push_input(self, data: bytes) -> None:
        """Queue host input and deliver as much as the frontend takes."""
        if not data:
            return
        with self._in_lock:
            self._queue.append(bytes(data))
            self._queued += len(data)
        self._arrived()

    def _arrived(self) -> None:
        dispatch = self.dispatch
        if dispatch is None:
            self._pump()
        else:
            dispatch(self._pump)

    def _deliver(self) -> None:
        while True:
            fe = self._frontend
            if fe is None:
                return
            with self._in_lock:
                if not self._queue:
                    return
                head = self._queue[0]
            room = fe.can_receive()
            if room <= 0:
                return
            if head is _BREAK:
                with self._in_lock:
                    self._queue.popleft()
                receive_break = getattr(fe, "receive_break", None)
                if receive_break is not None:
                    receive_break()
                continue
            chunk = self._take(room)
            if chunk:
                fe.receive(chunk)

    def _take(self, limit: int) -> bytes:
        """Up to ``limit`` queued bytes from the head, stopping at a break."""
        parts: list[bytes] = []
        want = limit
        with self._in_lock:
            while want > 0 and self._queue:
                head = self._queue[0]
                if isinstance(head, _Break):
                    break
                if len(head) <= want:
                    parts.append(head)
                    self._queue.popleft()
                    want -= len(head)
                else:
                    parts.append(head[:want])
                    self._queue[0] = head[want:]
                    want = 0
            out = b"".join(parts)
            self._queued -= len(out)
        return out

    # -- life cycle -------------------------------------------------------------

    def close(self) -> None:
        """Release host resources; later writes are dropped."""
        self.closed = True
        self._frontend = None

    def __enter__(self) -> CharBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullChar(CharBackend):
    """Discards output, never has input (``-serial null``)."""


class BufferChar(CharBackend):
    """In-memory back-end for tests and scripts.

    ``output`` holds everything the guest wrote; :meth:`feed` sends input;
    :meth:`wait_for` blocks until output matches a pattern.  Thread-safe.
    """

    def __init__(self) -> None:
        super().__init__()
        self._output = bytearray()
        self._cond = threading.Condition()
        self._cursor = 0

    def _write(self, data: bytes) -> None:
        with self._cond:
            self._output += data
            self._cond.notify_all()

    @property
    def output(self) -> bytes:
        """Everything written so far."""
        with self._cond:
            return bytes(self._output)

    def feed(self, data: bytes) -> None:
        """Send ``data`` to the frontend (queued past what it can take now)."""
        self._push_input(data)

    def clear(self) -> None:
        """Forget the output collected so far."""
        with self._cond:
            self._output.clear()
            self._cursor = 0

    def wait_for(self, pattern: bytes | re.Pattern[bytes], timeout: float = 10.0,
                 ) -> re.Match[bytes]:
        """Wait until output after the previous match contains ``pattern``.

        ``pattern`` is literal bytes or a compiled ``bytes`` regex.  Returns the
        match (positions in :attr:`output`); the next call searches after it.
        Raises :class:`TimeoutError` (showing the unmatched tail) after
        ``timeout`` seconds.
        """
        import re  # (here: a machine's start-up needs no regular expression)

        regex = re.compile(re.escape(pattern)) if isinstance(pattern, bytes | bytearray) \
            else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = regex.search(self._output, self._cursor)
                if match is not None:
                    self._cursor = match.end()
                    return match
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = bytes(self._output[self._cursor:][-200:])
                    raise TimeoutError(f"{regex.pattern!r} not seen in {timeout}s; "
                                       f"output after the last match ends {tail!r}")
                self._cond.wait(left)


class FileChar(CharBackend):
    """Guest output written to a file (``-serial file:PATH``); no input.

    Like QEMU, the file is truncated when opened unless ``append`` is true, and
    what the guest writes is in the file at once (a prompt without a newline
    too: someone may be waiting for it).
    """

    def __init__(self, path: str | os.PathLike[str], append: bool = False) -> None:
        super().__init__()
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "ab" if append else "wb")
        except OSError as exc:
            raise ChardevError(f"cannot open serial output file {self.path!r}: "
                               f"{exc.strerror}") from exc

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()

    def flush(self) -> None:
        """Push buffered output to the file."""
        with self._out_lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        super().close()
        with self._out_lock:
            self._file.close()


ESCAPE = 0x01  # Ctrl-A

STDIO_HELP = (
    "\r\n"
    "C-a h    print this help\r\n"
    "C-a x    exit emulator\r\n"
    "C-a b    send break\r\n"
    "C-a c    switch between console and monitor\r\n"
    "C-a C-a  sends C-a\r\n"
)


def _raw_attrs(attrs: list[Any], signals: bool) -> list[Any]:
    """QEMU's stdio settings: no echo, no line editing, 8 bits, output processing kept."""
    new: list[Any] = [list(a) if isinstance(a, list) else a for a in attrs]
    iflag, oflag, cflag, lflag, cc = 0, 1, 2, 3, 6
    new[iflag] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                    | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
    new[oflag] |= termios.OPOST
    new[lflag] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)
    if not signals:
        new[lflag] &= ~termios.ISIG
    new[cflag] &= ~(termios.CSIZE | termios.PARENB)
    new[cflag] |= termios.CS8
    new[cc][termios.VMIN] = 1
    new[cc][termios.VTIME] = 0
    return new


def _std_fd(stream: object, default: int) -> int:
    """The descriptor behind ``sys.stdin``/``sys.stdout``, or the standard number
    when the stream was replaced by one without a descriptor (pytest's capture)."""
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return default


class SocketChar(CharBackend):
    """QEMU's ``-chardev socket``: a TCP (``host``, ``port``) or UNIX (``path``)
    stream.  As a server it listens and serves one client at a time (the next
    one after a disconnect); as a client it connects at once.  Output while no
    peer is connected is dropped, as QEMU does with ``wait=off``."""

    def __init__(self, *, path: str | None = None, host: str = "127.0.0.1",
                 port: int | None = None, server: bool = True) -> None:
        import socket

        super().__init__()
        if (path is None) == (port is None):
            raise ChardevError("-chardev socket: give path= or port=")
        family = socket.AF_UNIX if path is not None else socket.AF_INET6 \
            if ":" in host else socket.AF_INET
        address: Any = path if path is not None else (host, port)
        self.address = address
        self._conn: socket.socket | None = None
        self._listener: socket.socket | None = None
        try:
            if server:
                lst = socket.socket(family, socket.SOCK_STREAM)
                if family != socket.AF_UNIX:
                    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                lst.bind(address)
                lst.listen(1)
                self._listener = lst
                self.address = lst.getsockname()
            else:
                conn = socket.create_connection(address) if path is None else \
                    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                if path is not None:
                    conn.connect(path)
                self._conn = conn
        except OSError as exc:
            raise ChardevError(f"-chardev socket {address}: {exc.strerror or exc}") from None
        threading.Thread(target=self._serve, name="vmforge-chardev-socket",
                         daemon=True).start()

    def _serve(self) -> None:
        while not self.closed:
            conn = self._conn
            if conn is None:
                if self._listener is None:
                    return
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    return
                self._conn = conn
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    break
                self._push_input(data)
            self._conn = None
            conn.close()
            if self._listener is None:
                return

    def _write(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.sendall(data)
        except OSError:
            pass  # the peer went away: its output is dropped

    def close(self) -> None:
        import socket  # (imported by __init__ already)

        super().close()
        for sock in (self._conn, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


class StdioChar(CharBackend):
    """The emulator's terminal (``-serial stdio``).

    Output goes to ``stdout``; a reader thread takes ``stdin``.  When stdin is a
    terminal it is put in raw mode (as QEMU does: no echo, no line editing, and
    Ctrl-C goes to the guest unless ``signals``) and restored on :meth:`close`
    or at exit.  QEMU's Ctrl-A escapes are handled when ``escapes`` (default:
    stdin is a terminal): ``C-a x`` calls ``on_quit`` (default: interrupt the
    main thread), ``C-a c`` calls ``on_monitor``, ``C-a b`` sends a break,
    ``C-a h`` prints help, ``C-a C-a`` sends one Ctrl-A; other escapes are
    ignored.
    """

    def __init__(self, stdin: int | None = None, stdout: int | None = None, *,
                 on_quit: Callable[[], object] | None = None,
                 on_monitor: Callable[[], object] | None = None,
                 escapes: bool | None = None, signals: bool = False,
                 raw: bool | None = None) -> None:
        super().__init__()
        self.in_fd = _std_fd(sys.stdin, 0) if stdin is None else stdin
        self.out_fd = _std_fd(sys.stdout, 1) if stdout is None else stdout
        self.on_quit = on_quit if on_quit is not None else _thread.interrupt_main
        self.on_monitor = on_monitor
        is_tty = os.isatty(self.in_fd)
        self.escapes = is_tty if escapes is None else escapes
        self._escape_pending = False
        self._saved_attrs: list | None = None
        if is_tty if raw is None else raw:
            self._enter_raw(signals)
        self._wake_r, self._wake_w = os.pipe()
        self._reader = threading.Thread(target=self._read_loop, name="vmforge-stdio",
                                        daemon=True)
        self._reader.start()

    # -- terminal mode -----------------------------------------------------------

    def _enter_raw(self, signals: bool) -> None:
        try:
            self._saved_attrs = termios.tcgetattr(self.in_fd)
            termios.tcsetattr(self.in_fd, termios.TCSANOW,
                              _raw_attrs(self._saved_attrs, signals))
        except termios.error as exc:
            raise ChardevError(f"cannot put fd {self.in_fd} in raw mode: {exc}") from exc
        atexit.register(self._restore_terminal)

    def _restore_terminal(self) -> None:
        saved, self._saved_attrs = self._saved_attrs, None
        if saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.in_fd, termios.TCSANOW, saved)
            atexit.unregister(self._restore_terminal)

    @property
    def raw_mode(self) -> bool:
        """Whether the terminal is currently in raw mode."""
        return self._saved_attrs is not None

    # -- output -----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            n = os.write(self.out_fd, data)     # all at once, usually (a UART's byte)
        except BlockingIOError:
            n = 0
        except OSError:
            return  # the terminal went away: output is dropped, as QEMU does
        if n == len(data):
            return
        view = memoryview(data)[n:]
        while view:
            try:
                n = os.write(self.out_fd, view)
            except BlockingIOError:
                select.select([], [self.out_fd], [], 1.0)
                continue
            except OSError:
                return  # the terminal went away: output is dropped, as QEMU does
            view = view[n:]

    # -- input -----------------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.in_fd, self._wake_r], [], [])
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                return
            try:
                data = os.read(self.in_fd, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return  # end of input
            if self.escapes:
                self._process(data)
            else:
                self._push_input(data)

    def _process(self, data: bytes) -> None:
        """Handle Ctrl-A escapes; plain bytes go to the frontend in order."""
        plain = bytearray()
        for byte in data:
            if self._escape_pending:
                self._escape_pending = False
                if byte == ESCAPE:
                    plain.append(byte)
                    continue
                self._push_input(bytes(plain))
                plain.clear()
                self._escape(chr(byte).lower())
            elif byte == ESCAPE:
                self._escape_pending = True
            else:
                plain.append(byte)
        self._push_input(bytes(plain))

    def _escape(self, key: str) -> None:
        if key == "x":
            self.write(b"\r\nvmforge: terminated\r\n")
            self.on_quit()
        elif key == "c":
            if self.on_monitor is not None:
                self.on_monitor()
        elif key == "b":
            self.send_break()
        elif key in ("h", "?"):
            self.write(STDIO_HELP.encode())

    # -- life cycle ----------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)
        self._restore_terminal()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def chardev_from_spec(spec: str, *, on_quit: Callable[[], object] | None = None,
                      on_monitor: Callable[[], object] | None = None) -> CharBackend | None:
    """A back-end from a QEMU ``-serial`` value.

    ``stdio`` (also ``mon:stdio``), ``null``, ``file:PATH``, or ``none``
    (no device at all: returns None).  ``on_quit``/``on_monitor`` are given to
    :class:`StdioChar` for its Ctrl-A escapes.
    """
    kind, sep, arg = spec.partition(":")
    if spec in ("stdio", "mon:stdio"):
        return StdioChar(on_quit=on_quit, on_monitor=on_monitor)
    if spec == "null":
        return NullChar()
    if spec == "none":
        return None
    if kind == "file" and sep:
        if not arg:
            raise ChardevError("-serial file: needs a path (file:PATH)")
        return FileChar(arg)
    raise ChardevError(f"unknown serial back-end {spec!r} "
                       "(supported: stdio, mon:stdio, null, none, file:PATH)")
