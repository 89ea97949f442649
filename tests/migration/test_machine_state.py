"""A whole riscv-virt machine's state (vmforge.migration.state and .ram), without a
guest OS: a few instructions run, the record checked, encoded and applied to a
fresh machine; refusals leave the machine as it was."""

from __future__ import annotations

import copy
import struct
from pathlib import Path
from typing import Any

import pytest

from vmforge.config import DeviceSpec, MachineConfig
from vmforge.migration import StateError
from vmforge.migration.ram import check_ram, load_ram, ram_regions, save_ram
from vmforge.migration.state import (
    apply_state,
    check_state,
    config_fingerprint,
    decode_state,
    encode_state,
    machine_state,
)


def _program(tmp_path: Path) -> str:
    """An M-mode loop at the DRAM base counting in a0 and storing it at 0x80001000."""
    words = [0x00001297,        # auipc t0, 0x1        (t0 = 0x80001000)
             0x00150513,        # addi a0, a0, 1
             0x00A2B023,        # sd a0, 0(t0)
             0xFF9FF06F]        # j -8 (back to the addi)
    path = tmp_path / "loop.bin"
    path.write_bytes(struct.pack(f"<{len(words)}I", *words))
    return str(path)


def _machine(kernel: str, memory: int = 64 << 20, devices: tuple[str, ...] = ()) -> Any:
    from vmforge_riscv_virt.machine import RiscvVirt

    m = RiscvVirt(MachineConfig(machine="riscv-virt", memory=memory, bios="none",
                                kernel=kernel, serial=["null"],
                                devices=[DeviceSpec(d, {}) for d in devices]))
    m.realize()
    return m


@pytest.fixture
def ran(tmp_path: Path) -> Any:
    m = _machine(_program(tmp_path), devices=("virtio-rng-device",))
    for _ in range(3):
        m.run_cpus()
    m.clock.advance(5_000_000_000)
    m.uart.write(7, 1, 0xA5)            # the scratch register: device state to carry
    yield m
    m.close()


def test_state_round_trip_into_a_fresh_machine(ran: Any, tmp_path: Path) -> None:
    state = machine_state(ran)
    assert decode_state(encode_state(state)) == state
    ram = b"".join(bytes(c) for c in save_ram(ran))
    counter = ran.space.memory.read_u64(0x80001000)
    assert counter > 0 and ran.cpus[0].x[10] == counter
    other = _machine(_program(tmp_path), devices=("virtio-rng-device",))
    try:
        load_ram(other, ram)
        apply_state(other, copy.deepcopy(state))
        assert other.clock.now_ns() == state["clock_ns"] >= 5_000_000_000
        assert other.space.memory.read_u64(0x80001000) == counter
        assert other.uart.read(7, 1) == 0xA5
        again = machine_state(other)
        rtc = f"goldfish-rtc@{0x101000:#x}"          # (its clock is the host's wall clock)
        assert again["devices"][rtc].pop("time") >= state["devices"][rtc]["time"]
        state["devices"][rtc].pop("time")
        assert again == state
        other.run_cpus()                # it goes on counting from there
        assert other.cpus[0].x[10] > counter
    finally:
        other.close()


def test_bad_record_refused_and_nothing_applied(ran: Any) -> None:
    state = machine_state(ran)
    before = copy.deepcopy(state)
    bad = copy.deepcopy(state)
    (plic_key,) = [k for k in bad["devices"] if k.startswith("riscv-plic")]
    bad["devices"][plic_key]["threshold"][0] = 99
    bad["harts"][0]["x"][5] = 0          # a change that would show if anything applied
    ran.uart.write(7, 1, 0x11)
    with pytest.raises(StateError, match="riscv-plic state: threshold"):
        apply_state(ran, bad)
    after = machine_state(ran)
    assert after["harts"] == before["harts"]
    assert after["devices"][f"ns16550a@{0x10000000:#x}"]["scr"] == 0x11


def test_other_configuration_refused_with_a_clear_message(ran: Any, tmp_path: Path) -> None:
    state = machine_state(ran)
    small = _machine(_program(tmp_path), memory=32 << 20, devices=("virtio-rng-device",))
    try:
        with pytest.raises(StateError, match="its RAM is 64 MiB at 0x80000000, this machine "
                                             "has 32 MiB at 0x80000000"):
            check_state(small, state)
        ram = b"".join(bytes(c) for c in save_ram(ran))
        with pytest.raises(StateError, match="RAM section: region 'ram'"):
            check_ram(small, ram)
    finally:
        small.close()
    bare = _machine(_program(tmp_path))
    try:
        assert config_fingerprint(bare) != config_fingerprint(ran)
        with pytest.raises(StateError, match=r"it has virtio-mmio@0x10008000 "
                                             r"VirtioMmioTransport\(VirtioRng\)"):
            check_state(bare, state)
    finally:
        bare.close()


def test_encoded_state_checked(ran: Any) -> None:
    data = bytearray(encode_state(machine_state(ran)))
    with pytest.raises(StateError, match="truncated"):
        decode_state(bytes(data[:-10]))
    flipped = bytearray(data)
    flipped[-5] ^= 0x40
    with pytest.raises(StateError, match="checksum mismatch"):
        decode_state(bytes(flipped))
    other = bytearray(data)
    other[8] = 9                         # the format version
    with pytest.raises(StateError, match="format version 9"):
        decode_state(bytes(other))
    with pytest.raises(StateError, match="not a vmforge machine state"):
        decode_state(b"x" * 40)


def test_ram_section_checked(ran: Any) -> None:
    ram = bytearray(b"".join(bytes(c) for c in save_ram(ran)))
    ram[40] ^= 1
    with pytest.raises(StateError, match="checksum mismatch"):
        check_ram(ran, bytes(ram))
    (region,) = ram_regions(ran)
    assert region[0] == "ram" and len(region[2]) == 64 << 20


def test_a_hart_waiting_in_wfi_waits_again(tmp_path: Path) -> None:
    path = tmp_path / "wfi.bin"
    path.write_bytes(struct.pack("<2I", 0x10500073, 0xFFDFF06F))   # 1: wfi; j 1b
    m = _machine(str(path))
    other = _machine(str(path))
    try:
        assert m.run_cpus() is True and m.cluster.halted == [True]
        state = machine_state(m)
        assert state["halted"] == [True] and state["harts"][0]["pc"] == 0x80000004
        assert other.cluster.halted == [False]
        apply_state(other, state)
        assert other.cluster.halted == [True] and other.cpus[0].pc == 0x80000004
    finally:
        m.close()
        other.close()


def test_monitor_snapshot_commands_without_a_disk(ran: Any) -> None:
    from vmforge.chardev import NullChar
    from vmforge.monitor import Monitor

    mon = Monitor(ran, NullChar())
    assert mon.execute("savevm s1") == "Error: No block device can accept snapshots"
    assert mon.execute("info snapshots") == "No block device can accept snapshots"
    assert mon.execute("loadvm") == "loadvm: missing argument 'name' (usage: loadvm tag)"



def test_loadvm_option_errors_are_one_line(tmp_path: Path, vmforge_cli: Any) -> None:
    import subprocess

    from vmforge.testing.oracles import require_program

    qemu_img = require_program("qemu-img", "qemu-utils")
    disk = tmp_path / "e.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    base = ["run", "-M", "riscv-virt", "-bios", "none", "-kernel", _program(tmp_path),
            "-loadvm", "nope"]
    for extra, message in (
            (["-drive", f"file={disk},format=qcow2,if=none,id=hd0",
              "-device", "virtio-blk-device,drive=hd0"],
             "vmforge run: Snapshot 'nope' does not exist in one or more devices"),
            ([], "vmforge run: No block device can accept snapshots")):
        proc = vmforge_cli(*base, *extra)
        assert (proc.returncode, proc.stderr) == (1, message + "\n")


def test_a_machine_with_parts_that_cannot_save_is_refused() -> None:
    from vmforge.device import Device
    from vmforge.testing.boards import BareBoard

    board = BareBoard()
    board.realize()
    board.cpus = [object()]
    with pytest.raises(StateError, match="CPU object cannot save its state"):
        machine_state(board)
    board.cpus = []

    class Opaque(Device):
        name = "opaque-thing"

    board.add_device(Opaque())
    with pytest.raises(StateError, match=r"device opaque-thing \(Opaque\) cannot save its state"):
        machine_state(board)


def test_two_disks_snapshotted_together_and_partial_ones_listed(tmp_path: Path) -> None:
    import subprocess

    from vmforge.chardev import NullChar
    from vmforge.config import DriveSpec
    from vmforge.monitor import Monitor
    from vmforge.testing.oracles import require_program
    from vmforge_riscv_virt.machine import RiscvVirt

    qemu_img = require_program("qemu-img", "qemu-utils")
    disks = [tmp_path / "a.qcow2", tmp_path / "b.qcow2"]
    for disk in disks:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(disk), "8M"], check=True)

    def machine() -> Any:
        m = RiscvVirt(MachineConfig(
            machine="riscv-virt", memory=32 << 20, bios="none", kernel=_program(tmp_path),
            serial=["null"],
            drives=[DriveSpec(str(d), "qcow2", interface="none", id=f"hd{i}")
                    for i, d in enumerate(disks)],
            devices=[DeviceSpec("virtio-blk-device", {"drive": f"hd{i}"}) for i in range(2)]))
        m.realize()
        return m

    m = machine()
    try:
        m.run_cpus()
        mon = Monitor(m, NullChar())
        assert mon.execute("savevm both") == ""
        counter = m.cpus[0].x[10]
        m.run_cpus()
    finally:
        m.close()
    sizes = []
    for disk in disks:
        out = subprocess.run([qemu_img, "snapshot", "-l", str(disk)], capture_output=True,
                             text=True, check=True).stdout
        assert " both " in out
        sizes.append(out.splitlines()[2].split()[2:4])
    assert sizes[0] != ["0", "B"] and sizes[1] == ["0", "B"]    # the VM state: first disk
    m = machine()
    try:
        mon = Monitor(m, NullChar())
        assert mon.execute("loadvm both") == ""
        assert m.cpus[0].x[10] == counter
    finally:
        m.close()
    subprocess.run([qemu_img, "snapshot", "-d", "both", str(disks[1])], check=True)
    m = machine()
    try:
        mon = Monitor(m, NullChar())
        assert mon.execute("loadvm both") == ("Error: Snapshot 'both' does not exist in one "
                                              "or more devices")
        lines = mon.execute("info snapshots").splitlines()
        assert lines[:2] == ["List of snapshots present on all disks:", "None"]
        assert lines[3] == "List of partial (non-loadable) snapshots on 'hd0':"
        assert lines[5].startswith("1         both ")
    finally:
        m.close()


def test_a_disk_under_a_block_job_refuses_snapshots(tmp_path: Path) -> None:
    import subprocess
    import types

    from vmforge.chardev import NullChar
    from vmforge.config import DriveSpec
    from vmforge.monitor import Monitor
    from vmforge.testing.oracles import require_program
    from vmforge_riscv_virt.machine import RiscvVirt

    disk = tmp_path / "j.qcow2"
    subprocess.run([require_program("qemu-img", "qemu-utils"), "create", "-q", "-f", "qcow2",
                    str(disk), "8M"], check=True)
    m = RiscvVirt(MachineConfig(
        machine="riscv-virt", memory=32 << 20, bios="none", kernel=_program(tmp_path),
        serial=["null"], drives=[DriveSpec(str(disk), "qcow2", interface="none", id="hd0")],
        devices=[DeviceSpec("virtio-blk-device", {"drive": "hd0"})]))
    m.realize()
    try:
        (blk,) = [d.dev for d in m.devices if getattr(d, "dev", None) is not None]
        blk.backend.job = types.SimpleNamespace(type="mirror")    # as a running mirror sets it
        mon = Monitor(m, NullChar())
        busy = "Error: Node 'hd0' is busy: block device is in use by block job: mirror"
        assert mon.execute("savevm s") == busy
        assert mon.execute("loadvm s") == busy
        assert mon.execute("info snapshots") == "There is no snapshot available."
        blk.backend.job = None
        assert mon.execute("savevm s") == ""
    finally:
        m.close()


def _shmem_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1])
    raise AssertionError("no RssShmem in /proc/self/status")


def test_scanning_ram_does_not_allocate_the_untouched_pages(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    from vmforge.migration import ram, resident

    m = _machine(_program(tmp_path), memory=1 << 30)
    try:
        ((_name, _base, view),) = ram_regions(m)
        for offset in (5 * 4096 + 7, 100 << 20, (1 << 30) - 1):
            view[offset] = 0x5A
        expected = {0, 5 * 4096, 100 << 20, (1 << 30) - 4096}
        before = _shmem_kib()
        runs = list(ram.nonzero_runs(view))
        assert {o for o, _n in runs} >= expected and all(n == 4096 for _o, n in runs)
        if resident._swap_on():         # swapped-out pages are not resident: read them all
            assert resident.resident_runs(view) is None
        else:
            assert _shmem_kib() - before < 16 << 10     # not the 1 GiB of the guest
        monkeypatch.setattr(ram, "resident_runs", lambda v: None)
        assert list(ram.nonzero_runs(view)) == runs   # the same pages, reading everything
    finally:
        m.close()


def test_devices_behind_a_root_port_are_saved_and_drained(tmp_path: Path) -> None:
    """A virtio-blk-pci in a pcie-root-port's slot (a hot-plug slot) is one of the
    machine's devices for the state: drained before saving, its disk snapshotted,
    its record carried to a fresh machine of the same shape."""
    from vmforge.config import DriveSpec
    from vmforge.migration.snapshot import _drives
    from vmforge.migration.state import all_devices
    from vmforge_riscv_virt.machine import RiscvVirt

    def machine(name: str) -> Any:
        disk = tmp_path / name
        disk.write_bytes(bytes(1 << 20))
        m = RiscvVirt(MachineConfig(
            machine="riscv-virt", memory=32 << 20, bios="none", kernel=_program(tmp_path),
            serial=["null"],
            drives=[DriveSpec(str(disk), "raw", interface="none", id="hd0")],
            devices=[DeviceSpec("pcie-root-port", {"id": "rp0"}),
                     DeviceSpec("virtio-blk-pci", {"drive": "hd0", "bus": "rp0"})]))
        m.realize()
        return m

    src, dst = machine("src.raw"), machine("dst.raw")
    try:
        names = [d.name for d in all_devices(src)]
        assert "virtio-blk-device" in names or any("blk" in n for n in names), names
        assert [name for name, _ in _drives(src)] != []
        blk = next(d for d in all_devices(src) if getattr(d, "device_id", None) == 2)
        blk.status = 0x0F                # a driver got as far as DRIVER_OK
        src.run_cpus()
        state = machine_state(src)
        apply_state(dst, decode_state(encode_state(state)))
        moved = next(d for d in all_devices(dst) if getattr(d, "device_id", None) == 2)
        assert moved.status == 0x0F
    finally:
        src.close()
        dst.close()
