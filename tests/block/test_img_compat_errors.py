"""Errors of ``vmforge img`` in qemu-img 7.2's words, side by side with qemu-img:
``--qemu-img-compat`` (or ``VMFORGE_QEMU_IMG_COMPAT=1``) prints exactly qemu-img's
stderr; without it the same words follow ``vmforge img:`` on one line."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.formats("raw", "qcow2")


@pytest.fixture
def images(tmp_path, monkeypatch, qemu) -> None:
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "raw", "r.raw", "1M")
    qemu("img", "create", "-q", "-f", "qcow2", "c.qcow2", "1M")


BAD = [
    "info missing",
    "info -f qcow2 r.raw",
    "info -f bogus r.raw",
    "check r.raw",
    "check -f raw r.raw",
    "check missing",
    "compare missing r.raw",
    "compare r.raw missing",
    "map missing",
    "map -f qcow2 r.raw",
    "resize missing 1M",
    "resize c.qcow2 abc",
    "resize -f raw r.raw -- -2M",
    "resize c.qcow2 512K",
    "rebase -b missing.qcow2 -F qcow2 c.qcow2",
    "rebase -b r.raw c.qcow2",
    "rebase -u -b r.raw c.qcow2",
    "commit c.qcow2",
    "commit missing",
    "snapshot -l missing",
    "snapshot -a nosuch c.qcow2",
    "snapshot -d nosuch c.qcow2",
    "create -f qcow2 z.qcow2",
    "create -f qcow2 z.qcow2 abc",
    "create -f bogus z.img 1M",
    "create -f qcow2 -b c.qcow2 z.qcow2",
    "create -f qcow2 -b nope.qcow2 -F qcow2 z.qcow2",
    "create -f qcow2 -u -b nope.qcow2 -F qcow2 z.qcow2",
    "create -f qcow2 -o backing_file=r.raw z.qcow2",
    "create -f raw -b r.raw -F raw z.raw 1M",
    "create -f raw z.raw 1M extra",
    "create -f qcow2 -o cluster_size=abc z.qcow2 1M",
    "create -f qcow2 -o foo=bar z.qcow2 1M",
    "create -f qcow2 -o compat=9 z.qcow2 1M",
    "create -f qcow2 -o lazy_refcounts=maybe z.qcow2 1M",
    "create -f qcow2 -o lazy_refcounts=1 z.qcow2 1M",
    "create -f qcow2 -o preallocation=bogus z.qcow2 1M",
    "create -f qcow2 -o refcount_bits=3 z.qcow2 1M",
    "create -f qcow2 -o compression_type=bogus z.qcow2 1M",
    "create -f raw -o preallocation=bogus z.raw 1M",
    "convert -O qcow2 -o lazy_refcounts=maybe r.raw z.qcow2",
    "convert -O qcow2 -o compat=9 r.raw z.qcow2",
    "amend -o lazy_refcounts=maybe c.qcow2",
    "amend -o compat=9 c.qcow2",
    "create -f qcow2",
    "convert missing z.raw",
    "convert -O bogus r.raw z.x",
    "convert -f qcow2 r.raw z.raw",
    "measure",
    "measure -O qcow2 --size abc",
    "measure -O qcow2 r.raw --size 1M",
    "convert -S 3 r.raw z.raw",
    "convert -S abc r.raw z.raw",
    "convert -S 32M r.raw z.raw",
    "convert -m 0 r.raw z.raw",
    "convert -O raw -c r.raw z.raw",
    "convert r.raw",
    "convert -n -O raw r.raw missing.raw",
    "convert --target-is-zero -O raw r.raw z.raw",
    "convert -O vdi -B c.qcow2 -F qcow2 r.raw z.vdi",
    "convert -O qcow2 -B c.qcow2 -F qcow2 r.raw r.raw z.qcow2",
    "snapshot -l -c x c.qcow2",
    "snapshot -U -c x c.qcow2",
    "rebase c.qcow2",
    "resize c.qcow2",
    "resize",
    "bogus",
]


def _err_of(img, capsys, argv: list[str]) -> tuple[int, str]:
    try:
        run = img(*argv)
    except SystemExit as exc:     # a bad command line leaves main() as argparse does
        return int(exc.code or 0), capsys.readouterr().err
    return run.rc, run.err


def test_snapshot_without_an_action_as_qemu_img(images, img, qemu) -> None:
    qemu("img", "snapshot", "-c", "one", "c.qcow2")
    theirs = qemu("img", "snapshot", "c.qcow2")
    ours = img("snapshot", "c.qcow2")
    assert (ours.rc, ours.out) == (theirs.returncode, theirs.stdout)
    assert len(img("snapshot", "-l", "c.qcow2").out.splitlines()) == 3


@pytest.mark.parametrize("cmd", BAD)
def test_error_text_as_qemu_img(images, img, qemu, capsys, monkeypatch, cmd) -> None:
    theirs = qemu("img", *cmd.split(), check=False)
    assert theirs.returncode != 0
    rc, err = _err_of(img, capsys, ["--qemu-img-compat", *cmd.split()])
    assert (rc, err) == (theirs.returncode, theirs.stderr)
    monkeypatch.setenv("VMFORGE_QEMU_IMG_COMPAT", "1")
    assert _err_of(img, capsys, cmd.split()) == (theirs.returncode, theirs.stderr)
    monkeypatch.delenv("VMFORGE_QEMU_IMG_COMPAT")
    rc, err = _err_of(img, capsys, cmd.split())
    first = theirs.stderr.splitlines()[0].removeprefix("qemu-img: ")
    assert rc == theirs.returncode
    assert err.startswith(f"vmforge img: {first}") and "qemu-img" not in err


def _locked(inode: int) -> bool:
    """Whether a process holds QEMU's lock of the write permission on the file with
    ``inode``: an OFD lock covering byte 101 (QEMU locks byte 100 + the bit of each
    permission it takes, 200 + each it does not share)."""
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[5].endswith(f":{inode}"):
                end = fields[7]
                if int(fields[6]) <= 101 and (end == "EOF" or int(end) >= 101):
                    return True
    return False


def test_locked_image_as_qemu_img(images, img, qemu, capsys) -> None:
    holder = subprocess.Popen(["qemu-io", "-f", "qcow2", "c.qcow2", "-c", "sleep 60000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        # until qemu-io holds its locks: read from /proc/locks, which takes none (asking
        # qemu-img could take a shared lock just as qemu-io wants its own, and fail it)
        while not _locked(os.stat("c.qcow2").st_ino):
            if holder.poll() is not None:      # (a bound: never wait for a lock nobody holds)
                pytest.fail(f"qemu-io ended ({holder.returncode}) before holding its lock: "
                            f"{holder.stderr.read().decode(errors='replace')}")
            assert time.monotonic() < deadline, "qemu-io held no lock on c.qcow2 in 30 s"
            time.sleep(0.05)
        assert qemu("img", "info", "c.qcow2", check=False).returncode != 0
        for cmd in ("info c.qcow2", "resize c.qcow2 2M", "check c.qcow2"):
            theirs = qemu("img", *cmd.split(), check=False)
            assert _err_of(img, capsys, ["--qemu-img-compat", *cmd.split()]) == \
                (theirs.returncode, theirs.stderr)
    finally:
        holder.kill()
        holder.wait()
