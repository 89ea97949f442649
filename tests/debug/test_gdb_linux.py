"""gdb-multiarch on the Linux guest: OpenSBI boots it, gdb stops at start_kernel
(a virtual address, S-mode, paging on) and reads kernel memory through the
hart's MMU; QEMU's gdbstub shows the same."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gdbkit import PREAMBLE, VMFORGE, free_port, gdb_session

from vmforge.testing.oracles import oracle_missing, require_files, require_program

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
set pagination off
set confirm off
set tcp connect-timeout 30
file {vmlinux}
target remote 127.0.0.1:{port}
info registers pc
hbreak start_kernel
continue
info registers pc priv
x/s (char *)&linux_banner
x/2gx (long *)&init_task
x/2i $pc
stepi
p $pc
kill
"""


def _vmlinux() -> tuple[Path, Path]:
    proc = subprocess.run([sys.executable, str(ROOT / "guests" / "build.py"), "--print-path",
                           "linux-riscv64"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        oracle_missing("guest not built: linux-riscv64; build it with "
                       "`python3 guests/build.py all`")
    image = Path(proc.stdout.strip())
    vmlinux = image.with_name("vmlinux")
    require_files([image, vmlinux], "the Linux guest's Image and vmlinux (guests/build.py)")
    return image, vmlinux


def _linux_session(tmp_path: Path, server: list[str], port: int, vmlinux: Path,
                   tag: str) -> tuple[str, subprocess.CompletedProcess]:
    return gdb_session(tmp_path, SCRIPT.format(vmlinux=vmlinux, port=port), server, tag)


def _vmforge(tmp_path: Path) -> tuple[str, Path, Path]:
    image, vmlinux = _vmlinux()
    port = free_port()
    out, vm = _linux_session(tmp_path, [*VMFORGE, "run", "-M", "riscv-virt", "-m", "256M",
                                        "-kernel", str(image), "-append", "console=ttyS0",
                                        "-S", "-gdb", f"tcp:127.0.0.1:{port}", "-serial",
                                        "none", "--timeout", "150"], port, vmlinux, "vmforge")
    assert vm.returncode == 0, (out, vm.stderr)          # gdb's kill: a clean stop
    assert "Traceback" not in vm.stderr
    return out, image, vmlinux


def test_break_at_start_kernel(tmp_path: Path) -> None:
    out, _, _ = _vmforge(tmp_path)
    assert re.search(r"^pc\s+0x1000\s", out, re.M), out
    assert "Breakpoint 1, 0xffffffff" in out and "in start_kernel ()" in out, out
    assert re.search(r"^pc\s+0xffffffff[0-9a-f]+\s+0xffffffff[0-9a-f]+ <start_kernel>$",
                     out, re.M), out
    assert re.search(r"^priv\s+0x1\s+prv:1 \[Supervisor\]", out, re.M), out
    assert '<linux_banner>:\t"Linux version 6.1' in out, out
    assert "=> 0xffffffff" in out and "<start_kernel>:\t" in out
    assert re.search(r"^\$1 = .* <start_kernel\+[24]>$", out, re.M), out
    assert "[Inferior 1 (process 1) killed]" in out


def test_start_kernel_as_qemu_sees_it(tmp_path: Path) -> None:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    ours, image, vmlinux = _vmforge(tmp_path)
    port = free_port()
    theirs, q = _linux_session(tmp_path, [qemu, "-M", "virt", "-m", "256M", "-kernel",
                                          str(image), "-append", "console=ttyS0", "-S",
                                          "-gdb", f"tcp:127.0.0.1:{port}", "-nographic",
                                          "-serial", "none", "-monitor", "none"],
                               port, vmlinux, "qemu")
    assert q.returncode == 0 and "in start_kernel ()" in theirs, theirs
    assert ours == theirs


# the session the issue describes: a stop in OpenSBI, then in start_kernel,
# registers and kernel memory read and written, a hardware watchpoint on a kernel
# variable, a backtrace, and the guest left to run on to its shell (the vmlinux
# has symbols, no debug information: variables are read through casts)
SESSION = PREAMBLE + """
hbreak *0x80000000
continue
info registers pc priv a0
stepi
info registers pc
delete
hbreak start_kernel
continue
set $saved = $t6
set $t6 = 0x1234
p/x $t6
set $t6 = $saved
p *(int *)&panic_timeout
set var *(int *)&panic_timeout = 7
p *(int *)&panic_timeout
delete
watch *(int *)&system_state
continue
bt 3
p *(int *)&system_state
delete
detach
"""


def _session_run(tmp_path: Path, server: list[str], port: int, vmlinux: Path, console: Path,
                 tag: str) -> str:
    import time

    script = tmp_path / f"{tag}-session.gdb"
    script.write_text(SESSION.format(elf=vmlinux, port=port))
    gdb = require_program("gdb-multiarch", "gdb-multiarch")
    proc = subprocess.Popen(server, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        out = subprocess.run([gdb, "-batch", "-nx", "-x", str(script)], capture_output=True,
                             text=True, timeout=240, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:      # detached: the guest boots on to its shell
            if console.exists() and re.search(rb"vmforge:[^\r\n]*# ", console.read_bytes()):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"{tag}: no shell after detach: "
                                 f"{console.read_bytes()[-500:]!r}\n{out.stdout}")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    assert "Error" not in out.stderr, out.stdout + out.stderr    # the script ran whole
    return out.stdout + out.stderr


def _initrd() -> Path:
    proc = subprocess.run([sys.executable, str(ROOT / "guests" / "build.py"), "--print-path",
                           "initramfs-riscv64"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        oracle_missing("guest not built: initramfs-riscv64; build it with "
                       "`python3 guests/build.py all`")
    return Path(proc.stdout.strip())


def test_a_kernel_debugging_session_as_on_qemu(tmp_path: Path) -> None:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    image, vmlinux = _vmlinux()
    initrd = _initrd()
    common = ["-m", "256M", "-kernel", str(image), "-initrd", str(initrd),
              "-append", "console=ttyS0", "-S"]
    port = free_port()
    ours = _session_run(tmp_path, [*VMFORGE, "run", "-M", "riscv-virt", *common, "-gdb",
                                   f"tcp:127.0.0.1:{port}", "-serial",
                                   f"file:{tmp_path / 'ours.txt'}", "--timeout", "200"],
                        port, vmlinux, tmp_path / "ours.txt", "vmforge")
    assert "Breakpoint 1, 0x0000000080000000 in ?? ()" in ours, ours
    assert re.search(r"^priv\s+0x3\s+prv:3 \[Machine\]", ours, re.M), ours
    assert "in start_kernel ()" in ours and "$1 = 0x1234" in ours, ours
    assert "$2 = 0" in ours and "$3 = 7" in ours, ours
    assert "Hardware watchpoint 3: *(int *)&system_state" in ours, ours
    assert "Old value = 0\nNew value = 1" in ours and "#0  " in ours, ours   # SCHEDULING
    port = free_port()
    theirs = _session_run(tmp_path, [qemu, "-M", "virt", *common, "-gdb",
                                     f"tcp:127.0.0.1:{port}", "-nographic", "-serial",
                                     f"file:{tmp_path / 'theirs.txt'}", "-monitor", "none"],
                          port, vmlinux, tmp_path / "theirs.txt", "qemu")
    assert ours == theirs
