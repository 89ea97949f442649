"""savevm / loadvm of a busy Linux shell on riscv-virt -smp 2, whose harts run on
host threads (the default there): the monitor's savevm and loadvm park the hart
threads while they read and write the harts, and the guest goes on from the
saved moment afterwards (its counter loop repeats the values after the save)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.migration.test_savevm_linux import (
    FW_JUMP,
    STEP,
    _hmp,
    _last,
    _machine,
    _save_during_loop,
)
from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec
from vmforge.testing.oracles import oracle_missing, require_program


def test_savevm_and_loadvm_with_hart_threads(tmp_path: Path) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    if not Path(FW_JUMP).exists():
        oracle_missing("Debian's opensbi (fw_jump.bin) is not installed")
    image = tmp_path / "disk.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    console = BufferChar()
    m = _machine(console, image, [DeviceSpec("virtio-blk-device", {"drive": "hd0"})], smp=2)
    m.start()
    try:
        out, at_save = _save_during_loop(m, console, "s1", 5)
        assert out == ""
        assert m.hart_threads is not None, "-smp 2 runs its harts on threads"
        saved = _last(at_save)
        console.wait_for(re.compile(rb"count=%d\r?\n" % (saved + 3)), timeout=STEP)
        out, _ = _hmp(m, "loadvm s1")
        assert out == ""
        # back at the saved moment: the loop counts saved + 1 once more
        console.wait_for(re.compile(rb"count=%d\r?\n" % (saved + 1)), timeout=STEP)
        console.wait_for(re.compile(rb"count=%d\r?\n" % (saved + 4)), timeout=STEP)
    finally:
        m.stop(30)
