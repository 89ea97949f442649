"""Probing asks a format's probe only about images holding the magic it declares
(entry-point group ``vmforge.block.magic``), so ``vmforge img info`` of a qcow2 imports
no other format's probe module; the guess is the one asking every probe gives."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.block.fakedist import fake_format_dist as _dist
from vmforge.block.probe import PROBE_SIZE, may_claim, probe_format
from vmforge.plugins import Registry
from vmforge.testing import qemu_tools
from vmforge.testing.oracles import require_program

_MODULES = """
import sys
from vmforge.cli.main import main
status = main(sys.argv[1:])
import json
print(json.dumps([status, sorted(sys.modules)]))
"""


def _modules_after(*argv: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _MODULES, *argv], capture_output=True,
                         text=True, check=True).stdout
    status, modules = json.loads(out.splitlines()[-1])
    assert status == 0
    return set(modules)


def _probe_modules(reg: Registry) -> dict[str, str]:
    """format -> the module its probe entry point names"""
    out = {}
    for name in reg.names("block"):
        ep = reg.probe_entry_point(name)
        if ep is not None:
            out[name] = ep.value.partition(":")[0]
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small images of the formats qemu-img writes, made by qemu-img."""
    require_program("qemu-img", "qemu-utils")
    root = tmp_path_factory.mktemp("magic")
    made = {}
    for fmt, opts in (("qcow2", []), ("qcow", []), ("qed", []), ("vdi", []), ("vhdx", []),
                      ("vmdk", []), ("vmdk-stream", ["-o", "subformat=streamOptimized"]),
                      ("vmdk-flat", ["-o", "subformat=monolithicFlat"]),
                      ("vpc", []), ("parallels", []), ("raw", []),
                      ("luks", ["--object", "secret,id=s0,data=pw",
                                "-o", "key-secret=s0,iter-time=10"])):
        path = root / f"a.{fmt}"
        # (qemu_img retries its luks PBKDF2 timing flake on a busy host)
        qemu_tools.qemu_img("create", "-q", "-f", fmt.partition("-")[0], *opts, str(path), "1M")
        made[fmt] = path
    return made


def test_img_info_imports_no_probe_that_cannot_claim_the_image(images: dict[str, Path]) -> None:
    reg = Registry()
    probes = _probe_modules(reg)
    gated = {n for n in probes if reg.probe_magics(n) is not None}
    assert {"qcow2", "qcow", "qed", "vdi", "vhdx", "vmdk", "vpc", "luks"} <= gated
    modules = _modules_after("img", "info", str(images["qcow2"]))
    assert "vmforge_qcow2.probe" in modules and "vmforge_qcow2.driver" in modules
    # qcow (version 1) shares qcow2's first four bytes, not the version after them
    not_asked = sorted(probes[n] for n in gated - {"qcow2"} if probes[n] in modules)
    assert not not_asked
    with_format = _modules_after("img", "info", "-f", "qcow2", str(images["qcow2"]))
    # the driver's class calls its own probe module; no other format's is imported
    assert with_format.intersection(probes.values()) <= {"vmforge_qcow2.probe"}


def _every_score(reg: Registry, header: bytes, path: str) -> list[tuple[int, str]]:
    """Each probe's score, every probe asked (as before magics were declared)."""
    scores = []
    for name in reg.names("block"):
        score = int(reg.probe_function(name)(header, path))
        if score > 0:
            scores.append((score, name))
    return sorted(scores, key=lambda s: (-s[0], s[1]))


def _headers(images: dict[str, Path]) -> list[bytes]:
    """Real images' heads, their truncations and mutations, and the declared magics."""
    rng = random.Random(13)
    heads = [p.read_bytes()[:PROBE_SIZE] for p in images.values()]
    heads += [b"", bytes(PROBE_SIZE), b"#", b"version=1\n", b" \n# x\nversion=3\n",
              b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 "
              b"/dev/cloop $1\n" + bytes(100)]
    for magics in (Registry().probe_magics(n) for n in Registry().names("block")):
        for offset, magic in magics or ():
            if offset >= 0:       # (a trailer's magic: the file's end, not its header)
                heads.append(bytes(offset) + magic + bytes(PROBE_SIZE - offset - len(magic)))
    out = []
    for head in heads:
        out += [head[:n] for n in (0, 1, 3, 4, 7, 8, 16, 63, 67, 68, 100, 511)] + [head]
        for _ in range(20):
            b = bytearray(head)
            for _ in range(rng.randrange(1, 4)):
                if b:
                    b[rng.randrange(min(len(b), 80))] = rng.randrange(256)
            out.append(bytes(b))
    return out


def test_declared_magics_never_hide_a_claim(images: dict[str, Path], tmp_path: Path) -> None:
    """Whenever a probe claims a header, the header holds one of its format's magics (or
    is too short to tell); and probing then guesses what asking every probe guesses."""
    reg = Registry()
    path = tmp_path / "x"
    for header in _headers(images):
        path.write_bytes(header)
        scores = _every_score(reg, header, str(path))
        for _score, name in scores:
            assert may_claim(header, reg.probe_magics(name)), (name, header[:16])
        if scores:
            assert probe_format(str(path)) == scores[0][1], header[:16]
    for fmt, image in images.items():
        assert probe_format(str(image)) == fmt.partition("-")[0]


def test_may_claim() -> None:
    assert may_claim(b"anything", None)
    assert may_claim(b"QFI\xfb\0\0\0\3", [(0, b"QFI\xfb")])
    assert not may_claim(b"QFI\xfa\0\0\0\3", [(0, b"QFI\xfb")])
    assert may_claim(b"QF", [(0, b"QFI\xfb")])             # too short to tell
    assert may_claim(bytes(64) + b"\x7f\x10\xda\xbe", [(64, b"\x7f\x10\xda\xbe")])
    assert not may_claim(bytes(68), [(64, b"\x7f\x10\xda\xbe")])
    assert may_claim(b"KDMV", [(0, b"#"), (0, b"KDMV")])
    assert not may_claim(b"", [])


def test_registry_reads_magics(tmp_path: Path) -> None:
    _dist(tmp_path, "fmta", ["fmta.0.414243", "fmta.512.00ff"])
    _dist(tmp_path, "fmtb", ["fmtb.0.4142", "fmtb.0.zz"])       # one malformed: asked always
    _dist(tmp_path, "fmtc", ["fmtc.-1.41"])
    _dist(tmp_path, "fmtd", [])
    reg = Registry(path=[str(tmp_path)])
    assert sorted(reg.probe_magics("fmta") or []) == [(0, b"ABC"), (512, b"\0\xff")]
    assert reg.probe_magics("fmtb") is None
    assert reg.probe_magics("fmtc") is None
    assert reg.probe_magics("fmtd") is None
