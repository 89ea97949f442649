"""The dirty log of guest RAM: which 4 KiB pages were written since the last look.

While the log is on, the software CPU's stores mark their pages through its
write TLB (QEMU's TLB_NOTDIRTY: an entry of a clean page sends the store to the
slow path once, which marks the page and drops the flag), and so do device
writes (virtqueue completions, ``GuestMemory`` writes).  :meth:`DirtyLog.take`
reads and clears the bitmaps; the harts re-arm their TLBs before they run again.

Threads: start, stop and take run where no hart is running (the machine's
thread between slices: :func:`on_machine_thread`); devices may mark from any
thread (atomic bit operations).  Harts on host threads (``thread=multi``) run
between the machine's turns too, and re-arm their write TLBs only when a run
of theirs begins: ``quiesce`` (the machine's ``park_cpus``) ends their threads
before the log starts, stops or is taken, so no store after a take goes past a
TLB entry armed for the log as it was before (the machine's loop starts the
threads again, and each re-arms before its first instruction).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from vmforge.memory import GuestMemory

__all__ = ["PAGE_SIZE", "DirtyLog", "on_machine_thread", "pages_of_bitmap"]

PAGE_SIZE = 4096

T = TypeVar("T")

#: the set bits of each byte value, precomputed (bitmaps are scanned byte by byte)
_BITS = [tuple(b for b in range(8) if v >> b & 1) for v in range(256)]


def pages_of_bitmap(base: int, bitmap: bytes, limit: int) -> list[int]:
    """Guest addresses of the pages whose bit is set (bit ``n``: ``base + n * 4096``),
    below ``limit`` pages."""
    out: list[int] = []
    for i, byte in enumerate(bitmap):
        if byte:
            for bit in _BITS[byte]:
                n = i * 8 + bit
                if n < limit:
                    out.append(base + n * PAGE_SIZE)
    return out


class DirtyLog:
    """The dirty log of one guest memory (every RAM region)."""

    def __init__(self, memory: GuestMemory, quiesce: Callable[[], None] | None = None) -> None:
        self.memory = memory
        #: called before the log starts, stops or is taken: stops harts that run
        #: outside the caller's thread (``park_cpus`` of a machine with hart threads)
        self.quiesce = quiesce
        #: how many times the log was taken (QEMU's dirty-sync-count)
        self.syncs = 0

    @property
    def active(self) -> bool:
        return bool(self.memory.logging)

    def start(self) -> None:
        """Every page clean, and logging from now on."""
        if self.quiesce is not None:
            self.quiesce()
        self.memory._log_start()
        self.syncs = 0

    def stop(self) -> None:
        if self.quiesce is not None:
            self.quiesce()
        self.memory._log_stop()

    def take(self) -> list[int]:
        """The pages written since the start or the last take (writable RAM only),
        in address order; the log is clear afterwards."""
        if self.quiesce is not None:
            self.quiesce()
        self.syncs += 1
        out: list[int] = []
        for region in self.memory.regions:
            if region.readonly:
                continue
            bitmap = self.memory._log_take(region.base)
            if bitmap is not None:
                out += pages_of_bitmap(region.base, bitmap,
                                       (region.size + PAGE_SIZE - 1) // PAGE_SIZE)
        return out


def on_machine_thread(machine: Any, fn: Callable[[], T], timeout: float | None = None) -> T:
    """Run ``fn()`` on ``machine``'s thread between CPU slices and return its result
    (directly when the machine is not running or this is its thread)."""
    thread = getattr(machine, "loop_thread", None)
    if thread is None or not thread.is_alive() or thread is threading.current_thread():
        return fn()
    done = threading.Event()
    box: list[Any] = []

    def call() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:  # handed back to the caller
            box.append((False, exc))
        finally:
            done.set()

    machine.call_soon(call)
    if not done.wait(timeout):
        raise TimeoutError("the machine did not answer")
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]
