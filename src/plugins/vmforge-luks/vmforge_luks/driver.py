"""The luks format driver: LUKS1 encrypted images, as QEMU's ``luks`` driver makes them,
and LUKS2 images opened (:mod:`vmforge_luks.luks2`; cryptsetup makes them).

Layout (LUKS1 on-disk format 1.2; integers big-endian)::

    0        header (592 bytes): magic "LUKS\\xba\\xbe", version 1, cipher name,
             cipher mode ("xts-plain64", "cbc-essiv:sha256", ...), hash, payload
             offset (sectors), master key length, the master key's PBKDF2
             digest with its salt and iterations, the UUID, then 8 key slots
             (active, iterations, salt, key material sector, stripes)
    4096     each key slot's material: the master key AF-split into 4000
             stripes, encrypted with the key PBKDF2 makes of the passphrase
             (sector numbers from 0 at the material)
    payload  the disk, sector by sector, sector n encrypted with the IV of n

The passphrase is the open and create option ``passphrase`` (str or bytes).
QEMU's ``key-secret`` names a secret object instead; a front end resolves it
(``--object secret,id=ID,data=...``) and passes the data as ``passphrase``.
``key_secret`` itself is refused, so that a secret's name is never taken for
the passphrase. The passphrase and the keys are never logged nor put in errors.

Unlike qemu-img, ``create`` fills the payload with encrypted zeros
(``zero_fill``, on by default), so that a new image reads as zeros; qemu-img
leaves the file sparse and a new image reads as the decryption of zeros.
``img convert`` creates its target with ``zero_fill=off`` and writes every
byte of it (zeros included) once, as qemu-img does.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Sequence

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CheckResult,
    CorruptImageError,
    CreateOption,
    Extent,
    ImageInfo,
    KeyRequired,
    UnsupportedOperation,
)
from vmforge.block.fileio import preadv_full, pwritev_full
from vmforge.block.mapped import FileImage, open_image_file
from vmforge.record import Record
from vmforge_luks.ciphers import (
    CIPHERS,
    SECTOR,
    CipherError,
    SectorCipher,
    af_merge,
    af_split,
    check_hash,
    check_spec,
    iterations_for,
    pbkdf2,
)
from vmforge_luks.luks2 import MAX_ARGON2_MEMORY_KIB, Luks2Header, create_luks2, kdf_params
from vmforge_luks.probe import MAGIC
from vmforge_luks.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

# magic, version, cipher name, cipher mode, hash, payload offset, key bytes,
# mk digest, mk salt, mk iterations, uuid
_HEADER = struct.Struct(">6sH32s32s32sII20s32sI40s")
_SLOT = struct.Struct(">II32sII")
HEADER_LEN = _HEADER.size + 8 * _SLOT.size   # 592
NUM_SLOTS = 8
STRIPES = 4000
SLOT_ENABLED = 0x00AC71F3
SLOT_DISABLED = 0x0000DEAD
#: key material and payload are aligned to 4 KiB, as QEMU lays them out
ALIGN = 4096
MIN_ITERATIONS = 1000
#: bound on PBKDF2 iterations a header may ask for (about a minute of work)
MAX_ITERATIONS = 1 << 26
CHUNK = 1 << 20
_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED


def _cstr(raw: bytes, path: str, offset: int, what: str) -> str:
    text = raw.split(b"\0", 1)[0]
    if not text or not text.isascii() or b"\0" not in raw:
        raise CorruptImageError(f"{what} is not a NUL-terminated ASCII string", path, offset,
                                "header")
    return text.decode()


class KeySlot(Record):
    __slots__ = __match_args__ = ("active", "iterations", "salt", "material_sector", "stripes")
    active: int
    iterations: int
    salt: bytes
    material_sector: int
    stripes: int

    def __init__(self, active: int, iterations: int, salt: bytes, material_sector: int,
                 stripes: int) -> None:
        self.active = active
        self.iterations = iterations
        self.salt = salt
        self.material_sector = material_sector
        self.stripes = stripes


class Header(Record):
    """The LUKS1 header (a record, as :mod:`vmforge.record` explains)."""

    __slots__ = __match_args__ = ("cipher", "mode", "hash", "payload_sector", "key_bytes",
                                  "mk_digest", "mk_salt", "mk_iterations", "uuid", "slots")
    cipher: str
    mode: str
    hash: str
    payload_sector: int
    key_bytes: int
    mk_digest: bytes
    mk_salt: bytes
    mk_iterations: int
    uuid: str
    slots: list[KeySlot]

    def __init__(self, cipher: str, mode: str, hash: str, payload_sector: int,
                 key_bytes: int, mk_digest: bytes, mk_salt: bytes, mk_iterations: int,
                 uuid: str, slots: list[KeySlot]) -> None:
        self.cipher = cipher
        self.mode = mode
        self.hash = hash
        self.payload_sector = payload_sector
        self.key_bytes = key_bytes
        self.mk_digest = mk_digest
        self.mk_salt = mk_salt
        self.mk_iterations = mk_iterations
        self.uuid = uuid
        self.slots = slots

    def pack(self) -> bytes:
        out = _HEADER.pack(MAGIC, 1, self.cipher.encode(), self.mode.encode(),
                           self.hash.encode(), self.payload_sector, self.key_bytes,
                           self.mk_digest, self.mk_salt, self.mk_iterations,
                           self.uuid.encode())
        for s in self.slots:
            out += _SLOT.pack(s.active, s.iterations, s.salt, s.material_sector, s.stripes)
        return out

    @property
    def material_bytes(self) -> int:
        return self.key_bytes * STRIPES

    # what the driver asks of a LUKS1 or a LUKS2 header
    sector_size = SECTOR
    iv_tweak = 0

    @property
    def payload(self) -> int:
        return self.payload_sector * SECTOR

    def disk_size(self, file_size: int) -> int:
        return (file_size - self.payload) // SECTOR * SECTOR

    @classmethod
    def parse(cls, raw: bytes, path: str, file_size: int) -> Header:
        if len(raw) < HEADER_LEN or raw[:6] != MAGIC:
            raise BlockError("image is not in LUKS format", path)
        (_, version, cipher, mode, hash_, payload, key_bytes, digest, salt, mk_iters,
         uid) = _HEADER.unpack_from(raw)
        if version != 1:
            raise CorruptImageError(f"LUKS version {version} is not 1", path, 6, "header")
        h = cls(_cstr(cipher, path, 8, "cipher name"), _cstr(mode, path, 40, "cipher mode"),
                _cstr(hash_, path, 72, "hash"), payload, key_bytes, digest, salt, mk_iters,
                uid.split(b"\0", 1)[0].decode("ascii", "replace"), [])
        if h.cipher not in CIPHERS:
            raise BlockError(f"cipher {h.cipher!r} is not supported", path)
        if not 16 <= key_bytes <= 64:
            raise CorruptImageError(f"master key of {key_bytes} bytes", path, 108, "header")
        if not MIN_ITERATIONS <= mk_iters <= MAX_ITERATIONS:
            raise CorruptImageError(f"{mk_iters} master key digest iterations (allowed: "
                                    f"{MIN_ITERATIONS} to {MAX_ITERATIONS})", path, 164,
                                    "header")
        if payload * SECTOR > file_size or payload * SECTOR < HEADER_LEN:
            raise CorruptImageError(f"payload at sector {payload} is outside the file", path,
                                    104, "header")
        material_sectors = -(-key_bytes * STRIPES // SECTOR)
        for i in range(NUM_SLOTS):
            at = _HEADER.size + i * _SLOT.size
            slot = KeySlot(*_SLOT.unpack_from(raw, at))
            h.slots.append(slot)
            if slot.active == SLOT_DISABLED:
                continue
            if slot.active != SLOT_ENABLED:
                raise CorruptImageError(f"key slot {i} is neither enabled nor disabled "
                                        f"({slot.active:#x})", path, at, "key slots")
            if slot.stripes != STRIPES:
                raise CorruptImageError(f"key slot {i} has {slot.stripes} stripes, not "
                                        f"{STRIPES}", path, at + 44, "key slots")
            if not MIN_ITERATIONS <= slot.iterations <= MAX_ITERATIONS:
                raise CorruptImageError(f"key slot {i} has {slot.iterations} iterations "
                                        f"(allowed: {MIN_ITERATIONS} to {MAX_ITERATIONS})",
                                        path, at + 4, "key slots")
            start = slot.material_sector
            if start * SECTOR < HEADER_LEN or (payload and start + material_sectors > payload) \
                    or (start + material_sectors) * SECTOR > file_size:
                raise CorruptImageError(f"key slot {i}'s material at sector {start} overlaps "
                                        "the header or the payload, or is past the end of "
                                        "the file", path, at + 40, "key slots")
        try:
            check_hash(h.hash)
            check_spec(h.cipher, h.mode, key_bytes)
        except CipherError as exc:
            raise BlockError(f"unsupported: {exc}", path) from None
        return h


class _Locked:
    """The cipher of an image opened without its key (``no_io``): no data."""

    def __init__(self, path: str) -> None:
        self.path = path

    def decrypt(self, iv: int, data: Any) -> bytes:
        raise KeyRequired("opened without its passphrase (metadata only): no data can be "
                          "read", self.path)

    encrypt = decrypt_inplace = decrypt


def _passphrase(options: dict[str, Any], path: str) -> bytes:
    if "key_secret" in options or "key-secret" in options:
        raise BlockError("key-secret names a secret object, which this front end cannot "
                         "resolve: give the secret's data as the option passphrase", path)
    secret = options.get("passphrase")
    if secret is None:
        raise KeyRequired("a LUKS image needs its passphrase: the option passphrase", path)
    if isinstance(secret, str):
        return secret.encode()
    if isinstance(secret, bytes | bytearray | memoryview):
        return bytes(secret)
    raise BlockError("the option passphrase must be str or bytes", path)


class Luks(FileImage):
    """A LUKS1 image opened with its passphrase."""

    format_name = "luks"
    granularity = SECTOR
    create_options = {
        "passphrase": CreateOption("passphrase", str, None,
                                   "the passphrase of key slot 0 (a secret's data)"),
        "cipher_alg": CreateOption("cipher_alg", str, "aes-256",
                                   "cipher and key size: aes-128, aes-192, aes-256, cast5-128"),
        "cipher_mode": CreateOption("cipher_mode", str, "xts", "chaining mode",
                                    ("ecb", "cbc", "xts", "ctr")),
        "ivgen_alg": CreateOption("ivgen_alg", str, "plain64", "IV generator",
                                  ("plain", "plain64", "essiv")),
        "ivgen_hash_alg": CreateOption("ivgen_hash_alg", str, None,
                                       "hash of the essiv IV generator (default sha256)"),
        "hash_alg": CreateOption("hash_alg", str, "sha256", "hash of PBKDF2 and AF split"),
        "iter_time": CreateOption("iter_time", int, 2000,
                                  "milliseconds of PBKDF2 when opening (key slot)"),
        "zero_fill": CreateOption("zero_fill", bool, True,
                                  "write encrypted zeros so that the new disk reads as zeros"),
        "luks_version": CreateOption("luks_version", int, 1,
                                     "1 (QEMU's) or 2 (cryptsetup's default)", (1, 2)),
        "sector_size": CreateOption("sector_size", int, 512,
                                    "LUKS2: bytes per encrypted sector",
                                    (512, 1024, 2048, 4096)),
        "kdf": CreateOption("kdf", str, "pbkdf2", "LUKS2: the key slot's key derivation",
                            ("pbkdf2", "argon2i", "argon2id")),
        "argon2_memory": CreateOption("argon2_memory", int, 65536,
                                      "LUKS2 argon2: memory cost in KiB"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int, header: Header | Luks2Header,
                 cipher: SectorCipher, slot: int) -> None:
        super().__init__(filename, readonly, fd)
        self.header = header
        self._cipher = cipher
        self.slot = slot
        self.payload = header.payload
        #: the encryption unit (512; LUKS2 up to 4096), and the IV of the disk's start
        self.unit = self.granularity = header.sector_size
        self._iv_base = header.iv_tweak
        self._size = header.disk_size(os.fstat(fd).st_size)

    def __repr__(self) -> str:
        return f"<Luks {self.filename!r} {self.header.cipher}-{self.header.mode}>"

    def _iv(self, offset: int) -> int:
        return self._iv_base + offset // SECTOR

    # -- probe, open ------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        """Unlock with the option ``passphrase``; with ``no_io`` and no passphrase,
        the header only (``qemu-img info``: QEMU's BDRV_O_NO_IO), data refused."""
        no_key = bool(options.get("no_io")) and options.get("passphrase") is None
        with open_image_file(path, readonly or no_key) as fd:
            size = os.fstat(fd).st_size
            raw = os.pread(fd, HEADER_LEN, 0)
            if raw[:8] == MAGIC + b"\0\2":
                h2 = Luks2Header.read(fd, path, size)
                if no_key:
                    return cls(path, True, fd, h2, _Locked(path), -1)   # type: ignore[arg-type]
                key, cipher, slot_id = h2.unlock(fd, _passphrase(options, path))
                return cls(path, readonly, fd, h2, cipher, slot_id)
            header = Header.parse(raw, path, size)
            if no_key:
                return cls(path, True, fd, header, _Locked(path), -1)   # type: ignore[arg-type]
            passphrase = _passphrase(options, path)
            for i, slot in enumerate(header.slots):
                if slot.active != SLOT_ENABLED:
                    continue
                key = _unlock(fd, header, slot, passphrase)
                if key is not None:
                    return cls(path, readonly, fd, header,
                               SectorCipher(header.cipher, header.mode, key), i)
            raise BlockError("invalid passphrase: no key slot of the LUKS header accepts it",
                             path)

    # -- create ---------------------------------------------------------------------

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        if "key_secret" in options or "key-secret" in options:
            _passphrase(options, path)   # refused, saying why
        opts = cls.parse_create_options(options)   # ValueError naming an unknown option
        passphrase = _passphrase(opts, path)
        header, key = _new_header(path, opts, size)
        if opts["luks_version"] == 1 and (opts["sector_size"] != SECTOR
                                          or opts["kdf"] != "pbkdf2"):
            raise BlockError("sector_size and kdf are LUKS2 options (luks_version=2)", path)
        if opts["luks_version"] == 2 and size % opts["sector_size"]:
            raise BlockError(f"size {size} is not a multiple of the sector size", path)
        if not 8 <= opts["argon2_memory"] <= MAX_ARGON2_MEMORY_KIB:
            raise BlockError(f"argon2_memory must be from 8 to {MAX_ARGON2_MEMORY_KIB} KiB", path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            if opts["luks_version"] == 2:
                kdf = kdf_params(opts["kdf"], header.hash, opts["iter_time"],
                                 opts["argon2_memory"], header.key_bytes)
                payload = create_luks2(fd, passphrase, key, f"{header.cipher}-{header.mode}",
                                       header.hash, kdf, opts["sector_size"],
                                       header.mk_iterations)
                os.ftruncate(fd, payload + size)
                if opts["zero_fill"]:
                    _fill_zeros(fd, SectorCipher(header.cipher, header.mode, key,
                                                 opts["sector_size"]), payload, 0, size)
                os.fsync(fd)
                os.close(fd)
                return
            slot_key_iters = max(MIN_ITERATIONS, iterations_for(header.hash, opts["iter_time"],
                                                                 header.key_bytes))
            slot = header.slots[0]
            slot.active, slot.salt = SLOT_ENABLED, os.urandom(32)
            slot.iterations = min(slot_key_iters, MAX_ITERATIONS)
            slot_key = pbkdf2(header.hash, passphrase, slot.salt, slot.iterations,
                              header.key_bytes)
            material = af_split(key, STRIPES, header.hash)
            enc = SectorCipher(header.cipher, header.mode, slot_key).encrypt(0, material)
            os.pwrite(fd, enc, slot.material_sector * SECTOR)
            os.ftruncate(fd, header.payload_sector * SECTOR + size)
            if opts["zero_fill"]:
                _fill_zeros(fd, SectorCipher(header.cipher, header.mode, key),
                            header.payload_sector * SECTOR, 0, size)
            os.pwrite(fd, header.pack(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)

    @classmethod
    def measure(cls, size: int, allocated: Iterable[tuple[int, int]] | None,
                **options: Any) -> dict[str, int]:
        """The header and key material before the disk, and the disk: every byte of it
        is stored (encrypted), allocated or not, as qemu-img measures."""
        options.pop("key_secret", None)
        options.pop("key-secret", None)
        opts = cls.parse_create_options(options)
        key_bytes = _key_bytes(opts, "(measure)")
        material = -(-key_bytes * STRIPES // ALIGN) * ALIGN
        if opts["luks_version"] == 2:
            header = -(-(2 * 16384 + material) // (1 << 20)) * (1 << 20)
        else:
            header = ALIGN + NUM_SLOTS * material
        need = header + size
        return {"required": need, "fully-allocated": need}

    # -- I/O --------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def _read_into(self, start: int, buf: memoryview) -> None:
        """The disk's sectors from byte ``start`` (sector-aligned) on, decrypted into ``buf``
        (whole sectors)."""
        preadv_full(self.fd, self.payload + start, [buf])
        self._cipher.decrypt_inplace(self._iv(start), buf)

    def _read_plain(self, start: int, end: int) -> bytearray:
        """Sectors ``[start, end)`` of the disk (byte offsets, sector-aligned), decrypted."""
        buf = bytearray(end - start)
        self._read_into(start, memoryview(buf))
        return buf

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        for v in self._checked_views(offset, buffers):
            pos = 0
            while pos < v.nbytes:
                at = offset + pos
                start = at // self.unit * self.unit
                end = min(-(-(offset + v.nbytes) // self.unit) * self.unit, start + CHUNK)
                n = min(end - at, v.nbytes - pos)
                if at == start and n == end - start:   # whole sectors: straight into v
                    self._read_into(start, v[pos:pos + n])
                else:
                    v[pos:pos + n] = self._read_plain(start, end)[at - start:at - start + n]
                pos += n
            offset += v.nbytes

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_writable()
        views = self._checked_views(offset, buffers)
        with self._lock:
            for v in views:
                pos = 0
                while pos < v.nbytes:
                    at = offset + pos
                    start = at // self.unit * self.unit
                    end = min(-(-(offset + v.nbytes) // self.unit) * self.unit, start + CHUNK)
                    n = min(end - at, v.nbytes - pos)
                    plain: bytearray | memoryview
                    if at == start and n == end - start:
                        plain = v[pos:pos + n]
                    else:   # a partial first or last sector: read, modify, write
                        plain = self._read_plain(start, end)
                        plain[at - start:at - start + n] = v[pos:pos + n]
                    pwritev_full(self.fd, self.payload + start,
                                 [memoryview(self._cipher.encrypt(self._iv(start), plain))])
                    pos += n
                offset += v.nbytes

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        if length:
            yield Extent(offset, length, _DATA, None, 0, self.filename)

    def truncate(self, size: int) -> None:
        self._check_writable()
        if size < 0 or size % self.unit:
            raise BlockError(f"size {size} is not a multiple of {self.unit}", self.filename)
        if isinstance(self.header, Luks2Header) and not self.header.dynamic:
            raise UnsupportedOperation("a LUKS2 segment of fixed size cannot be resized",
                                       self.filename)
        with self._lock:
            old = self._size
            os.ftruncate(self.fd, self.payload + size)
            if size > old:
                _fill_zeros(self.fd, self._cipher, self.payload, old, size, self._iv_base)
            self._size = size

    # -- reports --------------------------------------------------------------------------

    def info(self) -> ImageInfo:
        h = self.header
        if isinstance(h, Luks2Header):
            return self._info(format_specific=h.info_data(), encrypted=True)
        mode, _, ivspec = h.mode.partition("-")
        ivgen, _, ivhash = ivspec.partition(":")
        slots = [{"active": s.active == SLOT_ENABLED, "key-offset": s.material_sector * SECTOR,
                  **({"iters": s.iterations, "stripes": s.stripes}
                     if s.active == SLOT_ENABLED else {})} for s in h.slots]
        data: dict[str, Any] = {
            "cipher-alg": f"{h.cipher}-{h.key_bytes * 8 // (2 if mode == 'xts' else 1)}",
            "cipher-mode": mode, "hash-alg": h.hash, "payload-offset": self.payload,
            "master-key-iters": h.mk_iterations, "uuid": h.uuid, "slots": slots,
        }
        if ivgen:
            data["ivgen-alg"] = ivgen
        if ivhash:
            data["ivgen-hash-alg"] = ivhash
        return self._info(format_specific=data, encrypted=True)

    def check(self, repair: str | None = None) -> CheckResult:
        return CheckResult(self.filename, self.format_name,
                           image_end_offset=self.payload + self._size)


def _unlock(fd: int, header: Header, slot: KeySlot, passphrase: bytes) -> bytes | None:
    """The master key if ``passphrase`` opens ``slot`` (None if not)."""
    slot_key = pbkdf2(header.hash, passphrase, slot.salt, slot.iterations, header.key_bytes)
    raw = os.pread(fd, header.material_bytes, slot.material_sector * SECTOR)
    material = SectorCipher(header.cipher, header.mode, slot_key).decrypt(0, raw)
    key = af_merge(material, header.key_bytes, STRIPES, header.hash)
    digest = pbkdf2(header.hash, key, header.mk_salt, header.mk_iterations, 20)
    return key if digest == header.mk_digest else None


def _fill_zeros(fd: int, cipher: SectorCipher, payload: int, start: int, end: int,
                iv_base: int = 0) -> None:
    """Encrypted zeros over the disk's ``[start, end)``."""
    zeros = bytes(CHUNK)
    for at in range(start, end, CHUNK):
        n = min(CHUNK, end - at)
        enc = cipher.encrypt(iv_base + at // SECTOR, zeros[:n])
        pwritev_full(fd, payload + at, [memoryview(enc)])


def _key_bytes(opts: dict[str, Any], path: str) -> int:
    """The volume key's length for ``cipher_alg`` and ``cipher_mode``."""
    name, _, bits = str(opts["cipher_alg"]).partition("-")
    if name not in CIPHERS or not bits.isdigit() or int(bits) // 8 not in CIPHERS[name][0]:
        raise BlockError(f"cipher_alg {opts['cipher_alg']!r} is not one of aes-128, aes-192, "
                         "aes-256, cast5-128, serpent-*, twofish-*", path)
    return int(bits) // 8 * (2 if opts["cipher_mode"] == "xts" else 1)


def _new_header(path: str, opts: dict[str, Any], size: int) -> tuple[Header, bytes]:
    """A header for ``opts`` (slot 0 not yet filled) and a new master key."""
    if size % SECTOR:
        raise BlockError(f"size {size} is not a multiple of {SECTOR}", path)
    key_bytes = _key_bytes(opts, path)
    name = str(opts["cipher_alg"]).partition("-")[0]
    mode = opts["cipher_mode"]
    if mode == "ecb":
        spec = "ecb"
    elif opts["ivgen_alg"] == "essiv":
        spec = f"{mode}-essiv:{opts['ivgen_hash_alg'] or 'sha256'}"
    else:
        spec = f"{mode}-{opts['ivgen_alg']}"
    try:
        check_hash(opts["hash_alg"])
        check_spec(name, spec, key_bytes)
        key = os.urandom(key_bytes)
    except CipherError as exc:
        raise BlockError(str(exc), path) from None
    if opts["iter_time"] <= 0:
        raise BlockError("iter_time must be positive", path)
    material_sectors = -(-key_bytes * STRIPES // ALIGN) * (ALIGN // SECTOR)
    first = ALIGN // SECTOR
    slots = [KeySlot(SLOT_DISABLED, 0, bytes(32), first + i * material_sectors, STRIPES)
             for i in range(NUM_SLOTS)]
    mk_salt = os.urandom(32)
    mk_iters = max(MIN_ITERATIONS,
                   iterations_for(opts["hash_alg"], opts["iter_time"], key_bytes) // 8)
    mk_iters = min(mk_iters, MAX_ITERATIONS)
    digest = pbkdf2(opts["hash_alg"], key, mk_salt, mk_iters, 20)
    import uuid  # (a new image's: not imported to open one)

    header = Header(name, spec, opts["hash_alg"], first + NUM_SLOTS * material_sectors,
                    key_bytes, digest, mk_salt, mk_iters, str(uuid.uuid4()), slots)
    return header, key

