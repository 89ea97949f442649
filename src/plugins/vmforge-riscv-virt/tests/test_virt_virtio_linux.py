"""virtio devices under a real Linux guest on riscv-virt (virtio-mmio slots).

- a disk (``-drive``) from a qcow2 image and from a raw one: an ext2 file system
  made in the guest, files written, the guest powered off; on the host the image
  is clean under ``qemu-img check`` and the files read back with e2fsprogs'
  ``debugfs`` (nobody here wrote either); a second boot sees the same files;
- ``-drive if=none,id=`` + ``-device virtio-blk-device,drive=``, read-only disks;
- the virtio console (virtio-serial-device) carries a line each way: it is
  ``hvc1`` for this kernel, whose SBI console (CONFIG_HVC_RISCV_SBI) takes
  ``hvc0`` first, as on QEMU; ``/dev/hwrng`` (virtio-rng-device) gives bytes.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from vmforge.chardev import BufferChar
from vmforge.config import DeviceSpec, DriveSpec
from vmforge.testing.oracles import require_program

from .test_virt_boot import FW_JUMP, PROMPT, guest, machine

STEP = 60


def boot(console: BufferChar, **cfg):
    kernel, initrd = guest("linux-riscv64"), guest("initramfs-riscv64")
    m = machine(console, memory=256 << 20, bios=FW_JUMP, kernel=kernel, initrd=initrd,
                append="console=ttyS0", **cfg)
    m.start()
    console.wait_for(PROMPT, timeout=120)
    return m


def sh(console: BufferChar, line: str, expect: str | None = None) -> str:
    """Run ``line``; its output (up to the next prompt)."""
    console.feed(line.encode() + b"\n")
    if expect is not None:
        console.wait_for(expect.encode(), timeout=STEP)
    match = console.wait_for(PROMPT, timeout=STEP)
    out = console.output[:match.start()].rsplit(line.encode()[-20:], 1)[-1]
    return out.decode(errors="replace")


def poweroff(m, console: BufferChar) -> None:
    console.feed(b"poweroff -f\n")
    assert m.wait(STEP) == 0


def debugfs_cat(image: Path, path: str) -> bytes:
    debugfs = require_program("debugfs", "e2fsprogs")
    return subprocess.run([debugfs, "-R", f"cat {path}", str(image)], capture_output=True,
                          check=True).stdout


def mmio_disk(image: Path, fmt: str) -> dict:
    """The image as virtio-blk on virtio-mmio (``-drive if=virtio`` is PCI on this
    board, as on QEMU's)."""
    return {"drives": [DriveSpec(str(image), fmt, interface="none", id="hd0")],
            "devices": [DeviceSpec("virtio-blk-device", {"drive": "hd0"})]}


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_disk_files_survive_poweroff_and_read_on_the_host(tmp_path: Path, fmt: str) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    image = tmp_path / f"disk.{fmt}"
    subprocess.run([qemu_img, "create", "-q", "-f", fmt, str(image), "64M"], check=True)
    console = BufferChar()
    m = boot(console, **mmio_disk(image, fmt))
    try:
        assert "131072" in sh(console, "cat /sys/block/vda/size")
        sh(console, "mke2fs -q /dev/vda && mount /dev/vda /mnt && echo ok-mounted",
           "ok-mounted")
        sh(console, "echo hello-from-the-guest > /mnt/hello.txt; "
                    "dd if=/dev/urandom of=/mnt/big bs=1M count=6 2>/dev/null; "
                    "md5sum /mnt/big > /mnt/big.md5; sync; umount /mnt; echo unmounted",
           "unmounted")
        poweroff(m, console)
    finally:
        m.stop()
    if fmt == "qcow2":
        check = subprocess.run([qemu_img, "check", str(image)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        raw = tmp_path / "disk.raw"
        subprocess.run([qemu_img, "convert", "-f", "qcow2", "-O", "raw", str(image),
                        str(raw)], check=True)
        same = subprocess.run([qemu_img, "compare", "-f", "qcow2", "-F", "raw", str(image),
                               str(raw)], capture_output=True, text=True)
        assert same.returncode == 0, same.stdout
    else:
        raw = image
    assert debugfs_cat(raw, "/hello.txt") == b"hello-from-the-guest\n"
    big = debugfs_cat(raw, "/big")
    assert len(big) == 6 << 20
    assert debugfs_cat(raw, "/big.md5").split()[0].decode() == hashlib.md5(big).hexdigest()

    # a second boot: the same files, through the same driver
    console = BufferChar()
    m = boot(console, **mmio_disk(image, fmt))
    try:
        out = sh(console, "mount /dev/vda /mnt && cat /mnt/hello.txt && "
                          "md5sum -c /mnt/big.md5 && umount /mnt", "big: OK")
        assert "hello-from-the-guest" in out
        poweroff(m, console)
    finally:
        m.stop()


def test_drive_by_id_read_only_and_two_disks(tmp_path: Path) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    ro, rw = tmp_path / "ro.qcow2", tmp_path / "rw.raw"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(ro), "8M"], check=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(rw), "16M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 4k", str(ro)],
                   check=True, capture_output=True)
    console = BufferChar()
    m = boot(console,
             drives=[DriveSpec(str(ro), "qcow2", interface="none", id="hd0", readonly=True),
                     DriveSpec(str(rw), "raw", interface="none", id="hd1")],
             devices=[DeviceSpec("virtio-blk-device", {"drive": "hd0", "serial": "ro-disk"}),
                      DeviceSpec("virtio-blk-device", {"drive": "hd1"})])
    try:
        out = sh(console, "cat /sys/block/vda/size /sys/block/vdb/size /sys/block/vda/ro "
                          "/sys/block/vda/serial; echo")
        assert re.search(r"16384\s+32768\s+1\s+ro-disk", out), out
        out = sh(console, "dd if=/dev/vda bs=4096 count=1 2>/dev/null | od -An -tx1 | head -1")
        assert "5a 5a 5a 5a" in out
        out = sh(console, "dd if=/dev/zero of=/dev/vda bs=512 count=1 2>&1; echo rc=$?")
        assert "rc=1" in out, "a read-only disk refuses writes"
        sh(console, "echo on-vdb | dd of=/dev/vdb bs=512 conv=sync 2>/dev/null; sync; "
                    "echo written", "written")
        poweroff(m, console)
    finally:
        m.stop()
    assert rw.read_bytes()[:7] == b"on-vdb\n"


def test_virtio_console_carries_a_line_each_way_and_hwrng_gives_bytes() -> None:
    console, port = BufferChar(), BufferChar()
    m = boot(console, chardevs={"c0": port},
             devices=[DeviceSpec("virtio-serial-device"),
                      DeviceSpec("virtconsole", {"chardev": "c0"}),
                      DeviceSpec("virtio-rng-device")])
    try:
        sh(console, "echo guest-to-host > /dev/hvc1")
        port.wait_for(b"guest-to-host", timeout=STEP)
        console.feed(b"read line < /dev/hvc1; echo got=$line\n")
        port.feed(b"host-to-guest\n")
        console.wait_for(b"got=host-to-guest", timeout=STEP)
        console.wait_for(PROMPT, timeout=STEP)
        out = sh(console, "cat /sys/class/misc/hw_random/rng_current; "
                          "head -c 64 /dev/hwrng | wc -c")
        assert "virtio_rng" in out and re.search(r"\b64\b", out), out
        poweroff(m, console)
    finally:
        m.stop()


@pytest.mark.parametrize("mode", ["packed", "legacy", "split-no-event-idx"])
def test_ring_layouts_linux_uses(tmp_path: Path, mode: str) -> None:
    """Packed rings (offered with packed=on, Linux takes them), the legacy
    virtio-mmio transport (-global virtio-mmio.force-legacy=on) and split rings
    without EVENT_IDX all carry a disk's data both ways."""
    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(8 << 20))
    props = {"drive": "hd0"}
    globals_: dict[str, dict[str, str]] = {}
    if mode == "packed":
        props["packed"] = "on"
    elif mode == "legacy":
        globals_ = {"virtio-mmio": {"force_legacy": "on"}}
    else:
        props["event_idx"] = "off"
    console = BufferChar()
    m = boot(console, drives=[DriveSpec(str(disk), "raw", interface="none", id="hd0")],
             devices=[DeviceSpec("virtio-blk-device", props)], globals=globals_)
    try:
        out = sh(console, "head -c 1048576 /dev/urandom > /tmp/r; dd if=/tmp/r of=/dev/vda "
                          "bs=64k conv=fsync 2>/dev/null; echo 3 > /proc/sys/vm/drop_caches; "
                          "dd if=/dev/vda bs=64k count=16 2>/dev/null | md5sum; md5sum /tmp/r")
        sums = re.findall(r"\b([0-9a-f]{32})\b", out)
        assert len(sums) == 2 and sums[0] == sums[1], out
        poweroff(m, console)
    finally:
        m.stop()
    assert hashlib.md5(disk.read_bytes()[:1 << 20]).hexdigest() == sums[0]


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_virtio_pci_disk_and_rng_behind_the_ecam_host(tmp_path: Path, fmt: str) -> None:
    """virtio-blk-pci and virtio-rng-pci on the PCIe host bridge: Linux's
    pci-host-ecam-generic finds them (/sys/bus/pci: busybox has no lspci), the disk
    carries an ext2
    file system that debugfs reads on the host, the rng gives bytes."""
    qemu_img = require_program("qemu-img", "qemu-utils")
    image = tmp_path / f"disk.{fmt}"
    subprocess.run([qemu_img, "create", "-q", "-f", fmt, str(image), "32M"], check=True)
    console = BufferChar()
    m = boot(console, drives=[DriveSpec(str(image), fmt, interface="none", id="hd0")],
             devices=[DeviceSpec("virtio-blk-pci", {"drive": "hd0"}),
                      DeviceSpec("virtio-rng-pci")])
    try:
        out = sh(console, "for d in /sys/bus/pci/devices/*; do echo ${d##*/} $(cat $d/vendor "
                          "$d/device); done; cat /sys/block/vda/size; "
                          "cat /sys/class/misc/hw_random/rng_current")
        assert re.search(r"0000:00:01\.0 0x1af4 0x1001", out), out    # transitional blk
        assert re.search(r"0000:00:02\.0 0x1af4 0x1005", out), out    # transitional rng
        assert "65536" in out and "virtio_rng" in out, out
        assert re.search(r"\b64\b", sh(console, "head -c 64 /dev/hwrng | wc -c"))
        sh(console, "mke2fs -q /dev/vda && mount /dev/vda /mnt && echo over-pci > /mnt/p "
                    "&& umount /mnt && echo done", "done")
        out = sh(console, "cat /proc/interrupts")
        assert re.search(r"PLIC\s+33 .*virtio", out), out           # INTA: PLIC source 0x21
        poweroff(m, console)
    finally:
        m.stop()
    raw = tmp_path / "copy.raw"
    subprocess.run([qemu_img, "convert", "-f", fmt, "-O", "raw", str(image), str(raw)],
                   check=True)
    assert debugfs_cat(raw, "/p") == b"over-pci\n"
    # a second boot on the same disk sees the file
    console = BufferChar()
    m = boot(console, drives=[DriveSpec(str(image), fmt, interface="none", id="hd0")],
             devices=[DeviceSpec("virtio-blk-pci", {"drive": "hd0"})])
    try:
        sh(console, "mount /dev/vda /mnt && cat /mnt/p && umount /mnt", "over-pci")
        poweroff(m, console)
    finally:
        m.stop()


@pytest.mark.parametrize("fmt", ["vdi", "vpc", "qed", "qcow", "parallels", "vmdk", "vhdx"])
def test_guest_disk_in_every_writable_format(tmp_path: Path, fmt: str) -> None:
    """A disk image of each writable format plugin, made by qemu-img, carries the
    guest's writes; qemu-img reads back what the guest wrote."""
    qemu_img = require_program("qemu-img", "qemu-utils")
    image = tmp_path / f"disk.{fmt}"
    subprocess.run([qemu_img, "create", "-q", "-f", fmt, str(image), "16M"], check=True)
    console = BufferChar()
    m = boot(console, drives=[DriveSpec(str(image), fmt)])
    try:
        out = sh(console, "head -c 1048576 /dev/urandom > /tmp/r; dd if=/tmp/r of=/dev/vda "
                          "bs=64k seek=3 conv=fsync 2>/dev/null; md5sum /tmp/r")
        (guest_sum,) = re.findall(r"\b([0-9a-f]{32})\b", out)
        poweroff(m, console)
    finally:
        m.stop()
    raw = tmp_path / "out.raw"
    subprocess.run([qemu_img, "convert", "-f", fmt, "-O", "raw", str(image), str(raw)],
                   check=True)
    data = raw.read_bytes()
    assert hashlib.md5(data[3 << 16:(3 << 16) + (1 << 20)]).hexdigest() == guest_sum
    assert data[:3 << 16] == bytes(3 << 16)


def test_qemu_short_names_are_pci_devices_on_this_board() -> None:
    """``-device virtio-rng`` / ``virtio-serial`` + ``virtconsole`` as on QEMU's riscv
    virt: PCI devices; the console carries a line each way."""
    console, port = BufferChar(), BufferChar()
    m = boot(console, chardevs={"c0": port},
             devices=[DeviceSpec("virtio-serial"), DeviceSpec("virtconsole", {"chardev": "c0"}),
                      DeviceSpec("virtio-rng")])
    try:
        out = sh(console, "for d in /sys/bus/pci/devices/*; do cat $d/device; done")
        assert "0x1003" in out and "0x1005" in out, out          # console, rng (transitional)
        sh(console, "echo over-pci-console > /dev/hvc1")
        port.wait_for(b"over-pci-console", timeout=STEP)
        console.feed(b"read line < /dev/hvc1; echo got=$line\n")
        port.feed(b"back\n")
        console.wait_for(b"got=back", timeout=STEP)
        console.wait_for(PROMPT, timeout=STEP)
        poweroff(m, console)
    finally:
        m.stop()
