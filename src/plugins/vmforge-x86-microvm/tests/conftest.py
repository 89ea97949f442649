"""Project-written PVH guests run under QEMU 7.2's ``-M microvm,acpi=off -accel kvm``
(the oracle) and under ``vmforge run -M microvm -accel kvm``.

The guests (``guests/``: GNU as and freestanding C, linked at 1 MiB by
``guests/guest.ld``; ``guests/README.md`` says what each does) are built with
the host's binutils and gcc into a temporary folder when a test first asks for
them, once per session (:func:`guest`).

:func:`run_qemu` and :func:`run_vmforge` start the emulator with the same
options (``-serial stdio``, ``-no-reboot`` unless asked not to, ``-display
none``), wait for it to end and return the console text and the exit status;
:func:`same_as_qemu` runs a guest under both and compares.  Their tests skip,
saying why, when ``/dev/kvm`` is absent or not accessible, or fail in CI when
``qemu-system-x86_64`` is missing (:func:`vmforge.testing.oracles.oracle_missing`).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vmforge.accel.kvm import kvm_available
from vmforge.testing import qemu_tools
from vmforge.testing.oracles import oracle_missing, require_program

GUESTS = Path(__file__).resolve().parent / "guests"

#: freestanding code (no SSE: nothing sets up the FPU); the guests read low
#: memory (the MP table, the BIOS data area) through pointers gcc would otherwise
#: take for null ones
CFLAGS = ["-ffreestanding", "-fno-pic", "-fno-pie", "-nostdlib",
          "-O2", "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
          "-mgeneral-regs-only", "-fno-builtin", "-fno-delete-null-pointer-checks",
          "--param=min-pagesize=0", "-Wall", "-Wextra", "-Werror"]

#: how long one guest run may take before it counts as hung
TIMEOUT = 15.0

#: the isa-debug-exit every run has unless it asks for another (or none)
DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=4"


def build_guest(name: str, out_dir: Path, defines: Sequence[str] = (),
                flat: bool = False) -> Path:
    """``guests/pvh.S`` + ``guests/lib.c`` + ``guests/NAME.c`` (or ``NAME.S``) and
    any ``guests/NAME-*.S``, compiled with ``-D`` for each of ``defines`` and
    linked at 1 MiB: the PVH ELF.  ``flat``: for x86-64 with ``guests/flat64.S``
    instead of ``pvh.S``, a flat binary."""
    tag = "-".join([name, *(d.replace("=", "_") for d in defines), *(["flat"] if flat else [])])
    work = out_dir / tag
    work.mkdir(parents=True, exist_ok=True)
    arch = ["-m64", "-mno-red-zone", "-mcmodel=small"] if flat else ["-m32", "-march=i686"]
    dflags = [f"-D{d}" for d in defines]
    sources = [GUESTS / ("flat64.S" if flat else "pvh.S"), GUESTS / "lib.c",
               *(p for p in (GUESTS / f"{name}.c", GUESTS / f"{name}.S") if p.exists()),
               *sorted(GUESTS.glob(f"{name}-*.S"))]
    objects = []
    for src in sources:
        obj = work / f"{src.stem}.o"
        flags = [*arch, *CFLAGS] if src.suffix == ".c" else arch
        subprocess.run(["gcc", *flags, *dflags, "-c", str(src), "-o", str(obj)],
                       check=True, capture_output=True, text=True)
        objects.append(str(obj))
    elf = work / f"{name}.elf"
    subprocess.run(["ld", "-m", "elf_x86_64" if flat else "elf_i386", "--no-warn-rwx-segments",
                    "-T", str(GUESTS / "guest.ld"), "-o", str(elf), *objects],
                   check=True, capture_output=True, text=True)
    if not flat:
        return elf
    binary = work / f"{name}.bin"
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", "-j", ".rodata", "-j", ".data",
                    str(elf), str(binary)], check=True, capture_output=True, text=True)
    return binary


@pytest.fixture(scope="session")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``guest(name, *defines, flat=False)``: the PVH ELF of ``guests/NAME.c`` (or
    the flat x86-64 binary), built once."""
    for tool, package in (("gcc", "gcc"), ("as", "binutils"), ("ld", "binutils"),
                          ("objcopy", "binutils")):
        require_program(tool, package)
    out = tmp_path_factory.mktemp("microvm-guests")
    cache: dict[tuple[str, ...], Path] = {}

    def build(name: str, *defines: str, flat: bool = False) -> Path:
        key = (name, *defines, str(flat))
        if key not in cache:
            try:
                cache[key] = build_guest(name, out, defines, flat)
            except subprocess.CalledProcessError as exc:
                pytest.fail(f"building guest {name} failed: {' '.join(exc.cmd)}\n"
                            f"{exc.stdout}{exc.stderr}", pytrace=False)
        return cache[key]

    return build


@dataclass(frozen=True)
class Run:
    """One emulator run: what the guest wrote to the console, how the process ended."""
    output: str
    status: int
    stderr: str

    def __str__(self) -> str:
        return f"status {self.status}\n--- console ---\n{self.output}--- stderr ---\n{self.stderr}"


def _run(cmd: list[str], timeout: float, console_input: bytes | None = None,
         prompt: bytes = b"") -> Run:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL if console_input is None else subprocess.PIPE)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    head = b""
    if console_input is not None:
        assert proc.stdin is not None
        while prompt not in head:      # the guest asks first, as a user would see
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([proc.stdout], [], [], left)
            chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                break
            head += chunk
        try:
            proc.stdin.write(console_input)
            proc.stdin.flush()
        except BrokenPipeError:
            pass
    try:
        out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    out = head + out
    if proc.returncode == -9:
        pytest.fail(f"{cmd[0]} did not end within {timeout:.0f} s: {' '.join(cmd)}\n"
                    f"{Run(out.decode(errors='replace'), -9, err.decode(errors='replace'))}",
                    pytrace=False)
    return Run(out.decode(errors="replace").replace("\r\n", "\n"), proc.returncode,
               err.decode(errors="replace"))


def _common(kernel: Path, append: str | None, smp: int, memory: str,
            debug_exit: str | None, args: Sequence[str], no_reboot: bool) -> list[str]:
    cmd = ["-accel", "kvm", "-m", memory, "-smp", str(smp), "-display", "none",
           "-serial", "stdio", *(["-no-reboot"] if no_reboot else []), "-kernel", str(kernel)]
    if append is not None:
        cmd += ["-append", append]
    if debug_exit:
        cmd += ["-device", debug_exit]
    return cmd + list(args)


def _need_kvm() -> None:
    why = kvm_available()
    if why is not None:
        oracle_missing(why)


RunGuest = Callable[..., Run]


@pytest.fixture(scope="session")
def run_qemu() -> RunGuest:
    """``run_qemu(kernel, append=None, smp=1, memory="512M", debug_exit=DEBUG_EXIT,
    args=(), timeout=TIMEOUT, no_reboot=True, console_input=None)``: QEMU's microvm
    (``acpi=off``) on KVM; ``no_reboot=False`` leaves out ``-no-reboot``;
    ``console_input`` is written to the console (stdin) once the guest has printed
    ``prompt``, and the console's input then ends."""
    _need_kvm()
    binary = require_program("qemu-system-x86_64", "qemu-system-x86")

    def run(kernel: Path, append: str | None = None, smp: int = 1, memory: str = "512M",
            debug_exit: str | None = DEBUG_EXIT, args: Sequence[str] = (),
            timeout: float = TIMEOUT, no_reboot: bool = True,
            console_input: bytes | None = None, prompt: bytes = b"") -> Run:
        return _run([binary, "-M", "microvm,acpi=off", "-nodefaults", "-no-user-config",
                     *_common(kernel, append, smp, memory, debug_exit, args, no_reboot)],
                    timeout, console_input, prompt)

    return run


@pytest.fixture(scope="session")
def run_vmforge() -> RunGuest:
    """``run_vmforge(...)``, the same arguments as ``run_qemu``: ``vmforge run -M microvm``."""
    _need_kvm()

    def run(kernel: Path, append: str | None = None, smp: int = 1, memory: str = "512M",
            debug_exit: str | None = DEBUG_EXIT, args: Sequence[str] = (),
            timeout: float = TIMEOUT, no_reboot: bool = True,
            console_input: bytes | None = None, prompt: bytes = b"") -> Run:
        return _run([sys.executable, "-m", "vmforge.cli.main", "run", "-M", "microvm",
                     *_common(kernel, append, smp, memory, debug_exit, args, no_reboot)],
                    timeout, console_input, prompt)

    return run


def disk_contents(path: Path, fmt: str) -> bytes:
    """What the guest sees in the disk image ``path`` (qemu-img converts non-raw ones)."""
    if fmt == "raw":
        return path.read_bytes()
    require_program("qemu-img", "qemu-utils")
    return qemu_tools.to_raw(path, path.with_suffix(".raw"), fmt)


def _disk_args(image: Path, fmt: str, read_only: bool) -> list[str]:
    ro = ",readonly=on" if read_only else ""
    return ["-drive", f"file={image},if=none,id=d0,format={fmt}{ro}",
            "-device", "virtio-blk-device,drive=d0"]


@pytest.fixture(scope="session")
def same_as_qemu(run_qemu: RunGuest, run_vmforge: RunGuest,
                 tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Run]:
    """``same_as_qemu(kernel, milestones=(), disk=None, disk_format="raw",
    read_only=False, **options)``:
    run ``kernel`` under both (``options`` as :func:`run_qemu` takes them); check
    that QEMU's run printed something and each of ``milestones``, then that
    vmforge's console text and exit status are QEMU's.  With ``disk``, each run
    gets its own copy of that image as a virtio-blk device (``read_only``: with
    ``readonly=on``), and the two copies must hold the same data afterwards.
    Returns QEMU's run."""

    def compare(kernel: Path, milestones: Sequence[str] = (), disk: Path | None = None,
                disk_format: str = "raw", read_only: bool = False, **options: Any) -> Run:
        work = tmp_path_factory.mktemp("runs")
        images: dict[str, Path] = {}
        runs: dict[str, Run] = {}
        for name, run in (("QEMU", run_qemu), ("vmforge", run_vmforge)):
            opts = dict(options)
            if disk is not None:
                images[name] = work / f"{name}.{disk_format}"
                shutil.copyfile(disk, images[name])
                opts["args"] = [*opts.get("args", ()),
                                *_disk_args(images[name], disk_format, read_only)]
            runs[name] = run(kernel, **opts)
            if name == "QEMU":
                qemu = runs[name]
                assert qemu.output.strip(), f"QEMU's run printed nothing:\n{qemu}"
                for text in milestones:
                    assert text in qemu.output, f"QEMU's run lacks {text!r}:\n{qemu}"
        qemu, ours = runs["QEMU"], runs["vmforge"]
        assert ours.output == qemu.output, (
            f"console text differs\n=== QEMU ===\n{qemu}\n=== vmforge ===\n{ours}")
        assert ours.status == qemu.status, (
            f"exit status differs\n=== QEMU ===\n{qemu}\n=== vmforge ===\n{ours}")
        if disk is not None:
            assert (disk_contents(images["vmforge"], disk_format)
                    == disk_contents(images["QEMU"], disk_format)), (
                "the disk holds other data after vmforge's run than after QEMU's")
        return qemu

    return compare
