"""Linux on harts on host threads (``-accel interp,thread=multi``): it boots on
-smp 2 and 4, runs two processes at once, pauses and resumes, reboots and
powers off; every hart thread is gone when the machine ends.  Which machines
take threads: riscv-virt with -smp > 1 unless ``thread=single`` or ``-icount``."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import pytest

from vmforge.chardev import BufferChar, NullChar
from vmforge.clock import Icount
from vmforge.machine import MachineError
from vmforge.monitor import Monitor

from .test_virt_boot import FW_JUMP, PROMPT, guest, machine
from .test_virt_linux_use import LOOP, STEP, command

#: two shell loops at once, in two processes
PAIR = (b"a() { i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; echo one=$i; }; "
        b"a & a & wait; echo pa''ir=done\n")


def monitor(m: Any, line: str) -> str:
    """A monitor command run on the machine's thread, as the monitor runs it."""
    done: list[str] = []
    m.call_soon(lambda: done.append(Monitor(m, NullChar()).execute(line)))
    end = time.monotonic() + STEP
    while not done:
        assert time.monotonic() < end, f"{line!r} did not run"
        time.sleep(0.01)
    return done[0]


@pytest.mark.parametrize("harts", [2, 4])
def test_linux_on_hart_threads_boots_works_pauses_and_reboots(harts: int) -> None:
    console = BufferChar()
    m = machine(console, memory=256 << 20, smp=harts, bios=FW_JUMP,
                kernel=guest("linux-riscv64"), initrd=guest("initramfs-riscv64"),
                append="console=ttyS0", extra={"accel_thread": "multi"})
    m.start()
    try:
        console.wait_for(PROMPT, timeout=120)
        assert m.hart_threads is not None and m.hart_threads.running
        command(console, LOOP, b"loop=30000")
        command(console, b"echo CPUS=$(grep -c ^processor /proc/cpuinfo)\n",
                f"CPUS={harts}".encode())
        command(console, PAIR, b"pair=done")
        assert console.output.count(b"one=3000") == 2
        cpus = monitor(m, "info cpus")
        assert len(re.findall(r"CPU #\d+", cpus)) == harts, cpus
        command(console, b"echo after-info\n", b"\nafter-info")
        m.pause()
        end = time.monotonic() + STEP
        while m.hart_threads.running:       # the machine's thread parks them
            assert time.monotonic() < end, "a paused machine's harts are parked"
            time.sleep(0.01)
        m.resume()
        command(console, b"echo back\n", b"\nback")
        console.feed(b"reboot -f\n")
        console.wait_for(b"Linux version", timeout=STEP)
        console.wait_for(PROMPT, timeout=120)
        command(console, PAIR, b"pair=done")
        console.feed(b"poweroff -f\n")
        assert m.wait(STEP) == 0
        assert not m.hart_threads.running
    finally:
        m.stop()


@pytest.mark.parametrize(("smp", "extra", "icount", "threaded"), [
    (1, {}, None, False),                               # one hart: the machine's thread
    (2, {}, None, True),                                # -smp 2: threads by default
    (2, {"accel_thread": "single"}, None, False),       # -accel interp,thread=single
    (2, {}, "3", False),                                # -icount: one thread
    (1, {"accel_thread": "multi"}, None, True),
])
def test_which_machines_run_harts_on_threads(smp: int, extra: dict[str, str],
                                             icount: str | None, threaded: bool) -> None:
    m = machine(BufferChar(), smp=smp, bios=FW_JUMP, extra=extra,
                icount=Icount.parse(icount) if icount else None)
    try:
        m.realize()
        assert (m.hart_threads is not None) is threaded
        assert (type(m.big_lock) is not contextlib.nullcontext) is threaded
    finally:
        m.close()


def test_multi_with_icount_is_refused() -> None:
    m = machine(BufferChar(), smp=2, bios=FW_JUMP, extra={"accel_thread": "multi"},
                icount=Icount.parse("3"))
    with pytest.raises(MachineError, match=r"-icount\) needs thread=single"):
        m.realize()
    m.close()
