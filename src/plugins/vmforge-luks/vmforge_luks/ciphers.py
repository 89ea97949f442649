"""The cryptographic pieces of LUKS1, over the ``cryptography`` library and hashlib.

- :class:`SectorCipher`: a cipher, a chaining mode and an IV generator
  (``plain``, ``plain64``, ``essiv:HASH``) encrypting 512-byte sectors, each
  with the IV of its sector number, as dm-crypt and QEMU do; in OpenSSL's
  libcrypto (``vmforge._fast.sector_cipher``, one keyed context, a C loop over
  the sectors) wherever it has the cipher, else in ``cryptography``. serpent and
  twofish, which neither has, are refused;
- :func:`pbkdf2`, :func:`iterations_for`: key derivation and its calibration;
- :func:`af_split`, :func:`af_merge`: the anti-forensic splitter of the LUKS1
  specification (stripes diffused with the header's hash).

Nothing here logs or formats a key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cryptography.hazmat.primitives.ciphers import algorithms, modes

__all__ = ["CIPHERS", "HASHES", "MODES", "SECTOR", "CipherError", "SectorCipher", "af_merge",
           "af_split", "check_spec", "iterations_for", "pbkdf2"]

SECTOR = 512
#: hashes the header may name (hashlib's names, as LUKS spells them)
HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160")
#: chaining modes (``ecb`` takes no IV generator)
MODES = ("ecb", "cbc", "xts", "ctr")
IVGENS = ("plain", "plain64", "essiv")


def _primitives() -> Any:
    """cryptography's cipher primitives, imported on first use: every vmforge command
    may probe image formats, and importing cryptography costs more than the rest of
    this plugin."""
    from cryptography.hazmat.primitives import ciphers

    return ciphers


class CipherError(ValueError):
    """A cipher, mode, IV generator or hash this library cannot do (the message says which)."""


def _cast5() -> type:
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import CAST5
    except ImportError:  # older cryptography
        CAST5 = _primitives().algorithms.CAST5  # type: ignore[attr-defined]
    return CAST5  # type: ignore[no-any-return]


#: LUKS cipher name -> (key sizes in bytes, block size); serpent and twofish are refused
CIPHERS: dict[str, tuple[tuple[int, ...], int]] = {
    "aes": ((16, 24, 32), 16),
    "cast5": ((16,), 8),
    "serpent": ((16, 24, 32), 16),
    "twofish": ((16, 24, 32), 16),
}


def _algorithm(name: str, key: bytes) -> algorithms.BlockCipherAlgorithm:
    if name == "aes":
        return _primitives().algorithms.AES(key)
    if name == "cast5":
        return _cast5()(key)  # type: ignore[no-any-return]
    raise CipherError(f"cipher {name} is not available in the cryptography library")


def check_hash(name: str) -> None:
    """Raise :class:`CipherError` unless hashlib can compute ``name`` here."""
    if name not in HASHES:
        raise CipherError(f"hash {name!r} is not one of {', '.join(HASHES)}")
    try:
        hashlib.new(name)
    except ValueError:
        raise CipherError(f"hash {name} is not available in this Python's OpenSSL") from None


def pbkdf2(hash_name: str, secret: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    """PBKDF2-HMAC of ``secret``."""
    return hashlib.pbkdf2_hmac(hash_name, secret, salt, iterations, length)


def iterations_for(hash_name: str, milliseconds: int, key_len: int) -> int:
    """How many PBKDF2 iterations of ``hash_name`` take ``milliseconds`` here (QEMU
    and cryptsetup calibrate the same way)."""
    count = 1000
    while True:
        start = time.perf_counter()
        pbkdf2(hash_name, b"calibration", b"\0" * 32, count, key_len)
        spent = time.perf_counter() - start
        if spent >= 0.02 or count >= 1 << 24:
            break
        count *= 4
    return int(count / max(spent, 1e-9) * milliseconds / 1000)


def _diffuser(hash_name: str, n: int) -> Callable[[bytes], bytes]:
    """The specification's diffusion of ``n``-byte blocks: each digest-sized piece
    ``i`` replaced by ``H(be32(i) || piece)`` cut to its length (run 4000 times a
    key slot: the hash's constructor and the prefixes are looked up once)."""
    new = getattr(hashlib, hash_name, None) or functools.partial(hashlib.new, hash_name)
    size = new().digest_size
    pieces = [(i.to_bytes(4, "big"), k, k + size) for i, k in enumerate(range(0, n, size))]

    def diffuse(block: bytes) -> bytes:
        return b"".join([new(p + block[a:b]).digest() for p, a, b in pieces])[:n]

    return diffuse


def _af(material: bytes, n: int, stripes: int, hash_name: str) -> int:
    """The first ``stripes - 1`` blocks of ``material`` XORed and diffused in turn,
    as a little-endian integer."""
    diffuse = _diffuser(hash_name, n)
    d = 0
    for i in range(stripes - 1):
        d = int.from_bytes(diffuse((d ^ int.from_bytes(material[i * n:(i + 1) * n],
                                                       "little")).to_bytes(n, "little")),
                           "little")
    return d


def af_split(key: bytes, stripes: int, hash_name: str) -> bytes:
    """``key`` spread over ``stripes`` blocks (random ones, then the last that merges
    back to ``key``)."""
    n = len(key)
    material = os.urandom(n * (stripes - 1))
    last = _af(material, n, stripes, hash_name) ^ int.from_bytes(key, "little")
    return material + last.to_bytes(n, "little")


def af_merge(material: bytes, key_len: int, stripes: int, hash_name: str) -> bytes:
    """The key :func:`af_split` spread into ``material``."""
    n = key_len
    last = int.from_bytes(material[(stripes - 1) * n:stripes * n], "little")
    return (_af(material, n, stripes, hash_name) ^ last).to_bytes(n, "little")


def parse_mode(spec: str) -> tuple[str, str | None, str | None]:
    """``"xts-plain64"`` -> ``("xts", "plain64", None)``; ``"cbc-essiv:sha256"`` ->
    ``("cbc", "essiv", "sha256")``; ``"ecb"`` -> ``("ecb", None, None)``."""
    mode, _, ivspec = spec.partition("-")
    ivgen, _, ivhash = ivspec.partition(":")
    if mode not in MODES:
        raise CipherError(f"cipher mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "ecb":
        if ivspec:
            raise CipherError("cipher mode ecb takes no IV generator")
        return mode, None, None
    if ivgen not in IVGENS:
        raise CipherError(f"IV generator {ivgen!r} is not one of {', '.join(IVGENS)}")
    if (ivgen == "essiv") != bool(ivhash):
        raise CipherError("the essiv IV generator, and only it, takes a hash (essiv:HASH)")
    if ivhash:
        check_hash(ivhash)
    return mode, ivgen, ivhash or None


def check_spec(cipher: str, mode_spec: str, key_len: int) -> tuple[str, str | None,
                                                                   str | None]:
    """Raise :class:`CipherError` unless sectors can be en/decrypted in ``cipher``
    with ``mode_spec`` and a key of ``key_len`` bytes; else :func:`parse_mode`'s
    answer."""
    if cipher not in CIPHERS:
        raise CipherError(f"cipher {cipher!r} is not one of {', '.join(CIPHERS)}")
    mode, ivgen, ivhash = parse_mode(mode_spec)
    sizes = CIPHERS[cipher][0]
    half = key_len // 2 if mode == "xts" else key_len
    if half not in sizes or (mode == "xts" and key_len % 2):
        raise CipherError(f"a key of {key_len} bytes does not fit {cipher}-{mode}")
    if mode == "xts" and (cipher != "aes" or half == 24):
        raise CipherError(f"xts mode with {cipher}-{half * 8} is not available in the "
                          "cryptography library (aes-128 and aes-256 are)")
    if cipher not in ("aes", "cast5"):
        raise CipherError(f"cipher {cipher} is not available in the cryptography library")
    if ivhash is not None:
        size = hashlib.new(ivhash).digest_size
        if size not in sizes:
            raise CipherError(f"essiv:{ivhash} gives a key of {size} bytes, "
                              f"which {cipher} does not take")
    return mode, ivgen, ivhash


class SectorCipher:
    """Encrypts and decrypts whole sectors of ``sector_size`` bytes (512, or up to
    4096 in LUKS2; a short last piece is allowed where the mode permits). Sector
    numbers, and so IVs, count 512-byte units whatever the sector size, as
    dm-crypt does for LUKS2 (no ``iv_large_sectors``)."""

    def __init__(self, cipher: str, mode_spec: str, key: bytes,
                 sector_size: int = SECTOR) -> None:
        self.sector_size = sector_size
        self.mode, self.ivgen, ivhash = check_spec(cipher, mode_spec, len(key))
        self.block = CIPHERS[cipher][1]
        self._essiv = None
        essiv_key = None if ivhash is None else hashlib.new(ivhash, key).digest()
        self._fast = _openssl_cipher(cipher, self.mode, self.ivgen, key, essiv_key,
                                     self.block, sector_size)
        if self._fast is None:   # cryptography, imported only now (it takes ~50 ms)
            self._alg = _algorithm(cipher, key)
            if essiv_key is not None:
                c = _primitives()
                self._essiv = c.Cipher(_algorithm(cipher, essiv_key), c.modes.ECB())

    def _iv(self, sector: int) -> bytes:
        if self.ivgen == "plain":
            sector &= 0xFFFFFFFF
        iv = (sector & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little").ljust(self.block, b"\0")[
            :self.block]
        if self._essiv is not None:
            enc = self._essiv.encryptor()
            iv = enc.update(iv) + enc.finalize()
        return iv

    def _mode(self, sector: int) -> modes.Mode:
        modes = _primitives().modes
        if self.mode == "ecb":
            return modes.ECB()
        iv = self._iv(sector)
        if self.mode == "cbc":
            return modes.CBC(iv)
        if self.mode == "xts":
            return modes.XTS(iv)
        return modes.CTR(iv)

    @property
    def native(self) -> bool:
        """Whether OpenSSL's libcrypto does the sectors (else ``cryptography``, one
        cipher object per sector)."""
        return self._fast is not None

    def _run(self, first_sector: int, data: bytes | bytearray | memoryview,
             encrypt: bool) -> bytes:
        view = memoryview(data).cast("B")
        if self._fast is not None:
            return self._fast.crypt(first_sector, view, encrypt)  # type: ignore[no-any-return]
        Cipher = _primitives().Cipher
        if self.mode == "ecb":  # no IV: one call for the lot
            c = Cipher(self._alg, _primitives().modes.ECB())
            op = c.encryptor() if encrypt else c.decryptor()
            return op.update(view) + op.finalize()
        out = bytearray(len(view))
        unit = self.sector_size
        for k in range(0, len(view), unit):
            c = Cipher(self._alg, self._mode(first_sector + k // SECTOR))
            op = c.encryptor() if encrypt else c.decryptor()
            out[k:k + unit] = op.update(view[k:k + unit]) + op.finalize()
        return bytes(out)

    def encrypt(self, first_sector: int, data: bytes | bytearray | memoryview) -> bytes:
        """``data`` (from 512-byte sector ``first_sector`` on) encrypted."""
        return self._run(first_sector, data, True)

    def decrypt(self, first_sector: int, data: bytes | bytearray | memoryview) -> bytes:
        """``data`` (from sector ``first_sector`` on) decrypted."""
        return self._run(first_sector, data, False)

    def decrypt_inplace(self, first_sector: int, buf: bytearray | memoryview) -> None:
        """``buf`` (from sector ``first_sector`` on) decrypted where it is."""
        view = memoryview(buf).cast("B")
        if self._fast is not None:
            self._fast.crypt_into(first_sector, view, view, False)
        else:
            view[:] = self._run(first_sector, view, False)


def _openssl_cipher(cipher: str, mode: str, ivgen: str | None, key: bytes,
                    essiv_key: bytes | None, block: int, sector_size: int) -> Any:
    """The sectors' cipher in OpenSSL's libcrypto (``vmforge._fast.sector_cipher``),
    or None where that module is not built or OpenSSL lacks the cipher (cast5 where
    OpenSSL's legacy provider is not installed; cast5-ctr, which OpenSSL has not,
    and cryptography neither): then the ``cryptography`` path does the work."""
    try:
        import vmforge._fast.sector_cipher as sc
    except ImportError:
        return None
    bits = (len(key) // 2 if mode == "xts" else len(key)) * 8
    name = f"aes-{bits}-{mode}" if cipher == "aes" else f"{cipher}-{mode}"
    essiv_name = None
    if essiv_key is not None:
        essiv_name = (f"aes-{len(essiv_key) * 8}-ecb" if cipher == "aes"
                      else f"{cipher}-ecb").encode()
    modes = {"ecb": sc.MODE_ECB, "cbc": sc.MODE_CBC, "xts": sc.MODE_XTS, "ctr": sc.MODE_CTR}
    ivgens = {None: 0, "plain": sc.IV_PLAIN, "plain64": sc.IV_PLAIN64, "essiv": sc.IV_ESSIV}
    try:
        return sc.EvpSectorCipher(name.encode(), key, modes[mode], ivgens[ivgen], block,
                                  sector_size, essiv_name, essiv_key)
    except sc.EvpUnavailable:
        return None
