"""Hardware watchpoints (``Z2``-``Z4``) with Debian's gdb-multiarch: ``watch``,
``rwatch`` and ``awatch`` stop where QEMU's gdbstub stops, with the same values;
the program runs on to the finisher afterwards (which fails it: v is 5, not 42)."""

from __future__ import annotations

from pathlib import Path

from gdbkit import PREAMBLE, VMFORGE, free_port, gdb_session
from test_gdb_client import _build, _normalize

from vmforge.testing.oracles import require_program

# counter: written by add_one (counter += v: a load then a store); table[0]:
# written once after the loop, read by nobody
SCRIPT = PREAMBLE + """
watch counter
continue
info registers pc
continue
p counter
delete
rwatch counter
continue
info registers pc
delete
awatch table[0]
continue
p/x table[0]
delete
continue
"""


def _run(tmp_path: Path, server: list[str], port: int, tag: str) -> tuple[str, int]:
    elf = _build(tmp_path)
    out, proc = gdb_session(tmp_path, SCRIPT.format(elf=elf, port=port), server, tag)
    return out, proc.returncode


def test_hardware_watchpoints_stop_as_on_qemu(tmp_path: Path) -> None:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    port = free_port()
    elf = _build(tmp_path)
    ours, code = _run(tmp_path, [*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none",
                                 "-kernel", str(elf), "-S", "-gdb", f"tcp:127.0.0.1:{port}",
                                 "-serial", "none", "--timeout", "100"], port, "vmforge")
    assert "Hardware watchpoint 1: counter" in ours, ours
    assert "Old value = 0\nNew value = 1" in ours, ours
    assert "Old value = 1\nNew value = 3" in ours, ours
    assert "Hardware read watchpoint 2: counter" in ours, ours
    assert "Hardware access (read/write) watchpoint 3: table[0]" in ours, ours
    assert "Value = 3" in ours and "New value = 5" in ours, ours
    assert "exited with code 01" in ours and code == 1, ours
    port = free_port()
    theirs, _ = _run(tmp_path, [qemu, "-M", "virt", "-bios", "none", "-kernel", str(elf),
                                    "-S", "-gdb", f"tcp:127.0.0.1:{port}", "-nographic",
                                    "-serial", "none", "-monitor", "none"], port, "qemu")
    assert "Hardware watchpoint 1: counter" in theirs, theirs
    # how each ends: vmforge sends the exit status, QEMU 7.2 closes the connection
    assert [line for line in _normalize(ours) if "exited with code" not in line] \
        == _normalize(theirs)
