"""savevm / loadvm of a busy Linux shell on riscv-virt (guests/build.py's kernel and
busybox initramfs; the disk a qcow2 image on virtio-blk).

One guest is booted and runs a counter loop that prints to the console and
writes each value to a file on the disk (with ``sync``: requests in flight
while the VM stops); ``savevm s1`` is taken from the monitor in the middle of it.
Then, each in a fresh ``vmforge run`` process on a copy of the image: ``-loadvm
s1`` and the monitor's ``loadvm s1`` (Ctrl-A C) continue the loop from the saved
value and the shell answers a new command; the disk is the one of the moment of
the snapshot.  ``info snapshots`` lists it as QEMU prints it, qemu-img sees it
with its VM state size and finds the image clean; ``delvm`` removes it; another
configuration (memory size, device set) is refused with a clear message and
the running guest goes on.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmforge.chardev import BufferChar, NullChar
from vmforge.config import DeviceSpec, DriveSpec, MachineConfig
from vmforge.monitor import Monitor
from vmforge.testing.console import ProcessConsole
from vmforge.testing.oracles import oracle_missing, require_program

ROOT = Path(__file__).resolve().parents[2]
FW_JUMP = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin"
PROMPT = re.compile(rb"vmforge:[^\r\n]*# ")
COUNT = re.compile(rb"count=(\d+)\r?\n")
LOOP = (b"mke2fs -q /dev/vda && mount /dev/vda /mnt && i=0 && while true; do "
        b"i=$((i+1)); echo count=$i; echo $i > /mnt/n; sync; sleep 0.1; done\n")
STEP = 60


def _guest(name: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "guests" / "build.py"), "--print-path",
                           name], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not Path(proc.stdout.strip()).exists():
        oracle_missing(f"guest {name} is not built (python3 guests/build.py {name})")
    return proc.stdout.strip()


def _hmp(machine: Any, line: str, console: BufferChar | None = None) -> tuple[str, bytes]:
    """A monitor command on the machine's thread (CPUs stopped, as the monitor
    runs them); its output, and the console's output at that moment."""
    monitor = Monitor(machine, NullChar())
    done = threading.Event()
    out: list[Any] = []

    def run() -> None:
        out.append(monitor.execute(line))
        out.append(console.output if console is not None else b"")
        done.set()

    machine.call_soon(run)
    assert done.wait(STEP)
    return out[0], out[1]


class Saved:
    """The image holding ``s1``, the console up to the save, what the monitor said."""

    image: Path
    console: bytes
    info: str
    last: int


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    qemu_img = require_program("qemu-img", "qemu-utils")
    if not Path(FW_JUMP).exists():
        oracle_missing("Debian's opensbi (fw_jump.bin) is not installed")
    work = tmp_path_factory.mktemp("savevm")
    image = work / "disk.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    console = BufferChar()
    m = _machine(console, image, [DeviceSpec("virtio-blk-device", {"drive": "hd0"})])
    m.start()
    try:
        out, at_save = _save_during_loop(m, console, "s1", 8)
        assert out == ""
        info, _ = _hmp(m, "info snapshots")
        console.wait_for(re.compile(rb"count=%d\r?\n" % (_last(at_save) + 3)), timeout=STEP)
    finally:
        m.stop(30)
    s = Saved()
    s.image, s.console, s.info, s.last = image, at_save, info, _last(at_save)
    yield s


def _machine(console: BufferChar, image: Path, devices: list[DeviceSpec],
             **more: Any) -> Any:
    """The saved guest's machine: Linux, 256 MiB, ``image`` as drive hd0."""
    from vmforge_riscv_virt.machine import RiscvVirt

    return RiscvVirt(MachineConfig(
        machine="riscv-virt", memory=256 << 20, bios=FW_JUMP,
        kernel=_guest("linux-riscv64"), initrd=_guest("initramfs-riscv64"),
        append="console=ttyS0", serial=[console],
        drives=[DriveSpec(str(image), "qcow2", interface="none", id="hd0")],
        devices=devices, **more))


def _save_during_loop(m: Any, console: BufferChar, name: str, after: int) -> tuple[str, bytes]:
    """Boot to the shell, start the loop, ``savevm name`` once it has counted to
    ``after``: what the monitor said and the console until then."""
    console.wait_for(PROMPT, timeout=120)
    console.feed(LOOP)
    console.wait_for(re.compile(rb"count=%d\r?\n" % after), timeout=STEP)
    return _hmp(m, f"savevm {name}", console)


def _last(output: bytes) -> int:
    return int(COUNT.findall(output)[-1])


def _run_argv(image: Path, memory: str = "256M") -> list[str]:
    """``vmforge run`` of the saved guest's configuration on ``image``."""
    return [str(ROOT / ".venv" / "bin" / "vmforge"), "run", "-M", "riscv-virt", "-m", memory,
            "-bios", FW_JUMP, "-kernel", _guest("linux-riscv64"),
            "-initrd", _guest("initramfs-riscv64"), "-append", "console=ttyS0",
            "-drive", f"file={image},format=qcow2,if=none,id=hd0",
            "-device", "virtio-blk-device,drive=hd0"]


def _run(image: Path, *extra: str, memory: str = "256M") -> ProcessConsole:
    return ProcessConsole([*_run_argv(image, memory), *extra])


def _copy(saved: Saved, tmp_path: Path) -> Path:
    image = tmp_path / "disk.qcow2"
    shutil.copyfile(saved.image, image)
    return image


def _assert_continues(saved: Saved, con: ProcessConsole, since: int = 0) -> None:
    """The loop goes on from the saved value: the counts printed after the load
    follow the saved ones without a gap or a repeat; then the shell answers, and
    the disk holds the loop's last value."""
    con.wait_for(re.compile(rb"count=%d\r?\n" % (saved.last + 4)), timeout=STEP)
    after = con.output[since:]
    counts = [int(c) for c in COUNT.findall(saved.console + after)]
    assert counts == list(range(1, counts[-1] + 1))
    con.feed(b"\x03")
    con.wait_for(PROMPT, timeout=STEP)
    con.feed(b"echo answer-$((6*7)) n=$(cat /mnt/n)\n")
    m = con.wait_for(re.compile(rb"answer-42 n=(\d*)\r?\n"), timeout=STEP)
    last = _last(con.output)    # (Ctrl-C may land between the echo, the truncation
    assert m.group(1) in (b"", b"%d" % (last - 1), b"%d" % last)   # and the write)


def _hmp_qmp(sock: Path, line: str) -> str:
    """A monitor command through QMP's human-monitor-command (QEMU's qemu.qmp client)."""
    from qemu.qmp import QMPClient

    async def run() -> str:
        client = QMPClient("savevm-test")
        await client.connect(str(sock))
        try:
            out = await client.execute("human-monitor-command", {"command-line": line})
        finally:
            await client.disconnect()
        return str(out)

    return asyncio.run(run())


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for UNIX sockets (their paths are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="vmf-svm-") as name:
        yield Path(name)


def _quit(con: ProcessConsole) -> None:
    con.feed(b"poweroff -f\n")
    assert con.proc.wait(STEP) == 0


def test_info_snapshots_as_qemu_prints_it(saved: Saved, tmp_path: Path) -> None:
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    image = _copy(saved, tmp_path)
    proc = subprocess.run([qemu, "-M", "virt", "-bios", "none", "-S", "-display", "none",
                           "-nodefaults", "-monitor", "stdio",
                           "-drive", f"file={image},format=qcow2,if=none,id=hd0",
                           "-device", "virtio-blk-device,drive=hd0"],
                          input=b"info snapshots\nquit\n", capture_output=True, timeout=STEP,
                          check=True)
    text = re.sub(rb"\x1b\[[0-9;]*[A-Za-z]", b"", proc.stdout).decode().replace("\r", "")
    theirs = text.split("List of snapshots", 1)[1].split("(qemu)", 1)[0]
    assert saved.info + "\n" == "List of snapshots" + theirs     # QEMU 7.2 on the same image
    lines = saved.info.splitlines()
    assert lines[0] == "List of snapshots present on all disks:"
    assert lines[1] == ("ID        TAG               VM SIZE                DATE     VM CLOCK"
                        "     ICOUNT")
    assert re.fullmatch(r"--        s1 {15}\s*[\d.]+ MiB \d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
                        r"00:00:\d\d\.\d{3} {11}", lines[2]), lines[2]


def test_qemu_img_sees_the_snapshot_and_a_clean_image(saved: Saved, tmp_path: Path) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    check = subprocess.run([qemu_img, "check", str(saved.image)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No errors were found on the image." in check.stdout
    info = subprocess.run([qemu_img, "info", "--output", "json", str(saved.image)],
                          capture_output=True, text=True, check=True).stdout
    import json

    (snap,) = json.loads(info)["snapshots"]
    assert snap["name"] == "s1" and snap["vm-state-size"] > 1 << 20
    listing = subprocess.run([qemu_img, "snapshot", "-l", str(saved.image)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert re.fullmatch(r"1         s1 {15}\s*[\d.]+ MiB .*", listing[2]), listing
    assert listing[2].split()[2] == saved.info.splitlines()[2].split()[2]   # the VM SIZE
    assert 0 < snap["vm-clock-sec"] * 10**9 + snap["vm-clock-nsec"]


def test_loadvm_at_start_continues_the_shell(saved: Saved, tmp_path: Path) -> None:
    con = _run(_copy(saved, tmp_path), "-loadvm", "s1")
    try:
        _assert_continues(saved, con)
        _quit(con)
    finally:
        con.proc.kill()


def test_monitor_loadvm_in_a_fresh_process_then_delvm(saved: Saved, tmp_path: Path,
                                                       sockdir: Path) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    image = _copy(saved, tmp_path)
    sock = sockdir / "qmp"
    con = _run(image, "-qmp", f"unix:{sock},server=on,wait=off")
    try:
        con.wait_for(PROMPT, timeout=120)           # a guest of its own, booted afresh
        since = len(con.output)
        assert _hmp_qmp(sock, "loadvm s1") == ""
        _assert_continues(saved, con, since)
        assert _hmp_qmp(sock, "delvm s1") == ""
        assert _hmp_qmp(sock, "info snapshots") == "There is no snapshot available.\r\n"
        _quit(con)
    finally:
        con.proc.kill()
    listing = subprocess.run([qemu_img, "snapshot", "-l", str(image)], capture_output=True,
                             text=True, check=True).stdout
    assert "s1" not in listing
    assert subprocess.run([qemu_img, "check", str(image)], capture_output=True).returncode == 0


def test_other_memory_size_refused_and_guest_untouched(saved: Saved, tmp_path: Path,
                                                        sockdir: Path) -> None:
    sock = sockdir / "qmp"
    con = _run(_copy(saved, tmp_path), "-qmp", f"unix:{sock},server=on,wait=off",
               memory="128M")
    try:
        con.wait_for(PROMPT, timeout=120)
        con.feed(b"echo before > /tmp/mark\n")
        con.wait_for(PROMPT, timeout=STEP)
        assert _hmp_qmp(sock, "loadvm s1") == (
            "Error: snapshot 's1' cannot be loaded: the saved machine does not match this "
            "one: its RAM is 256 MiB at 0x80000000, this machine has 128 MiB at "
            "0x80000000\r\n")
        con.feed(b"echo still-$(cat /tmp/mark)\n")
        con.wait_for(b"still-before", timeout=STEP)
        _quit(con)
    finally:
        con.proc.kill()


def test_other_device_set_refused_at_start(saved: Saved, tmp_path: Path) -> None:
    image = _copy(saved, tmp_path)
    proc = subprocess.run([*_run_argv(image), "-device", "virtio-rng-device", "-loadvm", "s1"],
                          capture_output=True, text=True, timeout=STEP, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith("vmforge run: snapshot 's1' cannot be loaded: the saved machine "
                           "does not match this one: ")
    assert "VirtioMmioTransport(VirtioRng)" in line
    # the disk was not reverted: the snapshot is still there and loads
    con = _run(image, "-loadvm", "s1")
    try:
        _assert_continues(saved, con)
        _quit(con)
    finally:
        con.proc.kill()



def test_virtio_pci_disk_rng_and_nic_saved_and_loaded(tmp_path: Path) -> None:
    """The disk on the PCIe host (virtio-blk-pci), a virtio-rng and a virtio-net
    (user networking) beside it: savevm, then loadvm into a second machine of
    the same configuration in this process; the loop goes on, the shell answers,
    the disk is still the guest's."""
    from vmforge.config import NetdevSpec

    qemu_img = require_program("qemu-img", "qemu-utils")
    image = tmp_path / "pci.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)

    def make(console: BufferChar) -> Any:
        return _machine(console, image, [DeviceSpec("virtio-blk-pci", {"drive": "hd0"}),
                                         DeviceSpec("virtio-rng-device", {}),
                                         DeviceSpec("virtio-net-device", {"netdev": "n0"})],
                        netdevs=[NetdevSpec.parse("user,id=n0")])

    console = BufferChar()
    m = make(console)
    m.start()
    try:
        out, at_save = _save_during_loop(m, console, "pci", 5)
        assert out == ""
    finally:
        m.stop(30)
    console2 = BufferChar()
    m2 = make(console2)
    m2.realize()
    from vmforge.migration.snapshot import loadvm

    loadvm(m2, "pci")
    m2.start()
    try:
        last = _last(at_save)
        console2.wait_for(re.compile(rb"count=%d\r?\n" % (last + 3)), timeout=STEP)
        counts = [int(c) for c in COUNT.findall(at_save + console2.output)]
        assert counts == list(range(1, counts[-1] + 1))
        console2.feed(b"\x03")
        console2.wait_for(PROMPT, timeout=STEP)
        console2.feed(b"head -c 16 /dev/hwrng | wc -c; ls /sys/bus/pci/drivers/virtio-pci\n")
        console2.wait_for(re.compile(rb"\b16\r?\n.*0000:00:01\.0", re.S), timeout=STEP)
    finally:
        m2.stop(30)
