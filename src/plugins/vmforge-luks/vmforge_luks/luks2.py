"""LUKS2 headers, read: the binary header, its JSON metadata, key slots (PBKDF2,
argon2i, argon2id), the digest, and the data segment.

Layout (LUKS2 on-disk format; binary integers big-endian)::

    0         binary header (4096 bytes): magic, version 2, header size,
              sequence id, label, checksum algorithm, salt, UUID, subsystem,
              header offset, checksum (over the header, this field zeroed,
              and the JSON area)
    4096      the JSON area, to the header size: keyslots, segments,
              digests, config (numbers of bytes as decimal strings)
    hdr_size  the second copy of both, used when the first fails its checksum
    ...       key slot areas (the AF-split volume key, encrypted with the
              key the slot's KDF makes of the passphrase), then the segment

Only what reading needs is here: ``crypt`` segment 0, ``luks2`` key slots with
``luks1`` AF and ``raw`` areas, ``pbkdf2`` digests.
"""

from __future__ import annotations

import hashlib
import os
import struct

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge_luks.ciphers import (
    SECTOR,
    CipherError,
    SectorCipher,
    af_merge,
    check_hash,
    pbkdf2,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_ARGON2_MEMORY_KIB", "Luks2Header", "create_luks2", "kdf_params"]

# magic, version, header size, seqid, label, checksum alg, salt, uuid, subsystem,
# header offset, (padding), checksum
_BIN = struct.Struct(">6sHQQ48s32s64s40s48sQ184s64s")
HEADER_SIZES = tuple(16384 << k for k in range(9))   # 16 KiB to 4 MiB
MAX_PBKDF2_ITERATIONS = 1 << 26
#: argon2 bounds: 1 GiB of memory (cryptsetup's default ceiling), time and threads, so that
#: a crafted header cannot take the machine
MAX_ARGON2_MEMORY_KIB = 1 << 20
MAX_ARGON2_TIME = 1024


def _int(value: Any, what: str) -> int:
    """A JSON number, or a decimal string as LUKS2 writes byte counts."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} is not a number")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{what} is not a number") from None
    if n < 0:
        raise ValueError(f"{what} is negative")
    return n


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not base64")
    import base64  # (a LUKS2 image's: base64 and json are not imported for LUKS1)

    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{what} is not base64") from None


def _split_spec(spec: Any) -> tuple[str, str]:
    """``"aes-xts-plain64"`` -> ``("aes", "xts-plain64")``."""
    if not isinstance(spec, str) or "-" not in spec:
        raise ValueError(f"encryption {spec!r} is not CIPHER-MODE-IV")
    cipher, _, mode = spec.partition("-")
    return cipher, mode


class Luks2Header:
    """A LUKS2 header whose checksum holds, and its segment 0."""

    def __init__(self, path: str, at: int, meta: dict[str, Any], file_size: int) -> None:
        self.path = path
        self.at = at
        self.meta = meta
        try:
            seg = meta["segments"]["0"]
            if seg.get("type") != "crypt":
                raise ValueError(f"segment 0 is of type {seg.get('type')!r}, not crypt")
            self.payload = _int(seg["offset"], "segment offset")
            self.dynamic = seg["size"] == "dynamic"
            self.fixed_size = None if self.dynamic else _int(seg["size"], "segment size")
            self.iv_tweak = _int(seg.get("iv_tweak", "0"), "iv_tweak")
            self.sector_size = _int(seg.get("sector_size", SECTOR), "sector_size")
            self.cipher, self.mode = _split_spec(seg["encryption"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._corrupt(f"segment 0: {_why(exc)}") from None
        if self.sector_size not in (512, 1024, 2048, 4096):
            raise self._corrupt(f"sector size {self.sector_size} is not 512 to 4096")
        if self.payload > file_size or self.payload % SECTOR:
            raise self._corrupt(f"segment at {self.payload} is outside the file")

    def _corrupt(self, message: str) -> CorruptImageError:
        return CorruptImageError(message, self.path, self.at + 4096, "LUKS2 metadata")

    @classmethod
    def read(cls, fd: int, path: str, file_size: int) -> Luks2Header:
        """The first header copy whose checksum holds (the primary, else the secondary)."""
        first = os.pread(fd, _BIN.size, 0)
        size = _BIN.unpack(first)[2] if len(first) == _BIN.size else 0
        why = ""
        for at in (0, size) if size in HEADER_SIZES else (0,):
            try:
                return cls(path, at, _load(fd, at, path), file_size)
            except _BadCopy as exc:
                why = why or str(exc)
        if size not in HEADER_SIZES:
            raise CorruptImageError(f"header size {size} is not a power of two from 16 KiB "
                                    "to 4 MiB", path, 8, "LUKS2 header")
        raise CorruptImageError(f"no header copy is intact ({why})", path, 0, "LUKS2 header")

    def disk_size(self, file_size: int) -> int:
        size = self.fixed_size if self.fixed_size is not None else file_size - self.payload
        return max(0, min(size, file_size - self.payload)) // self.sector_size \
            * self.sector_size

    def unlock(self, fd: int, passphrase: bytes) -> tuple[bytes, SectorCipher, int]:
        """The volume key, the segment's cipher, and the key slot that opened it."""
        try:
            slots = self.meta["keyslots"]
            digests = list(self.meta["digests"].values())
            ids = sorted(slots, key=lambda k: int(k) if k.isdigit() else 1 << 30)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise self._corrupt(f"keyslots or digests: {_why(exc)}") from None
        for sid in ids:
            try:
                key = self._try_slot(fd, slots[sid], passphrase)
                if key is not None and any(_digest_ok(d, sid, key) for d in digests):
                    cipher = SectorCipher(self.cipher, self.mode, key, self.sector_size)
                    return key, cipher, int(sid) if sid.isdigit() else -1
            except CipherError as exc:
                raise BlockError(f"unsupported: {exc}", self.path) from None
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise self._corrupt(f"key slot {sid}: {_why(exc)}") from None
        raise BlockError("invalid passphrase: no key slot of the LUKS2 header accepts it",
                         self.path)

    def _try_slot(self, fd: int, slot: dict[str, Any], passphrase: bytes) -> bytes | None:
        if slot.get("type") != "luks2":
            return None
        key_size = _int(slot["key_size"], "key_size")
        af, area, kdf = slot["af"], slot["area"], slot["kdf"]
        if af.get("type") != "luks1" or area.get("type") != "raw":
            return None
        stripes, af_hash = _int(af["stripes"], "stripes"), af["hash"]
        check_hash(af_hash)
        if not 16 <= key_size <= 64 or stripes != 4000:
            raise ValueError(f"key of {key_size} bytes in {stripes} stripes")
        offset, size = _int(area["offset"], "area offset"), _int(area["size"], "area size")
        if size < key_size * stripes or offset + size > self.payload or offset < 2 * 4096:
            raise ValueError(f"area at {offset} of {size} bytes")
        area_cipher, area_mode = _split_spec(area["encryption"])
        area_key = _kdf(kdf, passphrase, _int(area["key_size"], "area key_size"))
        raw = os.pread(fd, key_size * stripes, offset)
        if len(raw) != key_size * stripes:
            raise ValueError(f"area at {offset} is past the end of the file")
        material = SectorCipher(area_cipher, area_mode, area_key).decrypt(0, raw)
        return af_merge(material, key_size, stripes, af_hash)

    def info_data(self) -> dict[str, Any]:
        """``info``'s format-specific part (nothing secret)."""
        return {"version": 2, "cipher": f"{self.cipher}-{self.mode}",
                "sector-size": self.sector_size, "payload-offset": self.payload,
                "keyslots": sorted(self.meta.get("keyslots", {}))}


class _BadCopy(Exception):
    """One header copy cannot be used (its message says why)."""


def _load(fd: int, at: int, path: str) -> dict[str, Any]:
    raw = os.pread(fd, _BIN.size, at)
    if len(raw) < _BIN.size:
        raise _BadCopy(f"header at {at} is truncated")
    magic, version, size, _, _, csum_alg, _, _, _, hdr_off, _, csum = _BIN.unpack(raw)
    if magic not in (b"LUKS\xba\xbe", b"SKUL\xba\xbe") or version != 2:
        raise _BadCopy(f"no LUKS2 header at {at}")
    if size not in HEADER_SIZES or hdr_off != at:
        raise _BadCopy(f"header at {at} claims size {size} and offset {hdr_off}")
    alg = csum_alg.split(b"\0", 1)[0].decode("ascii", "replace")
    try:
        check_hash(alg)
    except CipherError as exc:
        raise _BadCopy(str(exc)) from None
    area = os.pread(fd, size - _BIN.size, at + _BIN.size)
    if len(area) != size - _BIN.size:
        raise _BadCopy(f"header at {at} is truncated")
    h = hashlib.new(alg)
    h.update(raw[:448] + bytes(64) + raw[512:])
    h.update(area)
    if h.digest() != csum[:h.digest_size]:
        raise _BadCopy(f"header at {at} fails its {alg} checksum")
    import json

    try:
        meta = json.loads(area[4096 - _BIN.size:].split(b"\0", 1)[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadCopy(f"JSON at {at + 4096} unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise _BadCopy(f"JSON at {at + 4096} is not an object")
    return meta


def _kdf(kdf: dict[str, Any], passphrase: bytes, length: int) -> bytes:
    kind = kdf.get("type")
    salt = _b64(kdf["salt"], "kdf salt")
    if kind == "pbkdf2":
        iterations = _int(kdf["iterations"], "iterations")
        if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS:
            raise ValueError(f"{iterations} PBKDF2 iterations")
        check_hash(kdf["hash"])
        return pbkdf2(kdf["hash"], passphrase, salt, iterations, length)
    if kind in ("argon2i", "argon2id"):
        from argon2.low_level import Type, hash_secret_raw

        time_cost, memory = _int(kdf["time"], "time"), _int(kdf["memory"], "memory")
        cpus = _int(kdf["cpus"], "cpus")
        if not (1 <= time_cost <= MAX_ARGON2_TIME and 8 <= memory <= MAX_ARGON2_MEMORY_KIB
                and 1 <= cpus <= 64):
            raise ValueError(f"argon2 cost time={time_cost} memory={memory} cpus={cpus}")
        return hash_secret_raw(passphrase, salt, time_cost, memory, cpus, length,
                               Type.I if kind == "argon2i" else Type.ID)
    raise CipherError(f"key derivation {kind!r} is not pbkdf2, argon2i or argon2id")


def _digest_ok(digest: Any, slot_id: str, key: bytes) -> bool:
    if not isinstance(digest, dict) or digest.get("type") != "pbkdf2":
        return False
    if slot_id not in digest.get("keyslots", ()) or "0" not in digest.get("segments", ()):
        return False
    want = _b64(digest["digest"], "digest")
    iterations = _int(digest["iterations"], "digest iterations")
    if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS or not want:
        raise ValueError(f"digest of {iterations} iterations")
    check_hash(digest["hash"])
    return pbkdf2(digest["hash"], key, _b64(digest["salt"], "digest salt"), iterations,
                  len(want)) == want


def _why(exc: BaseException) -> str:
    return f"missing {exc}" if isinstance(exc, KeyError) else str(exc)


# -- create ---------------------------------------------------------------------------

HDR_SIZE = 16384
KEYSLOTS_AT = 2 * HDR_SIZE
DATA_ALIGN = 1 << 20


def _pad(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def _b64s(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def kdf_params(kind: str, hash_name: str, milliseconds: int, memory_kib: int,
               length: int) -> dict[str, Any]:
    """A key slot's ``kdf`` object (with a new salt), calibrated to ``milliseconds``."""
    from vmforge_luks.ciphers import iterations_for

    salt = _b64s(os.urandom(32))
    if kind == "pbkdf2":
        return {"type": "pbkdf2", "hash": hash_name, "salt": salt,
                "iterations": max(1000, iterations_for(hash_name, milliseconds, length))}
    import time

    from argon2.low_level import Type, hash_secret_raw

    start = time.perf_counter()
    hash_secret_raw(b"calibration", bytes(32), 1, memory_kib, 1, length,
                    Type.I if kind == "argon2i" else Type.ID)
    once = max(time.perf_counter() - start, 1e-6)
    return {"type": kind, "time": max(4, min(MAX_ARGON2_TIME, int(milliseconds / 1000 / once))),
            "memory": memory_kib, "cpus": 1, "salt": salt}


def create_luks2(fd: int, passphrase: bytes, key: bytes, cipher_spec: str, hash_name: str,
                 kdf: dict[str, Any], sector_size: int, digest_iterations: int) -> int:
    """Write a LUKS2 header (both copies) and key slot 0 for the volume ``key`` to
    ``fd``; the data segment's offset, where the disk starts."""
    from vmforge_luks.ciphers import af_split

    area_size = _pad(len(key) * 4000, 4096)
    data_offset = _pad(KEYSLOTS_AT + area_size, DATA_ALIGN)
    slot_key = _kdf(kdf, passphrase, len(key))
    material = af_split(key, 4000, hash_name)
    area_spec = "aes-xts-plain64"
    if len(key) not in (32, 64):   # the area takes a key of the volume key's size
        area_spec = "aes-cbc-essiv:sha256"
    area_cipher, area_mode = _split_spec(area_spec)
    os.pwrite(fd, SectorCipher(area_cipher, area_mode, slot_key).encrypt(0, material),
              KEYSLOTS_AT)
    salt = os.urandom(32)
    meta = {
        "keyslots": {"0": {
            "type": "luks2", "key_size": len(key),
            "af": {"type": "luks1", "stripes": 4000, "hash": hash_name},
            "area": {"type": "raw", "offset": str(KEYSLOTS_AT), "size": str(area_size),
                     "encryption": area_spec, "key_size": len(key)},
            "kdf": kdf}},
        "tokens": {},
        "segments": {"0": {"type": "crypt", "offset": str(data_offset), "size": "dynamic",
                           "iv_tweak": "0", "encryption": cipher_spec,
                           "sector_size": sector_size}},
        "digests": {"0": {"type": "pbkdf2", "keyslots": ["0"], "segments": ["0"],
                          "hash": hash_name, "iterations": digest_iterations,
                          "salt": _b64s(salt),
                          "digest": _b64s(pbkdf2(hash_name, key, salt, digest_iterations,
                                                 32))}},
        "config": {"json_size": str(HDR_SIZE - 4096),
                   "keyslots_size": str(data_offset - KEYSLOTS_AT)},
    }
    import json

    area = json.dumps(meta, separators=(",", ":")).encode().ljust(HDR_SIZE - 4096, b"\0")
    import uuid  # (a new image's: not imported to open one)

    uid = str(uuid.uuid4()).encode()
    for at, magic in ((0, b"LUKS\xba\xbe"), (HDR_SIZE, b"SKUL\xba\xbe")):
        head = bytearray(_BIN.pack(magic, 2, HDR_SIZE, 1, bytes(48), b"sha256", os.urandom(64),
                                   uid, bytes(48), at, bytes(184), bytes(64)))
        head += bytes(4096 - len(head))
        csum = hashlib.sha256(bytes(head) + area).digest()
        head[448:448 + len(csum)] = csum
        os.pwrite(fd, bytes(head) + area, at)
    return data_offset
