"""The sector cipher in OpenSSL's libcrypto (``vmforge._fast.sector_cipher``) against
the ``cryptography`` path it replaces: byte for byte for every cipher, mode and IV
generator, odd lengths and sector numbers; images qemu-img made and images vmforge
wrote through it alike; and a build without the module (simulated: the import
fails) still reading and writing through ``cryptography``."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from luks_helpers import (
    PASSPHRASE,
    image_opts,
    qemu_create,
    qemu_img_luks,
    qemu_io_luks,
    qemu_to_raw,
)

from vmforge.testing.qemu_tools import needs_qemu, pattern
from vmforge_luks import Luks
from vmforge_luks import ciphers as ciphers_mod
from vmforge_luks.ciphers import SectorCipher

MODULE = "vmforge._fast.sector_cipher"
MiB = 1 << 20

#: (cipher, mode spec, key bytes): every combination the plugin takes
COMBOS = [
    (cipher, spec, key)
    for cipher, keys in (("aes", (16, 24, 32)), ("cast5", (16,)))
    for mode in ("ecb", "cbc", "xts", "ctr")
    for spec in (["ecb"] if mode == "ecb" else
                  [f"{mode}-plain", f"{mode}-plain64", f"{mode}-essiv:sha256"])
    for key in ((2 * k for k in keys if k != 24) if mode == "xts" else keys)
    if not (cipher == "cast5" and (mode == "xts" or spec.endswith("sha256")))
]


@contextmanager
def _cryptography_only() -> Iterator[None]:
    """The module missing from this process, as in a build without it (and back after)."""
    saved = sys.modules.get(MODULE)
    sys.modules[MODULE] = None  # type: ignore[assignment]   # import raises ImportError
    try:
        yield
    finally:
        if saved is None:
            del sys.modules[MODULE]
        else:
            sys.modules[MODULE] = saved


@pytest.fixture
def no_module() -> Iterator[None]:
    with _cryptography_only():
        yield


def _pair(cipher: str, spec: str, key: bytes, sector: int) -> tuple[SectorCipher,
                                                                    SectorCipher]:
    """The cipher as built here, and the same through ``cryptography``."""
    fast = SectorCipher(cipher, spec, key, sector)
    with _cryptography_only():
        slow = SectorCipher(cipher, spec, key, sector)
    assert not slow.native
    return fast, slow


def _run(c: SectorCipher, encrypt: bool, first: int, data: bytes) -> bytes | type:
    try:
        return c.encrypt(first, data) if encrypt else c.decrypt(first, data)
    except ValueError:
        return ValueError
    except Exception as exc:   # cryptography: this mode of this cipher not supported
        return type(exc)


def _legacy_module_present() -> bool | None:
    """Whether OpenSSL's legacy provider loads here, as the ``openssl`` tool says
    (None without the tool)."""
    if shutil.which("openssl") is None:
        return None
    r = subprocess.run(["openssl", "list", "-providers", "-provider", "legacy"],
                       capture_output=True, text=True, check=False)
    return r.returncode == 0 and "legacy" in r.stdout


def test_openssl_does_every_combination_it_has() -> None:
    """Every aes combination runs in libcrypto, XTS in bulk; cast5 too (ecb and cbc,
    from OpenSSL's legacy provider, loaded in a library context of the module's own)
    where that provider is installed; cast5-ctr, which OpenSSL has not, stays on
    cryptography."""
    legacy = _legacy_module_present()
    for cipher, spec, k in COMBOS:
        c = SectorCipher(cipher, spec, bytes(range(1, k + 1)))
        want = cipher == "aes" or (legacy and not spec.startswith("ctr"))
        if cipher == "aes" or legacy is not None:
            assert c.native == want, (cipher, spec, k)
        if c.native:
            assert c._fast.bulk_xts == spec.startswith("xts"), (cipher, spec, k)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: f"{c[0]}-{c[2] * 8}-{c[1]}")
@pytest.mark.parametrize("sector", [512, 4096])
def test_same_bytes_as_cryptography(combo: tuple[str, str, int], sector: int) -> None:
    cipher, spec, k = combo
    rng = random.Random(f"{combo}{sector}")
    fast, slow = _pair(cipher, spec, rng.randbytes(k), sector)
    lengths = [0, 16, 256, 512, 528, 1000, sector, 3 * sector, 7 * sector + 256,
               33 * sector + 16, 70 * sector, 5 * sector + 8, 10]
    firsts = [0, 1, 7, 0xFFFFFFFF - 2, (1 << 40) + 3, (1 << 64) - 3]
    for n in lengths:
        data = rng.randbytes(n)
        for first in firsts:
            for encrypt in (True, False):
                want = _run(slow, encrypt, first, data)
                assert _run(fast, encrypt, first, data) == want, (n, first, encrypt)
                if isinstance(want, bytes):   # in place, into a buffer of the caller's
                    buf = bytearray(data)
                    if not encrypt:
                        fast.decrypt_inplace(first, memoryview(buf))
                        assert buf == want


def test_threads_share_one_cipher() -> None:
    """Two threads on one cipher (the contexts are copied per call): each gets its own
    sectors right."""
    from concurrent.futures import ThreadPoolExecutor

    fast, slow = _pair("aes", "xts-plain64", os.urandom(64), 512)
    data = [os.urandom(64 * 1024) for _ in range(8)]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda i: fast.encrypt(i * 1000, data[i]), range(8)))
    assert got == [slow.encrypt(i * 1000, d) for i, d in enumerate(data)]


def test_pbkdf2_once_per_slot_with_the_headers_iterations(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Opening runs PBKDF2 twice for the slot that opens (its key, then the master
    key's digest), each with the header's iteration count: no more."""
    img = tmp_path / "p.luks"
    Luks.create(str(img), MiB, passphrase=PASSPHRASE, iter_time=1)
    calls: list[int] = []
    real = ciphers_mod.pbkdf2

    def counted(hash_name: str, secret: bytes, salt: bytes, iterations: int,
                length: int) -> bytes:
        calls.append(iterations)
        return real(hash_name, secret, salt, iterations, length)

    from vmforge_luks import driver
    monkeypatch.setattr(driver, "pbkdf2", counted)
    with Luks.open(str(img), passphrase=PASSPHRASE) as drv:
        h = drv.header
        assert calls == [h.slots[0].iterations, h.mk_iterations]
        drv.read(0, MiB)
    assert len(calls) == 2


QEMU_COMBOS = [("aes-256", "xts", "plain64", None), ("aes-128", "xts", "plain", None),
               ("aes-256", "cbc", "essiv", "sha256"), ("aes-128", "ctr", "plain64", None),
               ("cast5-128", "cbc", "plain64", None)]


def _opts(combo: tuple[str, str, str, str | None]) -> dict[str, str]:
    alg, mode, ivgen, ivhash = combo
    return {"cipher_alg": alg, "cipher_mode": mode, "ivgen_alg": ivgen,
            **({"ivgen_hash_alg": ivhash} if ivhash else {})}


def _odd_writes() -> list[tuple[int, bytes]]:
    return [(0, pattern(513, 1)), (4095, pattern(MiB + 3, 2)), (2 * MiB + 512, pattern(512, 3)),
            (4 * MiB - 700, pattern(700, 4))]


def _interop(tmp_path: Path, combo: tuple[str, str, str, str | None],
             native: bool | None) -> None:
    """(``native``: whether libcrypto should do it; None: unknown here)"""
    img = tmp_path / "q.luks"
    qemu_create(img, 4 * MiB, **_opts(combo))
    qemu_io_luks(img, "write -P 0x5a 1000 70000", f"write -P 0x33 {3 * MiB} 4096")
    theirs = qemu_to_raw(img, tmp_path / "q.raw")
    with Luks.open(str(img), readonly=False, passphrase=PASSPHRASE) as drv:
        assert native is None or drv._cipher.native == native
        assert drv.read(0, drv.size) == theirs   # the decryption of zeros too
        odd = bytearray(300_000)
        drv.preadv(777, [memoryview(odd)])
        assert odd == theirs[777:777 + len(odd)]
        model = bytearray(theirs)
        for off, data in _odd_writes():
            drv.write(off, data)
            model[off:off + len(data)] = data
    model_path = tmp_path / "model.raw"
    model_path.write_bytes(model)
    qemu_img_luks("compare", "--image-opts", image_opts(img),
                  f"driver=raw,file.filename={model_path}")


@needs_qemu
@pytest.mark.parametrize("combo", QEMU_COMBOS, ids=lambda c: "-".join(filter(None, c)))
def test_qemu_img_interop(tmp_path: Path, combo: tuple[str, str, str, str | None]) -> None:
    """qemu-img's images read byte for byte; what vmforge writes at odd offsets,
    qemu-img compares equal to the model."""
    _interop(tmp_path, combo,
             native=True if combo[0].startswith("aes") else _legacy_module_present())


@needs_qemu
def test_without_the_module(tmp_path: Path, no_module: None) -> None:
    """A build without ``vmforge._fast.sector_cipher``: the same, through
    ``cryptography``."""
    _interop(tmp_path, QEMU_COMBOS[0], native=False)


def test_cryptography_not_imported_when_libcrypto_does_it(tmp_path: Path) -> None:
    """Opening, reading and writing an aes image never imports ``cryptography``
    (tens of milliseconds of every command before)."""
    img = tmp_path / "c.luks"
    Luks.create(str(img), MiB, passphrase=PASSPHRASE, iter_time=1)
    code = ("import sys\nfrom vmforge_luks import Luks\n"
            f"with Luks.open({str(img)!r}, readonly=False, passphrase={PASSPHRASE!r}) as d:\n"
            "    d.write(1000, b'x' * 5000)\n    assert d.read(1000, 5000) == b'x' * 5000\n"
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
    assert r.stdout.strip() == "[]"
