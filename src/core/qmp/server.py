"""The QMP server: sockets on an I/O thread, commands on the machine's thread.

One I/O thread accepts clients (any number at once), reads their bytes into a
:class:`~vmforge.qmp.stream.JsonStreamer` and writes what is queued for them.
Each complete message is handed to the machine's thread with
:meth:`~vmforge.machine.Machine.call_soon`, in arrival order, where it is
checked and run; the reply is queued for the client.  A client that sends
faster than the machine answers stops being read (QEMU's limit of 8 requests
in flight), a client that goes away only loses its replies, and nothing a
client sends can raise on the machine's thread.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import selectors
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmforge.errors import VmforgeError
from vmforge.qmp.commands import (
    COMMANDS,
    QmpError,
    QmpSession,
    check_arguments,
    qemu_version,
    reset_event_data,
    shutdown_event_data,
)
from vmforge.qmp.stream import JsonStreamer

if TYPE_CHECKING:
    from vmforge.machine import Machine

__all__ = ["QmpAddress", "QmpServer", "QmpSpecError", "mon_qmp_spec", "parse_qmp_spec"]

#: requests of one client handed to the machine and not answered yet (QEMU: 8)
MAX_IN_FLIGHT = 8
#: what may still be asked once the machine's run loop has returned
AFTER_EXIT = frozenset({"query-version", "query-commands", "query-status", "query-name",
                        "qmp_capabilities", "quit"})
#: output queued for a client that does not read; past it the client is dropped
MAX_OUTPUT = 16 << 20


class QmpSpecError(VmforgeError, ValueError):
    """A ``-qmp`` value that cannot be honoured."""


@dataclass(frozen=True)
class QmpAddress:
    """Where a QMP server listens: a UNIX ``path`` or a TCP ``host``/``port``."""

    path: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    wait: bool = False


def parse_qmp_spec(text: str) -> QmpAddress:
    """``unix:PATH[,server=on][,wait=off]`` or ``tcp:HOST:PORT[,server=on][,wait=off]``
    (QEMU's ``-qmp`` syntax; ``server=on`` is needed, ``wait`` defaults to on as
    in QEMU)."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("unix", "tcp"):
        raise QmpSpecError(f"-qmp {text}: expected unix:PATH,server=on,wait=off or "
                           "tcp:HOST:PORT,server=on,wait=off")
    where, *opts = rest.split(",")
    flags: dict[str, bool] = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key not in ("server", "wait") or (eq and value not in ("on", "off", "yes",
                                                                  "no", "true", "false")):
            raise QmpSpecError(f"-qmp {text}: unknown option {opt!r} (server=on, "
                               "wait=on|off)")
        flags[key] = not eq or value in ("on", "yes", "true")
    if not flags.get("server", False):
        raise QmpSpecError(f"-qmp {text}: vmforge's QMP only listens: add server=on")
    wait = flags.get("wait", True)
    if kind == "unix":
        if not where:
            raise QmpSpecError(f"-qmp {text}: the socket needs a path")
        return QmpAddress(path=where, wait=wait)
    host, colon, port = where.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise QmpSpecError(f"-qmp {text}: expected tcp:HOST:PORT with a port number")
    return QmpAddress(host=host.strip("[]") or "127.0.0.1", port=int(port), wait=wait)


def mon_qmp_spec(text: str, chardevs: Mapping[str, Any]) -> QmpAddress:
    """``-mon chardev=ID,mode=control`` over ``-chardev socket,id=ID,path=P|host=H,port=N,
    server=on[,wait=off]``: where the QMP server listens."""
    from vmforge.config import parse_opts

    try:
        opts = parse_opts(text, implied="chardev")
    except ValueError as exc:
        raise QmpSpecError(f"-mon {text}: {exc}") from None
    unknown = set(opts) - {"chardev", "mode", "pretty"}
    if unknown:
        raise QmpSpecError(f"-mon {text}: unknown option {sorted(unknown)[0]!r}")
    if opts.get("mode", "readline") != "control":
        raise QmpSpecError(f"-mon {text}: only mode=control (QMP); the human monitor is "
                           "on the console (Ctrl-A C) and through human-monitor-command")
    ident = opts.get("chardev")
    spec = chardevs.get(ident) if isinstance(ident, str) else None
    if spec is None:
        raise QmpSpecError(f"-mon {text}: no -chardev with id={ident}")
    options = dict(getattr(spec, "options", {}))
    if getattr(spec, "backend", None) != "socket":
        raise QmpSpecError(f"-mon {text}: QMP needs a socket chardev, not "
                           f"{getattr(spec, 'backend', spec)!r}")
    on = ("on", "yes", "true")
    if options.get("server", "off") not in on:
        raise QmpSpecError(f"-mon {text}: vmforge's QMP only listens: add server=on to "
                           f"-chardev id={ident}")
    wait = options.get("wait", "on") in on
    if "path" in options:
        return QmpAddress(path=options["path"], wait=wait)
    port = options.get("port", "")
    if not port.isdigit() or int(port) > 65535:
        raise QmpSpecError(f"-mon {text}: -chardev id={ident} needs path= or port=")
    return QmpAddress(host=options.get("host", "127.0.0.1"), port=int(port), wait=wait)


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    session: QmpSession
    streamer: JsonStreamer = field(default_factory=JsonStreamer)
    out: bytearray = field(default_factory=bytearray)
    negotiated: bool = False
    closed: bool = False
    in_flight: int = 0
    backlog: collections.deque[tuple[Any, str | None]] = field(
        default_factory=collections.deque)


def _message(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


def _timestamp() -> dict[str, int]:
    now = time.time_ns() // 1000
    return {"seconds": now // 1_000_000, "microseconds": now % 1_000_000}


class QmpServer:
    """A QMP server for ``machine`` listening at ``address`` (:func:`parse_qmp_spec`).

    :meth:`start` begins listening and serving; :meth:`close` sends what is
    queued (the last SHUTDOWN event), disconnects everyone and removes the
    UNIX socket.  Usable as a context manager.
    """

    def __init__(self, machine: Machine, address: QmpAddress | str) -> None:
        self.machine = machine
        self.spec = parse_qmp_spec(address) if isinstance(address, str) else address
        self._lock = threading.Lock()
        self._clients: list[_Client] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._connected = threading.Event()
        self._registered: dict[_Client, int] = {}
        #: requests handed to the machine, in arrival order (all clients)
        self._queue: collections.deque[tuple[_Client, tuple[Any, str | None]]] = (
            collections.deque())
        self._exited = False
        self._flush_deadline = 0.0
        self.address: Any = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> QmpServer:
        spec = self.spec
        if self._thread is not None:
            raise QmpSpecError("the QMP server is already started")
        family = socket.AF_UNIX if spec.path is not None else \
            socket.AF_INET6 if ":" in spec.host else socket.AF_INET
        lst = socket.socket(family, socket.SOCK_STREAM)
        try:
            if spec.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    if os.path.exists(spec.path) and not os.path.isdir(spec.path):
                        os.unlink(spec.path)     # QEMU replaces a stale socket too
                lst.bind(spec.path)
            else:
                lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                lst.bind((spec.host, spec.port))
            lst.listen(socket.SOMAXCONN)
        except OSError as exc:
            lst.close()
            where = spec.path or f"{spec.host}:{spec.port}"
            raise QmpSpecError(f"-qmp: cannot listen on {where}: "
                               f"{exc.strerror or exc}") from None
        lst.setblocking(False)
        self._listener = lst
        self.address = lst.getsockname()
        self._selector.register(lst, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.machine.state_listeners.append(self._on_state)
        self._thread = threading.Thread(target=self._loop, name="vmforge-qmp", daemon=True)
        self._thread.start()
        return self

    def wait_for_client(self, timeout: float | None = None) -> bool:
        """Block until a first client connects (QEMU's ``wait=on``)."""
        return self._connected.wait(timeout)

    def close(self, flush_timeout: float = 2.0) -> None:
        """Send what is queued (up to ``flush_timeout`` seconds), then disconnect."""
        if self._closing:
            return
        if self._thread is None:           # never started: only the wake-up pair to free
            self._closing = True
            self._shutdown_sockets()
            return
        with contextlib.suppress(ValueError):
            self.machine.state_listeners.remove(self._on_state)
        self._closing = True
        self._flush_deadline = time.monotonic() + flush_timeout
        self._wake()
        self._thread.join(flush_timeout + 2.0)
        if self.spec.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.spec.path)

    def __enter__(self) -> QmpServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client_count(self) -> int:
        with self._lock:
            return sum(not c.closed for c in self._clients)

    # -- events (any thread) ------------------------------------------------------------

    def broadcast_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Send an event to every client past capabilities negotiation."""
        event: dict[str, Any] = {"timestamp": _timestamp(), "event": name}
        if data is not None:
            event["data"] = data
        raw = _message(event)
        with self._lock:
            for client in self._clients:
                if client.negotiated and not client.closed:
                    self._queue_locked(client, raw)
        self._wake()

    def _on_state(self, event: str, data: dict[str, Any]) -> None:
        if event == "RESET":
            self.broadcast_event("RESET", reset_event_data(str(data.get("reason"))))
        elif event == "SHUTDOWN":
            self.broadcast_event("SHUTDOWN", shutdown_event_data(str(data.get("reason"))))
        elif event in ("STOP", "RESUME"):
            self.broadcast_event(event)
        elif event in ("MIGRATION", "DEVICE_DELETED"):
            self.broadcast_event(event, dict(data))
        elif event == "EXITED":
            # the machine's thread takes no more calls: what it left is answered on
            # the I/O thread, and what comes next too (commands that would act on
            # the stopped machine are refused)
            with self._lock:
                self._exited = True
            self._wake()

    # -- the I/O thread ------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _queue_locked(self, client: _Client, data: bytes) -> None:
        if len(client.out) + len(data) > MAX_OUTPUT:
            client.closed = True     # it does not read: let it go, not the machine's memory
            return
        client.out += data

    def _send(self, client: _Client, obj: dict[str, Any]) -> None:
        raw = _message(obj)
        with self._lock:
            if not client.closed:
                self._queue_locked(client, raw)
        self._wake()

    def _loop(self) -> None:
        try:
            while True:
                if self._closing and self._drained():
                    break
                self._update_interest()
                timeout = 0.1 if self._closing else None
                for key, mask in self._selector.select(timeout):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        client: _Client = key.data
                        if mask & selectors.EVENT_WRITE:
                            self._write(client)
                        if mask & selectors.EVENT_READ and not self._closing:
                            self._read(client)
                if self._exited and self._queue:
                    self._run_queued()
                self._reap()
        finally:
            self._shutdown_sockets()

    def _drained(self) -> bool:
        if time.monotonic() >= self._flush_deadline:
            return True
        with self._lock:
            return all(c.closed or not c.out for c in self._clients)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            client = _Client(sock, QmpSession(self.machine, self))
            client.out += _message({"QMP": {"version": qemu_version(), "capabilities": []}})
            with self._lock:
                self._clients.append(client)
            self._connected.set()

    def _update_interest(self) -> None:
        """Read a client only while it has nothing waiting for the machine; write
        it while output is queued; a client with neither leaves the selector."""
        for client in self._clients_snapshot():
            if client.closed:
                continue
            mask = 0
            if not client.backlog and client.in_flight < MAX_IN_FLIGHT and not self._closing:
                mask |= selectors.EVENT_READ
            if client.out:
                mask |= selectors.EVENT_WRITE
            current = self._registered.get(client, 0)
            if mask == current:
                continue
            if current == 0:
                self._selector.register(client.sock, mask, client)
            elif mask == 0:
                self._selector.unregister(client.sock)
            else:
                self._selector.modify(client.sock, mask, client)
            if mask:
                self._registered[client] = mask
            else:
                self._registered.pop(client, None)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            client.closed = True
            return
        client.backlog.extend(client.streamer.feed(data))
        self._pump(client)

    def _pump(self, client: _Client) -> None:
        """Hand the client's messages to the machine, up to MAX_IN_FLIGHT at once
        (once its run loop has returned, they are answered here)."""
        while client.backlog and client.in_flight < MAX_IN_FLIGHT:
            item = client.backlog.popleft()
            with self._lock:
                client.in_flight += 1
                self._queue.append((client, item))
                exited = self._exited
            if exited:
                self._run_queued()
            else:
                self.machine.call_soon(self._run_queued)

    def _write(self, client: _Client) -> None:
        with self._lock:
            data = bytes(client.out[:1 << 18])
        if not data:
            return
        try:
            sent = client.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            client.closed = True
            return
        with self._lock:
            del client.out[:sent]

    def _reap(self) -> None:
        with self._lock:
            gone = [c for c in self._clients if c.closed]
            self._clients = [c for c in self._clients if not c.closed]
        for client in gone:
            if self._registered.pop(client, 0):
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(client.sock)
            with contextlib.suppress(OSError):
                client.sock.close()
        for client in self._clients_snapshot():
            if client.backlog and client.in_flight < MAX_IN_FLIGHT:
                self._pump(client)

    def _clients_snapshot(self) -> list[_Client]:
        with self._lock:
            return list(self._clients)

    def _shutdown_sockets(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.closed = True
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                client.sock.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        with contextlib.suppress(Exception):
            self._selector.close()

    # -- on the machine's thread ----------------------------------------------------------

    def _run_queued(self) -> None:
        """Answer the requests handed over and not answered yet, in arrival order."""
        while True:
            with self._lock:
                if not self._queue:
                    return
                client, item = self._queue.popleft()
            self._handle(client, item)

    def _handle(self, client: _Client, item: tuple[Any, str | None]) -> None:
        try:
            reply = self._dispatch(client, *item)
        except Exception as exc:  # a bad request never stops the machine
            reply = {"error": {"class": "GenericError", "desc": str(exc) or type(exc).__name__}}
        finally:
            with self._lock:
                client.in_flight -= 1
        if reply is not None:
            self._send(client, reply)

    def _dispatch(self, client: _Client, value: Any, error: str | None) -> dict[str, Any]:
        if error is not None:
            return _error(error)
        if not isinstance(value, dict):
            return _error("QMP input must be a JSON object")
        ident = value.get("id")
        has_id = "id" in value
        try:
            name = _check_request(value)
            if not client.negotiated:
                if name != "qmp_capabilities":
                    raise QmpError("Expecting capabilities negotiation with "
                                   "'qmp_capabilities'", "CommandNotFound")
                arguments = value.get("arguments", {})
                check_arguments(COMMANDS[name], arguments)
                _check_capabilities(arguments.get("enable", []))
                client.negotiated = True
                result: Any = {}
            else:
                cmd = COMMANDS.get(name)
                if cmd is None:
                    raise QmpError(f"The command {name} has not been found", "CommandNotFound")
                arguments = value.get("arguments", {})
                check_arguments(cmd, arguments)
                if self._exited and name not in AFTER_EXIT:
                    raise QmpError(f"The machine has shut down: {name} is not available")
                result = cmd.handler(client.session, arguments)
        except QmpError as exc:
            reply = _error(exc.desc, exc.cls)
            return {"id": ident, **reply} if has_id else reply
        except Exception as exc:  # a broken command never stops the machine
            reply = _error(str(exc) or type(exc).__name__)
            return {"id": ident, **reply} if has_id else reply
        out: dict[str, Any] = {"return": result}
        if has_id:
            out["id"] = ident
        return out


def _error(desc: str, cls: str = "GenericError") -> dict[str, Any]:
    return {"error": {"class": cls, "desc": desc}}


def _check_request(value: dict[str, Any]) -> str:
    """QEMU's ``qmp_dispatch_check_obj``: the request's members; the command name."""
    for key, member in value.items():
        if key == "execute":
            if not isinstance(member, str):
                raise QmpError("QMP input member 'execute' must be a string")
        elif key == "arguments":
            if not isinstance(member, dict):
                raise QmpError("QMP input member 'arguments' must be an object")
        elif key != "id":
            # exec-oob too: out-of-band execution is not offered
            raise QmpError(f"QMP input member '{key}' is unexpected")
    if "execute" not in value:
        raise QmpError("QMP input lacks member 'execute'")
    return str(value["execute"])


def _check_capabilities(enable: list[Any]) -> None:
    for cap in enable:
        if not isinstance(cap, str):
            raise QmpError("Invalid parameter type for 'enable', expected: string")
        if cap != "oob":
            raise QmpError(f"Parameter 'enable' does not accept value '{cap}'")
        raise QmpError("Capability 'oob' not available")
