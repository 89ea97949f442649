"""The microvm machine as a script drives it: in-process runs of tiny PVH guests
(reset and -no-reboot, pause and resume, the monitor's view of the vCPUs, a
vCPU's error), and the command line's refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vmforge.accel.kvm import kvm_available
from vmforge.chardev import BufferChar
from vmforge.config import MachineConfig
from vmforge.machine import MachineError
from vmforge.plugins import registry
from vmforge.testing.oracles import oracle_missing
from vmforge.testing.x86_elf import build_elf, pvh_source

_why = kvm_available()
if _why is not None:
    oracle_missing(_why)

# prints "boot\n" on COM1, then either spins (cli; jmp) or triple-faults (an IDT
# of limit 0, then ud2)
_BOOT = """
    .text
    .code32
    .globl _start
_start:
    mov $0x3f8, %dx
    mov $'b', %al
    out %al, %dx
    mov $'o', %al
    out %al, %dx
    out %al, %dx
    mov $'t', %al
    out %al, %dx
    mov $'\\n', %al
    out %al, %dx
    mov $0x1234, %esi
    cli
"""
SPIN = _BOOT + "1:  inc %ecx\n    jmp 1b\n"
TRIPLE = _BOOT + "    lidt idt0\n    ud2\n    .data\nidt0: .word 0\n    .long 0\n"


def _guest(tmp_path: Path, body: str, name: str) -> str:
    return str(build_elf(tmp_path, pvh_source(".long _start", body=body), bits=32,
                         name=name))


def _machine(kernel: str, **overrides) -> tuple[object, BufferChar]:
    console = BufferChar()
    cfg = MachineConfig(machine="microvm", accel="kvm", memory=64 << 20, kernel=kernel,
                        serial=[console], **overrides)
    return registry().load("machine", "microvm")(cfg), console


def _wait_for(pred, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.01)


def _on_machine_thread(machine, fn):
    """Run ``fn()`` between slices on the machine's thread; its result."""
    done = threading.Event()
    out = {}

    def call() -> None:
        out["r"] = fn()
        done.set()

    machine.call_soon(call)
    assert done.wait(20)
    return out["r"]


def test_triple_fault_resets_and_the_guest_boots_again(tmp_path):
    m, console = _machine(_guest(tmp_path, TRIPLE, "triple"))
    m.start()
    try:
        _wait_for(lambda: console.output.count(b"boot\n") >= 3)
    finally:
        assert m.stop() == 0
    assert m.shutdown_reason == "user"


def test_no_reboot_ends_on_a_triple_fault_with_status_0(tmp_path):
    m, console = _machine(_guest(tmp_path, TRIPLE, "triple"), no_reboot=True)
    assert m.run(timeout=20) == 0
    assert m.shutdown_reason == "reboot"
    assert console.output == b"boot\n"
    m.close()


def test_pause_resume_and_the_monitor_view(tmp_path):
    m, console = _machine(_guest(tmp_path, SPIN, "spin"), smp=2)
    m.start()
    try:
        _wait_for(lambda: b"boot\n" in console.output)
        regs = _on_machine_thread(m, lambda: m.monitor_info("registers"))
        assert "CPU#0" in regs and "CPU#1" in regs
        assert "RSI=0000000000001234" in regs          # the guest set it before spinning
        assert "CR0=00000011" in regs                   # PVH: protected mode, no paging
        cpus = _on_machine_thread(m, lambda: m.monitor_info("cpus"))
        assert cpus.splitlines()[0].startswith("* CPU #0: rip=0x")
        assert "kvm support: enabled" in m.monitor_info("kvm")
        stats = _on_machine_thread(m, lambda: m.monitor_info("stats"))
        assert stats.startswith("vm:") and "vcpu 1:" in stats
        m.pause()
        ecx = [_on_machine_thread(m, lambda: m.vcpus[0].get_regs().rcx) for _ in range(2)]
        time.sleep(0.2)
        assert _on_machine_thread(m, lambda: m.vcpus[0].get_regs().rcx) == ecx[0] == ecx[1]
        m.resume()

        def rcx() -> str:      # (registers of a running vCPU: through the monitor)
            text = _on_machine_thread(m, lambda: m.monitor_info("registers"))
            return text.split("RCX=")[1].split()[0]

        _wait_for(lambda: int(rcx(), 16) != ecx[0])
    finally:
        assert m.stop() == 0


def test_an_error_in_a_device_on_a_vcpu_thread_comes_out_of_run(tmp_path):
    m, _ = _machine(_guest(tmp_path, SPIN, "spin"))
    m.realize()

    class Broken:
        name = "broken"

        def read(self, offset, size):
            return 0

        def write(self, offset, size, value):
            raise RuntimeError("device failed")

    m.io.remove_mmio(0x3F8)
    m.io.add_mmio(0x3F8, Broken(), 8)
    with pytest.raises(RuntimeError, match="device failed"):
        m.run(timeout=20)
    m.close()


def _vmforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "-M", "microvm",
                           *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,message", [
    ((), "give a guest with -kernel"),
    (("-kernel", "/nonexistent/vmlinux"), "/nonexistent/vmlinux: no such file"),
    (("-accel", "interp", "-kernel", "x"), "runs on kvm, not 'interp'"),
    (("-cpu", "486", "-kernel", "K"), "unknown CPU model"),
    (("-bios", "/x/bios.bin", "-kernel", "K"), "-bios is not supported"),
    (("-device", "ns16550a", "-kernel", "K"), "only virtio-mmio and ISA port devices"),
])
def test_refusals_are_one_clear_line(tmp_path, args, message):
    kernel = _guest(tmp_path, SPIN, "spin")
    r = _vmforge(*(kernel if a == "K" else a for a in args))
    assert r.returncode == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_an_elf_without_a_pvh_note(tmp_path):
    plain = build_elf(tmp_path, SPIN, bits=32, name="plain")
    r = _vmforge("-kernel", str(plain))
    assert r.returncode == 1
    assert "without a PVH entry note" in r.stderr


def test_monitor_info_registers_through_machine_error_free(tmp_path):
    """The machine answers 'info' itself only for what it knows."""
    m, _ = _machine(_guest(tmp_path, SPIN, "spin"))
    m.realize()
    try:
        assert m.monitor_info("mtree") is None
    finally:
        m.close()
    with pytest.raises(MachineError, match="1 to 64 CPUs"):
        _machine(_guest(tmp_path, SPIN, "spin"), smp=65)


def test_virtio_kicks_arrive_by_ioeventfd_not_through_the_vcpu(guest, tmp_path, monkeypatch):
    """The virtio-blk guest's QueueNotify writes never reach the vCPU's exit loop:
    KVM signals an eventfd, the machine's I/O thread hands the kick on."""
    from vmforge.accel.kvm import machine as kvm_machine
    from vmforge.config import DeviceSpec, DriveSpec

    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(range(256)) * 256)
    seen: list[int] = []
    original = kvm_machine._Exits.mmio_write

    def mmio_write(self, addr, size, value):
        seen.append(addr)
        original(self, addr, size, value)

    monkeypatch.setattr(kvm_machine._Exits, "mmio_write", mmio_write)
    m, console = _machine(str(guest("virtio_blk")), append="console=ttyS0",
                          drives=[DriveSpec.parse(f"file={disk},if=none,id=d0,format=raw")],
                          devices=[DeviceSpec.parse("virtio-blk-device,drive=d0"),
                                   DeviceSpec.parse("isa-debug-exit,iobase=0xf4,iosize=4")])
    status = m.run(timeout=30)
    blk = m.virtio[7].backend
    notifies = blk.stats["notifies"]
    m.close()
    assert status == (0x22 << 1) | 1, console.output.decode(errors="replace")
    assert b"reads back as written" in console.output
    assert notifies >= 4                                   # four requests, four kicks
    notify_reg = 0xFEB00E00 + 0x50
    assert notify_reg not in seen
    assert any(0xFEB00E00 <= a < 0xFEB01000 for a in seen)   # other registers did exit


def test_a_kick_left_on_its_eventfd_reaches_the_device_before_the_drain_ends(tmp_path):
    """A QueueNotify the guest wrote just before the vCPUs stopped (its ioeventfd
    signalled, the I/O thread's hand-off queued behind the call that takes the
    state) reaches the device before ``drain`` returns: the state a migration
    sends then has that request.  (Before, the source handled it after sending:
    the destination waited for it forever, the live-migration test's hang.)"""
    from vmforge.config import DeviceSpec, DriveSpec
    from vmforge.migration.state import drain

    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(1 << 16))
    m, console = _machine(_guest(tmp_path, SPIN, "spin"),
                          drives=[DriveSpec.parse(f"file={disk},if=none,id=d0,format=raw")],
                          devices=[DeviceSpec.parse("virtio-blk-device,drive=d0")])
    kicks: list[int] = []
    m.start()
    try:
        _wait_for(lambda: b"boot\n" in console.output)     # built; the I/O thread runs
        slot = m.virtio[7]
        write = slot.write

        def spy(reg: int, size: int, value: int) -> None:
            kicks.append(value)
            write(reg, size, value)

        slot.write = spy                 # (the notify handler calls slot.write)
        kick_fd = next(fd for fd, _handler, inline in m._eventfds if not inline)

        def kick_then_drain() -> list[int]:
            m.park_cpus()
            os.eventfd_write(kick_fd, 1)        # as KVM does for the guest's write
            time.sleep(0.2)                     # the I/O thread takes it and queues
            drain(m)
            return list(kicks)

        assert _on_machine_thread(m, kick_then_drain) == [0]
    finally:
        assert m.stop() == 0
    assert kicks == [0]                          # handled once, not again later


def test_ctrl_c_ends_every_vcpu(tmp_path):
    """SIGINT to `vmforge run` with two spinning vCPUs: it ends, status 130, no traceback."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "vmforge.cli.main", "run", "-M", "microvm",
                             "-smp", "2", "-kernel", _guest(tmp_path, SPIN, "spin"),
                             "-serial", "stdio"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line == b"boot\n"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err


def test_qemus_machine_options(tmp_path):
    """-M microvm,acpi=off,pit=off,rtc=off,x-option-roms=off: QEMU's spelling is
    taken; what vmforge's microvm cannot be is refused by name."""
    from vmforge.config import DeviceSpec, DriveSpec

    kernel = _guest(tmp_path, SPIN, "spin")
    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(65536))
    r = _vmforge("-M", "microvm,acpi=off,pit=off,rtc=off,x-option-roms=off,isa-serial=off",
                 "-kernel", kernel, "-device", "isa-debug-exit", "--timeout", "1")
    assert "has no propert" not in r.stderr and r.stdout == ""      # no UART: no "boot"
    r = _vmforge("-M", "microvm,acpi=on", "-kernel", kernel)
    assert r.returncode == 1 and "acpi=on" in r.stderr and "Traceback" not in r.stderr
    drives = [DriveSpec.parse(f"file={disk},if=none,id=d0,format=raw")]
    devices = [DeviceSpec.parse("virtio-blk-device,drive=d0")]
    for announce, want in (("on", " virtio_mmio.device=512@0xfeb00e00:12"), ("off", "")):
        m, _ = _machine(kernel, drives=list(drives), devices=list(devices),
                        machine_props={"auto-kernel-cmdline": announce})
        m.realize()
        try:
            assert m.virtio_cmdline() == want
        finally:
            m.close()
