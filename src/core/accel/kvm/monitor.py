"""What the human monitor shows of a KVM machine: ``info registers`` (each vCPU,
in QEMU's x86 layout), ``info cpus``, ``info kvm`` and ``info stats`` (KVM's own
counters per VM and vCPU, :mod:`vmforge.accel.kvm.stats`)."""

from __future__ import annotations

from typing import Any

from vmforge.accel.kvm.state import Segment

__all__ = ["kvm_info", "x86_registers"]



def _flag_text(rflags: int) -> str:
    bits = (11, 10, 9, 8, 7, 6, 4, 2, 0)
    letters = "ODITSZAPC"
    return "".join(c if rflags >> b & 1 else "-" for c, b in zip(letters, bits, strict=True))


def _seg(name: str, s: Segment) -> str:
    flags = ((s.type & 0xF) << 8 | s.s << 12 | s.dpl << 13 | s.present << 15
             | s.l << 21 | s.db << 22 | s.g << 23)
    return f"{name:<3}={s.selector:04x} {s.base:016x} {s.limit:08x} {flags:08x}"


def x86_registers(vcpu: Any) -> str:
    """One vCPU's state as QEMU's ``info registers`` prints it on x86-64."""
    r = vcpu.get_regs()
    s = vcpu.get_sregs()
    names = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
    lines = []
    for i in range(0, 16, 4):
        lines.append(" ".join(f"{n.upper():<3}={getattr(r, n):016x}" for n in names[i:i + 4]))
    cpl = s.cs.selector & 3 if s.cr0 & 1 else 0
    lines.append(f"RIP={r.rip:016x} RFL={r.rflags:08x} [{_flag_text(r.rflags)}] CPL={cpl}")
    for n in ("es", "cs", "ss", "ds", "fs", "gs"):
        lines.append(_seg(n.upper(), getattr(s, n)))
    lines.append(_seg("LDT", s.ldt))
    lines.append(_seg("TR", s.tr))
    lines.append(f"GDT=     {s.gdt.base:016x} {s.gdt.limit:08x}")
    lines.append(f"IDT=     {s.idt.base:016x} {s.idt.limit:08x}")
    lines.append(f"CR0={s.cr0:08x} CR2={s.cr2:016x} CR3={s.cr3:016x} CR4={s.cr4:08x}")
    lines.append(f"EFER={s.efer:016x} APIC_BASE={s.apic_base:016x}")
    return "\n".join(lines)


def _stats_lines(title: str, stats: dict[str, Any]) -> list[str]:
    out = [title]
    for name, value in stats.items():
        if isinstance(value, list):
            if any(value):
                out.append(f"  {name}: {value}")
        else:
            out.append(f"  {name}: {value}")
    return out


def kvm_info(machine: Any, what: str) -> str | None:
    """The text of ``info WHAT`` for a :class:`~vmforge.accel.kvm.machine.KvmMachine`;
    None for what the generic monitor answers."""
    vcpus = machine.vcpus
    if what == "registers":
        return "\n\n".join(f"CPU#{v.index}\n{x86_registers(v)}" for v in vcpus)
    if what == "cpus":
        return "\n".join(f"{'*' if v.index == 0 else ' '} CPU #{v.index}: "
                         f"rip={v.get_regs().rip:#018x} exits={v.exits}" for v in vcpus)
    if what == "kvm":
        return "kvm support: enabled\nkvm enabled: yes"   # QEMU's words
    if what == "stats":
        readers = machine.kvm_stats()
        if readers is None:
            return "KVM statistics are not available on this host (KVM_GET_STATS_FD)"
        lines = _stats_lines("vm:", readers[0].read())
        for v, r in zip(vcpus, readers[1:], strict=True):
            lines += _stats_lines(f"vcpu {v.index}:", r.read())
        return "\n".join(lines)
    return None
