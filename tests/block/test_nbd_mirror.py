"""The NBD client as a block driver where images are named: a drive-mirror target
(mode=existing, as libvirt mirrors a disk to a migration destination's export) served by
qemu-nbd and by vmforge's server, and ``vmforge img info/convert/compare`` of exports
beside qemu-img's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.block.jobkit import MIB, Events, Writer, make_chain, verify
from tests.block.nbdtools import qemu_nbd, serving
from vmforge.block import BlockBackend, create_image
from vmforge.block.jobs import JobRegistry, start_mirror
from vmforge.testing.oracles import require_program

pytestmark = pytest.mark.formats("qcow2", "raw")


def mirror_while_writing(top: str, initial: bytes, target: str) -> bytes:
    """Mirror the chain under ``top`` into ``target`` (existing) with a writer on the
    source; cancel once ready (no pivot, as after a migration); what the disk reads."""
    bb = BlockBackend.open(top, "qcow2", readonly=False)
    w = Writer(bb, interval=0.001).start()   # a guest's pace: the copy can catch up
    ev = Events()
    job = start_mirror(bb, target, device="hd0", sync="full", mode="existing",
                       on_event=ev, registry=JobRegistry())
    assert job.wait_ready(60), job.error
    w.start_more(30)                               # writes after READY go along too
    w.stop()
    job.cancel()
    assert job.wait(60) and job.error is None
    assert "BLOCK_JOB_COMPLETED" in ev.names()     # a ready mirror cancelled completes
    assert bb.filename == top                      # no pivot
    expected = w.expected(initial)
    verify(bb, expected)
    bb.close()
    return expected


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    exe = require_program("qemu-img", "qemu-utils")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_mirror_to_qemu_nbd(tmp_path: Path) -> None:
    _base, top, initial = make_chain(tmp_path)
    dest = str(tmp_path / "dest.qcow2")
    create_image("qcow2", dest, len(initial))
    with qemu_nbd(dest, "qcow2", str(tmp_path / "q.sock"), name="drive-virtio-disk0") as uri:
        expected = mirror_while_writing(top, initial, uri)
    r = qemu_img("compare", "-F", "qcow2", top, dest)
    assert r.returncode == 0, r.stdout + r.stderr
    with BlockBackend.open(dest, "qcow2") as bb:
        verify(bb, expected)


@pytest.mark.parametrize("style", ["uri", "legacy", "json"])
def test_mirror_to_vmforge_server(tmp_path: Path, style: str) -> None:
    _base, top, initial = make_chain(tmp_path)
    dest = str(tmp_path / "dest.raw")
    create_image("raw", dest, len(initial))
    with serving(dest, "raw") as (server, uri):
        port = server.address.port
        target = {"uri": uri, "legacy": f"nbd:127.0.0.1:{port}:exportname=exp",
                  "json": json.dumps({"driver": "nbd", "export": "exp", "server": {
                      "type": "inet", "host": "127.0.0.1", "port": str(port)}})}[style]
        if style == "json":
            target = "json:" + target
        mirror_while_writing(top, initial, target)
    r = qemu_img("compare", "-F", "raw", top, dest)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mirror_to_missing_export_fails(tmp_path: Path) -> None:
    _base, top, initial = make_chain(tmp_path, size=4 * MIB)
    dest = str(tmp_path / "dest.raw")
    create_image("raw", dest, len(initial))
    with serving(dest, "raw") as (server, _uri), \
            BlockBackend.open(top, "qcow2", readonly=False) as bb:
        from vmforge.block.jobs import JobError

        with pytest.raises(JobError, match="Requested export not available"):
            start_mirror(bb, f"nbd://127.0.0.1:{server.address.port}/nope", device="hd0",
                         sync="full", mode="existing", registry=JobRegistry())


def vmforge_img(*args: str) -> subprocess.CompletedProcess[str]:
    import shutil
    import sys

    exe = shutil.which("vmforge", path=str(Path(sys.executable).parent))
    assert exe is not None
    return subprocess.run([exe, "img", *args], capture_output=True, text=True, timeout=60)


def test_img_info_convert_compare(tmp_path: Path) -> None:
    _base, top, _initial = make_chain(tmp_path, size=8 * MIB)
    with serving(top, "qcow2", writable=False) as (server, uri):
        for cmd in ("info", "map"):
            for fmt in ([], ["--output=json"]):
                ours, theirs = vmforge_img(cmd, *fmt, uri), qemu_img(cmd, *fmt, uri)
                assert ours.returncode == 0, ours.stderr
                assert ours.stdout == theirs.stdout, (cmd, fmt)
        name = ('json:{"driver":"nbd","server":{"type":"inet","host":"127.0.0.1","port":'
                f'"{server.address.port}"}},"export":"exp"}}')
        out = str(tmp_path / "copy.qcow2")
        r = vmforge_img("convert", "-O", "qcow2", name, out)
        assert r.returncode == 0, r.stderr
        r = vmforge_img("compare", uri, out)
        assert r.returncode == 0 and r.stdout == "Images are identical.\n", r.stdout + r.stderr
        r = vmforge_img("compare", uri, str(tmp_path / "base.qcow2"))
        assert r.returncode == 1 and "Content mismatch" in r.stdout
        bad = vmforge_img("info", uri.replace("/exp", "/nope"))
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1
        assert "Requested export not available" in bad.stderr
    r = qemu_img("compare", "-F", "qcow2", top, out)
    assert r.returncode == 0, r.stdout + r.stderr


def test_img_convert_onto_export(tmp_path: Path) -> None:
    """convert and create onto an export as qemu-img does (QEMU's simple create: the
    export must be large enough, its first sector is zeroed), with or without -n."""
    _base, top, _initial = make_chain(tmp_path, size=8 * MIB)
    dest = str(tmp_path / "dest.raw")
    create_image("raw", dest, 8 * MIB)
    with open(dest, "r+b") as f:
        f.write(b"QFI\xfb" + bytes(508))          # something a probe would take for qcow2
    with serving(dest, "raw") as (_server, uri):
        for args in ([], ["-n"]):
            r = vmforge_img("convert", *args, "-O", "raw", top, uri)
            assert r.returncode == 0, r.stderr
            r = vmforge_img("compare", "-F", "raw", top, uri)
            assert r.returncode == 0, r.stdout + r.stderr
        ours = vmforge_img("create", "-f", "raw", uri, "16M")
        theirs = qemu_img("create", "-f", "raw", uri, "16M")
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
        assert ours.stderr.split(": ", 1)[1] == theirs.stderr.split(": ", 1)[1]
        r = vmforge_img("create", "-f", "raw", uri, "8M")
        assert r.returncode == 0, r.stderr
    with open(dest, "rb") as f:
        assert f.read(512) == bytes(512)
