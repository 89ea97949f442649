"""vmforge's NBD server and client against QEMU 7.2's: qemu-img and qemu-io as clients of
vmforge's server, qemu-nbd as the server of vmforge's client."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.block.nbdtools import qemu_nbd, serving
from vmforge.block.backend import BlockBackend
from vmforge.testing.oracles import require_program

MIB = 1 << 20


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr + r.stdout
    return r


@pytest.fixture
def tools() -> dict[str, str]:
    return {n: require_program(n, "qemu-utils") for n in ("qemu-img", "qemu-io", "qemu-nbd")}


@pytest.fixture
def image(tmp_path, tools) -> str:
    path = str(tmp_path / "disk.qcow2")
    run(tools["qemu-img"], "create", "-q", "-f", "qcow2", path, "64M")
    run(tools["qemu-io"], "-f", "qcow2", "-c", "write -P 0x5a 1M 2M",
        "-c", "write -P 0xc3 40M 64k", "-c", "write -z 50M 1M", path)
    return path


def test_qemu_img_info_convert_compare(image, tools, tmp_path):
    with serving(image, "qcow2", writable=False) as (_, uri):
        info = json.loads(run(tools["qemu-img"], "info", "--output=json", uri).stdout)
        assert info["virtual-size"] == 64 * MIB and info["format"] == "raw"
        assert info["filename"] == uri
        out = str(tmp_path / "copy.raw")
        run(tools["qemu-img"], "convert", "-O", "raw", uri, out)
        run(tools["qemu-img"], "compare", "-f", "raw", "-F", "qcow2", out, image)
        run(tools["qemu-img"], "compare", uri, image)
        # block status through base:allocation: qemu-img map of vmforge's export equals
        # its map of the same image served by qemu-nbd
        ours = json.loads(run(tools["qemu-img"], "map", "--output=json", uri).stdout)
    with qemu_nbd(image, "qcow2", str(tmp_path / "q.sock"), readonly=True) as quri:
        theirs = json.loads(run(tools["qemu-img"], "map", "--output=json", quri).stdout)
    strip = [{k: e[k] for k in ("start", "length", "zero", "data")} for e in ours]
    assert strip == [{k: e[k] for k in ("start", "length", "zero", "data")} for e in theirs]


def test_qemu_io_reads_and_writes(image, tools):
    with serving(image, "qcow2") as (_, uri):
        r = run(tools["qemu-io"], "-f", "raw", "-c", "read -P 0x5a 1M 2M",
                "-c", "read -P 0xc3 40M 64k", "-c", "read -P 0 50M 1M",
                "-c", "write -P 0x11 8M 3M", "-c", "write -P 0x22 12345 777",
                "-c", "write -z 1M 64k", "-c", "discard 40M 64k", "-c", "flush",
                "-c", "read -P 0x11 8M 3M", uri)
        assert "verification failed" not in r.stdout, r.stdout
    r = run(tools["qemu-io"], "-f", "qcow2", "-r", "-c", "read -P 0x11 8M 3M",
            "-c", "read -P 0x22 12345 777", "-c", "read -P 0 1M 64k",
            "-c", "read -P 0x5a 1088k 1984k", image)
    assert "verification failed" not in r.stdout, r.stdout
    run(tools["qemu-img"], "check", "-q", image)


def test_read_only_export_refuses_writes(image, tools):
    with serving(image, "qcow2", writable=False) as (_, uri):
        r = run(tools["qemu-io"], "-f", "raw", "-c", "write -P 0x11 0 4k", uri, ok=False)
        assert "Operation not permitted" in r.stdout + r.stderr or r.returncode != 0
        r = run(tools["qemu-io"], "-f", "raw", "-r", "-c", "read -P 0 0 4k", uri)
        assert "verification failed" not in r.stdout


def test_client_against_qemu_nbd(image, tools, tmp_path):
    ref = str(tmp_path / "ref.qcow2")
    run(tools["qemu-img"], "convert", "-O", "qcow2", image, ref)
    with qemu_nbd(image, "qcow2", str(tmp_path / "q.sock")) as uri:
        with BlockBackend.open(uri, readonly=False) as bb:
            assert bb.size == 64 * MIB and bb.filename == uri
            assert bb.read(MIB, 2 * MIB) == b"\x5a" * (2 * MIB)
            # a read over data and holes: qemu-nbd answers with OFFSET_DATA and
            # OFFSET_HOLE chunks
            whole = bb.read(0, 4 * MIB)
            assert whole == bytes(MIB) + b"\x5a" * (2 * MIB) + bytes(MIB)
            assert bb.read(50 * MIB - 4096, MIB + 8192) == bytes(MIB + 8192)
            bb.write(20 * MIB, b"\x77" * 70000)
            bb.write_zeroes(MIB, 8192)
            status = [(e.offset, e.is_data, e.is_zero) for e in bb.block_status()]
            assert (50 * MIB, False, True) in status or any(
                o <= 50 * MIB and not d and z for o, d, z in status)
            bb.flush()
    run(tools["qemu-io"], "-f", "qcow2", "-c", "write -P 0x77 20M 70000",
        "-c", "write -z 1M 8k", ref)
    run(tools["qemu-img"], "compare", "-f", "qcow2", "-F", "qcow2", image, ref)


def test_client_and_server_together(image, tmp_path, tools):
    """vmforge's client through vmforge's server, with the json: name."""
    with serving(image, "qcow2") as (server, _):
        name = ('json:{"driver":"nbd","server":{"type":"inet","host":"127.0.0.1",'
                f'"port":"{server.address.port}"}},"export":"exp"}}')
        with BlockBackend.open(name, readonly=False) as bb:
            bb.write(3 * MIB - 100, b"\xee" * 200)
            assert bb.read(3 * MIB - 100, 200) == b"\xee" * 200
            assert bb.read(50 * MIB, 4096) == bytes(4096)
            extents = list(bb.block_status(49 * MIB, 3 * MIB))
            assert sum(e.length for e in extents) == 3 * MIB
            assert any(e.is_zero for e in extents)
    r = run(tools["qemu-io"], "-f", "qcow2", "-r", "-c", f"read -P 0xee {3 * MIB - 100} 200",
            image)
    assert "verification failed" not in r.stdout


@pytest.mark.parametrize("writable", [True, False])
@pytest.mark.parametrize("shared", [1, 2])
def test_qemu_nbd_list_as_qemu_nbd_serves(image, tools, tmp_path, writable, shared):
    """``qemu-nbd --list`` (NBD_OPT_LIST, NBD_OPT_INFO, NBD_OPT_LIST_META_CONTEXT) tells
    the same of vmforge's export as of qemu-nbd's own: size, transmission flags (several
    connections allowed unless the server takes one), block sizes, meta contexts."""
    with serving(image, "qcow2", writable=writable, max_connections=shared) as (server, _):
        ours = run(tools["qemu-nbd"], "--list", "-b", "127.0.0.1", "-p",
                   str(server.address.port)).stdout
    with qemu_nbd(image, "qcow2", str(tmp_path / "q.sock"), readonly=not writable,
                  shared=shared):
        theirs = run(tools["qemu-nbd"], "--list", "-k", str(tmp_path / "q.sock")).stdout
    assert ours == theirs
