"""The CPU a microvm guest sees: every CPUID leaf the same as under QEMU 7.2's
default CPU (``qemu64`` on KVM), read by a guest that prints them all."""

from __future__ import annotations


def _leaves(text: str) -> dict[str, str]:
    return {line.split(":")[0]: line for line in text.splitlines() if ":" in line}


def test_cpuid_is_qemus_default_model(guest, run_qemu, run_vmforge):
    elf = guest("cpuid")
    q = run_qemu(elf)
    v = run_vmforge(elf)
    assert q.status == v.status == (0x10 << 1) | 1
    ql, vl = _leaves(q.output), _leaves(v.output)
    assert "00000000.00" in ql and "80000002.00" in ql
    assert vl == ql


def test_cpu_host_and_unknown_models(guest, run_vmforge):
    elf = guest("cpuid")
    host = run_vmforge(elf, args=["-cpu", "host"])
    default = run_vmforge(elf)
    # -cpu host: the host's signature and leaves, not QEMU's qemu64
    assert _leaves(host.output)["00000001.00"] != _leaves(default.output)["00000001.00"]
    assert _leaves(host.output).get("80000002.00") != _leaves(default.output)["80000002.00"]
    bad = run_vmforge(elf, args=["-cpu", "pentium2"])
    assert bad.status == 1 and "unknown CPU model" in bad.stderr
