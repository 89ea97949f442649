"""``check -r leaks|all`` repairs damaged images as ``qemu-img check -r`` does: the
same report of the repair, the same ``qemu-img check`` afterwards, the same guest
data (``qemu-img compare``), and the same refusal where QEMU needs a rebuild that
``-r leaks`` may not do."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from qcow2_oracle import needs_qemu, qemu_check, qemu_img, qemu_io

from vmforge.testing.corrupt import patch_file
from vmforge_qcow2 import Qcow2
from vmforge_qcow2.check import CheckFailed

pytestmark = needs_qemu
COPIED = 1 << 63
CS = 65536
# the layout of the image qemu-img makes below: header, refcount table, refcount
# block, L1 table, the L2 table, then data clusters 5..
REFTABLE, REFBLOCK, L1, L2 = CS, 2 * CS, 3 * CS, 4 * CS


def _q64(p: Path, off: int) -> int:
    return int(struct.unpack(">Q", p.read_bytes()[off:off + 8])[0])


def _set64(p: Path, off: int, v: int) -> None:
    patch_file(p, off, struct.pack(">Q", v))


def _refcount(p: Path, cluster: int, v: int) -> None:
    patch_file(p, REFBLOCK + 2 * cluster, struct.pack(">H", v))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "leak": lambda p: _refcount(p, 0x100, 1),
    "refcount too high": lambda p: _refcount(p, 5, 2),
    "refcount zero (data)": lambda p: _refcount(p, 5, 0),
    "refcount zero (L2 table)": lambda p: _refcount(p, 4, 0),
    "L2 entry past EOF": lambda p: _set64(p, L2 + 8 * 20, COPIED | 0x1000 * CS),
    "L1 entry past EOF": lambda p: _set64(p, L1 + 8, COPIED | 0x2000 * CS),
    "data over the L1 table": lambda p: _set64(p, L2 + 8, COPIED | L1),
    "data over a refcount block": lambda p: _set64(p, L2 + 16, COPIED | REFBLOCK),
    "OFLAG_COPIED missing": lambda p: _set64(p, L2, _q64(p, L2) & ~COPIED),
    "OFLAG_COPIED missing in L1": lambda p: _set64(p, L1, _q64(p, L1) & ~COPIED),
    "cluster shared by two entries": lambda p: _set64(p, L2 + 8 * 30, _q64(p, L2)),
    "refcount table entry gone": lambda p: _set64(p, REFTABLE, 0),
    "unaligned data cluster": lambda p: _set64(p, L2 + 24, _q64(p, L2 + 24) + 512),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("repair") / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(p), "16M")
    qemu_io(p, "write -P 1 0 256k", "write -P 2 1M 64k", "write -P 3 8M 64k")
    return p


def _qemu_repair(p: Path, mode: str) -> tuple[int, dict | str]:
    r = qemu_img("check", "--output", "json", "-r", mode, "-f", "qcow2", str(p), check=False)
    if r.returncode == 1:
        return 1, r.stderr
    out = json.loads(r.stdout)
    out.pop("filename")
    return r.returncode, out


@pytest.mark.parametrize("mode", ["leaks", "all"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_repair_like_qemu_img(tmp_path: Path, base: Path, damage: str, mode: str) -> None:
    theirs, ours = tmp_path / "qemu.qcow2", tmp_path / "vmforge.qcow2"
    shutil.copy(base, theirs)
    DAMAGE[damage](theirs)
    shutil.copy(theirs, ours)
    rc, report = _qemu_repair(theirs, mode)
    with Qcow2.open(str(ours), readonly=False, for_check=True) as q:
        if rc == 1:
            assert "Check failed: Input/output error" in str(report)
            with pytest.raises(CheckFailed, match="Check failed: Input/output error"):
                q.check(mode)
        else:
            mine = q.check(mode).to_json()
            mine.pop("filename")
            assert mine == report
    after_q, after_v = qemu_check(theirs), qemu_check(ours)
    after_q.pop("filename")
    after_v.pop("filename")
    assert after_v == after_q
    same = qemu_img("compare", "-f", "qcow2", "-F", "qcow2", str(theirs), str(ours),
                    check=False)
    # (an image still corrupt may be unreadable to qemu-img: then the bytes must agree)
    assert same.returncode == 0 or theirs.read_bytes() == ours.read_bytes(), same.stdout
