"""Saved records of a KVM machine: each vCPU, and the VM's in-kernel devices
(PIC, I/O APIC, PIT) and clock, in the style of :mod:`vmforge.migration.record`:
named, versioned, checked whole before anything is applied.

What a vCPU's record holds and the order its parts go back follow QEMU 7.2's
``kvm_arch_put_registers`` (``target/i386/kvm/kvm.c``): registers, XSAVE, XCRs,
special registers, MSRs, events, MP state, then the local APIC (QEMU's apic
device ``post_load``), the TSC deadline (after the APIC: it arms its timer) and
the debug registers.  The VM's part: ``KVM_GET/SET_IRQCHIP`` for the two PICs
and the I/O APIC, ``KVM_GET/SET_PIT2``, ``KVM_GET/SET_CLOCK`` (the kvmclock
value, as QEMU's ``kvmclock`` device saves it when the VM stops).
"""

from __future__ import annotations

import fcntl
import struct
from typing import Any

from vmforge.migration.record import (
    U64,
    StateError,
    check_header,
    get_bytes,
    get_int,
    get_ints,
    header,
)

__all__ = ["VCPU_RECORD", "VM_RECORD", "check_vcpu", "check_vm", "load_vcpu", "load_vm",
           "save_vcpu", "save_vm"]

VCPU_RECORD, VCPU_VERSION = "kvm-x86-vcpu", 1
VM_RECORD, VM_VERSION = "kvm-x86-vm", 1

#: MSRs a vCPU's record keeps (those of them this KVM lists): QEMU's set for a
#: guest without PMU, MCE or nested virtualisation
_MSRS = (0x10, 0x11, 0x12, 0x3B, 0x174, 0x175, 0x176, 0x1A0, 0x277,
         0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084, 0xC0000102, 0xC0000103,
         0x4B564D00, 0x4B564D01, 0x4B564D02, 0x4B564D03, 0x4B564D04)
_TSC_DEADLINE = 0x6E0
_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
_SREG_INTS = 8 * 12 + 2 * 2 + 7 + 4
_LAPIC_SIZE, _XSAVE_SIZE, _EVENTS_SIZE = 1024, 4096, 64
#: struct kvm_vcpu_events: flags at offset 20; NMI pending and the SIPI vector
#: are applied only when their flags say so (QEMU sets both)
_EVENTS_FLAGS, _VALID_NMI_PENDING, _VALID_SIPI_VECTOR = 20, 1, 2


# -- vCPUs --------------------------------------------------------------------------------

def _msr_indices(vcpu: Any) -> list[int]:
    listed = set(vcpu.vm.kvm.msr_index_list())
    return [m for m in (*_MSRS, _TSC_DEADLINE) if m in listed]


def _sregs_ints(raw: dict[str, Any]) -> list[int]:
    out: list[int] = []
    for k in _SEGMENTS:
        out += list(raw[k])
    out += [*raw["gdt"], *raw["idt"]]
    out += [raw[k] for k in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")]
    return out + list(raw["interrupt_bitmap"])


def _sregs_raw(ints: list[int]) -> dict[str, Any]:
    raw: dict[str, Any] = {k: tuple(ints[i * 12:i * 12 + 12]) for i, k in enumerate(_SEGMENTS)}
    at = 96
    raw["gdt"], raw["idt"] = tuple(ints[at:at + 2]), tuple(ints[at + 2:at + 4])
    at += 4
    for k in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"):
        raw[k] = ints[at]
        at += 1
    raw["interrupt_bitmap"] = tuple(ints[at:at + 4])
    return raw


def save_vcpu(vcpu: Any) -> dict[str, Any]:
    """The record of a stopped vCPU (its thread not in ``KVM_RUN``)."""
    rec = header(VCPU_RECORD, VCPU_VERSION)
    msrs: dict[int, int] = {}
    for index in _msr_indices(vcpu):
        try:
            msrs.update(vcpu.get_msrs([index]))
        except Exception:       # listed but refused on this vCPU (a feature not exposed)
            continue
    rec.update(index=vcpu.index, regs=list(vcpu.get_regs().as_tuple()),
               sregs=_sregs_ints(vcpu.get_sregs().to_raw()), xsave=vcpu.get_xsave(),
               xcrs=[[k, v] for k, v in sorted(vcpu.get_xcrs().items())],
               msrs=[[k, v] for k, v in msrs.items()], events=vcpu.get_vcpu_events(),
               mp_state=vcpu.get_mp_state(), lapic=vcpu.get_lapic(),
               debugregs=list(vcpu.get_debugregs().values()))
    return rec


def _pairs(rec: dict[str, Any], key: str, hi_key: int, where: str) -> list[list[int]]:
    value = rec.get(key)
    if not isinstance(value, list) or len(value) > 64:
        raise StateError(f"{where}: {key} is not a list of pairs")
    for i, pair in enumerate(value):
        if (not isinstance(pair, list) or len(pair) != 2
                or any(type(x) is not int for x in pair)
                or not 0 <= pair[0] <= hi_key or not 0 <= pair[1] <= U64):
            raise StateError(f"{where}: {key}[{i}]={pair!r} is not an (index, value) pair")
    return value


def check_vcpu(vcpu: Any, rec: Any) -> None:
    """:class:`StateError` unless ``rec`` is a record this vCPU can take."""
    where = f"vCPU {vcpu.index}"
    rec = check_header(rec, VCPU_RECORD, VCPU_VERSION)
    if rec.get("index") != vcpu.index:
        raise StateError(f"{where}: the record is of vCPU {rec.get('index')!r}")
    get_ints(rec, "regs", 18, 0, U64, where)
    get_ints(rec, "sregs", _SREG_INTS, 0, U64, where)
    get_ints(rec, "debugregs", 7, 0, U64, where)
    get_int(rec, "mp_state", 0, 10, where)
    for key, size in (("xsave", _XSAVE_SIZE), ("lapic", _LAPIC_SIZE), ("events", _EVENTS_SIZE)):
        if len(get_bytes(rec, key, size, where)) != size:
            raise StateError(f"{where}: {key} is not {size} bytes")
    _pairs(rec, "xcrs", 15, where)
    known = set(_msr_indices(vcpu))
    for index, _v in _pairs(rec, "msrs", 0xFFFFFFFF, where):
        if index not in known:
            raise StateError(f"{where}: MSR {index:#x} is not one this KVM saves")


def load_vcpu(vcpu: Any, rec: dict[str, Any]) -> None:
    """Check ``rec``, then put it into the stopped vCPU in QEMU's order."""
    from vmforge.accel.kvm.state import Regs, Sregs

    check_vcpu(vcpu, rec)
    vcpu.set_regs(Regs(*rec["regs"]))
    vcpu.set_xsave(rec["xsave"])
    vcpu.set_xcrs(dict(map(tuple, rec["xcrs"])))
    vcpu.set_sregs(Sregs.from_raw(_sregs_raw(rec["sregs"])))
    msrs = {k: v for k, v in rec["msrs"] if k != _TSC_DEADLINE}
    if msrs:
        vcpu.set_msrs(msrs)
    events = bytearray(rec["events"])
    flags = int.from_bytes(events[_EVENTS_FLAGS:_EVENTS_FLAGS + 4], "little")
    flags |= _VALID_NMI_PENDING | _VALID_SIPI_VECTOR
    events[_EVENTS_FLAGS:_EVENTS_FLAGS + 4] = flags.to_bytes(4, "little")
    vcpu.set_vcpu_events(bytes(events))
    vcpu.set_mp_state(rec["mp_state"])
    vcpu.set_lapic(rec["lapic"])
    deadline = {k: v for k, v in rec["msrs"] if k == _TSC_DEADLINE}
    if deadline:
        vcpu.set_msrs(deadline)
    names = ("db0", "db1", "db2", "db3", "dr6", "dr7", "flags")
    vcpu.set_debugregs(dict(zip(names, rec["debugregs"], strict=True)))


# -- the VM: PICs, I/O APIC, PIT, clock -------------------------------------------------------

def _ioc(direction: int, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | 0xAE << 8 | nr


_IRQCHIP_SIZE, _PIT2_SIZE, _CLOCK_SIZE = 520, 112, 48
_GET_IRQCHIP, _SET_IRQCHIP = _ioc(3, 0x62, _IRQCHIP_SIZE), _ioc(2, 0x63, _IRQCHIP_SIZE)
_GET_PIT2, _SET_PIT2 = _ioc(2, 0x9F, _PIT2_SIZE), _ioc(1, 0xA0, _PIT2_SIZE)
_GET_CLOCK, _SET_CLOCK = _ioc(2, 0x7C, _CLOCK_SIZE), _ioc(1, 0x7B, _CLOCK_SIZE)
_CHIPS = ("pic-master", "pic-slave", "ioapic")


def _vm_ioctl(vm: Any, request: int, buf: bytearray, what: str) -> None:
    try:
        fcntl.ioctl(vm.fd, request, buf, True)
    except OSError as exc:
        raise StateError(f"{what}: {exc.strerror}") from None


def save_vm(vm: Any, pit: bool) -> dict[str, Any]:
    """The in-kernel PICs and I/O APIC, the PIT (``pit``: the VM has one) and the
    kvmclock value, with every vCPU stopped."""
    rec = header(VM_RECORD, VM_VERSION)
    for chip_id, name in enumerate(_CHIPS):
        buf = bytearray(struct.pack("<II", chip_id, 0) + bytes(512))
        _vm_ioctl(vm, _GET_IRQCHIP, buf, "KVM_GET_IRQCHIP")
        rec[name] = bytes(buf[8:])
    if pit:
        buf = bytearray(_PIT2_SIZE)
        _vm_ioctl(vm, _GET_PIT2, buf, "KVM_GET_PIT2")
        rec["pit"] = bytes(buf)
    else:
        rec["pit"] = None
    buf = bytearray(_CLOCK_SIZE)
    _vm_ioctl(vm, _GET_CLOCK, buf, "KVM_GET_CLOCK")
    rec["clock_ns"] = struct.unpack_from("<Q", buf, 0)[0]
    return rec


def check_vm(rec: Any, pit: bool) -> None:
    """:class:`StateError` unless ``rec`` fits a VM with (``pit``) or without a PIT."""
    where = "KVM irqchip"
    rec = check_header(rec, VM_RECORD, VM_VERSION)
    for name in _CHIPS:
        if len(get_bytes(rec, name, 512, where)) != 512:
            raise StateError(f"{where}: {name} is not 512 bytes")
    if pit:
        if len(get_bytes(rec, "pit", _PIT2_SIZE, where)) != _PIT2_SIZE:
            raise StateError(f"{where}: pit is not {_PIT2_SIZE} bytes")
    elif rec.get("pit") is not None:
        raise StateError(f"{where}: the record has a PIT, this machine has none (pit=off)")
    get_int(rec, "clock_ns", 0, U64, where)


def load_vm(vm: Any, rec: dict[str, Any], pit: bool) -> None:
    """Check ``rec``, then put the irqchip, the PIT and the clock back (vCPUs stopped)."""
    check_vm(rec, pit)
    for chip_id, name in enumerate(_CHIPS):
        buf = bytearray(struct.pack("<II", chip_id, 0) + rec[name])
        _vm_ioctl(vm, _SET_IRQCHIP, buf, "KVM_SET_IRQCHIP")
    if pit:
        _vm_ioctl(vm, _SET_PIT2, bytearray(rec["pit"]), "KVM_SET_PIT2")
    buf = bytearray(_CLOCK_SIZE)
    struct.pack_into("<Q", buf, 0, rec["clock_ns"])
    _vm_ioctl(vm, _SET_CLOCK, buf, "KVM_SET_CLOCK")
