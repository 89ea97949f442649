"""The VM state of internal snapshots (``savevm``), where QEMU 7.2 keeps it: past the
disk at ``qcow2_vm_state_offset``.  QEMU's own savevm is read back by vmforge (its
migration stream starts with ``QEVM``), and vmforge's is checked by qemu-img."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from qcow2_oracle import assert_qemu_clean, needs_qemu, pattern, qemu_img

from vmforge.block import BlockError
from vmforge.testing.oracles import require_program
from vmforge_qcow2 import Qcow2
from vmforge_qcow2.vmstate import vm_state_offset

pytestmark = needs_qemu
MiB = 1 << 20


@pytest.mark.parametrize("opts", [{}, {"cluster_size": 4096},
                                  {"extended_l2": True, "cluster_size": 65536}])
def test_vm_state_saved_read_back_and_checked_by_qemu_img(tmp_path: Path, opts: dict) -> None:
    img = tmp_path / "v.qcow2"
    Qcow2.create(str(img), 3 * MiB + 512, **opts)
    state = pattern(5 * MiB + 123, 7)
    with Qcow2.open(str(img), readonly=False) as q:
        q.write(0, pattern(MiB, 1))
        span = q.cs * (q.cs // 8 // (2 if q.extl2 else 1))     # bytes one L1 entry maps
        assert vm_state_offset(q) == -(-q.size // span) * span
        info = q.save_vm_snapshot("s1", [state[:100], memoryview(state)[100:]], 7_000_000_123)
        assert info.vm_state_size == len(state) and info.vm_clock_nsec == 7_000_000_123
        q.write(0, pattern(MiB, 2))
        assert bytes(q.read_vm_state("s1")) == state      # through the snapshot's tree
        again = q.save_vm_snapshot("s1", [b"newer"], 1)    # the same name: replaced
        assert [s.name for s in q.snapshots()] == ["s1"] and again.vm_state_size == 5
        assert bytes(q.read_vm_state("s1")) == b"newer"
        q.create_snapshot("disk-only")
        with pytest.raises(BlockError, match="This is a disk-only snapshot"):
            q.read_vm_state("disk-only")
        with pytest.raises(BlockError, match="no snapshot"):
            q.read_vm_state("nope")
    assert_qemu_clean(img)
    out = json.loads(qemu_img("info", "--output", "json", str(img)).stdout)
    sizes = {s["name"]: s["vm-state-size"] for s in out["snapshots"]}
    assert sizes == {"s1": 5, "disk-only": 0}


def test_qemus_savevm_read_by_vmforge(tmp_path: Path) -> None:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    img = tmp_path / "q.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(img), "16M")
    subprocess.run([qemu, "-M", "virt", "-bios", "none", "-S", "-display", "none",
                    "-nodefaults", "-monitor", "stdio",
                    "-drive", f"file={img},format=qcow2,if=none,id=hd0",
                    "-device", "virtio-blk-device,drive=hd0"],
                   input=b"savevm qemu-snap\nquit\n", capture_output=True, check=True,
                   timeout=60)
    with Qcow2.open(str(img), readonly=False) as q:
        (snap,) = q.snapshots()
        assert snap.name == "qemu-snap" and snap.vm_state_size > 0
        data = q.read_vm_state("qemu-snap")
    assert len(data) == snap.vm_state_size
    assert bytes(data[:8]) == b"QEVM\0\0\0\x03"     # QEMU's migration stream, version 3
