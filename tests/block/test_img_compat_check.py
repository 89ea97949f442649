"""``vmforge img check`` and the JSON of ``info``/``check`` line for line as qemu-img 7.2's:
the statistics line only when qemu-img has it, no ``Image end offset`` where QEMU's
check reports none, JSON keys in QEMU's QDict order (nested ones too)."""

from __future__ import annotations

import struct

import pytest

from vmforge.cli.img_common import qdict_order


def _break_qcow2(path: str, how: str) -> None:
    """Leak the first data cluster (clear its L2 entry) or point it past the end."""
    with open(path, "r+b") as f:
        f.seek(40)
        l1 = struct.unpack(">Q", f.read(8))[0]
        f.seek(l1)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2)
        f.write(bytes(8) if how == "leak" else struct.pack(">Q", (1 << 63) | (1 << 40)))


def _made(qemu, tmp_path, fmt: str, how: str = "clean") -> str:
    path = str(tmp_path / f"{how}.{fmt}")
    qemu("img", "create", "-q", "-f", fmt, path, "1M")
    qemu("io", "-f", fmt, "-c", "write -P 1 0 64k", path)
    if how != "clean":
        _break_qcow2(path, how)
    return path


CASES = [("qcow2", "clean"), ("qcow2", "leak"), ("qcow2", "corrupt"), ("qed", "clean"),
         ("parallels", "clean"), ("vdi", "clean"), ("vhdx", "clean"), ("vmdk", "clean")]


@pytest.mark.parametrize("fmt,how", CASES, ids=[f"{f}-{h}" for f, h in CASES])
@pytest.mark.parametrize("output", ["human", "json"])
def test_check_as_qemu_img(tmp_path, img, qemu, fmt, how, output) -> None:
    from vmforge.block.probe import format_names

    if fmt not in format_names():
        pytest.skip(f"format plugin {fmt} not installed")
    path = _made(qemu, tmp_path, fmt, how)
    theirs = qemu("img", "check", "--output", output, path, check=False)
    ours = img("check", "--output", output, path)
    assert (ours.rc, ours.out) == (theirs.returncode, theirs.stdout)
    assert bool(ours.err) == bool(theirs.stderr)     # the findings go to stderr in both


@pytest.mark.formats("qcow2")
def test_check_quiet_and_repair_as_qemu_img(tmp_path, img, qemu) -> None:
    ours, theirs = _made(qemu, tmp_path, "qcow2", "leak"), str(tmp_path / "theirs.qcow2")
    with open(ours, "rb") as f, open(theirs, "wb") as g:
        g.write(f.read())
    assert img("check", "-q", ours).out == "" == qemu("img", "check", "-q", theirs,
                                                      check=False).stdout
    a, b = img("check", "-r", "leaks", ours), qemu("img", "check", "-r", "leaks", theirs)
    assert (a.rc, a.out.replace(ours, theirs)) == (b.returncode, b.stdout)


@pytest.mark.formats("qcow2")
def test_info_json_key_order_as_qemu_img(tmp_path, monkeypatch, img, qemu) -> None:
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "base.qcow2", "1M")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
    qemu("img", "snapshot", "-c", "s1", "base.qcow2")
    for args in (["top.qcow2"], ["--backing-chain", "top.qcow2"]):
        theirs = qemu("img", "info", "--output", "json", *args).stdout
        ours = img("info", "--output", "json", *args).out
        strip = [line for line in theirs.splitlines() if '"date-' not in line
                 and '"actual-size"' not in line]
        assert [line for line in ours.splitlines() if '"date-' not in line
                and '"actual-size"' not in line] == strip


def test_qdict_order_is_qemus_hash_order() -> None:
    # the order qemu-img 7.2 prints ImageCheck's keys in
    keys = ["filename", "format", "check-errors", "image-end-offset", "corruptions", "leaks",
            "total-clusters", "allocated-clusters"]
    assert list(qdict_order(dict.fromkeys(keys, 0))) == [
        "image-end-offset", "total-clusters", "corruptions", "check-errors", "leaks",
        "allocated-clusters", "filename", "format"]
