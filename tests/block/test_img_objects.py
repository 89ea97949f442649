"""vmforge img --object secret / key-secret / --image-opts, checked with qemu-io."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.cli.img_objects import ImageContext, ObjectError
from vmforge.testing.oracles import require_program


def vmforge_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmforge.cli.main", "img", *args],
                          capture_output=True, text=True, timeout=120)


def test_secrets_parse_and_resolve(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"from-a-file")
    ctx = ImageContext(["secret,id=a,data=hunter2", f"secret,id=b,file={key}",
                        "secret,id=c,data=aGk=,format=base64"])
    assert ctx.secrets == {"a": b"hunter2", "b": b"from-a-file", "c": b"hi"}
    assert ctx.resolve_secret({"key-secret": "b", "x": 1}) == {"passphrase": b"from-a-file",
                                                               "x": 1}
    with pytest.raises(ObjectError, match="no secret with id 'z'"):
        ctx.resolve_secret({"key-secret": "z"})
    assert ctx.resolve_image("disk.img", None) == ("disk.img", None, {})
    ctx.image_opts = True
    assert ctx.resolve_image("driver=luks,file.filename=d.img,key-secret=a", None) == (
        "d.img", "luks", {"passphrase": b"hunter2"})
    for bad, message in [("iothread,id=x", "only 'secret'"), ("secret,data=x", "needs id="),
                         ("secret,id=x", "exactly one of"), ("secret,id=x,data=1,bogus=2",
                                                             "unknown option 'bogus'"),
                         ("secret,id=x,data=!!,format=base64", "not base64")]:
        with pytest.raises(ObjectError, match=message):
            ImageContext([bad])


def test_luks_with_secrets_against_qemu_io(tmp_path: Path) -> None:
    qemu_io = require_program("qemu-io", "qemu-utils")
    img = tmp_path / "l.img"
    secret = ["--object", "secret,id=sec0,data=hunter2"]
    made = vmforge_img("create", "-f", "luks", *secret, "-o", "key-secret=sec0,iter-time=10",
                       str(img), "16M")
    assert made.returncode == 0, made.stderr
    assert "key-secret=sec0" in made.stdout and "hunter2" not in made.stdout + made.stderr
    opts = f"driver=luks,file.filename={img},key-secret=sec0"
    wrote = subprocess.run([qemu_io, *secret, "--image-opts", opts, "-c",
                            "write -P 0x5a 4096 64k"], capture_output=True, text=True)
    assert wrote.returncode == 0 and "error" not in wrote.stdout.lower(), wrote.stdout
    raw = tmp_path / "out.raw"
    conv = vmforge_img("convert", *secret, "--image-opts", "-O", "raw", opts, str(raw))
    assert conv.returncode == 0, conv.stderr
    data = raw.read_bytes()
    assert data[4096:4096 + 65536] == b"\x5a" * 65536 and data[:4096] == bytes(4096)
    wrong = vmforge_img("info", "--object", "secret,id=sec0,data=nope", "--image-opts", opts)
    assert wrong.returncode == 1 and "invalid passphrase" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    odd = vmforge_img("info", "--object", "iothread,id=x", str(img))
    assert odd.returncode == 1
    assert odd.stderr == "vmforge img: --object 'iothread': only 'secret' objects are supported\n"
