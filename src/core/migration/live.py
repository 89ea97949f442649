"""Live migration between two vmforge processes: pre-copy, as QEMU does it.

Source (:func:`start_migration`, QMP ``migrate``): a thread starts the dirty
log, sends every RAM page while the guest runs, then in rounds the pages the
guest dirtied meanwhile, until what is left can go in the downtime limit at
the bandwidth seen (``downtime-limit``, 300 ms by default; the pace held to
``max-bandwidth``).  Then, on the machine's thread, the guest stops (STOP), the
devices are drained and the machine state is taken; the last dirty pages, the
state and the end marker follow.  The source ends ``postmigrate`` (paused).  If
anything fails (no connection, the destination goes away, a cancel) the dirty
log stops and a guest that was running runs again.

Destination (:func:`start_incoming`, ``-incoming URI`` / ``migrate-incoming``):
the machine stays paused (``inmigrate``) while a thread reads the stream into
RAM; the header is checked against this machine first, the checksum at the
end, the state by :func:`~vmforge.migration.state.check_state` before anything
applies.  A refused or broken stream ends the process with an error: the guest
never runs on half a state.  Then it runs, unless ``-S`` or the source was paused.

:class:`MigrationInfo` keeps what ``query-migrate`` reports, with QEMU 7.2's keys.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vmforge.errors import VmforgeError
from vmforge.migration import codec
from vmforge.migration.channel import (
    ACK,
    PAGE_SIZE,
    MigrationError,
    StreamReader,
    StreamWriter,
    Uri,
    accept_incoming,
    connect_outgoing,
    listen_incoming,
    parse_uri,
    read_header,
    write_header,
)
from vmforge.migration.dirty import DirtyLog, on_machine_thread
from vmforge.migration.disks import activate, deferred_locks, inactivate, reacquire
from vmforge.migration.ram import nonzero_runs
from vmforge.migration.record import StateError
from vmforge.migration.state import (
    _describe_difference,
    apply_state,
    config_fingerprint,
    decode_state,
    encode_state,
    machine_state,
)

__all__ = ["MigrationInfo", "MigrationParameters", "cancel_migration", "migration_info",
           "prepare_incoming", "start_incoming", "start_migration"]

_RUN_PAGES = 256         # pages per run at most (1 MiB: cancel and pacing stay prompt)
_ROUND_LIMIT = 64        # pre-copy rounds before the guest is stopped whatever is left


@dataclass
class MigrationParameters:
    """``migrate-set-parameters`` values vmforge uses (QEMU 7.2's defaults)."""

    downtime_limit: int = 300            # ms
    max_bandwidth: int = 134217728       # bytes/s


@dataclass
class MigrationInfo:
    """One machine's migration: the state machine and the counters of query-migrate."""

    status: str = "none"
    error: str | None = None
    incoming: bool = False
    started: float = 0.0
    setup_time: int = 0
    total_time: int = 0
    downtime: int = 0
    expected_downtime: int = 0
    transferred: int = 0
    total: int = 0
    remaining: int = 0
    duplicate: int = 0
    normal: int = 0
    dirty_pages_rate: int = 0
    dirty_sync_count: int = 0
    mbps: float = 0.0
    precopy_bytes: int = 0
    downtime_bytes: int = 0
    pages_per_second: int = 0
    listen: Uri | None = None
    params: MigrationParameters = field(default_factory=MigrationParameters)
    events: bool = False                 # the "events" capability
    capabilities: set[str] = field(default_factory=set)     # those turned on
    #: migrate-set-parameters values beyond ``params`` (kept and reported)
    parameters: dict[str, Any] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    #: image layers the source let go of at the end of a migration (taken back on cont)
    released: list[Any] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ("setup", "active", "cancelling", "device")

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def query(self) -> dict[str, Any]:
        """``query-migrate``'s reply, QEMU 7.2's shape for each status."""
        if self.status == "none":
            if self.incoming and self.listen is not None and self.listen.kind == "tcp":
                return {"socket-address": [{"port": str(self.listen.port), "ipv4": True,
                                            "host": self.listen.host, "type": "inet"}]}
            return {}
        out: dict[str, Any] = {"status": self.status}
        if self.incoming or self.status == "setup":
            return out
        if self.status in ("failed", "cancelled"):
            if self.error and self.status == "failed":
                out["error-desc"] = self.error
            return out
        out["setup-time"] = self.setup_time
        if self.status == "completed":
            out["downtime"] = self.downtime
            out["total-time"] = self.total_time
        else:
            out["expected-downtime"] = self.expected_downtime
            out["total-time"] = self.elapsed_ms()
        out["ram"] = {
            "total": self.total, "postcopy-requests": 0,
            "dirty-sync-count": self.dirty_sync_count, "multifd-bytes": 0,
            "pages-per-second": self.pages_per_second, "downtime-bytes": self.downtime_bytes,
            "page-size": PAGE_SIZE, "remaining": self.remaining, "postcopy-bytes": 0,
            "mbps": self.mbps, "transferred": self.transferred,
            "dirty-sync-missed-zero-copy": 0, "precopy-bytes": self.precopy_bytes,
            "duplicate": self.duplicate, "dirty-pages-rate": self.dirty_pages_rate,
            "skipped": 0, "normal-bytes": self.normal * PAGE_SIZE, "normal": self.normal,
        }
        return out


_INFO: weakref.WeakKeyDictionary[Any, MigrationInfo] = weakref.WeakKeyDictionary()


def migration_info(machine: Any) -> MigrationInfo:
    """The migration record of ``machine`` (made on first use)."""
    info = _INFO.get(machine)
    if info is None:
        info = _INFO[machine] = MigrationInfo()
        machine.state_listeners.append(lambda event, data: _on_state(machine, event))
    return info


def _on_state(machine: Any, event: str) -> None:
    if event != "RESUME":
        return
    machine.migration_runstate = None       # cont after a migration: running again
    info = _INFO.get(machine)
    if info is not None and info.released:  # its images first (QEMU: bdrv_activate_all)
        try:
            reacquire(info.released)
        except VmforgeError as exc:
            print(f"vmforge: {exc}; the guest stays stopped", file=sys.stderr)
            machine.pause()         # (resume runs on the machine's thread: no CPU ran)
            return
        info.released = []


def _set_status(machine: Any, info: MigrationInfo, status: str) -> None:
    """The new status, then its MIGRATION event, in QEMU's order: a client that
    has the event and then asks query-migrate sees this status (or a later one)."""
    info.status = status
    if info.events:
        machine._state_changed("MIGRATION", status=status)


def _synced(machine: Any, info: MigrationInfo, log: DirtyLog) -> None:
    """A dirty-log sync happened: count it (QEMU counts the first, at setup, too)
    and send MIGRATION_PASS with the count to the QMP servers, as QEMU does with
    events on."""
    info.dirty_sync_count = log.syncs + 1
    if info.events:
        for listener in list(machine.state_listeners):
            broadcast = getattr(getattr(listener, "__self__", None), "broadcast_event", None)
            if callable(broadcast):
                broadcast("MIGRATION_PASS", {"pass": info.dirty_sync_count})


def _regions(machine: Any) -> list[tuple[int, memoryview]]:
    return [(r.base, memoryview(r.buffer).cast("B"))
            for r in machine.space.memory.regions if not r.readonly]


# -- the source ----------------------------------------------------------------------------

def start_migration(machine: Any, uri_text: str) -> MigrationInfo:
    """Begin migrating ``machine`` to ``uri_text`` on a thread of its own (QMP
    ``migrate``).  ValueError/MigrationError when it cannot start at all."""
    info = migration_info(machine)
    if info.active:
        raise MigrationError("There's a migration process in progress")
    if getattr(machine, "migration_runstate", None) == "postmigrate":
        raise MigrationError("Can't migrate the vm that was paused due to previous migration")
    if getattr(machine, "migration_runstate", None) == "inmigrate":
        raise MigrationError("Guest is waiting for an incoming migration")
    if getattr(machine, "accel", "interp") != "interp" and not hasattr(machine, "dirty_log"):
        raise MigrationError(f"live migration needs a dirty log of guest RAM; "
                             f"-accel {machine.accel} has none yet")
    uri = parse_uri(uri_text)
    info.incoming = False
    info.error = None
    info.cancel.clear()
    info.started = time.monotonic()
    for name in ("setup_time", "total_time", "downtime", "expected_downtime", "transferred",
                 "total", "remaining", "duplicate", "normal", "dirty_pages_rate",
                 "dirty_sync_count", "precopy_bytes", "downtime_bytes", "pages_per_second"):
        setattr(info, name, 0)
    info.mbps = 0.0
    _set_status(machine, info, "setup")
    info.thread = threading.Thread(target=_Outgoing(machine, info, uri).run,
                                   name="vmforge-migration", daemon=True)
    info.thread.start()
    return info


def cancel_migration(machine: Any) -> None:
    """``migrate_cancel``: the running migration stops, the guest runs on."""
    info = migration_info(machine)
    if info.active and not info.incoming:
        info.cancel.set()
        _set_status(machine, info, "cancelling")


class _Cancelled(Exception):
    pass


class _Outgoing:
    def __init__(self, machine: Any, info: MigrationInfo, uri: Uri) -> None:
        self.machine = machine
        self.info = info
        self.uri = uri
        own = getattr(machine, "dirty_log", None)      # KVM: its dirty log and the devices'
        self.log = own() if callable(own) else DirtyLog(
            machine.space.memory, quiesce=getattr(machine, "park_cpus", None))
        self.stopped_by_us = False
        self.was_running = True
        self.released: list[Any] = []

    def on_machine(self, fn: Callable[[], Any]) -> Any:
        return on_machine_thread(self.machine, fn, timeout=60.0)

    def run(self) -> None:
        info, machine = self.info, self.machine
        pipe = None
        try:
            pipe = connect_outgoing(self.uri)
            writer = StreamWriter(pipe.stream, info.params.max_bandwidth)
            self.on_machine(self.log.start)
            regions = _regions(machine)
            info.total = sum(len(v) for _b, v in regions)
            info.setup_time = info.elapsed_ms()
            _synced(machine, info, self.log)
            _set_status(machine, info, "active")
            write_header(writer, {"machine": machine.name,
                                  "config": config_fingerprint(machine),
                                  "page-size": PAGE_SIZE})
            self.precopy(writer, regions)
            self.stop_and_copy(writer, pipe)
            info.total_time = info.elapsed_ms()     # before the status: a query sees it
            _set_status(machine, info, "completed")
        except _Cancelled:
            self.recover()
            _set_status(machine, info, "cancelled")
        except (MigrationError, StateError, OSError, TimeoutError) as exc:
            info.error = str(exc) if not isinstance(exc, OSError) else (
                f"Unable to write to socket: {exc.strerror or exc}")
            self.recover()
            print(f"vmforge: migration failed: {info.error}", file=sys.stderr)
            _set_status(machine, info, "failed")
        finally:
            if self.log.active:
                try:
                    self.on_machine(self.log.stop)
                except TimeoutError:
                    pass
            if pipe is not None:
                pipe.close()
            if info.status != "completed":
                info.total_time = info.elapsed_ms()

    def recover(self) -> None:
        """The migration failed: a guest we stopped runs again (the source keeps it)."""
        self.machine.migration_runstate = None
        if self.released:
            self.on_machine(lambda: reacquire(self.released))
            self.info.released = []
        if self.stopped_by_us and self.was_running and not self.machine.stopped:
            self.on_machine(self.machine.resume)

    def send_pages(self, writer: StreamWriter, pages: list[int],
                   regions: list[tuple[int, memoryview]]) -> None:
        """Send ``pages`` (sorted addresses) as runs: consecutive pages together,
        zero runs as markers."""
        info = self.info
        for base, view in regions:
            for first, count in _runs(pages, base, len(view)):
                if info.cancel.is_set():
                    raise _Cancelled
                off = first - base
                chunk = view[off:off + count * PAGE_SIZE]
                for start, end, zero in _pieces(chunk):
                    before = writer.transferred
                    writer.pages(first + start, chunk[start:end], zero)
                    n = (end - start) // PAGE_SIZE
                    if zero:
                        info.duplicate += n
                    else:
                        info.normal += n
                    info.transferred += writer.transferred - before
                    info.remaining = max(0, info.remaining - n * PAGE_SIZE)

    def precopy(self, writer: StreamWriter, regions: list[tuple[int, memoryview]]) -> None:
        info = self.info
        pages = [base + off for base, view in regions for off in range(0, len(view), PAGE_SIZE)]
        limit_s = info.params.downtime_limit / 1000
        for _ in range(_ROUND_LIMIT):
            info.remaining = len(pages) * PAGE_SIZE
            t0, sent0 = time.monotonic(), writer.transferred
            self.send_pages(writer, pages, regions)
            writer.flush()
            spent = max(time.monotonic() - t0, 1e-6)
            rate = max((writer.transferred - sent0) / spent, 1.0)     # bytes/s
            pages = self.on_machine(self.log.take)
            _synced(self.machine, info, self.log)
            info.dirty_pages_rate = int(len(pages) / spent)
            info.pages_per_second = int((writer.transferred - sent0) / PAGE_SIZE / spent)
            info.mbps = rate * 8 / 1e6
            info.remaining = len(pages) * PAGE_SIZE
            info.precopy_bytes = writer.transferred
            info.expected_downtime = int(info.remaining / rate * 1000)
            if info.remaining / rate <= limit_s:
                break
        self.last_pages = pages

    def stop_and_copy(self, writer: StreamWriter, pipe: Any) -> None:
        info, machine = self.info, self.machine
        t_stop = time.monotonic()

        def stop() -> tuple[bool, list[int], bytes]:
            running = not machine.paused
            machine.migration_runstate = "finish-migrate"
            machine.pause()
            self.stopped_by_us = True
            state = encode_state(machine_state(machine))      # drains the devices first
            self.released = self.info.released = inactivate(machine)
            return running, self.log.take(), state

        self.was_running, pages, state = self.on_machine(stop)
        _synced(machine, info, self.log)
        before = writer.transferred
        self.send_pages(writer, sorted(set(self.last_pages) | set(pages)), _regions(machine))
        writer.state(codec.encode({"running": self.was_running, "state": state}))
        writer.end()
        if pipe.sock is not None:             # the destination has it all: its answer
            answer = pipe.stream.read(1)
            if answer != ACK:
                raise MigrationError("the destination did not take the migration stream "
                                     "(it closed the connection)")
        info.downtime_bytes = writer.transferred - before
        info.transferred = writer.transferred
        info.remaining = 0
        info.downtime = int((time.monotonic() - t_stop) * 1000)
        info.total_time = info.elapsed_ms()
        machine.migration_runstate = "postmigrate"


# -- the destination -------------------------------------------------------------------------

def start_incoming(machine: Any, uri_text: str, *, autostart: bool = True,
                   on_failure: Callable[[str], None] | None = None) -> MigrationInfo:
    """Wait for a migration stream on ``uri_text`` (``-incoming``, ``migrate-incoming``)
    and load it into the paused ``machine`` on a thread; then run it (``autostart``
    and the source was running).  A failure calls ``on_failure(text)``; by default
    the message goes to stderr and the machine ends with status 1."""
    info = migration_info(machine)
    uri = parse_uri(uri_text)
    listener = listen_incoming(uri)
    info.incoming = True
    info.listen = uri
    info.started = time.monotonic()
    machine.migration_runstate = "inmigrate"
    if not machine.paused:
        machine.pause()
    fail = on_failure or (lambda text: _fail_incoming(machine, text))
    info.thread = threading.Thread(target=_Incoming(machine, info, uri, listener, autostart,
                                                    fail).run,
                                   name="vmforge-incoming", daemon=True)
    info.thread.start()
    return info


def prepare_incoming(machine: Any, uri_text: str) -> None:
    """``-incoming URI``: build the machine with its images unlocked (the source
    holds them) and leave it paused (``inmigrate``) waiting for the stream;
    ``defer``: for ``migrate-incoming`` to say where it comes from."""
    with deferred_locks():
        machine.realize()
    autostart = not machine.config.extra.get("no_autostart", False)
    if uri_text == "defer":
        machine.migration_runstate = "inmigrate"
        machine.pause()
        return
    start_incoming(machine, uri_text, autostart=autostart)


def _fail_incoming(machine: Any, text: str) -> None:
    print(f"vmforge: load of migration failed: {text}", file=sys.stderr)
    machine.request_shutdown("error", 1)


class _Incoming:
    def __init__(self, machine: Any, info: MigrationInfo, uri: Uri, listener: Any,
                 autostart: bool, fail: Callable[[str], None]) -> None:
        self.machine = machine
        self.info = info
        self.uri = uri
        self.listener = listener
        self.autostart = autostart
        self.fail = fail

    def run(self) -> None:
        machine, info = self.machine, self.info
        pipe = None
        try:
            pipe = accept_incoming(self.uri, self.listener)
            _set_status(machine, info, "active")
            running, state = self.load(StreamReader(pipe.stream))

            def take_over() -> None:
                activate(machine)           # the source has let go of the images
                apply_state(machine, state)

            on_machine_thread(machine, take_over, timeout=60.0)
            if pipe.sock is not None:
                pipe.stream.write(ACK)
                pipe.stream.flush()
        except (MigrationError, StateError, OSError, TimeoutError) as exc:
            info.error = str(exc)
            _set_status(machine, info, "failed")
            self.fail(str(exc))
            return
        finally:
            if pipe is not None:
                pipe.close()
        info.total_time = info.elapsed_ms()

        def finish() -> None:
            machine.migration_runstate = None       # paused, as the source was (or -S)
            if self.autostart and running:
                machine.resume()
            _set_status(machine, info, "completed")

        on_machine_thread(machine, finish, timeout=60.0)

    def load(self, reader: StreamReader) -> tuple[bool, dict[str, Any]]:
        machine = self.machine
        header = read_header(reader)
        mine = config_fingerprint(machine)
        theirs = header.get("config")
        if header.get("machine") != machine.name or theirs != mine:
            raise MigrationError("the source machine does not match this one: "
                                 + _describe_difference(theirs if isinstance(theirs, dict)
                                                        else {}, mine))
        if header.get("page-size") != PAGE_SIZE:
            raise MigrationError(f"the source's page size {header.get('page-size')} is not "
                                 f"{PAGE_SIZE}")
        regions = _regions(machine)
        blob = None
        while True:
            tag = reader.exact(1, "a record")
            if tag in (b"P", b"Z"):
                addr, count = reader.run()
                view = _pages(regions, addr, count)
                if tag == b"P":
                    reader.into(view, "a page")
                else:
                    for start, end, zero in _pieces(view):
                        if not zero:
                            view[start:end] = bytes(end - start)
            elif tag == b"S":
                blob = reader.state()
            elif tag == b"E":
                reader.check_end()
                break
            else:
                raise MigrationError(f"the migration stream is corrupt (record {tag!r})")
        if blob is None:
            raise MigrationError("the migration stream has no device state")
        try:
            section = codec.decode(blob)
            state = decode_state(section["state"])
            running = bool(section["running"])
        except (KeyError, TypeError) as exc:
            raise MigrationError(f"the migration stream is corrupt (state: {exc})") from None
        return running, state


def _pieces(chunk: memoryview) -> Iterator[tuple[int, int, bool]]:
    """``(start, end, zero)`` covering page-aligned RAM (pages the host never backed
    are zero without a look: :func:`~vmforge.migration.ram.nonzero_runs`)."""
    pos = 0
    for offset, length in nonzero_runs(chunk):
        if offset > pos:
            yield pos, offset, True
        yield offset, offset + length, False
        pos = offset + length
    if pos < len(chunk):
        yield pos, len(chunk), True


def _runs(pages: list[int], base: int, size: int) -> list[tuple[int, int]]:
    """``(first address, page count)`` of the runs of consecutive ``pages`` (sorted)
    inside ``[base, base+size)``, at most ``_RUN_PAGES`` long."""
    out: list[tuple[int, int]] = []
    for addr in pages:
        if not base <= addr < base + size:
            continue
        if out and out[-1][0] + out[-1][1] * PAGE_SIZE == addr and out[-1][1] < _RUN_PAGES:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((addr, 1))
    return out


def _pages(regions: list[tuple[int, memoryview]], addr: int, count: int) -> memoryview:
    """The RAM of ``count`` pages from ``addr``, or MigrationError (not all RAM)."""
    if addr % PAGE_SIZE == 0 and count > 0:
        for base, view in regions:
            if base <= addr and addr + count * PAGE_SIZE <= base + len(view):
                return view[addr - base:addr - base + count * PAGE_SIZE]
    raise MigrationError(f"the migration stream is corrupt ({count} pages at {addr:#x} "
                         "are not in RAM)")
