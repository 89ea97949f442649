"""The system device, ioctl numbers against the kernel's formula, vCPU state round trips."""

from __future__ import annotations

import fcntl

import pytest

from vmforge._fast import kvm as _kvm
from vmforge.accel.kvm import IOCTLS, Fpu, Kvm, KvmError, Regs

# _IOC(dir, type, nr, size) as asm-generic/ioctl.h builds it (x86: 8+8+14+2 bits)
_NONE, _WRITE, _READ = 0, 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (0xAE << 8) | nr


# (name, direction, nr, struct size per api.rst / the kernel's structure definitions)
EXPECTED = [
    ("KVM_GET_API_VERSION", _NONE, 0x00, 0), ("KVM_CREATE_VM", _NONE, 0x01, 0),
    ("KVM_GET_MSR_INDEX_LIST", _READ | _WRITE, 0x02, 4),
    ("KVM_CHECK_EXTENSION", _NONE, 0x03, 0), ("KVM_GET_VCPU_MMAP_SIZE", _NONE, 0x04, 0),
    ("KVM_GET_SUPPORTED_CPUID", _READ | _WRITE, 0x05, 8),
    ("KVM_CREATE_VCPU", _NONE, 0x41, 0), ("KVM_GET_DIRTY_LOG", _WRITE, 0x42, 16),
    ("KVM_SET_USER_MEMORY_REGION", _WRITE, 0x46, 32), ("KVM_SET_TSS_ADDR", _NONE, 0x47, 0),
    ("KVM_SET_IDENTITY_MAP_ADDR", _WRITE, 0x48, 8), ("KVM_CREATE_IRQCHIP", _NONE, 0x60, 0),
    ("KVM_IRQ_LINE", _WRITE, 0x61, 8), ("KVM_IRQFD", _WRITE, 0x76, 32),
    ("KVM_CREATE_PIT2", _WRITE, 0x77, 64), ("KVM_IOEVENTFD", _WRITE, 0x79, 64),
    ("KVM_RUN", _NONE, 0x80, 0), ("KVM_GET_REGS", _READ, 0x81, 144),
    ("KVM_SET_REGS", _WRITE, 0x82, 144), ("KVM_GET_SREGS", _READ, 0x83, 312),
    ("KVM_SET_SREGS", _WRITE, 0x84, 312), ("KVM_GET_MSRS", _READ | _WRITE, 0x88, 8),
    ("KVM_SET_MSRS", _WRITE, 0x89, 8), ("KVM_GET_FPU", _READ, 0x8C, 416),
    ("KVM_SET_FPU", _WRITE, 0x8D, 416), ("KVM_GET_LAPIC", _READ, 0x8E, 1024),
    ("KVM_SET_LAPIC", _WRITE, 0x8F, 1024), ("KVM_SET_CPUID2", _WRITE, 0x90, 8),
    ("KVM_GET_MP_STATE", _READ, 0x98, 4), ("KVM_SET_MP_STATE", _WRITE, 0x99, 4),
]


@pytest.mark.parametrize("name,direction,nr,size", EXPECTED)
def test_ioctl_numbers_follow_the_kernel_formula(name, direction, nr, size):
    assert IOCTLS[name] == _ioc(direction, nr, size), f"{name}: {IOCTLS[name]:#x}"


def test_kvm_run_layout():
    assert _kvm.SIZES["kvm_segment"] == 24 and _kvm.SIZES["kvm_cpuid_entry2"] == 40
    assert _kvm.SIZES["kvm_msr_entry"] == 16 and _kvm.SIZES["kvm_run"] >= 256


def test_system_device(kvm: Kvm):
    assert kvm.api_version == 12
    caps = kvm.capabilities()
    assert caps["USER_MEMORY"] and caps["IRQCHIP"] and caps["IOEVENTFD"] and caps["IRQFD"]
    assert kvm.check_extension("MAX_VCPUS") >= kvm.check_extension("NR_VCPUS") >= 1
    assert kvm.check_extension(0x7FFFFFF) == 0                 # no such capability
    cpuid = {(e.function, e.index): e for e in kvm.supported_cpuid()}
    vendor = b"".join(getattr(cpuid[(0, 0)], r).to_bytes(4, "little")
                      for r in ("ebx", "edx", "ecx"))
    assert vendor in (b"GenuineIntel", b"AuthenticAMD", b"HygonGenuine")
    assert cpuid[(0x80000001, 0)].edx & (1 << 29)             # long mode
    msrs = kvm.msr_index_list()
    assert 0x174 in msrs and 0xC0000081 in msrs                # SYSENTER_CS, STAR
    assert kvm.vcpu_mmap_size >= 4096


def test_a_plain_int_ioctl_argument_overflows_where_ours_does_not(vm):
    # fcntl.ioctl passes an int argument as a C int: 0xfffbd000 does not fit
    with pytest.raises(OverflowError):
        fcntl.ioctl(vm.fd, IOCTLS["KVM_SET_TSS_ADDR"], 0xFFFBD000)
    vm.set_tss_addr(0xFFFBD000)
    vm.set_identity_map_addr(0xFFFBC000)


def test_vcpu_state_round_trips(vm, kvm):
    vm.create_irqchip()
    vcpu = vm.create_vcpu()
    vcpu.set_cpuid(kvm.supported_cpuid())
    regs = Regs(rax=0x1122334455667788, rbx=2, r15=0xFFFFFFFFFFFFFFFF, rip=0xFFF0,
                rflags=0x202)
    vcpu.set_regs(regs)
    assert vcpu.get_regs() == regs
    s = vcpu.get_sregs()
    assert s.cs.selector == 0xF000 and s.cs.base == 0xFFFF0000     # the reset state
    s.ds.base, s.ds.selector, s.cr2, s.gdt.limit = 0x1230, 0x123, 0xDEAD000, 0x27
    vcpu.set_sregs(s)
    assert vcpu.get_sregs() == s
    fpu = Fpu(fcw=0x27F, mxcsr=0x1FA0, xmm=bytes(range(256)), fpr=bytes(range(128)))
    vcpu.set_fpu(fpu)
    got = vcpu.get_fpu()
    # (KVM_GET_FPU/KVM_SET_FPU do not carry MXCSR: that is XSAVE state)
    assert (got.fcw, got.xmm, got.fpr) == (0x27F, bytes(range(256)), bytes(range(128)))
    vcpu.set_msrs({0x174: 0x10, 0xC0000102: 0xFFFF800000001000})   # SYSENTER_CS, KERNEL_GS
    assert vcpu.get_msrs([0x174, 0xC0000102]) == {0x174: 0x10, 0xC0000102: 0xFFFF800000001000}
    with pytest.raises(KvmError, match="refused MSR 0xdeadbeef"):
        vcpu.get_msrs([0x174, 0xDEADBEEF])
    lapic = bytearray(vcpu.get_lapic())
    assert len(lapic) == 1024 and lapic[0x20 + 3] == 0             # APIC ID 0 (xAPIC)
    lapic[0x80] = 0x30                                              # TPR
    vcpu.set_lapic(bytes(lapic))
    assert vcpu.get_lapic()[0x80] == 0x30
    assert vcpu.get_mp_state() == 0                                 # RUNNABLE (the BSP)
    vcpu.set_mp_state(3)                                            # HALTED
    assert vcpu.get_mp_state() == 3


def test_memory_slots_are_checked(vm):
    import mmap

    with pytest.raises(KvmError, match="whole pages"):
        vm.set_memory(0, 0x1000, bytearray(100))
    buf = mmap.mmap(-1, 0x2000)
    slot = vm.set_memory(3, 0x100000, buf, log_dirty=True)
    assert (slot.base, slot.size, slot.log_dirty, slot.readonly) == (0x100000, 0x2000, True,
                                                                     False)
    with pytest.raises(KvmError, match="KVM_SET_USER_MEMORY_REGION"):
        vm.set_memory(4, 0x101000, mmap.mmap(-1, 0x1000))      # overlaps slot 3
    vm.remove_memory(3)
    assert 3 not in vm.slots


def test_split_irqchip_gives_an_in_kernel_lapic(kvm):
    with kvm.create_vm() as plain:
        with pytest.raises(KvmError, match="KVM_GET_LAPIC"):
            plain.create_vcpu().get_lapic()               # no irqchip: no LAPIC in KVM
    with kvm.create_vm() as split:
        split.enable_cap("SPLIT_IRQCHIP", 24)             # 24 IOAPIC routes for user space
        assert split.has_irqchip
        assert len(split.create_vcpu().get_lapic()) == 1024
        with pytest.raises(KvmError):
            split.create_irqchip()                        # the PIC/IOAPIC are user space's
