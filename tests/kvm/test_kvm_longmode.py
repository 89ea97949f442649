"""A guest that goes from real mode to long mode and computes at CPL3 (native speed on
a nested host), and one started straight in long mode at CPL3 by the host."""

from __future__ import annotations

import time

from vmforge.accel.kvm import Regs, VcpuExit
from vmforge.accel.kvm.x86 import enter_long_mode, enter_real_mode, identity_page_tables

from .conftest import ram

N = 100_000_000                  # loop iterations: ~0.1 s natively, hours if emulated


class Collect:
    def __init__(self, vcpu):
        self.vcpu = vcpu
        self.values: list[int] = []

    def pio_out(self, port, size, value):
        if port == 0x10:
            self.values.append(value)
        elif port == 0x11:
            self.vcpu.stop()


def test_real_mode_to_long_mode_then_cpl3_compute(vm, kvm, guest):
    mem = ram(0x200000)
    mem.write(0x1000, guest("longmode.S"))
    identity_page_tables(mem, 0x10000)
    vm.map_memory(mem)
    vcpu = vm.create_vcpu()
    vcpu.set_cpuid(kvm.supported_cpuid())           # long mode needs CPUID.LM
    enter_real_mode(vcpu, 0x1000, sp=0x8000)
    r = vcpu.get_regs()
    r.rdi = N
    vcpu.set_regs(r)
    cb = Collect(vcpu)
    t0 = time.perf_counter()
    assert vcpu.run(cb) is VcpuExit.STOPPED
    elapsed = time.perf_counter() - t0
    total = N * (N + 1) // 2
    assert cb.values == [total & 0xFFFFFFFF, total >> 32]
    s = vcpu.get_sregs()
    assert s.efer & 0x500 == 0x500 and s.cs.l == 1 and s.cs.dpl == 3 and s.cs.selector == 0x1B
    assert elapsed < 20, f"{N} iterations took {elapsed:.1f} s: not native speed"


def test_host_enters_long_mode_at_cpl3(vm, kvm, guest):
    code = guest("""
        .code64
        .globl _start
_start: mov     %rdi, %rcx
        xor     %rax, %rax
1:      add     %rcx, %rax
        dec     %rcx
        jnz     1b
        mov     $0x10, %dx
        out     %eax, %dx
        shr     $32, %rax
        out     %eax, %dx
        mov     $0x11, %dx
        out     %al, %dx
""", 0x1000)
    mem = ram(0x200000)
    mem.write(0x1000, code)
    cr3 = identity_page_tables(mem, 0x10000)
    vm.map_memory(mem)
    vcpu = vm.create_vcpu()
    vcpu.set_cpuid(kvm.supported_cpuid())
    enter_long_mode(vcpu, cr3, rip=0x1000, rsp=0x9000, user=True, regs=Regs(rdi=1000))
    cb = Collect(vcpu)
    assert vcpu.run(cb) is VcpuExit.STOPPED
    assert cb.values == [500500, 0]
    assert vcpu.get_sregs().cs.dpl == 3
