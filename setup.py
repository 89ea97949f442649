"""Build the core distribution ``vmforge``.

``vmforge`` is the Python package in ``src/core``; ``vmforge._fast`` holds the
Cython hot paths in ``src/_fast``.  Every ``src/_fast/*.pyx`` becomes a compiled
extension module ``vmforge._fast.<name>``; there are no pure-Python fallbacks.
"""

from __future__ import annotations

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent.resolve()
FAST = Path("src/_fast")
#: C libraries a module links with (sector_cipher: OpenSSL's libcrypto, libssl-dev)
LIBRARIES = {"sector_cipher": ["crypto"]}


def _pxd_include_dir() -> str:
    """A tree ``vmforge/_fast -> src/_fast`` so ``cimport vmforge._fast.x`` resolves.

    Cython finds ``.pxd`` files by their dotted name; the sources live under
    ``src/_fast`` (mapped by ``package_dir``), so the build gives Cython a small
    include tree that mirrors the installed package layout.
    """
    root = HERE / "build" / "pxd"
    pkg = root / "vmforge"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.pxd").touch()
    link = pkg / "_fast"
    target = HERE / FAST
    if not link.is_symlink() or link.resolve() != target:
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(target, link)
    return str(root)


def _core_subpackages() -> list[str]:
    """Every package below ``src/core`` (a folder with ``__init__.py``)."""
    core = HERE / "src" / "core"
    return sorted(
        "vmforge." + ".".join(p.parent.relative_to(core).parts)
        for p in core.rglob("__init__.py")
        if p.parent != core
    )


def _extensions() -> list[Extension]:
    exts = []
    for pyx in sorted((HERE / FAST).glob("*.pyx")):
        name = f"vmforge._fast.{pyx.stem}"
        exts.append(
            Extension(
                name,
                [str(FAST / pyx.name)],
                libraries=LIBRARIES.get(pyx.stem, []),
                extra_compile_args=["-O2", "-fno-strict-aliasing", "-Wno-unused-function"],
            )
        )
    return cythonize(
        exts,
        include_path=[_pxd_include_dir()],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )


setup(
    name="vmforge",
    version="0.1.0",
    description="A hackable full-system emulator and VMM in Python and Cython, "
    "with disk formats, devices and machines as plugins",
    long_description=(HERE / "README.md").read_text(encoding="utf-8")
    if (HERE / "README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    package_dir={"vmforge": "src/core", "vmforge._fast": "src/_fast"},
    packages=["vmforge", "vmforge._fast", *_core_subpackages()],
    package_data={"vmforge._fast": ["*.pxd", "*.pyx"], "vmforge": ["py.typed"]},
    ext_modules=_extensions(),
    install_requires=["pluggy>=1.3", "importlib-metadata>=6.0"],
    extras_require={
        # unicorn: the CPU's differential tests and benchmark; dissect.hypervisor:
        # the disk-read benchmark's third party; zstandard: qcow2's zstd clusters;
        # mypy: make typecheck
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6", "ruff>=0.5",
                 "unicorn>=2.0", "dissect.hypervisor>=3", "zstandard>=0.20", "mypy>=1.8",
                 "qemu.qmp>=0.0.3"],
    },
    entry_points={
        "console_scripts": ["vmforge = vmforge.cli.main:entry"],
        # the core registers its own virtio transport (boards create it around a device)
        "vmforge.device": ["virtio-mmio = vmforge.virtio.mmio:VirtioMmioTransport",
                           # virtio-pci wrappers: the transport plus the -device variant
                           "virtio-blk-pci = vmforge.virtio.pci:VirtioBlkPci",
                           "virtio-net-pci = vmforge.virtio.pci:VirtioNetPci",
                           "virtio-rng-pci = vmforge.virtio.pci:VirtioRngPci",
                           "virtio-serial-pci = vmforge.virtio.pci:VirtioSerialPci",
                           # PCI Express root port with a hot-plug slot
                           "pcie-root-port = vmforge.pci.root_port:PcieRootPort"],
        # the conformance kit for disk-format authors (pytest --vmforge-format NAME)
        "pytest11": ["vmforge = vmforge.testing.pytest_plugin"],
    },
    zip_safe=False,
)
