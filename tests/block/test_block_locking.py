"""Image locking between processes, and with qemu-img (the same lock bytes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmforge.block import BlockBackend, LockedError

pytestmark = pytest.mark.formats("raw")

HOLD = """
import sys
from vmforge.block import BlockBackend
bb = BlockBackend.open(sys.argv[1], "raw", readonly=sys.argv[2] != "rw",
                       force_share=sys.argv[2] == "share")
print("ready", flush=True)
sys.stdin.readline()
bb.close()
"""


@pytest.fixture
def image(tmp_path) -> str:
    path = str(tmp_path / "disk.raw")
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    return path


class Holder:
    """Another process holding the image open."""

    def __init__(self, path: str, mode: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, path, mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "ready\n", line

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


@pytest.fixture
def hold(image: str) -> Iterator[object]:
    holders: list[Holder] = []

    def start(mode: str) -> Holder:
        h = Holder(image, mode)
        holders.append(h)
        return h

    yield start
    for h in holders:
        h.release()


def test_second_writer_is_refused_with_the_file_named(image, hold) -> None:
    writer = hold("rw")
    with pytest.raises(LockedError) as info:
        BlockBackend.open(image, "raw", readonly=False)
    msg = str(info.value)
    assert image in msg and "locked" in msg and '"write"' in msg
    writer.release()
    with BlockBackend.open(image, "raw", readonly=False) as bb:  # released with the process
        bb.write(0, b"mine")


def test_readers_share_but_exclude_a_writer(image, hold) -> None:
    hold("ro")
    with BlockBackend.open(image, "raw") as a, BlockBackend.open(image, "raw") as b:
        assert a.read(0, 4) == b.read(0, 4)
    with pytest.raises(LockedError, match="locked"):
        BlockBackend.open(image, "raw", readonly=False)


def test_reader_is_refused_while_a_writer_works_unless_force_share(image, hold, img) -> None:
    hold("rw")
    with pytest.raises(LockedError):
        BlockBackend.open(image, "raw")
    with BlockBackend.open(image, "raw", force_share=True) as bb:
        assert bb.read(0, 1) == b"\0"
    r = img("info", "-f", "raw", image)
    assert r.rc == 1 and " lock" in r.err and image in r.err
    assert img("info", "-U", "-f", "raw", image).rc == 0


def test_force_share_takes_no_lock_and_needs_read_only(image, hold) -> None:
    hold("share")
    with BlockBackend.open(image, "raw", readonly=False) as bb:
        bb.write(0, b"x")
    from vmforge.block import BlockError

    with pytest.raises(BlockError, match="read-only"):
        BlockBackend.open(image, "raw", readonly=False, force_share=True)


def test_same_process_is_locked_too(image) -> None:
    with BlockBackend.open(image, "raw", readonly=False), pytest.raises(LockedError):
        BlockBackend.open(image, "raw", readonly=False)


def test_qemu_sees_our_lock(image, hold, qemu) -> None:
    hold("rw")
    r = qemu("io", "-f", "raw", "-c", "write 0 512", image, check=False)
    assert 'Failed to get "write" lock' in r.stderr + r.stdout
    # qemu's raw readers share writes (ours refuse them): info works, and so does -U
    assert qemu("img", "info", "-f", "raw", image).returncode == 0
    assert qemu("img", "info", "-U", "-f", "raw", image).returncode == 0


def test_we_see_qemus_lock(image, qemu, img) -> None:
    proc = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "sleep 30000",
                             image], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # wait for qemu-io's locks without taking any (that could make qemu-io give up)
        ino = f":{os.stat(image).st_ino} "
        deadline = time.monotonic() + 20  # qemu-io may start slowly on a busy machine
        while not any("OFDLCK" in ln and ino in ln
                      for ln in Path("/proc/locks").read_text().splitlines()):
            assert proc.poll() is None, "qemu-io exited"
            assert time.monotonic() < deadline, "qemu-io's lock never appeared"
            time.sleep(0.05)
        with pytest.raises(LockedError):
            BlockBackend.open(image, "raw", readonly=False)
        r = img("resize", "-f", "raw", image, "2M")
        assert r.rc == 1 and " lock" in r.err and image in r.err
    finally:
        proc.kill()
        proc.wait()


def test_create_and_convert_refuse_to_overwrite_an_image_in_use(image, hold, img,
                                                                tmp_path) -> None:
    with open(image, "r+b") as f:
        f.write(b"in use")
    hold("rw")
    r = img("create", "-q", "-f", "raw", image, "2M")
    assert r.rc == 1 and "locked" in r.err and image in r.err
    src = str(tmp_path / "src.raw")
    with open(src, "wb") as f:
        f.truncate(1 << 20)
    r = img("convert", "-f", "raw", "-O", "raw", src, image)
    assert r.rc == 1 and "locked" in r.err
    with open(image, "rb") as f:  # untouched
        assert f.read(6) == b"in use" and os.path.getsize(image) == 1 << 20
