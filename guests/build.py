#!/usr/bin/env python3
"""Build vmforge's test guests from Debian's sources, cached outside the repository.

    python3 guests/build.py linux-riscv64 | busybox-riscv64 | initramfs-riscv64 | linux-amd64 | all
    python3 guests/build.py --print-path linux-riscv64   # main file; exit 1 if not built
    python3 guests/build.py --print-dir linux-riscv64    # product directory; exit 1 if not built
    python3 guests/build.py --list                       # every product, built or not

Each product lands in ``${VMFORGE_CACHE:-$HOME/.cache/vmforge}/guests/<name>-<hash>/``,
where the hash covers the recipe's inputs (the files under guests/riscv64/, the recipe
version below, and the Debian versions of the sources and of the cross toolchain), so a
product is rebuilt only when one of them changes.  A product directory is published
atomically (built in a temporary directory, then renamed) and holds a manifest.json.

Missing Debian packages are installed with apt-get (as root); busybox's source comes
from ``apt-get source``, for which a deb-src entry is added next to debian.sources.
Firmware (OpenSBI, U-Boot) is not built: Debian's prebuilt files are used, see
``firmware_paths()``.  Nor is the x86-64 kernel: ``linux-amd64`` is Debian's own
``linux-image-amd64`` kernel, fetched with ``apt-get download`` and unpacked (its bzImage,
its config, and the ELF vmlinux taken out of the bzImage's xz payload).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RISCV64 = HERE / "riscv64"

# Bump a product's number when its recipe (the code below) changes in a way that
# changes its output; file inputs are hashed by content anyway.
RECIPE_VERSIONS = {"linux-riscv64": 1, "busybox-riscv64": 2, "initramfs-riscv64": 1,
                   "linux-amd64": 1}
# Fixed build date (2023-01-01) for reproducible binaries.
SOURCE_DATE_EPOCH = "1672531200"

CROSS = "riscv64-linux-gnu-"
LINUX_SOURCE_PKG = "linux-source-6.1"
TOOLCHAIN_PKGS = ("gcc-12-riscv64-linux-gnu", "binutils-riscv64-linux-gnu")
LIBC_PKGS = ("libc6-dev-riscv64-cross", "linux-libc-dev-riscv64-cross")
HOST_BUILD_PKGS = ("gcc", "make", "libc6-dev", "xz-utils", "gcc-riscv64-linux-gnu")
LINUX_BUILD_PKGS = (*HOST_BUILD_PKGS, LINUX_SOURCE_PKG, "bc", "bison", "flex", "libssl-dev",
                    "libelf-dev", "perl", "cpio")
BUSYBOX_BUILD_PKGS = (*HOST_BUILD_PKGS, *LIBC_PKGS, "dpkg-dev")
# Debian's prebuilt x86-64 kernel: the metapackage names the versioned image package
AMD64_KERNEL_META = "linux-image-amd64"

# busybox .config changes on top of Debian's own static configuration.
BUSYBOX_CONFIG = {
    "CONFIG_STATIC": "y",
    "CONFIG_CROSS_COMPILER_PREFIX": f'"{CROSS}"',
    "CONFIG_EXTRA_CFLAGS": '""',
    "CONFIG_FEATURE_INDIVIDUAL": None,
    "CONFIG_FEATURE_SHARED_BUSYBOX": None,
    "CONFIG_BUILD_LIBBUSYBOX": None,
    "CONFIG_PIE": None,
    "CONFIG_SELINUX": None,
    # needs kernel headers older than 6.1 (CBQ was removed)
    "CONFIG_TC": None,
    "CONFIG_FEATURE_TC_INGRESS": None,
}

# Where Debian puts the prebuilt firmware this project boots with (never rebuilt).
FIRMWARE = {
    "opensbi-fw_jump": Path("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin"),
    "opensbi-fw_dynamic": Path("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"),
    "u-boot-riscv64-smode": Path("/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin"),
}
FIRMWARE_PKGS = ("opensbi", "u-boot-qemu")


class BuildError(RuntimeError):
    """A recipe step failed; the message says which and why."""


def log(msg: str) -> None:
    print(f"guests: {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("VMFORGE_CACHE") or str(Path.home() / ".cache" / "vmforge")
    return Path(base).expanduser() / "guests"


def run(cmd: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
        env: dict[str, str] | None = None, check: bool = True,
        capture: bool = False, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, echoing it; raise BuildError on failure."""
    args = [str(a) for a in cmd]
    if not capture:
        log("$ " + " ".join(args) + (f"   (in {cwd})" if cwd else ""))
    full_env = None if env is None else {**os.environ, **env}
    proc = subprocess.run(args, cwd=cwd, env=full_env, text=True, stdin=stdin,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip()[-2000:] if capture else ""
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(args)}\n{detail}")
    return proc


def nice_prefix() -> list[str]:
    """Prefix for heavy commands: the machine's cores are shared."""
    return ["nice", "-n", "10"] if shutil.which("nice") else []


# --------------------------------------------------------------------- apt

def installed_version(pkg: str) -> str | None:
    proc = run(["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg], capture=True, check=False)
    if proc.returncode != 0:
        return None
    status, _, version = proc.stdout.partition("\t")
    return version if status.endswith("install ok installed") else None


def candidate_version(pkg: str) -> str | None:
    if not shutil.which("apt-cache"):
        return None
    proc = run(["apt-cache", "policy", pkg], capture=True, check=False)
    m = re.search(r"^\s*Candidate:\s*(\S+)", proc.stdout, re.M)
    return m.group(1) if m and m.group(1) != "(none)" else None


@functools.cache
def package_version(pkg: str) -> str:
    """The installed version, else the one apt would install, else 'none'."""
    return installed_version(pkg) or candidate_version(pkg) or "none"


_apt_updated = False
#: apt-get waits up to 10 minutes for the dpkg/apt locks another apt may hold
APT_GET = ("apt-get", "-o", "DPkg::Lock::Timeout=600")


def apt_update() -> None:
    global _apt_updated
    if not _apt_updated:
        run([*APT_GET, "update", "-q"])
        _apt_updated = True
        package_version.cache_clear()


def ensure_packages(pkgs: Iterable[str]) -> None:
    missing = sorted({p for p in pkgs if installed_version(p) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise BuildError("missing Debian packages: " + " ".join(missing)
                         + "\n  install them: sudo apt-get install " + " ".join(missing))
    log("installing " + " ".join(missing))
    apt_update()
    run([*APT_GET, "install", "-y", "-q", "--no-install-recommends", *missing],
        env={"DEBIAN_FRONTEND": "noninteractive"})
    package_version.cache_clear()


SOURCES_DIR = Path("/etc/apt/sources.list.d")
DEB_SRC_FILE = SOURCES_DIR / "vmforge-deb-src.sources"


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, ""
        elif line.lstrip().startswith("#"):
            continue
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            key = key.strip()
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def deb_src_configured() -> bool:
    files = sorted(SOURCES_DIR.glob("*.sources")) if SOURCES_DIR.is_dir() else []
    for f in files:
        for st in _deb822_stanzas(f.read_text(errors="replace")):
            if st.get("Enabled", "yes").lower() == "no":
                continue
            if "deb-src" in st.get("Types", "").split() and "debian" in st.get("URIs", ""):
                return True
    legacy = [Path("/etc/apt/sources.list"), *sorted(SOURCES_DIR.glob("*.list"))]
    for f in legacy:
        if f.is_file() and re.search(r"^\s*deb-src\s", f.read_text(errors="replace"), re.M):
            return True
    return False


def ensure_deb_src() -> None:
    """Add deb-src twins of debian.sources' stanzas (same URIs, suites, Signed-By)."""
    if deb_src_configured():
        return
    main = SOURCES_DIR / "debian.sources"
    if not main.is_file():
        raise BuildError(f"no deb-src entry and no {main} to derive one from; add a deb-src "
                         "entry for Debian's main archive by hand")
    if os.geteuid() != 0:
        raise BuildError(f"need a deb-src entry: run as root, or write {DEB_SRC_FILE} "
                         f"like {main} with 'Types: deb-src'")
    out = ["# written by vmforge guests/build.py: source packages for guest builds"]
    for st in _deb822_stanzas(main.read_text()):
        if "deb" not in st.get("Types", "").split():
            continue
        st = {**st, "Types": "deb-src"}
        out.append("")
        out.extend(f"{k}: {v}" for k, v in st.items())
    DEB_SRC_FILE.write_text("\n".join(out) + "\n")
    log(f"wrote {DEB_SRC_FILE}")
    global _apt_updated
    _apt_updated = False
    apt_update()


# ---------------------------------------------------------------- products

@dataclass
class Product:
    name: str
    main_file: str
    files: tuple[str, ...]
    inputs: Callable[[], dict[str, object]]
    build: Callable[[Product, Path, Path, argparse.Namespace], None]
    deps: tuple[str, ...] = ()
    packages: tuple[str, ...] = field(default=())

    def digest(self) -> str:
        blob = json.dumps(self.inputs(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def directory(self) -> Path:
        return cache_root() / f"{self.name}-{self.digest()}"

    def is_built(self) -> bool:
        d = self.directory()
        return (d / "manifest.json").is_file() and all((d / f).is_file() for f in self.files)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def linux_inputs() -> dict[str, object]:
    return {
        "recipe": RECIPE_VERSIONS["linux-riscv64"],
        "fragment": file_digest(RISCV64 / "linux.config"),
        "packages": {p: package_version(p) for p in (LINUX_SOURCE_PKG, *TOOLCHAIN_PKGS)},
    }


def busybox_inputs() -> dict[str, object]:
    return {
        "recipe": RECIPE_VERSIONS["busybox-riscv64"],
        "config": BUSYBOX_CONFIG,
        "packages": {p: package_version(p) for p in ("busybox", *TOOLCHAIN_PKGS, *LIBC_PKGS)},
    }


def initramfs_inputs() -> dict[str, object]:
    return {
        "recipe": RECIPE_VERSIONS["initramfs-riscv64"],
        "init": file_digest(RISCV64 / "init"),
        "udhcpc": file_digest(RISCV64 / "udhcpc.script"),
        "busybox": PRODUCTS["busybox-riscv64"].digest(),
    }


def linux_amd64_inputs() -> dict[str, object]:
    pkg, version = amd64_kernel_package()
    return {"recipe": RECIPE_VERSIONS["linux-amd64"], "packages": {pkg: version}}


# ------------------------------------------------------------------- linux

def linux_source_tree() -> Path:
    """Debian's linux-source tarball, extracted once per package version."""
    version = installed_version(LINUX_SOURCE_PKG)
    if version is None:
        raise BuildError(f"{LINUX_SOURCE_PKG} is not installed")
    tarballs = sorted(Path("/usr/src").glob(f"{LINUX_SOURCE_PKG}.tar.*"))
    if not tarballs:
        raise BuildError(f"no /usr/src/{LINUX_SOURCE_PKG}.tar.* from {LINUX_SOURCE_PKG}")
    dest = cache_root() / "src" / f"{LINUX_SOURCE_PKG}_{version}"
    tree = dest / LINUX_SOURCE_PKG
    if (dest / ".extracted").is_file():
        return tree
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    log(f"extracting {tarballs[0]} into {dest}")
    run(["tar", "-xf", tarballs[0], "-C", dest])
    if not (tree / "Makefile").is_file():
        raise BuildError(f"{tarballs[0]} did not unpack to {tree}")
    (dest / ".extracted").write_text(version + "\n")
    return tree


def parse_config(text: str) -> dict[str, str]:
    """CONFIG_X=v -> v and '# CONFIG_X is not set' -> 'n'."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
            continue
        m = re.match(r"^# (CONFIG_\w+) is not set$", line.strip())
        if m:
            out[m.group(1)] = "n"
    return out


def build_linux(product: Product, out: Path, work: Path, args: argparse.Namespace) -> None:
    src = linux_source_tree()
    obj = work / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    kmake = [*nice_prefix(), "make", "-C", str(src), f"O={obj}", "ARCH=riscv",
             f"CROSS_COMPILE={CROSS}", "KBUILD_BUILD_USER=vmforge",
             "KBUILD_BUILD_HOST=vmforge", "KBUILD_BUILD_TIMESTAMP=2023-01-01"]
    fragment = RISCV64 / "linux.config"
    run([*kmake, "tinyconfig"])
    run([str(src / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(obj),
         str(obj / ".config"), str(fragment)], cwd=src,
        env={"ARCH": "riscv", "CROSS_COMPILE": CROSS})
    run([*kmake, "olddefconfig"])
    want = parse_config(fragment.read_text())
    got = parse_config((obj / ".config").read_text())
    bad = [f"{k}: wanted {v}, got {got.get(k, 'n (absent)')}" for k, v in want.items()
           if got.get(k, "n") != v]
    if bad:
        raise BuildError("kernel config fragment did not survive olddefconfig "
                         "(a dependency is missing):\n  " + "\n  ".join(bad))
    t0 = time.monotonic()
    run([*kmake, f"-j{args.jobs}", "Image"])
    product_meta(out)["build_seconds"] = round(time.monotonic() - t0, 1)
    shutil.copy2(obj / "arch/riscv/boot/Image", out / "Image")
    shutil.copy2(obj / "vmlinux", out / "vmlinux")
    shutil.copy2(obj / "System.map", out / "System.map")
    shutil.copy2(obj / ".config", out / "config")


# ----------------------------------------------------------------- busybox

def busybox_source_version() -> str:
    # a binNMU suffix (+b1) belongs to the binary, not to the source package
    return re.sub(r"\+b\d+$", "", package_version("busybox"))


def busybox_source_tree() -> Path:
    """``apt-get source busybox`` (Debian patches applied), once per version."""
    ensure_deb_src()
    if package_version("busybox") == "none":
        apt_update()
    src_version = busybox_source_version()
    dest = cache_root() / "src" / f"busybox_{src_version.replace(':', '_')}"  # no ':' for make
    if (dest / ".extracted").is_file():
        return Path((dest / ".extracted").read_text().strip())
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    proc = run([*APT_GET, "source", "-q", f"busybox={src_version}"], cwd=dest, check=False)
    if proc.returncode != 0:
        apt_update()
        run([*APT_GET, "source", "-q", f"busybox={src_version}"], cwd=dest)
    trees = [p for p in dest.iterdir() if p.is_dir() and (p / "Makefile").is_file()]
    if len(trees) != 1:
        raise BuildError(f"apt-get source busybox left {trees} in {dest}")
    (dest / ".extracted").write_text(str(trees[0]) + "\n")
    return trees[0]


def set_kconfig(path: Path, values: dict[str, str | None]) -> None:
    lines = [ln for ln in path.read_text().splitlines()
             if not any(re.match(rf"^(# )?{k}[= ]", ln) for k in values)]
    for k, v in values.items():
        lines.append(f"{k}={v}" if v is not None else f"# {k} is not set")
    path.write_text("\n".join(lines) + "\n")


def build_busybox(product: Product, out: Path, work: Path, args: argparse.Namespace) -> None:
    src = busybox_source_tree()
    obj = work / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    bmake = [*nice_prefix(), "make", "-C", str(src), f"O={obj}", "ARCH=riscv",
             f"CROSS_COMPILE={CROSS}", "KBUILD_VERBOSE=0"]
    debian_static = src / "debian/config/pkg/static"
    if debian_static.is_file():
        shutil.copy2(debian_static, obj / ".config")
    else:
        run([*bmake, "defconfig"])
    set_kconfig(obj / ".config", BUSYBOX_CONFIG)
    env = {"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "KCONFIG_NOTIMESTAMP": "1"}
    run([*bmake, "oldconfig"], stdin=subprocess.DEVNULL, env=env)
    got = parse_config((obj / ".config").read_text())
    bad = [k for k, v in BUSYBOX_CONFIG.items() if got.get(k, "n") != (v or "n")]
    if bad:
        raise BuildError(f"busybox config did not keep {bad}")
    t0 = time.monotonic()
    run([*bmake, f"-j{args.jobs}", "busybox", "busybox.links"], env=env)
    product_meta(out)["build_seconds"] = round(time.monotonic() - t0, 1)
    shutil.copy2(obj / "busybox", out / "busybox")
    shutil.copy2(obj / "busybox.links", out / "busybox.links")
    shutil.copy2(obj / ".config", out / "config")
    info = run(["file", out / "busybox"], capture=True, check=False).stdout
    if info and ("RISC-V" not in info or "statically linked" not in info):
        raise BuildError(f"busybox is not a static RISC-V binary: {info.strip()}")


# ------------------------------------------------------- linux-amd64 (Debian's)

@functools.cache
def amd64_kernel_package() -> tuple[str, str]:
    """The image package the candidate ``linux-image-amd64`` depends on and the version it
    pins (``linux-image-6.1.0-57-amd64``, ``6.1.192-3``); ('none', 'none') if apt does not
    know it.  One ``apt-cache show`` (about a second here) answers both."""
    if not shutil.which("apt-cache"):
        return "none", "none"
    proc = run(["apt-cache", "show", "--no-all-versions", AMD64_KERNEL_META],
               capture=True, check=False)
    m = re.search(r"^Depends:.*?\b(linux-image-[^\s,(]+)\s*\(=\s*([^)\s]+)\)", proc.stdout, re.M)
    return (m.group(1), m.group(2)) if m else ("none", "none")


def bzimage_payload(bzimage: bytes) -> bytes:
    """The compressed kernel inside a bzImage: setup header fields payload_offset (0x248)
    and payload_length (0x24c), counted from the protected-mode part, which starts at
    (setup_sects + 1) * 512 (setup_sects 0 means 4); Documentation/arch/x86/boot.rst."""
    if bzimage[0x202:0x206] != b"HdrS" or int.from_bytes(bzimage[0x206:0x208], "little") < 0x208:
        raise BuildError("not a bzImage with boot protocol 2.08 or later (payload fields)")
    setup_sects = bzimage[0x1F1] or 4
    offset = int.from_bytes(bzimage[0x248:0x24C], "little")
    length = int.from_bytes(bzimage[0x24C:0x250], "little")
    start = (setup_sects + 1) * 512 + offset
    if start + length > len(bzimage):
        raise BuildError("bzImage payload runs past the end of the file")
    return bzimage[start:start + length]


def elf_note_types(elf: bytes, owner: bytes) -> set[int]:
    """The types of the ELF64 notes named ``owner`` in the PT_NOTE segments."""
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    phentsize, phnum = (int.from_bytes(elf[o:o + 2], "little") for o in (0x36, 0x38))
    types: set[int] = set()
    for i in range(phnum):
        ph = elf[phoff + i * phentsize:phoff + (i + 1) * phentsize]
        if int.from_bytes(ph[0:4], "little") != 4:  # PT_NOTE
            continue
        pos = int.from_bytes(ph[8:16], "little")
        end = pos + int.from_bytes(ph[32:40], "little")
        while pos + 12 <= end:
            namesz, descsz, ntype = (int.from_bytes(elf[pos + o:pos + o + 4], "little")
                                     for o in (0, 4, 8))
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == owner:
                types.add(ntype)
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return types


def build_linux_amd64(product: Product, out: Path, work: Path, args: argparse.Namespace) -> None:
    pkg, version = amd64_kernel_package()
    if pkg == "none":
        apt_update()
        amd64_kernel_package.cache_clear()
        pkg, version = amd64_kernel_package()
        if pkg == "none":
            raise BuildError(f"apt-cache show {AMD64_KERNEL_META} names no linux-image package "
                             "with a pinned version")
    run([*APT_GET, "download", "-q", f"{pkg}={version}"], cwd=work)
    debs = sorted(work.glob(f"{pkg}_*.deb"))
    if len(debs) != 1:
        raise BuildError(f"apt-get download {pkg} left {debs} in {work}")
    run(["dpkg-deb", "-x", debs[0], work / "root"])
    boot = work / "root" / "boot"
    release = pkg.removeprefix("linux-image-")
    for src, dst in ((f"vmlinuz-{release}", "vmlinuz"), (f"config-{release}", "config")):
        if not (boot / src).is_file():
            raise BuildError(f"{debs[0].name} has no /boot/{src}")
        shutil.copy2(boot / src, out / dst)
    payload = bzimage_payload((out / "vmlinuz").read_bytes())
    if not payload.startswith(b"\xfd7zXZ\0"):
        raise BuildError(f"the bzImage payload is not xz (starts {payload[:6].hex()})")
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    vmlinux = dec.decompress(payload)  # the 4 bytes after the stream: its size, le32
    if not dec.eof or len(vmlinux) != int.from_bytes(payload[-4:], "little"):
        raise BuildError("the bzImage's xz payload did not decompress to its stated size")
    if vmlinux[:5] != b"\x7fELF\x02" or 18 not in elf_note_types(vmlinux, b"Xen"):
        raise BuildError("the decompressed kernel is not an ELF64 with a PVH entry note "
                         "(Xen note XEN_ELFNOTE_PHYS32_ENTRY, 18)")
    (out / "vmlinux").write_bytes(vmlinux)


# --------------------------------------------------------------- initramfs

class CpioWriter:
    """A minimal 'newc' cpio archive writer: owner root, fixed mtime, reproducible."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, body: bytes = b"", nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if name in self.names:
            return
        self.names.add(name)
        fields = [self.ino, mode, 0, 0, nlink, 0, len(body), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]
        self.ino += 1
        self.data += b"070701" + "".join(f"{f:08x}" for f in fields).encode()
        self.data += name.encode() + b"\0"
        self._pad()
        self.data += body
        self._pad()

    def _pad(self) -> None:
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name: str, perm: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755, nlink=2)
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, body: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, body)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, nlink=1)
        self.data += b"\0" * (-len(self.data) % 512)
        return bytes(self.data)


def build_initramfs(product: Product, out: Path, work: Path, args: argparse.Namespace) -> None:
    bb = PRODUCTS["busybox-riscv64"].directory()
    cpio = CpioWriter()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
              "root", "mnt", "run", "var"):
        cpio.directory(d, 0o1777 if d == "tmp" else 0o755)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("init", (RISCV64 / "init").read_bytes(), 0o755)
    cpio.file("bin/busybox", (bb / "busybox").read_bytes(), 0o755)
    for link in (bb / "busybox.links").read_text().split():
        link = link.strip("/")
        if link and link != "bin/busybox":
            cpio.symlink(link, "/bin/busybox")
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("etc/group", b"root:x:0:\n")
    cpio.file("etc/hostname", b"vmforge\n")
    cpio.directory("etc/udhcpc", 0o755)        # Debian's busybox looks for it there
    cpio.file("etc/udhcpc/default.script", (RISCV64 / "udhcpc.script").read_bytes(), 0o755)
    raw = cpio.finish()
    with (out / "initramfs.cpio.gz").open("wb") as fh, \
            gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=9) as gz:
        gz.write(raw)


# --------------------------------------------------------------- machinery

PRODUCTS: dict[str, Product] = {
    "linux-riscv64": Product("linux-riscv64", "Image",
                             ("Image", "vmlinux", "System.map", "config"),
                             linux_inputs, build_linux, packages=LINUX_BUILD_PKGS),
    "busybox-riscv64": Product("busybox-riscv64", "busybox",
                               ("busybox", "busybox.links", "config"),
                               busybox_inputs, build_busybox, packages=BUSYBOX_BUILD_PKGS),
    "initramfs-riscv64": Product("initramfs-riscv64", "initramfs.cpio.gz",
                                 ("initramfs.cpio.gz",), initramfs_inputs, build_initramfs,
                                 deps=("busybox-riscv64",)),
    "linux-amd64": Product("linux-amd64", "vmlinux", ("vmlinux", "vmlinuz", "config"),
                           linux_amd64_inputs, build_linux_amd64),
}

_meta: dict[Path, dict[str, object]] = {}


def product_meta(out: Path) -> dict[str, object]:
    return _meta.setdefault(out, {})


def build(name: str, args: argparse.Namespace) -> Path:
    product = PRODUCTS[name]
    for dep in product.deps:  # --force rebuilds the named products, not their inputs
        build(dep, argparse.Namespace(**{**vars(args), "force": False}))
    final = product.directory()
    if product.is_built() and not args.force:
        log(f"{name}: up to date in {final}")
        return final
    ensure_packages(product.packages)
    final = product.directory()  # installing may have changed a package version
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    work = root / "work" / final.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    t0 = time.monotonic()
    log(f"{name}: building into {final}")
    try:
        product.build(product, out, work, args)
        final = product.directory()  # apt may have learnt a package's version meanwhile
        meta = {"name": name, "inputs": product.inputs(), "main_file": product.main_file,
                "files": list(product.files), "total_seconds": round(time.monotonic() - t0, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **product_meta(out)}
        (out / "manifest.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for f in out.iterdir():
            f.chmod(f.stat().st_mode | 0o444)
        out.chmod(0o755)
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{name}: built in {time.monotonic() - t0:.0f} s")
    return final


def firmware_paths() -> dict[str, Path]:
    """Debian's prebuilt OpenSBI and U-Boot images (packages opensbi, u-boot-qemu)."""
    return dict(FIRMWARE)


def stale_paths() -> list[Path]:
    """Cache entries (products, work trees, sources) no current recipe points at."""
    root = cache_root()
    keep = {p.directory().name for p in PRODUCTS.values()}
    stale = [d for d in root.glob("*-*") if d.is_dir() and d.name not in keep
             and d.name.rsplit("-", 1)[0] in PRODUCTS]
    stale += [d for d in (root / "work").glob("*") if d.name not in keep]
    stale += [d for d in root.glob(".*-*.*") if d.is_dir()]  # interrupted builds
    wanted_src = {f"{LINUX_SOURCE_PKG}_{package_version(LINUX_SOURCE_PKG)}",
                  "busybox_" + busybox_source_version().replace(":", "_")}
    stale += [d for d in (root / "src").glob("*") if d.name not in wanted_src]
    return sorted(stale)


def expand(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        for m in (list(PRODUCTS) if n == "all" else [n]):
            if m not in PRODUCTS:
                raise SystemExit(f"unknown product {m!r}; known: all, {', '.join(PRODUCTS)}")
            if m not in out:
                out.append(m)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("products", nargs="*", metavar="NAME",
                    help=f"what to build: all, {', '.join(PRODUCTS)}")
    ap.add_argument("--print-path", metavar="NAME",
                    help="print the product's main file; exit 1 if it is not built")
    ap.add_argument("--print-dir", metavar="NAME",
                    help="print the product's directory; exit 1 if it is not built")
    ap.add_argument("--list", action="store_true", help="list products and whether built")
    ap.add_argument("--firmware", action="store_true",
                    help="print Debian's prebuilt firmware paths")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="parallel make jobs (2)")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--keep-work", action="store_true", help="keep the build tree")
    ap.add_argument("--clean-stale", action="store_true",
                    help="delete cached products, sources and work trees that the current "
                         "recipes no longer use")
    args = ap.parse_args(argv)

    for opt, attr in (("print_path", "main"), ("print_dir", "dir")):
        name = getattr(args, opt)
        if name:
            if name not in PRODUCTS:
                ap.error(f"unknown product {name!r}; known: {', '.join(PRODUCTS)}")
            p = PRODUCTS[name]
            d = p.directory()
            print(d / p.main_file if attr == "main" else d)
            return 0 if p.is_built() else 1
    if args.firmware:
        for key, path in firmware_paths().items():
            pkgs = " ".join(FIRMWARE_PKGS)
            hint = "" if path.is_file() else f"  (missing: apt-get install {pkgs})"
            print(f"{key} {path}{hint}")
        return 0
    if args.clean_stale:
        for path in stale_paths():
            log(f"removing {path}")
            shutil.rmtree(path, ignore_errors=True)
        return 0
    if args.list:
        for p in PRODUCTS.values():
            print(f"{p.name:20} {'built  ' if p.is_built() else 'missing'} {p.directory()}")
        return 0
    if not args.products:
        ap.print_help()
        return 2
    try:
        for name in expand(args.products):
            d = build(name, args)
            for f in PRODUCTS[name].files:
                print(f"{name} {d / f}")
    except BuildError as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
