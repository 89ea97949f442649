"""The saved records of a KVM microvm: each vCPU's (``kvm-x86-vcpu``), the in-kernel
irqchip, PIT and clock (``kvm-x86-vm``), isa-debug-exit's empty one; a record
that does not fit is refused whole, before anything is applied."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmforge.accel.kvm import kvm_available
from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec, MachineConfig
from vmforge.migration.record import StateError
from vmforge.migration.state import apply_state, check_state, machine_state
from vmforge.plugins import registry
from vmforge.testing.oracles import oracle_missing

EXIT = DeviceSpec("isa-debug-exit", {"iobase": "0xf4", "iosize": "4"})


def _machine(kernel: Path, **overrides: Any) -> Any:
    why = kvm_available()
    if why is not None:
        oracle_missing(why)
    cfg = MachineConfig(machine="microvm", accel="kvm", memory=64 << 20, kernel=str(kernel),
                        serial=[BufferChar()], **overrides)
    m = registry().load("machine", "microvm")(cfg)
    m.realize()
    return m


@pytest.fixture
def kernel(guest: Callable[..., Path]) -> Path:
    return guest("count")


@pytest.fixture
def machine(kernel: Path) -> Iterator[Any]:
    m = _machine(kernel, devices=[EXIT])
    try:
        yield m
    finally:
        m.close()


def test_records_are_named_and_round_trip(machine: Any) -> None:
    state = machine_state(machine)
    vcpu = state["harts"][0]
    assert (vcpu["name"], vcpu["version"]) == ("kvm-x86-vcpu", 1)
    assert (state["board"]["name"], state["board"]["version"]) == ("kvm-x86-vm", 1)
    assert len(vcpu["lapic"]) == 1024 and len(vcpu["xsave"]) == 4096
    assert len(state["board"]["ioapic"]) == 512 and len(state["board"]["pit"]) == 112
    exit_rec = [r for k, r in state["devices"].items() if k.startswith("isa-debug-exit")]
    assert exit_rec == [{"name": "isa-debug-exit", "version": 1}]
    # another entry point and LAPIC task priority go in, and come out again
    moved = copy.deepcopy(state)
    moved["harts"][0]["regs"][16] = 0x100123                       # rip
    lapic = bytearray(moved["harts"][0]["lapic"])
    lapic[0x80] = 0x20                                             # TPR
    moved["harts"][0]["lapic"] = bytes(lapic)
    apply_state(machine, moved)
    assert machine.vcpus[0].get_regs().rip == 0x100123
    assert machine.vcpus[0].get_lapic()[0x80] == 0x20
    again = machine_state(machine)
    assert again["harts"][0]["regs"] == moved["harts"][0]["regs"]
    assert again["board"]["ioapic"] == state["board"]["ioapic"]


@pytest.mark.parametrize("spoil, words", [
    (lambda s: s["harts"][0].update(lapic=bytes(1000)), "lapic is not 1024 bytes"),
    (lambda s: s["harts"][0].update(version=2), "version 2"),
    (lambda s: s["harts"][0]["msrs"].append([0x1234, 0]), "MSR 0x1234"),
    (lambda s: s["harts"][0].update(index=3), "of vCPU 3"),
    (lambda s: s["board"].update(ioapic=bytes(10)), "ioapic is not 512 bytes"),
    (lambda s: s["board"].update(name="kvm-arm-vm"), "'kvm-arm-vm'"),
    (lambda s: s.pop("board"), "not a record"),
])
def test_bad_record_refused_before_anything_changes(machine: Any, spoil: Any,
                                                    words: str) -> None:
    state = machine_state(machine)
    bad = copy.deepcopy(state)
    bad["harts"][0]["regs"][16] = 0x200000                         # would move rip
    spoil(bad)
    rip = machine.vcpus[0].get_regs().rip
    with pytest.raises(StateError, match=words.replace("(", r"\(")):
        apply_state(machine, bad)
    assert machine.vcpus[0].get_regs().rip == rip


def test_pit_off_refuses_a_record_with_a_pit(machine: Any, kernel: Path) -> None:
    state = machine_state(machine)
    other = _machine(kernel, devices=[EXIT],
                     machine_props={"pit": "off"})
    try:
        with pytest.raises(StateError, match="this machine has none"):
            check_state(other, state)
    finally:
        other.close()


def test_dirty_log_has_device_writes_and_kvm_slots_log_only_while_on(machine: Any) -> None:
    """The KVM machine's dirty log: KVM_MEM_LOG_DIRTY_PAGES on the RAM slots while
    it is on, and the pages devices wrote through GuestMemory (virtqueue
    completions) with what KVM reports."""
    def ram() -> list[Any]:
        return [ms for ms in machine.vm.slots.values() if not ms.readonly]

    log = machine.dirty_log()
    assert ram() and not any(ms.log_dirty for ms in ram())
    log.start()
    try:
        assert log.active and all(ms.log_dirty for ms in ram())
        machine.space.memory.write(0x234567, b"device")      # as a device's DMA
        assert 0x234000 in log.take()
        assert 0x234000 not in log.take()                    # taken: clean again
    finally:
        log.stop()
    assert not log.active and not any(ms.log_dirty for ms in ram())
