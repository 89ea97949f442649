"""Fast checks of guests/build.py's pieces that need no compiler or network."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from vmforge.testing.oracles import require_program

ROOT = Path(__file__).resolve().parents[2]
BUILD_PY = ROOT / "guests" / "build.py"


@pytest.fixture(scope="module")
def recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vmforge_guests_build", BUILD_PY)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


def read_newc(data: bytes) -> dict[str, tuple[int, int, bytes]]:
    """Parse a newc archive: name -> (mode, rdev major<<8|minor, body)."""
    out: dict[str, tuple[int, int, bytes]] = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701", pos
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos: pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert len(data) % 512 == 0
            return out
        assert f[2] == f[3] == 0 and f[5] == 0  # root:root, mtime 0
        out[name] = (mode, rmaj << 8 | rmin, body)


def test_cpio_writer_round_trip(recipe: ModuleType) -> None:
    w = recipe.CpioWriter()
    w.directory("usr/bin")
    w.file("init", b"#!/bin/sh\n", 0o755)
    w.symlink("bin/sh", "/bin/busybox")
    w.chardev("dev/console", 5, 1)
    w.file("init", b"dup ignored")
    entries = read_newc(w.finish())
    assert list(entries) == ["usr", "usr/bin", "init", "bin/sh", "dev/console"]
    assert stat.S_ISDIR(entries["usr"][0])
    assert entries["init"] == (stat.S_IFREG | 0o755, 0, b"#!/bin/sh\n")
    assert entries["bin/sh"] == (stat.S_IFLNK | 0o777, 0, b"/bin/busybox")
    assert entries["dev/console"] == (stat.S_IFCHR | 0o600, 5 << 8 | 1, b"")


def test_cpio_is_readable_by_cpio(recipe: ModuleType, tmp_path: Path) -> None:
    cpio = require_program("cpio", "cpio")
    w = recipe.CpioWriter()
    w.file("a/b", b"hello", 0o644)
    (tmp_path / "x.cpio").write_bytes(w.finish())
    out = subprocess.run([cpio, "-itv", "-F", str(tmp_path / "x.cpio")], capture_output=True,
                         text=True, check=True).stdout
    assert "a/b" in out


def test_parse_config(recipe: ModuleType) -> None:
    got = recipe.parse_config('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n# other\n')
    assert got == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"'}


def test_fragment_is_well_formed(recipe: ModuleType) -> None:
    text = (ROOT / "guests/riscv64/linux.config").read_text()
    want = recipe.parse_config(text)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("# ---")
             and not (ln.startswith("# ") and "CONFIG_" not in ln)]
    assert len(want) == len(lines), "a fragment line is neither CONFIG_X=v nor '# ... not set'"
    for key in ("CONFIG_64BIT", "CONFIG_SMP", "CONFIG_HVC_RISCV_SBI", "CONFIG_SERIAL_8250_CONSOLE",
                "CONFIG_SIFIVE_PLIC", "CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_BLK",
                "CONFIG_BLK_DEV_INITRD", "CONFIG_POWER_RESET_SYSCON_POWEROFF"):
        assert want[key] == "y", key
    assert want["CONFIG_MODULES"] == "n"


def test_deb822_deb_src_twin(recipe: ModuleType) -> None:
    text = ("Types: deb\n# comment\nURIs: http://example.invalid/debian\nSuites: bookworm\n"
            "Components: main\nSigned-By: /usr/share/keyrings/k.gpg\n\n"
            "Types: deb deb-src\nURIs: http://example.invalid/sec\nSuites: s\n")
    st = recipe._deb822_stanzas(text)
    assert len(st) == 2
    assert st[0]["Signed-By"] == "/usr/share/keyrings/k.gpg"
    assert "deb-src" in st[1]["Types"].split()


def test_print_path_in_empty_cache(tmp_path: Path) -> None:
    env = {**os.environ, "VMFORGE_CACHE": str(tmp_path)}
    for name, main in (("linux-riscv64", "Image"), ("initramfs-riscv64", "initramfs.cpio.gz")):
        proc = subprocess.run([sys.executable, str(BUILD_PY), "--print-path", name], env=env,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 1
        path = Path(proc.stdout.strip())
        assert path.name == main
        assert path.parent.parent == tmp_path / "guests"
        assert path.parent.name.startswith(name + "-")
    proc = subprocess.run([sys.executable, str(BUILD_PY), "--print-path", "nope"], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2


def test_apt_get_waits_for_the_dpkg_lock(recipe: ModuleType, monkeypatch) -> None:
    """Every apt-get the recipes run waits for a lock another apt holds."""
    calls: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        calls.append([str(c) for c in cmd])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(recipe, "run", fake_run)
    monkeypatch.setattr(recipe, "installed_version", lambda pkg: None)
    monkeypatch.setattr(recipe.os, "geteuid", lambda: 0)
    monkeypatch.setattr(recipe, "_apt_updated", False)
    recipe.ensure_packages(["vmforge-no-such-package"])
    apt = [c for c in calls if c[0] == "apt-get"]
    assert [c[3] for c in apt] == ["update", "install"]
    for cmd in apt:
        assert cmd[1:3] == ["-o", "DPkg::Lock::Timeout=600"], cmd


def test_setup_host_apt_get_waits_for_the_dpkg_lock(tmp_path: Path) -> None:
    """tools/setup-host.sh, with every package missing: its apt-get calls wait
    for the dpkg lock (fake apt-get, dpkg-query and id on PATH record them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    fakes = {"apt-get": f'echo "$*" >> "{log}"', "dpkg-query": "exit 1", "id": "echo 0"}
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", str(ROOT / "tools" / "setup-host.sh")], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["update", "install"]
    for line in lines:
        assert line.startswith("-o DPkg::Lock::Timeout=600 "), line
