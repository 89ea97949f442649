"""What the luks tests share: the passphrase, a driver class that opens with it,
and qemu-img / qemu-io run with the secret (``--object secret`` and
``--image-opts``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmforge.testing.qemu_tools import qemu_img, run
from vmforge_luks import Luks

PASSPHRASE = "correct horse battery staple"
#: create options for quick tests: the passphrase, 1 ms of PBKDF2 (1000 iterations)
KIT_OPTIONS: dict[str, Any] = {"passphrase": PASSPHRASE, "iter_time": 1}
SECRET = f"secret,id=sec0,data={PASSPHRASE}"


def with_passphrase(passphrase: str = PASSPHRASE) -> type[Luks]:
    """``Luks`` whose ``open`` is given ``passphrase`` unless told another: what the
    conformance kit opens (it passes no open options)."""

    class KitLuks(Luks):
        @classmethod
        def open(cls, path: str, *, readonly: bool = True, **options: Any) -> KitLuks:
            options.setdefault("passphrase", passphrase)
            return super().open(path, readonly=readonly, **options)

    return KitLuks


def image_opts(path: str | Path) -> str:
    return f"driver=luks,key-secret=sec0,file.filename={path}"


def qemu_img_luks(*args: str, check: bool = True) -> Any:
    """``qemu-img SUBCOMMAND --object secret ARGS`` (args after the sub-command)."""
    sub, *rest = args
    r = qemu_img(sub, "--object", SECRET, *rest, check=False)
    assert not check or r.returncode == 0, f"qemu-img {sub} failed: {r.stderr}"
    return r


def qemu_io_luks(path: str | Path, *cmds: str) -> str:
    """qemu-io's commands on the LUKS image, opened with the passphrase."""
    argv = ["qemu-io", "--object", SECRET, "--image-opts"]
    for c in cmds:
        argv += ["-c", c]
    out = run(*argv, image_opts(path)).stdout
    assert "error" not in out.lower() and "fail" not in out.lower(), out
    return out


def qemu_create(path: str | Path, size: int, **opts: str) -> None:
    """A LUKS image made by qemu-img (``iter-time=50`` unless given)."""
    o = ",".join(["key-secret=sec0", *(f"{k.replace('_', '-')}={v}" for k, v in
                                       {"iter_time": "50", **opts}.items())])
    qemu_img_luks("create", "-q", "-f", "luks", "-o", o, str(path), str(size))


def qemu_to_raw(path: str | Path, out: str | Path) -> bytes:
    """The image's contents as qemu-img decrypts them."""
    qemu_img_luks("convert", "--image-opts", image_opts(path), "-O", "raw", str(out))
    return Path(out).read_bytes()
