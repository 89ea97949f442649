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

import pytest

from vmforge.testing import qemu_tools
from vmforge.testing.oracles import require_program
from vmforge.testing.qemu_tools import pattern

Guest = Callable[..., Path]
Compare = Callable[..., Any]
RunGuest = Callable[..., Any]


@pytest.mark.parametrize("cpus", [1, 2])
def test_hello_start_info_and_interrupts(guest: Guest, same_as_qemu: Compare,
                                         cpus: int) -> None:
    """PVH entry with a valid start_info whose command line is -append's, the UART's
    transmitter-empty interrupt through I/O APIC pin 4, a one-shot LAPIC timer
    interrupt, then isa-debug-exit 0x21 (status 67); with -smp 2 the AP, never
    started, waits for a start-up IPI until the end."""
    qemu = same_as_qemu(guest("hello"),
                        ("cmdline: [console=ttyS0 hello world]", "irq: uart",
                         "irq: lapic timer", "bye"),
                        append="console=ttyS0 hello world", smp=cpus)
    assert qemu.status == (0x21 << 1) | 1


def test_entry_state(guest: Guest, same_as_qemu: Compare) -> None:
    """The processor and start_info state a PVH kernel finds at its entry point."""
    qemu = same_as_qemu(guest("entry"), ("cr0 0x", "start_info magic 0x336ec578"))
    assert qemu.status == (0x27 << 1) | 1


def test_hello_without_append(guest: Guest, same_as_qemu: Compare) -> None:
    """No -append: the command line start_info gives (QEMU: an empty one)."""
    same_as_qemu(guest("hello"), ("cmdline: [", "bye"))


@pytest.mark.parametrize("offset", [0, 1], ids=["inside", "straddling"])
def test_debug_exit_other_port(guest: Guest, same_as_qemu: Compare, offset: int) -> None:
    """isa-debug-exit at iobase=0x501,iosize=2: 0xf4 and 0x503 are not the device; a
    16-bit write at 0x501 is, and so is one at 0x502 that runs past the device's
    end (status ((value << 1) | 1) & 0xff)."""
    kernel = guest("exit_port", "EXIT_BASE=0x501", "EXIT_SIZE=2", f"EXIT_AT={offset}")
    qemu = same_as_qemu(kernel, ("still running",),
                        debug_exit="isa-debug-exit,iobase=0x501,iosize=2")
    assert "not reached" not in qemu.output


def test_triple_fault_no_reboot(guest: Guest, same_as_qemu: Compare) -> None:
    """A triple fault with -no-reboot ends the run as QEMU's does (status 0)."""
    qemu = same_as_qemu(guest("triple"), ("triple: fault next",))
    assert "not reached" not in qemu.output


def test_triple_fault_resets(guest: Guest, same_as_qemu: Compare) -> None:
    """Without -no-reboot a triple fault resets the machine: the guest starts again
    (RAM kept, a boot counter in it), and the third boot exits."""
    qemu = same_as_qemu(guest("reboot"), ("boot 3, start_info ok", "bye"), no_reboot=False)
    assert qemu.status == (0x24 << 1) | 1


def test_pit_through_ioapic(guest: Guest, same_as_qemu: Compare) -> None:
    """The PIT's interrupt reaches the I/O APIC pin the MP table gives
    ISA IRQ 0 (QEMU: pin 2, not pin 0)."""
    qemu = same_as_qemu(guest("pit"), ("i/o apic pin", "bye"))
    assert qemu.status == (0x25 << 1) | 1


def test_pit_through_pic(guest: Guest, same_as_qemu: Compare) -> None:
    """The local APIC's LINT0 and LINT1 as the guest finds them, then the PIT's
    interrupt through the 8259 PIC and LINT0 in ExtINT mode."""
    same_as_qemu(guest("pit", "VIA_PIC=1"), ("lapic lint0 at entry", "pic irq 0", "bye"))


@pytest.mark.parametrize(("fifo", "prompt"), [(0, b"waiting for input\n"),
                                              (1, b"waiting for input\n"), (0, b"")],
                         ids=["8250", "16550A", "8250-typed-ahead"])
def test_console_input_interrupt(guest: Guest, same_as_qemu: Compare, fifo: int,
                                 prompt: bytes) -> None:
    """Bytes on the console's input reach the guest through the UART's received-data
    interrupt, none lost: typed once the guest asks, with the FIFOs off and on,
    and typed ahead, before the guest runs (QEMU takes a byte from the back-end
    only when the receive buffer has room, so nothing is overrun)."""
    qemu = same_as_qemu(guest("echo", f"FIFO={fifo}"), ("rx: 0x0a", "bye"),
                        console_input=b"ab\n", prompt=prompt)
    assert qemu.output.count("rx: ") == 3


@pytest.mark.parametrize("memory", ["512M", "3584M"])
def test_hello_memory_map(guest: Guest, same_as_qemu: Compare, memory: str) -> None:
    """The memory map start_info points to (what a PVH kernel takes as e820), as the
    kernel uses it (see print_memmap in guests/hello.c); with RAM above 4 GiB too."""
    qemu = same_as_qemu(guest("hello"), ("memmap (sorted", "bye"), append="memmap",
                        memory=memory)
    assert " type 1\n" in qemu.output


@pytest.mark.parametrize("memory", ["512M", "3584M"])
def test_hello_initrd_module(guest: Guest, same_as_qemu: Compare, tmp_path: Path,
                             memory: str) -> None:
    """-initrd: start_info's module list gives the initrd where QEMU puts it (the top
    of RAM below 4 GiB), its size and its bytes."""
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(pattern(300_000, seed=3))
    head = " ".join(f"{b:02x}" for b in initrd.read_bytes()[:8])
    same_as_qemu(guest("hello"), ("modules 1", f"size 300000: {head}", "bye"), memory=memory,
                 args=["-initrd", str(initrd)])


SECTORS = 128


def make_disk(path: Path, fmt: str = "raw") -> bytes:
    """A disk of SECTORS sectors of seeded bytes (``fmt``: raw, or converted by
    qemu-img); its contents."""
    data = pattern(SECTORS * 512, seed=10)
    if fmt != "raw":
        require_program("qemu-img", "qemu-utils")
    raw = path.with_suffix(".raw")
    raw.write_bytes(data)
    if fmt != "raw":
        qemu_tools.qemu_img("convert", "-f", "raw", "-O", fmt, str(raw), str(path))
    return data


def hex16(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data[:16])


def virtio_milestones(data: bytes) -> tuple[str, ...]:
    """What a good run of guests/virtio_blk.c shows for the disk ``data``."""
    return (f"capacity {len(data) // 512} sectors", f"sector 0: {hex16(data)}",
            f"sector 1: {hex16(data[512:])}", "sector 2 reads back as written", "bye")


@pytest.mark.parametrize("transport", ["legacy", "modern"])
def test_virtio_blk(guest: Guest, same_as_qemu: Compare, tmp_path: Path, transport: str) -> None:
    """A guest's virtio-blk driver: the slot and IRQ the command line announces,
    the transport version QEMU 7.2 gives (legacy by default, modern with
    virtio-mmio.force-legacy=false), capacity, sectors 0 and 1 read, sector 2
    written and read back, each request completed by an interrupt; the disk holds
    the same data after both runs."""
    data = make_disk(tmp_path / "disk.raw")
    args = [] if transport == "legacy" else ["-global", "virtio-mmio.force-legacy=false"]
    qemu = same_as_qemu(guest("virtio_blk"), virtio_milestones(data), disk=tmp_path / "disk.raw",
                        append="console=ttyS0", args=args)
    assert qemu.status == (0x22 << 1) | 1
    assert f"transport version {1 if transport == 'legacy' else 2}" in qemu.output


def test_virtio_blk_qcow2_level_triggered(guest: Guest, same_as_qemu: Compare,
                                          tmp_path: Path) -> None:
    """The same disk as a qcow2 image (modern transport), the device's interrupt
    routed level-triggered through the I/O APIC."""
    data = make_disk(tmp_path / "disk.qcow2", "qcow2")
    same_as_qemu(guest("virtio_blk", "LEVEL=1"), virtio_milestones(data),
                 disk=tmp_path / "disk.qcow2", disk_format="qcow2", append="console=ttyS0",
                 args=["-global", "virtio-mmio.force-legacy=false"])


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_virtio_blk_polled(guest: Guest, same_as_qemu: Compare, tmp_path: Path,
                           fmt: str) -> None:
    """The modern transport's data path alone: the driver polls the used ring, the
    device's interrupt left masked at the I/O APIC."""
    data = make_disk(tmp_path / f"disk.{fmt}", fmt)
    same_as_qemu(guest("virtio_blk", "POLL=1"), virtio_milestones(data),
                 disk=tmp_path / f"disk.{fmt}", disk_format=fmt, append="console=ttyS0",
                 args=["-global", "virtio-mmio.force-legacy=false"])


@pytest.mark.parametrize("transport", ["legacy", "modern"])
def test_virtio_blk_features(guest: Guest, same_as_qemu: Compare, tmp_path: Path,
                             transport: str) -> None:
    """The feature bits the virtio-blk device offers on each transport version and
    its config space read as 32-bit words (the last one runs past the 57 bytes
    QEMU's has with those features), with no -append: the command line is the
    machine's announcement alone."""
    make_disk(tmp_path / "disk.raw")
    args = [] if transport == "legacy" else ["-global", "virtio-mmio.force-legacy=false"]
    same_as_qemu(guest("virtio_blk", "FEATURES=1"), ("device features 0x", "config space:", "bye"),
                 disk=tmp_path / "disk.raw", args=args)


@pytest.mark.parametrize("transport", ["legacy", "modern"])
def test_virtio_blk_indirect(guest: Guest, same_as_qemu: Compare, tmp_path: Path,
                             transport: str) -> None:
    """VIRTIO_RING_F_INDIRECT_DESC negotiated, every request (reads, the write, flush,
    get-id, an unknown type, past the end) one descriptor pointing to a table."""
    data = make_disk(tmp_path / "disk.raw")
    args = [] if transport == "legacy" else ["-global", "virtio-mmio.force-legacy=false"]
    kernel = guest("virtio_blk", "INDIRECT=1", "REQUESTS=1", f"SECTORS_PAST_END={SECTORS}")
    qemu = same_as_qemu(kernel, (*virtio_milestones(data), "request type 8"),
                        disk=tmp_path / "disk.raw", append="console=ttyS0", args=args)
    assert "used id 3 " in qemu.output


@pytest.mark.parametrize("transport", ["legacy", "modern"])
def test_virtio_blk_event_idx(guest: Guest, same_as_qemu: Compare, tmp_path: Path,
                              transport: str) -> None:
    """VIRTIO_RING_F_EVENT_IDX negotiated: an interrupt per request while used_event
    asks for each, then none for a buffer used_event skips and one for the next."""
    data = make_disk(tmp_path / "disk.raw")
    args = [] if transport == "legacy" else ["-global", "virtio-mmio.force-legacy=false"]
    qemu = same_as_qemu(guest("virtio_blk", "EVENT_IDX=1"),
                        (*virtio_milestones(data), "by polling", "event index: 1 interrupt"),
                        disk=tmp_path / "disk.raw", append="console=ttyS0", args=args)
    assert qemu.status == (0x22 << 1) | 1


@pytest.mark.parametrize("serial", ["", "vmforge-disk", "vmforge-0123456789abcdef"],
                         ids=["no-serial", "serial", "serial-over-20-bytes"])
def test_virtio_blk_other_requests(guest: Guest, same_as_qemu: Compare, tmp_path: Path,
                                   serial: str) -> None:
    """Flush, get-id (the drive's serial, 20 bytes at most), a request of an unknown
    type and a read past the end: statuses and used lengths as QEMU's."""
    make_disk(tmp_path / "disk.raw")
    kernel = guest("virtio_blk", "REQUESTS=1", f"SECTORS_PAST_END={SECTORS}")
    extra = [] if not serial else ["-global", f"virtio-blk-device.serial={serial}"]
    qemu = same_as_qemu(kernel, ("request type 8", f"id [{serial[:20]}]", "bye"),
                        disk=tmp_path / "disk.raw", append="console=ttyS0", args=extra)
    assert qemu.output.count("status 0, by interrupt") == 6   # 4 transfers, flush, get-id


@pytest.mark.parametrize("transport", ["legacy", "modern"])
def test_virtio_mmio_registers(guest: Guest, same_as_qemu: Compare, tmp_path: Path,
                               transport: str) -> None:
    """Every register word of an empty transport (slot 0) and of the one holding a
    virtio-blk device (slot 7) before the driver touches them."""
    make_disk(tmp_path / "disk.raw")
    args = [] if transport == "legacy" else ["-global", "virtio-mmio.force-legacy=false"]
    qemu = same_as_qemu(guest("virtio_blk", "DUMP=1"),
                        ("registers of slot 0:\n74726976", "registers of slot 7:", "bye"),
                        disk=tmp_path / "disk.raw", args=args)
    assert qemu.status == (0x22 << 1) | 1


def test_virtio_blk_no_device(guest: Guest, same_as_qemu: Compare) -> None:
    """No -device: all 8 transports answer with the virtio-mmio magic and device id
    0, and the command line announces none of them."""
    qemu = same_as_qemu(guest("virtio_blk"), ("no virtio-blk device",))
    assert "no virtio-mmio magic" not in qemu.output and "virtio_mmio" not in qemu.output


def test_virtio_blk_two_devices(guest: Guest, same_as_qemu: Compare, tmp_path: Path) -> None:
    """Two virtio-blk devices: the transports QEMU puts them on (the first -device,
    here the 64-sector disk, on slot 7, the second on slot 6) and announces; the
    driver takes the first one it finds, on slot 6."""
    data = make_disk(tmp_path / "disk.raw")
    small = tmp_path / "small.raw"
    small.write_bytes(pattern(64 * 512, seed=11))
    qemu = same_as_qemu(guest("virtio_blk"), ("capacity", "bye"), disk=tmp_path / "disk.raw",
                        append="console=ttyS0", args=[
                            "-drive", f"file={small},if=none,id=d1,format=raw,readonly=on",
                            "-device", "virtio-blk-device,drive=d1"])
    assert qemu.output.count(": device id 2") == 2
    assert f"capacity {len(data) // 512} sectors" in qemu.output


def test_virtio_blk_read_only(guest: Guest, same_as_qemu: Compare, tmp_path: Path) -> None:
    """A read-only drive: reads work, the write fails with the device's status and
    sector 2 reads back as it was."""
    data = make_disk(tmp_path / "disk.raw")
    same_as_qemu(guest("virtio_blk"), (*virtio_milestones(data)[:3],
                                       f"sector 2: {hex16(data[1024:])}", "sector 2 differs"),
                 disk=tmp_path / "disk.raw", read_only=True, append="console=ttyS0")


@pytest.mark.parametrize("cpus", [2, 4])
def test_smp_mp_table_and_ap_start(guest: Guest, same_as_qemu: Compare, cpus: int) -> None:
    """The processors the MP table announces, each AP woken by INIT-SIPI-SIPI from
    a real-mode trampoline, reaching protected mode and printing its APIC ID, then
    taking a fixed IPI from the BSP."""
    qemu = same_as_qemu(guest("smp"), ("checksum ok", f"cpus announced {cpus}",
                                       f"aps up {cpus - 1}", "bye"), smp=cpus)
    assert qemu.output.count("ap up, lapic id") == cpus - 1
    assert qemu.output.count(": ipi vector") == cpus - 1


def test_smp_reset_restarts_the_aps(guest: Guest, same_as_qemu: Compare) -> None:
    """A triple fault with the AP running resets every vCPU: on the second boot the
    AP waits for INIT-SIPI-SIPI again and starts as the first time."""
    qemu = same_as_qemu(guest("smp", "REBOOT=1"), ("smp: boot 2", "aps up 1", "bye"),
                        smp=2, no_reboot=False)
    assert qemu.output.count("ap up, lapic id 1") == 2


def test_smp_mp_table_entries(guest: Guest, same_as_qemu: Compare) -> None:
    """Every entry of the MP table (buses, I/O APIC, interrupt routing) with -smp 2."""
    same_as_qemu(guest("smp"), ("ioapic id", "io irq:", "bye"), smp=2, append="mptable")


def test_flat_binary(guest: Guest, run_qemu: RunGuest, run_vmforge: RunGuest) -> None:
    """A flat binary (vmforge only: QEMU's -kernel takes none): hello built for the
    machine's flat entry (64-bit long mode at 1 MiB, rsi = hvm_start_info) prints,
    after its first line, what the PVH hello prints under QEMU, and exits alike."""
    append = "console=ttyS0 flat"
    qemu = run_qemu(guest("hello"), append=append)
    assert "irq: lapic timer" in qemu.output, qemu
    ours = run_vmforge(guest("hello", flat=True), append=append)
    first, _, rest = ours.output.partition("\n")
    assert first == "hello: flat binary, 64-bit entry", ours
    assert rest == qemu.output.partition("\n")[2], (
        f"console text differs\n=== QEMU (PVH) ===\n{qemu}\n=== vmforge (flat) ===\n{ours}")
    assert ours.status == qemu.status, ours
