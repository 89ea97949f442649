"""Debian's gdb-multiarch against ``vmforge run -S -gdb``, and the same gdb script
against QEMU's gdbstub: the same stops, the same register and memory values."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from gdbkit import VMFORGE, assemble, free_port, gdb_session, wait_until

from vmforge.testing.oracles import require_program

TOOLCHAIN = "gcc-riscv64-unknown-elf"

START = """
    .section .text.start
    .globl _start
_start:
    la sp, stack_top
    call main_c
1:  j 1b
    .bss
    .balign 16
    .space 4096
stack_top:
"""

PROG = """
volatile unsigned long counter;
unsigned long table[4] = {0x11, 0x22, 0x33, 0x44};

__attribute__((noinline)) unsigned long add_one(unsigned long v)
{
    counter += v;
    return v + 1;
}

void main_c(void)
{
    unsigned long v = 0;
    for (int i = 0; i < 5; i++)
        v = add_one(v);
    table[0] = v;
    /* the SiFive test finisher: pass when the debugger made v 42 */
    *(volatile unsigned int *)0x100000 = v == 42 ? 0x5555 : 0x3333 | (1 << 16);
    for (;;)
        ;
}
"""

LINK = """
ENTRY(_start)
SECTIONS {
  . = 0x80000000;
  .text : { *(.text.start) *(.text*) }
  .rodata : { *(.rodata*) *(.srodata*) }
  .data : { *(.data*) *(.sdata*) }
  .bss : { *(.bss*) *(.sbss*) *(COMMON) }
}
"""

# the breakpoint's first hit has v = 0; the debugger makes it 37, so the five
# calls end at 42 and the guest passes
SCRIPT = """
set pagination off
set confirm off
set tcp connect-timeout 30
file {elf}
target remote 127.0.0.1:{port}
info registers pc
break add_one
continue
info registers pc a0 sp ra
x/4gx &table
p/x counter
stepi
info registers pc a4
set $a0 = 37
p $a0
p $priv
info registers mstatus mhartid
p $ft0
info threads
delete
hbreak *{after_loop}
continue
p/x $a0
p counter
x/2gx &table
delete
continue
"""


def _build(tmp_path: Path) -> Path:
    gcc = require_program("riscv64-unknown-elf-gcc", TOOLCHAIN)
    for name, text in (("start.S", START), ("prog.c", PROG), ("link.ld", LINK)):
        (tmp_path / name).write_text(text)
    elf = tmp_path / "prog.elf"
    subprocess.run([gcc, "-g", "-O1", "-march=rv64gc", "-mabi=lp64d", "-mcmodel=medany",
                    "-nostdlib", "-ffreestanding", "-T", str(tmp_path / "link.ld"),
                    "-Wl,--no-relax", "-Wl,--no-warn-rwx-segments", "-o", str(elf),
                    str(tmp_path / "start.S"), str(tmp_path / "prog.c")], check=True)
    return elf


def _after_loop(elf: Path) -> int:
    """The address of the store after main_c's loop (``table[0] = v``)."""
    objdump = require_program("riscv64-unknown-elf-objdump", TOOLCHAIN)
    text = subprocess.run([objdump, "-d", str(elf)], capture_output=True, text=True,
                          check=True).stdout
    body = text.split("<main_c>:", 1)[1]
    branch = re.search(r"\n\s*([0-9a-f]+):\s+\S+\s+bnez", body)
    assert branch is not None, body
    # the instruction after the loop's backward branch
    lines = body.split("\n")
    for i, line in enumerate(lines):
        if line.strip().startswith(branch.group(1) + ":"):
            return int(lines[i + 1].split(":")[0], 16)
    raise AssertionError(body)


def _session(tmp_path: Path, elf: Path, server: list[str], port: int,
             tag: str) -> tuple[str, subprocess.CompletedProcess]:
    script = SCRIPT.format(elf=elf, port=port, after_loop=hex(_after_loop(elf)))
    return gdb_session(tmp_path, script, server, tag)


def _vmforge(tmp_path: Path, elf: Path) -> tuple[str, subprocess.CompletedProcess]:
    port = free_port()
    return _session(tmp_path, elf, [*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none",
                                    "-kernel", str(elf), "-S", "-gdb",
                                    f"tcp:127.0.0.1:{port}", "-serial", "none",
                                    "--timeout", "100"], port, "vmforge")


def test_gdb_debugs_a_bare_metal_program(tmp_path: Path) -> None:
    elf = _build(tmp_path)
    out, vm = _vmforge(tmp_path, elf)
    assert vm.returncode == 0, (out, vm.stderr)      # the finisher's pass: v was 42
    assert "Traceback" not in vm.stderr
    assert re.search(r"^pc\s+0x1000\s", out, re.M), out              # -S: at the reset ROM
    assert "Breakpoint 1, add_one (v=0) at" in out
    assert re.search(r"^pc\s+0x80000012\s+0x80000012 <add_one>", out, re.M), out
    assert re.search(r"^a0\s+0x0\s", out, re.M)
    assert re.search(r"^ra\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <main_c\+\d+>", out, re.M)
    assert "<table>:\t0x0000000000000011\t0x0000000000000022" in out
    assert re.search(r"^pc\s+0x80000016\s+0x80000016 <add_one\+4>", out, re.M), out
    assert "$2 = 37" in out and "$3 = 3" in out                       # a0, then priv (M)
    assert re.search(r"^mhartid\s+0x0\s", out, re.M)
    assert "Thread 1" in out and "CPU#0" in out
    assert "Hardware assisted breakpoint 2" in out
    assert "$5 = 0x2a" in out                                         # v reached 42
    assert "$6 = 195" in out                                          # 37+38+...+41
    assert out.count("<table>:\t0x0000000000000011\t0x0000000000000022") == 2  # not stored yet
    assert "exited normally" in out


def _normalize(out: str) -> list[str]:
    """gdb's output without what differs by design: misa (QEMU 7.2 turns on H),
    QEMU's multiprocess thread names, and how each ends the session (vmforge
    sends the exit status, QEMU 7.2 just closes the connection)."""
    lines = []
    for line in out.splitlines():
        if line.startswith("misa") or "exited normally" in line or "connection closed" in line \
                or "Error in sourced command file" in line:
            continue
        lines.append(re.sub(r"Thread 1\.1 ", "Thread 1 ", line).replace("  Id   Target Id   ",
                                                                       "  Id   Target Id "))
    return lines


def test_same_session_as_qemu(tmp_path: Path) -> None:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    elf = _build(tmp_path)
    ours, vm = _vmforge(tmp_path, elf)
    assert vm.returncode == 0, ours
    port = free_port()
    theirs, q = _session(tmp_path, elf, [qemu, "-M", "virt", "-bios", "none", "-kernel",
                                         str(elf), "-S", "-gdb", f"tcp:127.0.0.1:{port}",
                                         "-nographic", "-serial", "none", "-monitor", "none"],
                         port, "qemu")
    assert q.returncode == 0, theirs
    assert "Breakpoint 1, add_one (v=0)" in theirs
    assert _normalize(ours) == _normalize(theirs)


@pytest.mark.parametrize("dev, message", [
    ("tcp:0.0.0.0:1234", "listens on 127.0.0.1 only"),
    ("tcp::notaport", "expected tcp::PORT"),
    ("unix:", "needs a socket path"),
])
def test_bad_gdb_device_is_a_cli_error(tmp_path: Path, dev: str, message: str) -> None:
    image = tmp_path / "empty.bin"
    image.write_bytes(b"\x6f\x00\x00\x00")          # j .
    proc = subprocess.run([*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none", "-kernel",
                           str(image), "-gdb", dev, "-serial", "none", "--timeout", "20"],
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert message in proc.stderr and proc.stderr.startswith("vmforge run: -gdb")
    assert "Traceback" not in proc.stderr


def test_port_in_use_is_a_cli_error(tmp_path: Path) -> None:
    image = tmp_path / "empty.bin"
    image.write_bytes(b"\x6f\x00\x00\x00")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = subprocess.run([*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none",
                               "-kernel", str(image), "-S", "-gdb", f"tcp::{port}",
                               "-serial", "none", "--timeout", "20"], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr


WATCH_SCRIPT = """
set pagination off
set confirm off
set tcp connect-timeout 30
file {elf}
target remote 127.0.0.1:{port}
set can-use-hw-watchpoints 0
watch counter
continue
continue
p counter
kill
"""


def test_software_watchpoints(tmp_path: Path) -> None:
    """gdb's own (software) watchpoints, which single-step, work too."""
    elf = _build(tmp_path)
    port = free_port()
    out, vm = gdb_session(tmp_path, WATCH_SCRIPT.format(elf=elf, port=port),
                          [*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none", "-kernel",
                           str(elf), "-S", "-gdb", f"tcp:127.0.0.1:{port}", "-serial", "none",
                           "--timeout", "100"], "watch")
    assert "Old value = 0\nNew value = 1\nadd_one (v=1)" in out, out
    assert "Old value = 1\nNew value = 3\nadd_one (v=2)" in out, out
    assert "$1 = 3" in out and vm.returncode == 0


SPIN = """
    .option norvc
    li t0, 0x10000000
    li t1, 0x52
    sb t1, 0(t0)
    li t1, 0x0a
    sb t1, 0(t0)
1:  j 1b
"""


def test_ctrl_c_in_gdb_interrupts_the_guest(tmp_path: Path) -> None:
    gdb = require_program("gdb-multiarch", "gdb-multiarch")
    image = tmp_path / "spin.bin"
    image.write_bytes(assemble(SPIN, tmp_path))
    console = tmp_path / "console.txt"
    port = free_port()
    (tmp_path / "c.gdb").write_text(
        "set pagination off\nset confirm off\nset architecture riscv:rv64\n"
        f"set tcp connect-timeout 30\ntarget remote 127.0.0.1:{port}\ncontinue\n"
        "p/x $pc\ninfo registers priv\nkill\n")
    vm = subprocess.Popen([*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none", "-kernel",
                           str(image), "-S", "-gdb", f"tcp:127.0.0.1:{port}", "-serial",
                           f"file:{console}", "--timeout", "100"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = subprocess.Popen([gdb, "-batch", "-nx", "-x", str(tmp_path / "c.gdb")],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        # the guest prints R once gdb has continued it (a line: the file is flushed)
        assert wait_until(lambda: console.exists() and b"R" in console.read_bytes(), 60)
        client.send_signal(signal.SIGINT)
        out, _ = client.communicate(timeout=60)
        _, err = vm.communicate(timeout=60)
    finally:
        for proc in (client, vm):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "Program received signal SIGINT, Interrupt." in out, out
    assert "$1 = 0x80000014" in out, out                     # the j . after the stores
    assert "prv:3 [Machine]" in out
    assert vm.returncode == 0 and "Traceback" not in err


def test_gdb_load_writes_the_program(tmp_path: Path) -> None:
    """``load`` writes an ELF through X packets into a machine that booted
    something else; gdb then runs it to a breakpoint and walks the stack."""
    elf = _build(tmp_path)
    image = tmp_path / "spin.bin"
    image.write_bytes(assemble(".option norvc\n1: j 1b\n", tmp_path))
    port = free_port()
    script = (f"set pagination off\nset confirm off\nset tcp connect-timeout 30\n"
              f"file {elf}\ntarget remote 127.0.0.1:{port}\nload\np/x $pc\n"
              "break add_one\ncontinue\nbt\nkill\n")
    out, vm = gdb_session(tmp_path, script, [*VMFORGE, "run", "-M", "riscv-virt", "-bios",
                                             "none", "-kernel", str(image), "-S", "-gdb",
                                             f"tcp:127.0.0.1:{port}", "-serial", "none",
                                             "--timeout", "100"], "load")
    assert "Start address 0x0000000080000000, load size" in out, out
    assert "$1 = 0x80000000" in out
    assert "Breakpoint 1, add_one (v=0) at" in out
    assert re.search(r"#1  0x[0-9a-f]+ in main_c \(\) at .*prog.c:\d+", out), out
    assert vm.returncode == 0
