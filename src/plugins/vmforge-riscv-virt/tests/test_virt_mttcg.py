"""Linux on harts on host threads (``-accel interp,thread=multi``): it boots on
-smp 2 and 4, runs two processes at once, pauses and resumes, reboots and
powers off; every hart thread is gone when the machine ends."""

from __future__ import annotations

import time

import pytest

from vmforge.chardev import BufferChar

from .test_virt_boot import FW_JUMP, PROMPT, guest, machine
from .test_virt_linux_use import LOOP, STEP, command

#: two shell loops at once, in two processes
PAIR = (b"a() { i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; echo one=$i; }; "
        b"a & a & wait; echo pa''ir=done\n")


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
