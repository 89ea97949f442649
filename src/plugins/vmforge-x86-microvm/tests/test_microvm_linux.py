"""Debian's own kernel (``guests/build.py linux-amd64``: ``linux-image-amd64``) on
``-M microvm -accel kvm``, under QEMU 7.2 and under vmforge, with
``-m 512M -append "console=ttyS0 earlyprintk=ttyS0 panic=-1"`` and no initrd.

What the host offers decides what can be expected, and QEMU is the probe: it boots the
PVH ``vmlinux`` until the kernel's last words ("Kernel panic - not syncing: VFS: Unable
to mount root fs": there is no root file system), until the host's KVM gives up ("KVM
internal error", QEMU's words when KVM cannot emulate an instruction), or for at most
``QEMU_BUDGET`` seconds.

- Where QEMU reaches the panic (a host with full hardware virtualisation: about a
  second), vmforge must reach it too, for the PVH ``vmlinux`` and for the ``vmlinuz``
  bzImage entered by the 64-bit boot protocol.
- Otherwise (a nested KVM that emulates guest kernel mode, as on the project's
  machines: QEMU prints ``FIRST_LINES_END`` 40-70 s in, then stops at a
  ``lock cmpxchg16b`` KVM cannot emulate, "KVM internal error. Suberror: 1",
  90-140 s in, depending on the load), vmforge must print the same first lines as
  QEMU, from "Linux version" to ``FIRST_LINES_END``.

Either way the first lines are compared, timestamps stripped, except the parts
``EXCLUDED`` masks, each for a reason.  On the project's machine vmforge's run also
ends at the same instruction with KVM_EXIT_INTERNAL_ERROR (after "Memory: ..."), as
QEMU's does; the test stops reading at ``FIRST_LINES_END``.
The bzImage test is described at its function.
Skipped, saying why, where ``/dev/kvm`` is absent or not accessible (a failure in CI,
as a missing QEMU or guest is); the kernel comes from ``make guests``.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmforge.accel.kvm import kvm_available
from vmforge.testing.oracles import oracle_missing, require_program

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[4]
APPEND = "console=ttyS0 earlyprintk=ttyS0 panic=-1"
MEMORY = "512M"
#: the kernel's last words without a root file system
PANIC = "Kernel panic - not syncing: VFS: Unable to mount root fs"
#: QEMU's and vmforge's words when KVM cannot run or emulate the guest any further
KVM_GAVE_UP = ("KVM internal error", "KVM_EXIT_INTERNAL_ERROR")
#: the last of the compared first lines: the early set-up is over (memory map, CPU
#: and hypervisor detection, NUMA and zones, the MP table, SMP)
FIRST_LINES_END = "Booting paravirtualized kernel on KVM"
FIRST_LINES_START = "Linux version "
#: how long QEMU may run as the probe (it stops earlier at PANIC or KVM_GAVE_UP)
QEMU_BUDGET = 240.0
#: how long vmforge may take to print what QEMU printed
VMFORGE_BUDGET = 300.0

#: what differs by design in the first lines, each with the reason: the groups of a
#: pattern are masked (the rest of the line is still compared)
EXCLUDED: dict[str, str] = {
    r"kvm-clock: using sched offset of (\d+) cycles":
        "the TSC value when the kernel starts: time, not the machine",
    r"IOAPIC\[0\]: apic_id \d+, version (\d+), address 0x[0-9a-f]+, GSI \d+-\d+":
        "the I/O APIC's version register (the MP table copies it): vmforge's I/O APIC is "
        "KVM's in-kernel one (0x11), QEMU's microvm defaults to kernel-irqchip=split, "
        "whose I/O APIC is QEMU's own (0x20)",
}

TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\] ")


def guest_file(name: str) -> Path:
    """``name`` in the linux-amd64 product (``guests/build.py``; ``make guests``)."""
    build = ROOT / "guests" / "build.py"
    out = subprocess.run([sys.executable, str(build), "--print-dir", "linux-amd64"],
                         capture_output=True, text=True, timeout=120)
    path = Path(out.stdout.strip().splitlines()[-1]) / name if out.stdout.strip() else None
    if out.returncode != 0 or path is None or not path.is_file():
        oracle_missing("Debian's kernel is not unpacked (python3 guests/build.py linux-amd64)")
    return path


@dataclass
class Console:
    """What a run printed on its console (stdout) and on stderr, and why the reading
    stopped."""

    lines: list[str]
    stderr: list[str]
    stopped_by: str             # the pattern seen, "exit" or "timeout"
    seconds: float

    def text(self) -> str:
        return "\n".join([*self.lines, "--- stderr ---", *self.stderr])

    def saw(self, needle: str) -> bool:
        return any(needle in line for line in self.lines)


def read_console(argv: Sequence[str], stop: Sequence[str], budget: float,
                 qmp_probe: tuple[Path, float] | None = None) -> tuple[Console, str | None]:
    """Run ``argv`` and read its stdout and stderr line by line until a line holds one
    of ``stop``, the process ends, or ``budget`` seconds pass; then kill it.  With
    ``qmp_probe`` (socket, seconds) ask its QMP socket for ``info registers`` that
    many seconds in (the second value returned; the reading goes on afterwards)."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    out: dict[int, tuple[list[str], bytearray]] = {}
    for stream in (proc.stdout, proc.stderr):
        sel.register(stream, selectors.EVENT_READ)
        out[stream.fileno()] = ([], bytearray())
    t0 = time.monotonic()
    stopped_by = "timeout"
    registers: str | None = None
    try:
        while (left := t0 + budget - time.monotonic()) > 0 and stopped_by == "timeout":
            if qmp_probe is not None and registers is None:
                wait = t0 + qmp_probe[1] - time.monotonic()
                if wait <= 0:
                    registers = hmp(qmp_probe[0], "info registers")
                    continue
                left = min(left, wait)
            for key, _ in sel.select(min(left, 1.0)):
                lines, pending = out[key.fd]
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    if not sel.get_map():
                        stopped_by = "exit"
                    continue
                pending += chunk
                *done, rest = pending.split(b"\n")
                pending[:] = rest
                new = [ln.decode(errors="replace").rstrip("\r") for ln in done]
                lines += new
                hit = next((s for s in stop if any(s in ln for ln in new)), None)
                if hit:
                    stopped_by = hit
    finally:
        proc.kill()
        proc.wait()
    for lines, pending in out.values():
        if pending:
            lines.append(pending.decode(errors="replace").rstrip("\r"))
    (stdout, _), (stderr, _) = out[proc.stdout.fileno()], out[proc.stderr.fileno()]
    return Console(stdout, stderr, stopped_by, time.monotonic() - t0), registers


def hmp(sock: Path, command: str) -> str:
    """``command`` through QMP's human-monitor-command on the socket ``sock``."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(sock))
        stream = s.makefile("rwb")

        def call(name: str, args: dict[str, str] | None = None) -> object:
            stream.write(json.dumps({"execute": name, "arguments": args or {}}).encode()
                         + b"\n")
            stream.flush()
            while True:
                reply = json.loads(stream.readline())
                if "event" not in reply:
                    assert "return" in reply, reply
                    return reply["return"]

        json.loads(stream.readline())                   # the greeting
        call("qmp_capabilities")
        return str(call("human-monitor-command", {"command-line": command}))


def mask(line: str) -> str:
    """``line`` with the parts EXCLUDED names replaced by ``*``."""
    for pattern in EXCLUDED:
        m = re.fullmatch(pattern, line)
        if m:
            for i in reversed(range(1, (m.lastindex or 0) + 1)):
                line = line[:m.start(i)] + "*" + line[m.end(i):]
    return line


def first_lines(console: Console) -> list[str]:
    """From "Linux version" to FIRST_LINES_END, timestamps stripped, EXCLUDED masked."""
    out: list[str] = []
    for line in console.lines:
        line = TIMESTAMP.sub("", line)
        if not out and not line.startswith(FIRST_LINES_START):
            continue
        out.append(mask(line))
        if FIRST_LINES_END in line:
            break
    return out


def qemu_argv(kernel: Path) -> list[str]:
    qemu = require_program("qemu-system-x86_64", "qemu-system-x86")
    return [qemu, "-M", "microvm,acpi=off", "-accel", "kvm", "-m", MEMORY, "-nographic",
            "-no-reboot", "-serial", "stdio", "-display", "none", "-monitor", "none",
            "-kernel", str(kernel), "-append", APPEND]


def vmforge_argv(kernel: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vmforge.cli.main", "run", "-M", "microvm", "-accel", "kvm",
            "-m", MEMORY, "-kernel", str(kernel), "-append", APPEND, "-serial", "stdio",
            "-no-reboot", "-display", "none", *extra]


@dataclass
class Probe:
    """QEMU's run of the PVH vmlinux: the reference, and what the host offers."""

    console: Console
    full: bool                  # QEMU reached PANIC: the host runs kernels at speed


@pytest.fixture(scope="module")
def qemu_probe() -> Probe:
    why = kvm_available()
    if why is not None:
        oracle_missing(why)
    con, _ = read_console(qemu_argv(guest_file("vmlinux")), (PANIC, *KVM_GAVE_UP), QEMU_BUDGET)
    print(f"\nQEMU, PVH vmlinux: stopped by {con.stopped_by!r} after {con.seconds:.1f} s, "
          f"{len(con.lines)} lines")
    assert con.saw(FIRST_LINES_END), (
        f"QEMU did not get as far as {FIRST_LINES_END!r} ({con.stopped_by} after "
        f"{con.seconds:.0f} s): nothing to compare with\n{con.text()}")
    return Probe(con, con.saw(PANIC))


def assert_same_first_lines(qemu: Console, ours: Console) -> None:
    want, got = first_lines(qemu), first_lines(ours)
    if got != want:
        import difflib

        diff = "\n".join(difflib.unified_diff(want, got, "QEMU", "vmforge", lineterm=""))
        pytest.fail(f"vmforge's first lines differ from QEMU's ({ours.stopped_by} after "
                    f"{ours.seconds:.0f} s):\n{diff}\n--- vmforge's console ---\n"
                    f"{ours.text()}", pytrace=False)


def test_pvh_vmlinux_like_qemu(qemu_probe: Probe) -> None:
    """The PVH vmlinux prints QEMU's first lines (Linux version, command line, the
    e820 map, the boot console, KVM detection, the MP table, ...); where the host runs
    kernels at speed, it goes on to the panic as QEMU's does."""
    stop = PANIC if qemu_probe.full else FIRST_LINES_END
    ours, _ = read_console(vmforge_argv(guest_file("vmlinux")), (stop, *KVM_GAVE_UP),
                           VMFORGE_BUDGET)
    print(f"\nvmforge, PVH vmlinux: stopped by {ours.stopped_by!r} after "
          f"{ours.seconds:.1f} s, {len(ours.lines)} lines")
    assert_same_first_lines(qemu_probe.console, ours)
    if qemu_probe.full:
        assert ours.saw(PANIC), f"QEMU reached {PANIC!r}, vmforge did not:\n{ours.text()}"


#: how long the bzImage runs before its registers are read, where the host is slow
DECOMPRESSOR_SECONDS = 20.0


def test_bzimage_64bit_entry(qemu_probe: Probe, tmp_path: Path) -> None:
    """``-kernel vmlinuz``: vmforge's 64-bit boot protocol enters the bzImage's
    decompressor (``startup_64``, 0x200 into the protected-mode part), which unpacks
    the xz kernel (64 MB) and jumps to it.

    Where QEMU's probe reached the panic, vmforge must reach it from the bzImage too.
    Otherwise the decompressor runs in guest kernel mode, which this host's nested
    KVM emulates some thousands of times slower than native, and Debian's
    decompressor prints nothing on the way (``CONFIG_X86_VERBOSE_BOOTUP`` is off):
    measured on the project's machine, ten minutes in the vCPU is still there (RIP
    0x4f3axxx-0x4f3dxxx, sampled each minute) and nothing is printed.  So the test
    lets it run ``DECOMPRESSOR_SECONDS`` and asks the monitor (QMP ``info registers``) where the
    vCPU is: in 64-bit mode (CS.L), at CPL 0, with RIP inside the decompressor's
    identity-mapped working area (the load address up to LOAD_PHYSICAL_ADDR
    0x1000000 + init_size), not yet in the kernel proper (above 0xffffffff80000000);
    and the run must have printed nothing and still be running."""
    vmlinuz = guest_file("vmlinuz")
    header = vmlinuz.read_bytes()[:0x400]
    init_size = int.from_bytes(header[0x260:0x264], "little")
    sock = tmp_path / "qmp.sock"
    if qemu_probe.full:
        ours, _ = read_console(vmforge_argv(vmlinuz), (PANIC, *KVM_GAVE_UP), VMFORGE_BUDGET)
        assert ours.saw(PANIC), f"the bzImage did not reach {PANIC!r}:\n{ours.text()}"
        return
    ours, regs = read_console(
        vmforge_argv(vmlinuz, "-qmp", f"unix:{sock},server=on,wait=off"),
        (*KVM_GAVE_UP, FIRST_LINES_START), DECOMPRESSOR_SECONDS + 5,
        qmp_probe=(sock, DECOMPRESSOR_SECONDS))
    print(f"\nvmforge, bzImage: {ours.stopped_by!r} after {ours.seconds:.1f} s\n{regs}")
    assert ours.stopped_by == "timeout" and not ours.lines, (
        f"the bzImage run ended or printed ({ours.stopped_by}):\n{ours.text()}")
    assert regs is not None
    rip = re.search(r"RIP=([0-9a-f]{16})", regs)
    cs = re.search(r"CS =[0-9a-f]{4} [0-9a-f]{16} [0-9a-f]{8} ([0-9a-f]{8})", regs)
    assert rip and cs, f"no RIP or CS in the registers:\n{regs}"
    flags = int(cs.group(1), 16)                # the descriptor's high word, as QEMU's
    assert flags >> 21 & 1 and (flags >> 13 & 3) == 0, f"not 64-bit kernel code:\n{regs}"
    assert 0x100000 <= int(rip.group(1), 16) < 0x1000000 + init_size, regs
