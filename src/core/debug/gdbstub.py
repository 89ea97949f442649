"""A GDB remote stub for the RISC-V harts of a machine (QEMU's ``-s``/``-gdb``).

``vmforge run ... -S -gdb tcp:127.0.0.1:1234`` then, in another terminal,
``gdb-multiarch prog -ex 'target remote :1234'``.  What gdb sees:

- one thread per hart (thread ``i + 1`` is hart ``i``), all-stop: a stop of one
  hart (a breakpoint, Ctrl-C) pauses the whole machine, ``c`` resumes it;
  ``s`` steps the selected hart alone;
- registers numbered as QEMU 7.2 numbers them (x0-x31, pc, f0-f31, ``priv``,
  then CSR ``n`` as register ``66 + n``) and a target description with the
  core, the FPU, ``priv`` and the CSRs the hart implements;
- memory through the selected hart's MMU (virtual addresses, as the hart sees
  data), or physical addresses after ``maintenance packet Qqemu.PhyMemMode:1``;
  debugger writes reach ROM too and drop the harts' decoded code;
- ``Z0``/``Z1`` breakpoints are the harts' own (``RiscvHart.add_breakpoint``:
  the compiled code stops exactly there), at most 16; watchpoints (``Z2`` write,
  ``Z3`` read, ``Z4`` access, any length, at most 64) are the machine's
  :meth:`~vmforge.debug.hooks.Hooks.watch` ranges: the hart stops before the
  access and reports ``watch``/``rwatch``/``awatch`` with the watchpoint's
  address, as QEMU's RISC-V target does (gdb steps over the access itself; only
  pages with a watchpoint leave the fast path);
- ``monitor CMD`` (``qRcmd``) runs a command of the human monitor.

Everything that touches the machine runs on the machine's thread
(:meth:`Machine.call_soon`); the stub's own thread only reads and writes the
socket.  A malformed or failing packet gets an error reply and leaves the VM
as it was.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmforge.accel.interp import CSR, RunResult, StopReason
from vmforge.debug import protocol as P
from vmforge.debug.hooks import WATCH_ACCESS, WATCH_READ, WATCH_WRITE, Hooks
from vmforge.debug.mmu import translate
from vmforge.errors import GuestMemoryError, VmforgeError
from vmforge.hookspecs import hookimpl

if TYPE_CHECKING:
    from vmforge.accel.interp import RiscvHart
    from vmforge.machine import Machine

__all__ = ["DebugError", "GdbStub", "parse_gdb_dev"]

log = logging.getLogger("vmforge.debug")

SIGINT, SIGTRAP = 2, 5
MAX_BREAKPOINTS = 16
#: Z2 (write), Z3 (read), Z4 (access) -> the hooks' watch kinds, and back to the
#: stop reply's word for each
_WATCH_KINDS = {2: WATCH_WRITE, 3: WATCH_READ, 4: WATCH_ACCESS}
_WATCH_PREFIX = {WATCH_WRITE: b"", WATCH_READ: b"r", WATCH_ACCESS: b"a"}
_LOOPBACK = ("", "127.0.0.1", "localhost")


class DebugError(VmforgeError):
    """The gdbstub cannot be set up as asked."""


def parse_gdb_dev(spec: str) -> tuple[str, Any]:
    """``-gdb DEV``: ``tcp::PORT``, ``tcp:127.0.0.1:PORT``, ``tcp:localhost:PORT``,
    ``:PORT`` or a bare port (TCP on 127.0.0.1), or ``unix:PATH`` (QEMU's options
    after a comma, such as ``,server=on,wait=off``, are accepted and ignored).
    Returns ``("tcp", (host, port))`` or ``("unix", path)``."""
    text = spec.split(",", 1)[0]
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise DebugError(f"-gdb {spec}: unix: needs a socket path")
        return "unix", path
    if text.startswith("tcp:"):
        text = text[4:]
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host not in _LOOPBACK:
        raise DebugError(f"-gdb {spec}: the gdbstub listens on 127.0.0.1 only "
                         f"(or unix:PATH), not on {host!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise DebugError(f"-gdb {spec}: expected tcp::PORT, tcp:127.0.0.1:PORT "
                         "or unix:PATH") from None
    if not 0 <= port < 65536:
        raise DebugError(f"-gdb {spec}: port {port} out of range")
    return "tcp", ("127.0.0.1", port)


class _Call:
    """One call run on the machine's thread (or here, once the machine is gone)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self._claimed = False
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            if self._claimed:
                return
            self._claimed = True
        try:
            self.result = self.fn()
        except Exception:       # never into the machine's run loop
            log.exception("gdbstub: internal error")
        finally:
            self.done.set()


class GdbStub:
    """A gdbstub for ``machine``'s harts; :meth:`listen` then :meth:`start`."""

    def __init__(self, machine: Machine) -> None:
        cluster = getattr(machine, "cluster", None)
        harts = list(getattr(machine, "cpus", []))
        if cluster is None or not harts or not all(hasattr(h, "add_breakpoint") for h in harts):
            raise DebugError(f"machine {machine.name!r}: the gdbstub debugs RISC-V harts "
                             "only")
        self.machine = machine
        self.harts: list[RiscvHart] = harts
        #: the machine's hooks, which hold gdb's watchpoints
        self.hooks: Hooks = machine.hooks  # type: ignore[attr-defined]
        self.cluster = cluster
        self._prev_on_stop: Callable[[RiscvHart, RunResult], None] | None = cluster.on_stop
        cluster.on_stop = self._on_cpu_stop
        self.breakpoints: set[int] = set()
        self.running = False           # gdb resumed the guest and waits for a stop
        self.g_hart = 0                # registers and memory (Hg)
        self.c_hart = 0                # step and continue (Hc)
        self.phys_mode = False
        self.no_ack = False
        self.multiprocess = False
        self._detached = False
        self.address = ""
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._last_sent = b""
        self._thread: threading.Thread | None = None
        self._closing = False
        self._unix_path: str | None = None
        self._csrs: dict[str, int] | None = None
        self._xml: bytes | None = None
        self._hook_name = f"vmforge-gdbstub-{id(self):x}"

    # -- sockets -----------------------------------------------------------------------

    def listen(self, dev: str) -> str:
        """Open the listening socket for ``-gdb DEV``; returns where it listens."""
        kind, where = parse_gdb_dev(dev)
        try:
            if kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                with contextlib.suppress(FileNotFoundError):
                    if os.path.exists(where) and not os.path.isfile(where):
                        os.unlink(where)            # a stale socket
                sock.bind(where)
                self._unix_path = where
                self.address = f"unix:{where}"
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(where)
                self.address = f"tcp:127.0.0.1:{sock.getsockname()[1]}"
            sock.listen(1)
        except OSError as exc:
            raise DebugError(f"-gdb {dev}: cannot listen: {exc.strerror or exc}") from None
        self._listener = sock
        return self.address

    def start(self) -> None:
        """Serve gdb on a thread of its own (one connection at a time)."""
        if self._listener is None:
            raise DebugError("the gdbstub is not listening")
        from vmforge.plugins import registry

        pm = registry().plugin_manager
        if not pm.has_plugin(self._hook_name):
            pm.register(self, name=self._hook_name)
        self._thread = threading.Thread(target=self._serve, name="vmforge-gdbstub",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving: the connection and listener close, the harts forget gdb's
        breakpoints and watchpoints, stops go back to whoever handled them before."""
        already, self._closing = self._closing, True
        if not already:
            self._forget_cpu_state()
        self._closing = True
        for sock in (self._conn, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        self._listener = None
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)
            self._unix_path = None
        from vmforge.plugins import registry

        pm = registry().plugin_manager
        if pm.has_plugin(self._hook_name):
            pm.unregister(name=self._hook_name)

    def _forget_cpu_state(self) -> None:
        if self.cluster.on_stop == self._on_cpu_stop:
            self.cluster.on_stop = self._prev_on_stop
        self._clear_breakpoints()

    @hookimpl
    def vmforge_machine_shutdown(self, machine: Any, status: int) -> None:
        """The guest is over: gdb, if it waits for a stop, hears the exit status
        (``W``); the stub closes."""
        if machine is not self.machine:
            return
        if self.running and not self._detached:
            self._send(b"W%02x" % ((status or 0) & 0xFF))
        self.close()

    def _serve(self) -> None:
        while not self._closing and self._listener is not None:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if conn.family == socket.AF_INET:     # small packets, one at a time
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
            self.no_ack = self.multiprocess = self._detached = False
            try:
                self._on_machine(self._attach)
                self._read_loop(conn)
            except OSError:
                pass
            finally:
                self._conn = None
                with contextlib.suppress(OSError):
                    conn.close()
                if not self._closing:
                    self._on_machine(self._detach)

    def _read_loop(self, conn: socket.socket) -> None:
        reader = P.PacketReader()
        while not self._closing:
            data = conn.recv(65536)
            if not data:
                return
            for ev in reader.feed(data):
                if ev.kind == P.PACKET:
                    if not self.no_ack:
                        self._raw_send(b"+")
                    self._on_machine(functools.partial(self._answer, ev.data))
                    if ev.data in (b"k",) or ev.data.startswith(b"vKill"):
                        return
                elif ev.kind == P.INTERRUPT:
                    self._on_machine(self._interrupt)
                elif ev.kind == P.NACK:
                    if ev.data == b"resend":
                        if self._last_sent:
                            self._raw_send(self._last_sent)
                    elif not self.no_ack:
                        self._raw_send(b"-")

    def _raw_send(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        with self._send_lock:
            with contextlib.suppress(OSError):
                conn.sendall(data)

    def _send(self, payload: bytes) -> None:
        packet = P.frame(payload)
        self._last_sent = packet
        self._raw_send(packet)

    def _on_machine(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the machine's thread and return its result."""
        call = _Call(fn)
        if not self.machine.stopped:
            self.machine.call_soon(call)
            while not call.done.wait(0.2):
                if self.machine.stopped or self._closing:
                    break
        call()             # a machine that is over runs no calls: run it here
        call.done.wait()
        return call.result

    # -- states (machine thread) -----------------------------------------------------

    def _attach(self) -> None:
        """gdb connected: the guest stops, as QEMU stops it."""
        self.running = False
        self.machine.pause()

    def _detach(self) -> None:
        """gdb left (``D`` or a closed connection): breakpoints go, the guest runs."""
        self._clear_breakpoints()
        self.running = False
        self.phys_mode = False
        self.machine.resume()

    def _stopped(self, index: int, signal: int, extra: bytes = b"") -> None:
        """The machine stops; gdb, if it waits for a stop, hears of hart ``index``
        (a second hart stopping in the same round changes nothing gdb sees)."""
        self.machine.pause()
        if self.running:
            self.running = False
            self.g_hart = self.c_hart = index
            self._send(self._stop_reply(signal) + extra)

    def _stop_reply(self, signal: int, index: int | None = None) -> bytes:
        index = self.c_hart if index is None else index
        return b"T%02xthread:%s;" % (signal, self._tid(index))

    def _on_cpu_stop(self, hart: RiscvHart, result: RunResult) -> None:
        if result.reason is StopReason.BREAKPOINT and result.pc in self.breakpoints:
            self._stopped(self.harts.index(hart), SIGTRAP)
        elif result.reason is StopReason.WATCHPOINT:
            self._stopped(self.harts.index(hart), SIGTRAP, self._finish_watch(hart))
        elif self._prev_on_stop is not None:
            self._prev_on_stop(hart, result)

    def _finish_watch(self, hart: RiscvHart) -> bytes:
        """A watchpoint stopped ``hart`` before the access, where QEMU's RISC-V
        target stops too (``gdb_stop_before_watchpoint``: gdb steps over the
        instruction itself, watchpoints removed); name the watchpoint as QEMU's
        stop reply does (``watch``/``rwatch``/``awatch``:ADDR)."""
        address, size, is_write = hart.watch_hit()
        hit = self.hooks.watch_matching(address, size, is_write)
        if hit is None:
            return b""
        return b"%swatch:%x;" % (_WATCH_PREFIX[hit[2]], hit[0])

    def _interrupt(self) -> None:
        if self.running:
            self._stopped(self.c_hart, SIGINT)

    def _resume(self) -> None:
        self.running = True
        self.machine.resume()

    def _step(self, index: int) -> bytes:
        """One instruction on hart ``index`` with interrupts held off, as QEMU
        steps by default (``SSTEP_NOIRQ``): a pending timer does not turn every
        ``stepi`` into a trip to the trap handler."""
        hart = self.harts[index]
        mie = hart.csr("mie")
        masked = mie != 0 and not self._writes_mie(hart)
        if masked:
            hart.set_csr("mie", 0)
        extra = b""
        try:
            result = hart.step()
            if result.reason is StopReason.WATCHPOINT:     # stopped before the access
                extra = self._finish_watch(hart)
        finally:
            if masked:
                hart.set_csr("mie", mie)
        if result.reason in (StopReason.EXCEPTION, StopReason.DEVICE_ERROR) \
                and self._prev_on_stop is not None:
            self._prev_on_stop(hart, result)
        self.g_hart = self.c_hart = index
        return self._stop_reply(SIGTRAP, index) + extra

    def _writes_mie(self, hart: RiscvHart) -> bool:
        """Whether the instruction at ``hart``'s pc is a CSR instruction on
        ``mie`` or ``sie`` (then it runs with the enables it sees)."""
        memory = self.machine.space.memory
        pa = translate(hart, memory, hart.pc)
        try:
            insn = memory.read_u32(pa) if pa is not None else 0
        except (GuestMemoryError, ValueError):
            return False
        return insn & 0x7F == 0x73 and (insn >> 12) & 7 != 0 and insn >> 20 in (0x304, 0x104)

    # -- packets (machine thread) ---------------------------------------------------

    def _answer(self, body: bytes) -> None:
        """Handle one packet and send the reply from the machine's thread, so it
        goes out before the guest can run on and send a stop reply."""
        reply = self._dispatch(body)
        if reply is not None:
            self._send(reply)

    def _dispatch(self, body: bytes) -> bytes | None:
        try:
            return self._handle(body)
        except Exception as exc:      # a bad packet must never take the VM down
            log.debug("gdbstub: packet %r failed: %s", body[:64], exc)
            return b"E22"

    def _handle(self, body: bytes) -> bytes | None:
        if not body:
            return b""
        cmd = body[:1]
        args = body[1:]
        if cmd == b"X":
            return self._write_mem_binary(args)
        text = body.decode("ascii")
        rest = text[1:]
        handler = _SIMPLE.get(text[0])
        if handler is not None:
            return handler(self, rest)
        if text.startswith("vCont"):
            return self._vcont(text)
        if text.startswith("vKill"):
            self._kill()
            return b"OK"
        if text[0] in "qQ":
            return self._query(text)
        return b""

    # registers

    def _hart(self) -> RiscvHart:
        return self.harts[self.g_hart]

    def _read_reg(self, n: int) -> int | None:
        h = self._hart()
        if 0 <= n < 32:
            return h.x[n]
        if n == P.REG_PC:
            return h.pc
        if P.REG_F0 <= n < P.REG_F0 + 32:
            return h.f[n - P.REG_F0]
        if n == P.REG_PRIV:
            return h.priv
        if P.REG_CSR0 <= n < P.REG_CSR0 + 4096:
            try:
                return h.csr(n - P.REG_CSR0)
            except KeyError:
                return None
        return None

    def _write_reg(self, n: int, value: int) -> bool:
        h = self._hart()
        if 0 <= n < 32:
            h.x[n] = value
        elif n == P.REG_PC:
            h.pc = value
        elif P.REG_F0 <= n < P.REG_F0 + 32:
            h.f[n - P.REG_F0] = value
        elif n == P.REG_PRIV:
            h.priv = 1 if value & 3 == 2 else value & 3     # reserved 2: S, as QEMU
        elif P.REG_CSR0 <= n < P.REG_CSR0 + 4096:
            try:
                h.set_csr(n - P.REG_CSR0, value)
            except KeyError:
                return False
        else:
            return False
        return True

    def _g(self, rest: str) -> bytes:
        values = [self._read_reg(n) or 0 for n in range(P.NUM_G_REGS)]
        return b"".join(v.to_bytes(8, "little").hex().encode() for v in values)

    def _G(self, rest: str) -> bytes:
        raw = bytes.fromhex(rest)
        for n in range(min(P.NUM_G_REGS, len(raw) // 8)):
            self._write_reg(n, int.from_bytes(raw[8 * n:8 * n + 8], "little"))
        return b"OK"

    def _p(self, rest: str) -> bytes:
        value = self._read_reg(int(rest, 16))
        if value is None:
            return b"E14"
        return value.to_bytes(8, "little").hex().encode()

    def _P(self, rest: str) -> bytes:
        reg, _, val = rest.partition("=")
        raw = bytes.fromhex(val)
        if not raw or len(raw) > 8:
            return b"E22"
        return b"OK" if self._write_reg(int(reg, 16), int.from_bytes(raw, "little")) \
            else b"E14"

    # memory

    def _chunks(self, addr: int, length: int) -> list[tuple[int, int]]:
        """(physical address, length) pieces of ``[addr, addr+length)``, page by
        page, up to the first unmapped page."""
        out = []
        done = 0
        memory = self.machine.space.memory
        while done < length:
            va = (addr + done) & ((1 << 64) - 1)
            n = min(length - done, 4096 - (va & 0xFFF))
            pa = va if self.phys_mode else translate(self._hart(), memory, va)
            if pa is None:
                break
            out.append((pa, n))
            done += n
        return out

    def _read_mem(self, addr: int, length: int) -> bytes:
        memory = self.machine.space.memory
        data = bytearray()
        for pa, n in self._chunks(addr, length):
            buf = bytearray(n)
            try:
                got = memory.read_partial(pa, buf)
            except (GuestMemoryError, ValueError):
                got = 0
            data += buf[:got]
            if got < n:
                break
        return bytes(data)

    def _write_mem(self, addr: int, data: bytes) -> bytes:
        chunks = self._chunks(addr, len(data))
        if sum(n for _, n in chunks) < len(data):
            return b"E14"
        memory = self.machine.space.memory
        done = 0
        for pa, n in chunks:
            try:
                memory.load(pa, data[done:done + n])    # ROM too, as QEMU's debug writes
            except (GuestMemoryError, ValueError):
                return b"E14"
            done += n
        for h in self.harts:
            h.flush_caches()
        return b"OK"

    def _m(self, rest: str) -> bytes:
        addr_text, _, len_text = rest.partition(",")
        length = min(int(len_text, 16), P.MAX_PACKET // 2)
        data = self._read_mem(_addr(addr_text), length)
        if not data and length:
            return b"E14"
        return data.hex().encode()

    def _M(self, rest: str) -> bytes:
        head, _, hexdata = rest.partition(":")
        addr_text, _, len_text = head.partition(",")
        data = bytes.fromhex(hexdata)
        if len(data) != int(len_text, 16):
            return b"E22"
        return self._write_mem(_addr(addr_text), data)

    def _write_mem_binary(self, args: bytes) -> bytes:
        head, sep, raw = args.partition(b":")
        if not sep:
            return b"E22"
        addr_text, _, len_text = head.decode("ascii").partition(",")
        data = P.unescape(raw)
        if len(data) != int(len_text, 16):
            return b"E22"
        if not data:
            return b"OK"            # gdb's probe for X support
        return self._write_mem(_addr(addr_text), data)

    # breakpoints

    def _Z(self, rest: str) -> bytes:
        kind, addr = self._bp_args(rest)
        if kind in _WATCH_KINDS:
            size = self._watch_size(rest)
            if size is None:
                return b"E22"
            try:
                self.hooks.watch(addr, addr + size - 1, _WATCH_KINDS[kind])
            except ValueError:
                return b"E28"        # too many
            return b"OK"
        if kind not in (0, 1):
            return b""
        if addr not in self.breakpoints:
            if len(self.breakpoints) >= MAX_BREAKPOINTS:
                return b"E28"
            self.breakpoints.add(addr)
            for h in self.harts:
                h.add_breakpoint(addr)
        return b"OK"

    def _z(self, rest: str) -> bytes:
        kind, addr = self._bp_args(rest)
        if kind in _WATCH_KINDS:
            size = self._watch_size(rest)
            if size is None:
                return b"E22"
            self.hooks.unwatch(addr, addr + size - 1, _WATCH_KINDS[kind])
            return b"OK"
        if kind not in (0, 1):
            return b""
        if addr in self.breakpoints:
            self.breakpoints.discard(addr)
            for h in self.harts:
                if addr in h.breakpoints:
                    h.remove_breakpoint(addr)
        return b"OK"

    @staticmethod
    def _watch_size(rest: str) -> int | None:
        """The length of a Z2-Z4 range; None when empty, huge or past 2**64."""
        addr = int(rest.split(",")[1], 16)
        size = int(rest.split(",")[2].split(";")[0], 16)
        return size if 0 < size <= 1 << 32 and addr + size <= 1 << 64 else None

    @staticmethod
    def _bp_args(rest: str) -> tuple[int, int]:
        kind, addr, _size = rest.split(",")[:3]
        return int(kind, 16), _addr(addr)

    def _clear_breakpoints(self) -> None:
        for addr in list(self.breakpoints):
            self._z(f"0,{addr:x},4")
        for begin, end, kind in self.hooks.watches():
            self.hooks.unwatch(begin, end, kind)

    # running

    def _tid(self, index: int) -> bytes:
        """The thread id of hart ``index`` (``pPID.TID`` once gdb speaks multiprocess)."""
        return (b"p1.%x" if self.multiprocess else b"%x") % (index + 1)

    def _thread_index(self, tid_text: str) -> int | None:
        """-1 (all) and 0 (any) select None; else the hart index, ValueError if none.
        Takes ``TID`` and ``pPID.TID`` (a lone ``pPID`` is every thread of it)."""
        if tid_text.startswith("p"):
            pid, sep, tid_text = tid_text[1:].partition(".")
            if pid not in ("-1", "0") and int(pid, 16) != 1:
                raise ValueError(f"no process {pid}")
            if not sep:
                return None
        tid = int(tid_text, 16) if tid_text != "-1" else -1
        if tid in (0, -1):
            return None
        if not 1 <= tid <= len(self.harts):
            raise ValueError(f"no thread {tid}")
        return tid - 1

    def _c(self, rest: str) -> bytes | None:
        if rest:
            self.harts[self.c_hart].pc = _addr(rest)
        self._resume()
        return None

    def _C(self, rest: str) -> bytes | None:      # continue with a signal: signal dropped
        _sig, _, addr = rest.partition(";")
        return self._c(addr)

    def _s(self, rest: str) -> bytes:
        if rest:
            self.harts[self.c_hart].pc = _addr(rest)
        return self._step(self.c_hart)

    def _S(self, rest: str) -> bytes:
        _sig, _, addr = rest.partition(";")
        return self._s(addr)

    def _vcont(self, text: str) -> bytes | None:
        if text == "vCont?":
            return b"vCont;c;C;s;S"
        actions = text[len("vCont;"):].split(";") if text.startswith("vCont;") else []
        if not actions:
            return b"E22"
        for action in actions:
            verb, _, tid_text = action.partition(":")
            index = self._thread_index(tid_text) if tid_text else None
            if verb[:1] in ("s", "S"):
                return self._step(self.c_hart if index is None else index)
        for action in actions:
            if action[:1] in ("c", "C"):
                self._resume()
                return None
        return b"E22"

    def _H(self, rest: str) -> bytes:
        op, tid_text = rest[:1], rest[1:]
        index = self._thread_index(tid_text)
        if op not in ("g", "c"):
            return b"E22"
        if index is not None:
            if op == "g":
                self.g_hart = index
            else:
                self.c_hart = index
        return b"OK"

    def _T(self, rest: str) -> bytes:
        try:
            self._thread_index(rest)
        except ValueError:
            return b"E22"
        return b"OK"

    def _question(self, rest: str) -> bytes:
        return self._stop_reply(SIGTRAP)

    def _D(self, rest: str) -> None:
        self._send(b"OK")
        self._detached = True
        self._detach()
        return None

    def _kill(self, rest: str = "") -> None:
        self._clear_breakpoints()
        self.running = False
        self.machine.request_shutdown("user", 0)
        self.machine.resume()

    def _k(self, rest: str) -> None:
        self._kill()
        return None

    # queries

    def _csr_names(self) -> dict[str, int]:
        if self._csrs is None:
            hart = self.harts[0]
            found = {}
            for name, num in CSR.items():
                try:
                    hart.csr(num)
                except KeyError:
                    continue
                found[name] = num
            self._csrs = found
        return self._csrs

    def _query(self, text: str) -> bytes:
        name, _, rest = text.partition(":")
        if name == "qSupported":
            self.multiprocess = "multiprocess+" in rest.split(";")
            return (b"PacketSize=%x;qXfer:features:read+;vContSupported+;QStartNoAckMode+%s"
                    % (P.MAX_PACKET, b";multiprocess+" if self.multiprocess else b""))
        if name == "QStartNoAckMode":
            self.no_ack = True
            return b"OK"
        if name == "qXfer" and rest.startswith("features:read:"):
            return self._xfer_features(rest[len("features:read:"):])
        if text == "qC":
            return b"QC" + self._tid(self.g_hart)
        if text == "qfThreadInfo":
            return b"m" + b",".join(self._tid(i) for i in range(len(self.harts)))
        if text == "qsThreadInfo":
            return b"l"
        if text.startswith("qThreadExtraInfo,"):
            index = self._thread_index(text.split(",", 1)[1])
            index = 0 if index is None else index
            halted = self.cluster.halted[index]
            info = f"CPU#{index} [{'halted ' if halted else 'running'}]"
            return info.encode().hex().encode()
        if text.startswith("qAttached"):
            return b"1"
        if text.startswith("qRcmd,"):
            return self._monitor(bytes.fromhex(text.split(",", 1)[1]).decode(errors="replace"))
        if name == "Qqemu.PhyMemMode":
            self.phys_mode = rest.strip() == "1"
            return b"OK"
        if text == "qqemu.PhyMemMode":
            return b"1" if self.phys_mode else b"0"
        return b""

    def _xfer_features(self, rest: str) -> bytes:
        annex, _, span = rest.partition(":")
        if annex != "target.xml":
            return b"E00"
        if self._xml is None:
            self._xml = P.target_xml(self._csr_names()).encode()
        off_text, _, len_text = span.partition(",")
        offset, length = int(off_text, 16), int(len_text, 16)
        part = self._xml[offset:offset + min(length, P.MAX_PACKET - 16)]
        more = offset + len(part) < len(self._xml)
        return (b"m" if more else b"l") + part

    def _monitor(self, line: str) -> bytes:
        from vmforge.chardev import BufferChar
        from vmforge.monitor import Monitor

        mon = self.machine.monitor
        if mon is None:
            mon = Monitor(self.machine, BufferChar())
        out = mon.execute(line.strip())
        if out:
            raw = (out if out.endswith("\n") else out + "\n").encode()
            step = P.MAX_PACKET // 2 - 8
            for i in range(0, len(raw), step):       # console output (O packets)
                self._send(b"O" + raw[i:i + step].hex().encode())
        return b"OK"


def _addr(text: str) -> int:
    """A hex address of at most 64 bits (ValueError otherwise: an error reply)."""
    value = int(text, 16)
    if not 0 <= value < 1 << 64:
        raise ValueError(f"address {text} out of range")
    return value


_SIMPLE: dict[str, Callable[[GdbStub, str], bytes | None]] = {
    "g": GdbStub._g, "G": GdbStub._G, "p": GdbStub._p, "P": GdbStub._P,
    "m": GdbStub._m, "M": GdbStub._M, "Z": GdbStub._Z, "z": GdbStub._z,
    "c": GdbStub._c, "C": GdbStub._C, "s": GdbStub._s, "S": GdbStub._S,
    "H": GdbStub._H, "T": GdbStub._T, "?": GdbStub._question, "D": GdbStub._D,
    "k": GdbStub._k,
}
