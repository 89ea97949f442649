"""KVM's own counters (KVM_GET_STATS_FD) read back after a guest ran."""

from __future__ import annotations

from vmforge.accel.kvm import VcpuExit
from vmforge.accel.kvm.stats import read_stats

from .conftest import boot_user64

# 25 x (out %al, $0x80), then ud2: no IDT, a triple fault
CODE = bytes.fromhex("e680" * 25 + "0f0b")


class Ports:
    def __init__(self) -> None:
        self.outs = 0

    def pio_out(self, port: int, size: int, value: int) -> None:
        self.outs += 1


def test_vcpu_and_vm_statistics(vm, kvm):
    vcpu, _ = boot_user64(vm, kvm, CODE)
    before = read_stats(vcpu.fd)
    assert "io_exits" in before and "exits" in before
    ports = Ports()
    assert vcpu.run(ports) is VcpuExit.SHUTDOWN
    after = read_stats(vcpu.fd)
    assert ports.outs == 25
    # every out is an exit (counted as io_exits, or as insn_emulation where a
    # nested KVM emulates the instruction)
    assert after["exits"] - before["exits"] >= 25
    assert (after["io_exits"] - before["io_exits"]
            + after["insn_emulation"] - before["insn_emulation"]) >= 25
    assert "remote_tlb_flush" in read_stats(vm.fd)
