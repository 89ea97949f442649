"""A vCPU stopped from inside an I/O callback has finished that instruction.

KVM completes a port or MMIO access only when KVM_RUN is entered again (api.rst,
"KVM_RUN": the operation is complete, and the state userspace reads consistent,
only after re-entry; ``immediate_exit`` completes it without running further).
So a stop requested by a callback must still re-enter once before ``run`` returns,
else the registers saved for a snapshot or a migration describe the access half
done: an ``in`` whose value never reached rax, an ``out`` (or an MMIO read) that
the destination would execute a second time.
"""

from __future__ import annotations

from vmforge.accel.kvm import VcpuExit

from .conftest import boot_user64

GUEST = """
        .code64
        .globl _start
_start: mov     $0x10, %dx
        in      (%dx), %al
        mov     %rax, %rbx
        out     %al, %dx
        mov     %rax, %rcx
        mov     0x400000, %rax
        mov     %rax, %rsi
        mov     $0x20, %dx
        out     %al, %dx
        hlt
"""
# (hlt at CPL 3 would fault: the last test stops at the out before it)


def _lea(code: bytes, opcode: bytes, after: int = 0) -> int:
    """The guest address just past the first instruction starting with ``opcode``."""
    return 0x1000 + code.index(opcode) + len(opcode) + after


def _stopped_at(vm, kvm, guest, which: str):
    code = guest(GUEST)
    vcpu, _mem = boot_user64(vm, kvm, code)
    calls: list[str] = []

    class Cb:
        def pio_in(self, port, size):
            calls.append("in")
            if which == "in":
                vcpu.stop()
            return 0x5A

        def pio_out(self, port, size, value):
            calls.append(f"out{port:x}")
            if which == "out":
                vcpu.stop()

        def mmio_read(self, addr, size):
            calls.append("mmio")
            if which == "mmio":
                vcpu.stop()
            return 0x1122334455667788

    assert vcpu.run(Cb()) is VcpuExit.STOPPED
    return vcpu, calls, code


def test_stop_in_pio_in(vm, kvm, guest):
    vcpu, calls, code = _stopped_at(vm, kvm, guest, "in")
    regs = vcpu.get_regs()
    assert calls == ["in"]
    assert regs.rip == _lea(code, b"\xec") and regs.rax & 0xFF == 0x5A


def test_stop_in_pio_out(vm, kvm, guest):
    vcpu, calls, code = _stopped_at(vm, kvm, guest, "out")
    regs = vcpu.get_regs()
    assert calls == ["in", "out10"]
    assert regs.rip == _lea(code, b"\x48\x89\xc3\xee") and regs.rbx & 0xFF == 0x5A


def test_stop_in_mmio_read(vm, kvm, guest):
    vcpu, calls, code = _stopped_at(vm, kvm, guest, "mmio")
    regs = vcpu.get_regs()
    assert calls == ["in", "out10", "mmio"]
    assert regs.rip == _lea(code, b"\x48\x8b\x04\x25", 4)
    assert regs.rax == 0x1122334455667788


def test_a_stopped_vcpu_runs_on_from_the_next_instruction(vm, kvm, guest):
    """After such a stop, the next ``run`` goes on after the access: no access twice."""
    vcpu, calls, _code = _stopped_at(vm, kvm, guest, "in")

    class Rest:
        def pio_in(self, port, size):
            calls.append("in")
            return 0

        def pio_out(self, port, size, value):
            calls.append(f"out{port:x}")
            if port == 0x20:
                vcpu.stop()

        def mmio_read(self, addr, size):
            calls.append("mmio")
            return 7

    assert vcpu.run(Rest()) is VcpuExit.STOPPED
    assert calls == ["in", "out10", "mmio", "out20"]
    regs = vcpu.get_regs()
    assert regs.rbx & 0xFF == 0x5A and regs.rsi == 7
