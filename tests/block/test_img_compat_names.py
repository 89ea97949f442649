"""Image names as qemu-img 7.2 reads them: ``json:{...}`` (nested or flattened keys) and
``file:NAME``; and ``info``'s human output of format-specific data as qemu-img's."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.formats("raw", "qcow2")


@pytest.fixture
def images(tmp_path, monkeypatch, qemu) -> None:
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "c.qcow2", "1M")
    qemu("io", "-f", "qcow2", "-c", "write -P 5 0 64k", "c.qcow2")
    os.mkdir("odd:dir")
    qemu("img", "create", "-q", "-f", "raw", "file:odd:dir/r.raw", "1M")


NAMES = [
    'json:{"driver":"qcow2","file":{"driver":"file","filename":"c.qcow2"}}',
    'json:{"driver":"qcow2","file.filename":"c.qcow2"}',
    'json:{"file":{"filename":"c.qcow2"}}',
    "file:c.qcow2",
    "file:odd:dir/r.raw",
]


@pytest.mark.parametrize("name", NAMES)
def test_info_of_pseudo_protocol_names_as_qemu_img(images, img, qemu, name) -> None:
    theirs = qemu("img", "info", name)
    ours = img("info", name)
    assert (ours.rc, ours.out) == (0, theirs.stdout)


BAD = [
    'json:{"driver":"qcow2","file":{"driver":"file","filename":"missing"}}',
    'json:{"driver":"qcow2","file":"c.qcow2"}',
]


@pytest.mark.parametrize("name", BAD)
def test_bad_json_names_as_qemu_img(images, img, qemu, name) -> None:
    theirs = qemu("img", "info", name, check=False)
    ours = img("--qemu-img-compat", "info", name)
    assert (ours.rc, ours.err) == (theirs.returncode, theirs.stderr)


def test_json_source_and_file_target_convert(images, img, qemu) -> None:
    src = 'json:{"driver":"qcow2","file.filename":"c.qcow2"}'
    assert img("convert", "-O", "raw", src, "file:out:1.raw").rc == 0
    assert os.path.exists("out:1.raw")
    assert qemu("img", "compare", "-f", "qcow2", "-F", "raw", "c.qcow2",
                "file:out:1.raw").returncode == 0
    assert img("create", "-q", "-f", "raw", "file:made:2.raw", "64k").rc == 0
    assert os.path.getsize("made:2.raw") == 65536


@pytest.mark.formats("vmdk")
def test_info_format_specific_lists_as_qemu_img(images, img, qemu) -> None:
    qemu("img", "create", "-q", "-f", "vmdk", "v.vmdk", "1M")
    for name in ("v.vmdk", "c.qcow2"):
        assert img("info", name).out == qemu("img", "info", name).stdout
