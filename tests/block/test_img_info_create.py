"""``vmforge img info`` and ``create`` against qemu-img."""

from __future__ import annotations

import json
import os

import pytest

from vmforge.cli.img import parse_options, size_to_str
from vmforge.testing.images import MiB, write_mixed


@pytest.mark.parametrize("value,text", [(0, "0 B"), (512, "512 B"), (999, "999 B"),
                                        (1000, "0.977 KiB"), (1024, "1 KiB"), (200704, "196 KiB"),
                                        (4 * MiB, "4 MiB"), (1 << 30, "1 GiB"),
                                        (1536 * MiB, "1.5 GiB"), (1 << 40, "1 TiB")])
def test_size_to_str_like_qemu(value: int, text: str) -> None:
    assert size_to_str(value) == text


def test_parse_options() -> None:
    assert parse_options(["a=1,b=x,,y", "help"]) == {"a": "1", "b": "x,y", "help": "help"}


@pytest.mark.formats("raw")
def test_info_raw_matches_qemu_img(tmp_path, img, qemu) -> None:
    path = str(tmp_path / "d.raw")
    write_mixed(path, 3 * MiB)
    ours = img("info", "-f", "raw", "--output", "json", path)
    assert ours.rc == 0, ours.err
    theirs = json.loads(qemu("img", "info", "-f", "raw", "--output", "json", path).stdout)
    assert ours.json() == theirs
    human = img("info", "-f", "raw", path)
    assert human.out == qemu("img", "info", "-f", "raw", path).stdout


@pytest.mark.formats("qcow2", "raw")
def test_info_json_keys_match_for_a_chain(tmp_path, img, qemu) -> None:
    base = str(tmp_path / "base.raw")
    write_mixed(base, 2 * MiB)
    top = str(tmp_path / "top.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top, "4M")
    ours = img("info", "--output", "json", "--backing-chain", top)
    assert ours.rc == 0, ours.err
    theirs = json.loads(qemu("img", "info", "--output", "json", "--backing-chain", top).stdout)
    assert [set(i) for i in ours.json()] == [set(i) for i in theirs]
    for a, b in zip(ours.json(), theirs, strict=True):
        for key in ("virtual-size", "filename", "format", "backing-filename",
                    "full-backing-filename", "backing-filename-format", "cluster-size"):
            assert a.get(key) == b.get(key), key


@pytest.mark.formats("example")
def test_info_human_and_json_of_example_with_backing(tmp_path, img, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert img("create", "-q", "-f", "example", "base.ex", "1M").rc == 0
    r = img("create", "-f", "example", "-b", "base.ex", "-F", "example", "top.ex")
    assert r.rc == 0 and r.out.startswith("Formatting 'top.ex', fmt=example size=1048576")
    out = img("info", "top.ex").out.splitlines()
    assert out[:3] == ["image: top.ex", "file format: example",
                       "virtual size: 1 MiB (1048576 bytes)"]
    assert "backing file: base.ex" in out and "backing file format: example" in out
    chain = img("info", "--backing-chain", "--output", "json", "top.ex").json()
    assert [i["filename"] for i in chain] == ["top.ex", "base.ex"]
    assert chain[0]["full-backing-filename"] == "base.ex"


@pytest.mark.formats("example")
def test_create_option_help_and_errors(tmp_path, img) -> None:
    r = img("create", "-f", "example", "-o", "help")
    assert r.rc == 0 and "block_size=<" in r.out and "Supported example options:" in r.out
    path = str(tmp_path / "x.ex")
    r = img("create", "-f", "example", "-o", "block_size=3000", path, "1M")
    assert r.rc == 1 and "block_size" in r.err and "Traceback" not in r.err
    r = img("create", "-f", "example", "-o", "nonsense=1", path, "1M")
    assert r.rc == 1 and "nonsense" in r.err
    r = img("create", "-f", "example", path)
    assert r.rc == 1 and "size" in r.err
    r = img("create", "-f", "example", path, "12Q")
    assert r.rc == 1 and "size" in r.err
    r = img("create", "-f", "nosuchformat", path, "1M")
    assert r.rc == 1 and "nosuchformat" in r.err
    r = img("create", "-f", "example", "-b", "missing.raw", "-F", "raw", path)
    assert r.rc == 1 and "missing.raw" in r.err
    r = img("create", "-f", "example", "-u", "-b", "missing.raw", path, "1M")
    assert r.rc == 1 and "Backing file specified without backing format" in r.err
    (tmp_path / "b.raw").write_bytes(bytes(4096))
    r = img("create", "-f", "example", "-b", "b.raw", path)
    assert r.rc == 1 and "without backing format" in r.err and "Detected format of raw." in r.err
    assert img("create", "-q", "-f", "example", "-u", "-b", "missing.raw", "-F", "raw", path,
               "1M").rc == 0
    assert not os.path.exists(str(tmp_path / "missing.raw"))


@pytest.mark.formats("raw")
def test_create_raw_is_what_qemu_makes(tmp_path, img, qemu) -> None:
    ours, theirs = str(tmp_path / "a.raw"), str(tmp_path / "b.raw")
    assert img("create", "-q", "-f", "raw", ours, "3M").rc == 0
    qemu("img", "create", "-q", "-f", "raw", theirs, "3M")
    assert os.path.getsize(ours) == os.path.getsize(theirs)
    assert qemu("img", "compare", ours, theirs).returncode == 0


@pytest.mark.formats("qcow2")
def test_create_qcow2_passes_qemu_check(tmp_path, img, qemu) -> None:
    path = str(tmp_path / "a.qcow2")
    assert img("create", "-q", "-f", "qcow2", path, "64M").rc == 0
    assert qemu("img", "check", path).returncode == 0
    info = json.loads(qemu("img", "info", "--output", "json", path).stdout)
    assert info["virtual-size"] == 64 * MiB and info["format"] == "qcow2"


def test_info_errors_are_one_line(tmp_path, img) -> None:
    r = img("info", str(tmp_path / "missing"))
    assert r.rc == 1 and "No such file" in r.err and "Traceback" not in r.err
    junk = tmp_path / "junk.ex"
    junk.write_bytes(b"VMFXMAP\0" + b"\xff" * 100)
    r = img("info", "-f", "example", str(junk))
    assert r.rc == 1 and "corrupt image in header" in r.err and str(junk) in r.err


@pytest.mark.formats("qcow2")
def test_info_lists_snapshots_like_qemu(tmp_path, img, qemu) -> None:
    path = str(tmp_path / "s.qcow2")
    qemu("img", "create", "-q", "-f", "qcow2", path, "1M")
    qemu("img", "snapshot", "-c", "first", path)
    ours = img("info", "--output", "json", path).json()
    theirs = json.loads(qemu("img", "info", "--output", "json", path).stdout)
    assert len(theirs["snapshots"]) == 1
    assert ours.get("snapshots") == theirs["snapshots"]
    table = [ln for ln in qemu("img", "info", path).stdout.splitlines()
             if ln.startswith(("Snapshot list:", "ID ", "1 "))]
    assert [ln for ln in img("info", path).out.splitlines() if ln in table] == table


@pytest.mark.formats("raw", "qcow2")
def test_info_human_of_a_qemu_made_chain(tmp_path, img, qemu, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_mixed("base.raw", 2 * MiB)
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "top.qcow2")
    qemu("io", "-c", "write -P 1 0 64k", "top.qcow2")

    def head(text: str) -> list[str]:  # format-specific facts are the driver's to order
        lines = text.splitlines()
        cut = [i for i, ln in enumerate(lines) if ln.startswith("Format specific")]
        return lines[:cut[0]] if cut else lines

    ours = img("info", "--backing-chain", "top.qcow2").out
    theirs = qemu("img", "info", "--backing-chain", "top.qcow2").stdout
    assert head(ours) == head(theirs)
    assert ours.split("\n\n")[1:] == theirs.split("\n\n")[1:]
