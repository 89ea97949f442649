"""The root port as a Linux guest leaves it: the same kernel and initramfs booted on
vmforge's riscv-virt and on QEMU 7.2's virt with ``-device pcie-root-port``; after
Linux has enumerated the port (bus numbers, windows, pciehp's slot control) its 4 KiB
of configuration space, read by each guest from sysfs, are the same bytes."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec, MachineConfig
from vmforge.testing.migration_kit import guest_file
from vmforge.testing.oracles import require_program

ROOT = Path(__file__).resolve().parents[2]
PORTS = ["pcie-root-port,id=rp0,chassis=1,slot=1", "pcie-root-port,id=rp1,chassis=2,slot=2"]
APPEND = "console=ttyS0"
DUMP = ("for f in 1 2; do echo PORT$f; hexdump -v -e '16/1 \"%02x \" \"\\n\"' "
        "/sys/bus/pci/devices/0000:00:0$f.0/config; done; echo DUMPED")


def _parse(text: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    current = None
    for line in text.replace("\r", "").splitlines():
        if line.startswith("PORT"):
            current = line.strip()
            out[current] = b""
        elif current and len(line.split()) == 16:
            out[current] += bytes(int(x, 16) for x in line.split())
    return out


def _vmforge_dump(kernel: str, initrd: str) -> dict[str, bytes]:
    from vmforge_riscv_virt.machine import RiscvVirt

    console = BufferChar()
    machine = RiscvVirt(MachineConfig(
        machine="riscv-virt", memory=256 << 20, kernel=kernel, initrd=initrd, append=APPEND,
        serial=[console], devices=[DeviceSpec.parse(d) for d in PORTS]))
    machine.start()
    try:
        console.wait_for(b"/# ", timeout=120)
        console.clear()
        console.feed(DUMP.encode() + b"\n")
        console.wait_for(b"\r\nDUMPED\r\n", timeout=60)
        return _parse(console.output.decode(errors="replace").split("DUMPED", 1)[1])
    finally:
        machine.stop(10)


def _qemu_dump(kernel: str, initrd: str) -> dict[str, bytes]:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    args = [qemu, "-M", "virt", "-m", "256M", "-kernel", kernel, "-initrd", initrd,
            "-append", APPEND, "-display", "none", "-serial", "stdio", "-monitor", "none"]
    for d in PORTS:
        args += ["-device", d]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    chunks: list[bytes] = []
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: stdout.read1(4096),
                                                                b"")), daemon=True)
    reader.start()

    def wait(pattern: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while pattern not in b"".join(chunks):
            assert proc.poll() is None and time.monotonic() < deadline, b"".join(chunks)[-500:]
            time.sleep(0.2)
        return b"".join(chunks)

    try:
        wait(b"/# ", 300)
        chunks.clear()
        proc.stdin.write(DUMP.encode() + b"\n")
        proc.stdin.flush()
        text = wait(b"\r\nDUMPED\r\n", 60).decode(errors="replace")
        return _parse(text.split("DUMPED", 1)[1])
    finally:
        proc.kill()
        proc.wait(10)


def test_ports_as_linux_leaves_them_match_qemu() -> None:
    kernel = guest_file(ROOT, "linux-riscv64")
    initrd = guest_file(ROOT, "initramfs-riscv64")
    mine, theirs = _vmforge_dump(kernel, initrd), _qemu_dump(kernel, initrd)
    assert set(theirs) == {"PORT1", "PORT2"} and set(mine) == set(theirs)
    for port in sorted(theirs):
        assert len(theirs[port]) == len(mine[port]) == 4096
        diff = [f"{i:#05x}: {mine[port][i]:02x} vs QEMU {theirs[port][i]:02x}"
                for i in range(4096) if mine[port][i] != theirs[port][i]]
        assert diff == [], port
