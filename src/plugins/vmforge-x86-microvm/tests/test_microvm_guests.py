"""Project-written PVH guests on ``-M microvm -accel kvm``: vmforge prints the same
console text and ends with the same exit status as QEMU 7.2's microvm
(``acpi=off``) on the same host.

What the guests print is QEMU's, never written here: the tests only check that
QEMU's run is a meaningful reference (not empty, the expected milestones) and
then that vmforge's run is the same.  The guests are in ``guests/``, built by
``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Guest = Callable[..., Path]
Compare = Callable[..., Any]


def test_hello_start_info_and_interrupts(guest: Guest, same_as_qemu: Compare) -> None:
    """PVH entry with a valid start_info whose command line is -append's, the UART's
    transmitter-empty interrupt through I/O APIC pin 4, a one-shot LAPIC timer
    interrupt, then isa-debug-exit 0x21 (status 67)."""
    qemu = same_as_qemu(guest("hello"),
                        ("cmdline: [console=ttyS0 hello world]", "irq: uart",
                         "irq: lapic timer", "bye"),
                        append="console=ttyS0 hello world")
    assert qemu.status == (0x21 << 1) | 1


def test_hello_without_append(guest: Guest, same_as_qemu: Compare) -> None:
    """No -append: the command line start_info gives (QEMU: an empty one)."""
    same_as_qemu(guest("hello"), ("cmdline: [", "bye"))


def test_debug_exit_other_port(guest: Guest, same_as_qemu: Compare) -> None:
    """isa-debug-exit at iobase=0x501,iosize=2: 0xf4 and 0x503 are not the device,
    a 16-bit write at 0x502 is (status ((value << 1) | 1) & 0xff)."""
    kernel = guest("exit_port", "EXIT_BASE=0x501", "EXIT_SIZE=2")
    qemu = same_as_qemu(kernel, ("still running",),
                        debug_exit="isa-debug-exit,iobase=0x501,iosize=2")
    assert "not reached" not in qemu.output


def test_triple_fault_no_reboot(guest: Guest, same_as_qemu: Compare) -> None:
    """A triple fault with -no-reboot ends the run as QEMU's does (status 0)."""
    qemu = same_as_qemu(guest("triple"), ("triple: fault next",))
    assert "not reached" not in qemu.output


def test_hello_memory_map(guest: Guest, same_as_qemu: Compare) -> None:
    """The memory map start_info points to (what a PVH kernel takes as e820)."""
    qemu = same_as_qemu(guest("hello"), ("memmap entries", "bye"), append="memmap")
    assert " type 1\n" in qemu.output
