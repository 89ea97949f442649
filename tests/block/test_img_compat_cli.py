"""``vmforge img``'s command line read as qemu-img 7.2 reads it (GNU getopt): options
after the file names, clustered short options, ``--``; bad command lines worded as
qemu-img words them; ``compare -q``; ``convert -B`` without ``-F``."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.formats("raw", "qcow2")


@pytest.fixture
def images(tmp_path, monkeypatch, qemu) -> None:
    """base.qcow2 (1 MiB, data at 0) and base.raw in the current directory."""
    monkeypatch.chdir(tmp_path)
    qemu("img", "create", "-q", "-f", "qcow2", "base.qcow2", "1M")
    qemu("io", "-f", "qcow2", "-c", "write -P 7 0 64k", "base.qcow2")
    qemu("img", "convert", "-f", "qcow2", "-O", "raw", "base.qcow2", "base.raw")


# each: a command line with options after operands (or glued, or abbreviated), the
# same with the options first, and the file it makes
ANYWHERE = [
    ("create -f qcow2 -b base.qcow2 OUT.qcow2 -F qcow2 6G",
     "create -f qcow2 -b base.qcow2 -F qcow2 OUT.qcow2 6G", "OUT.qcow2"),
    ("create OUT.raw -f raw 2M -q", "create -f raw -q OUT.raw 2M", "OUT.raw"),
    ("convert base.qcow2 -O raw OUT.raw", "convert -O raw base.qcow2 OUT.raw", "OUT.raw"),
    ("convert -f qcow2 base.qcow2 OUT.qcow2 -O qcow2 -c",
     "convert -f qcow2 -O qcow2 -c base.qcow2 OUT.qcow2", "OUT.qcow2"),
    ("info base.qcow2 --output json", "info --output json base.qcow2", None),
    ("info base.qcow2 --output=json -f qcow2", "info --output json -f qcow2 base.qcow2", None),
    ("info base.qcow2 --out json", "info --output json base.qcow2", None),
    ("check base.qcow2 --output json -f qcow2", "check --output json -f qcow2 base.qcow2", None),
    ("map base.qcow2 --output json", "map --output json base.qcow2", None),
    ("compare base.qcow2 base.raw -f qcow2 -F raw", "compare -f qcow2 -F raw base.qcow2 base.raw",
     None),
    ("measure base.qcow2 -O qcow2 --output json", "measure -O qcow2 --output json base.qcow2",
     None),
    ("info -fqcow2 base.qcow2", "info -f qcow2 base.qcow2", None),
    ("snapshot base.qcow2 -l -U", "snapshot -l -U base.qcow2", None),
    ("info -- base.qcow2", "info base.qcow2", None),
]


@pytest.mark.parametrize("anywhere,first,made", ANYWHERE, ids=[a for a, _, _ in ANYWHERE])
def test_options_anywhere_as_qemu_img(images, img, qemu, anywhere, first, made) -> None:
    theirs = qemu("img", *anywhere.replace("OUT", "theirs").split(), check=False)
    assert theirs.returncode == 0, theirs.stderr
    ours = img(*anywhere.replace("OUT", "ours").split())
    assert ours.rc == 0, ours.err
    again = img(*first.replace("OUT", "again").split())
    assert (ours.rc, ours.out.replace("ours", "again"), ours.err) == \
        (again.rc, again.out, again.err)
    if made:        # same contents (qemu-img compare streams: a 6G image is not read in)
        same = qemu("img", "compare", made.replace("OUT", "ours"), made.replace("OUT", "theirs"),
                    check=False)
        assert same.returncode == 0, same.stdout + same.stderr


def test_check_repair_and_resize_after_operands(images, img, qemu) -> None:
    assert img("check", "base.qcow2", "-r", "all").rc == 0
    assert img("resize", "base.raw", "-f", "raw", "2M").rc == 0
    assert os.path.getsize("base.raw") == 2 << 20
    # the last argument is always the size, so a shrink by 1M reads as a size
    assert img("resize", "--shrink", "-f", "raw", "base.raw", "-1M").rc == 0
    assert os.path.getsize("base.raw") == 1 << 20
    assert img("rebase", "-u", "base.qcow2", "-b", "").rc == 0


def test_double_dash_ends_options(images, img, qemu) -> None:
    assert img("convert", "-O", "raw", "base.qcow2", "--", "-x").rc == 0
    assert os.path.getsize("-x") == 1 << 20


BAD = [
    ["info", "-z", "base.qcow2"],
    ["info", "--foo", "base.qcow2"],
    ["info", "base.qcow2", "base.raw"],
    ["info"],
    ["convert", "-O"],
    ["check", "--output=xml", "base.qcow2"],
]


@pytest.mark.parametrize("argv", BAD, ids=" ".join)
def test_bad_command_lines_worded_as_qemu_img(images, img, qemu, capsys, argv) -> None:
    theirs = qemu("img", *argv, check=False)
    for compat, prog in ((["--qemu-img-compat"], "qemu-img"), ([], "vmforge img")):
        with pytest.raises(SystemExit) as exc:    # argparse's way out of main()
            img(*compat, *argv)
        err = capsys.readouterr().err
        assert (exc.value.code, err) == (theirs.returncode, theirs.stderr.replace(
            "qemu-img", prog))


def test_compare_quiet_prints_nothing(images, img, qemu) -> None:
    qemu("img", "create", "-q", "-f", "raw", "other.raw", "1M")
    for args in (["base.qcow2", "base.raw"], ["base.qcow2", "other.raw"]):
        theirs = qemu("img", "compare", "-q", *args, check=False)
        ours = img("compare", "-q", *args)
        assert (ours.rc, ours.out, ours.err) == (theirs.returncode, "", "")
        assert theirs.stdout == ""
    assert img("compare", "-q", "base.qcow2", "missing").rc == 2


def test_convert_backing_without_format_refused_as_qemu_img(images, img, qemu) -> None:
    # qemu-img 7.2 does not probe -B's format: it refuses, as for create -b without -F
    qemu("img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
    theirs = qemu("img", "convert", "-O", "qcow2", "-B", "base.qcow2", "top.qcow2",
                  "theirs.qcow2", check=False)
    ours = img("--qemu-img-compat", "convert", "-O", "qcow2", "-B", "base.qcow2",
               "top.qcow2", "ours.qcow2")
    assert ours.rc == theirs.returncode == 1
    assert ours.err.splitlines()[0] == theirs.stderr.splitlines()[0]
    assert not os.path.exists("ours.qcow2") and not os.path.exists("theirs.qcow2")
