"""Port I/O, MMIO, hlt and triple faults from real-mode guests."""

from __future__ import annotations

from typing import Any

import pytest

from vmforge.accel.kvm import VcpuExit, Vm
from vmforge.accel.kvm.x86 import enter_real_mode

from .conftest import boot_user64, ram


class Recorder:
    """Callbacks that record every access and answer reads from a table."""

    def __init__(self, reads: dict[Any, Any] | None = None) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.reads = reads or {}
        self.halts = 0

    def _answer(self, key: Any) -> int:
        v = self.reads[key]
        return v.pop(0) if isinstance(v, list) else v

    def pio_out(self, port: int, size: int, value: int) -> None:
        self.log.append(("out", port, size, value))

    def pio_in(self, port: int, size: int) -> int:
        self.log.append(("in", port, size))
        return self._answer((port, size))

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        self.log.append(("w", addr, size, value))

    def mmio_read(self, addr: int, size: int) -> int:
        self.log.append(("r", addr, size))
        return self._answer((addr, size))

    def halt(self, vcpu: Any) -> bool:
        self.halts += 1
        return False


def boot_real(vm: Vm, code: bytes, mem=None):
    mem = mem or ram()
    mem.write(0x1000, code)
    vm.map_memory(mem)
    vcpu = vm.create_vcpu()
    enter_real_mode(vcpu, 0x1000, sp=0x8000)
    return vcpu, mem


def test_port_io_every_size_and_string_io(vm, guest):
    vcpu, _ = boot_real(vm, guest("pio.S"))
    cb = Recorder({(0x20, 1): 0xA1, (0x20, 2): 0xB2C3, (0x20, 4): 0xD4E5F607,
                   (0x21, 1): [0x61, 0x62, 0x63, 0x64]})
    assert vcpu.run(cb) is VcpuExit.HLT
    assert cb.halts == 1
    outs = [e for e in cb.log if e[0] == "out"]
    assert outs[:3] == [("out", 0x10, 1, 0x12), ("out", 0x10, 2, 0x3456),
                        ("out", 0x10, 4, 0x789ABCDE)]
    ins = [e for e in cb.log if e[0] == "in"]
    assert ins[:3] == [("in", 0x20, 1), ("in", 0x20, 2), ("in", 0x20, 4)]
    # what the guest read is what it echoes: each read completed before re-entry
    assert outs[3:6] == [("out", 0x11, 1, 0xA1), ("out", 0x11, 2, 0xB2C3),
                         ("out", 0x11, 4, 0xD4E5F607)]
    # rep outsb: one byte per call, in order
    assert outs[6:11] == [("out", 0x12, 1, c) for c in b"hello"]
    # rep insb: four reads, stored where the guest put them
    assert ins[3:] == [("in", 0x21, 1)] * 4
    assert outs[11:] == [("out", 0x13, 4, int.from_bytes(b"abcd", "little"))]


def test_mmio_reads_writes_and_a_readonly_slot(vm, guest):
    mem = ram()
    rom = bytearray(0x1000)
    rom[0:4] = (0xCAFEF00D).to_bytes(4, "little")
    mem.add_ram(0x30000, 0x1000, name="rom", readonly=True)
    mem.load(0x30000, bytes(rom))
    vcpu, _ = boot_real(vm, guest("mmio.S"), mem)
    assert vm.slots[1].readonly
    cb = Recorder({(0x20040, 4): 0x89ABCDEF, (0x20044, 2): 0x1357, (0x20046, 1): 0x42})
    assert vcpu.run(cb) is VcpuExit.HLT
    assert [e for e in cb.log if e[0] in "rw"] == [
        ("w", 0x20010, 4, 0x11223344), ("w", 0x20020, 2, 0x5566), ("w", 0x20030, 1, 0x77),
        ("r", 0x20040, 4), ("r", 0x20044, 2), ("r", 0x20046, 1),
        ("w", 0x30008, 2, 0xBEEF)]                    # a ROM write is an MMIO exit
    assert [e[3] for e in cb.log if e[0] == "out"] == [0x89ABCDEF, 0x1357, 0x42, 0xCAFEF00D]
    assert mem.read_u16(0x30008) == 0                 # and the ROM did not change


def _triple(vm, kvm, guest):
    vcpu, _ = boot_user64(vm, kvm, guest("triple.S"))
    s = vcpu.get_sregs()
    s.idt.base, s.idt.limit = 0, 0
    vcpu.set_sregs(s)
    return vcpu


def test_triple_fault_is_a_shutdown(vm, kvm, guest):
    assert _triple(vm, kvm, guest).run(Recorder()) is VcpuExit.SHUTDOWN


def test_shutdown_callback_sees_it(vm, kvm, guest):
    vcpu = _triple(vm, kvm, guest)
    seen = []

    class Cb:
        def shutdown(self, v):
            seen.append(v)
            return False

    assert vcpu.run(Cb()) is VcpuExit.SHUTDOWN
    assert seen == [vcpu]


def test_exception_in_a_callback_reaches_the_caller(vm, guest):
    vcpu, _ = boot_real(vm, guest("pio.S"))

    class Boom(Exception):
        pass

    class Cb:
        def pio_out(self, port, size, value):
            raise Boom(port)

    with pytest.raises(Boom) as info:
        vcpu.run(Cb())
    assert info.value.args == (0x10,)
    # the vCPU stopped on that exit: rip is past the first out
    assert vcpu.get_regs().rip == 0x1006


STRINGS64 = """
        .code64
        .globl _start
_start: lea     msg(%rip), %rsi
        mov     $16, %ecx
        mov     $0x12, %dx
        cld
        rep outsb
        lea     buf(%rip), %rdi
        mov     $4, %ecx
        mov     $0x21, %dx
        rep insw
        mov     buf(%rip), %rax
        mov     $0x13, %dx
        out     %eax, %dx
        shr     $32, %rax
        out     %eax, %dx
        mov     $0x11, %dx
        out     %al, %dx
msg:    .ascii  "0123456789abcdef"
buf:    .quad   0
"""


@pytest.mark.parametrize("bulk_mode", [True, False])
def test_string_io_in_bulk_or_element_by_element(vm, kvm, guest, bulk_mode):
    """String port I/O: an exit with a count > 1 goes to ``pio_in_string``/
    ``pio_out_string`` in one call when the callbacks have them, else element by
    element.  (KVM's emulator reads ahead for ``rep ins`` -- one exit, count 4 here --
    but exits once per element for ``rep outs``.)"""
    vcpu, _ = boot_user64(vm, kvm, guest(STRINGS64))
    calls: list = []
    words = [0x4241, 0x4443, 0x4645, 0x4847]

    class Cb:
        def pio_out(self, port, size, value):
            calls.append(("out", port, size, value))
            if port == 0x11:
                vcpu.stop()

        def pio_in(self, port, size):
            calls.append(("in", port, size))
            return words[len([c for c in calls if c[0] == "in"]) - 1]

    class Bulk(Cb):
        def pio_out_string(self, port, size, data):
            calls.append(("outs", port, size, data))

        def pio_in_string(self, port, size, count):
            calls.append(("ins", port, size, count))
            return b"".join(w.to_bytes(2, "little") for w in words[:count])

    assert vcpu.run(Bulk() if bulk_mode else Cb()) is VcpuExit.STOPPED
    if bulk_mode:
        outs = [c for c in calls if c[1] == 0x12]
        assert b"".join(c[3] if c[0] == "outs" else bytes([c[3]])
                        for c in outs) == b"0123456789abcdef"
        assert [c for c in calls if c[1] == 0x21] == [("ins", 0x21, 2, 4)]
    else:
        assert calls[:16] == [("out", 0x12, 1, c) for c in b"0123456789abcdef"]
        assert calls[16:20] == [("in", 0x21, 2)] * 4
    assert [c[3] for c in calls if c[:2] == ("out", 0x13)] == [0x44434241, 0x48474645]
