"""LUKS2 against cryptsetup. Images cryptsetup made (luksFormat writes the header
and key slots; the data is written here with the volume key cryptsetup dumps,
since activating needs device-mapper): vmforge unlocks them with PBKDF2,
argon2i and argon2id key slots, 512 and 4096-byte sectors, reads and writes the
data, and falls back to the second header copy. Images vmforge made: cryptsetup
dumps them, accepts the passphrase and no other, and finds the volume key that
decrypts vmforge's data."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.corrupt import patch_file
from vmforge.testing.oracles import needs
from vmforge.testing.qemu_tools import pattern, run
from vmforge_luks import Luks
from vmforge_luks.ciphers import SectorCipher

pytestmark = needs("cryptsetup", package="cryptsetup-bin")
MiB = 1 << 20
DATA_OFFSET = 16 * MiB   # cryptsetup's default for LUKS2
PASS = "luks2 passphrase"


def _format(tmp_path: Path, *args: str) -> tuple[Path, bytes]:
    """A 20 MiB LUKS2 image and its volume key."""
    img = tmp_path / "l2.img"
    with open(img, "wb") as f:
        f.truncate(20 * MiB)
    keyfile = tmp_path / "key"
    keyfile.write_text(PASS)
    run("cryptsetup", "luksFormat", "-q", "--type", "luks2", "--key-file", str(keyfile),
        *args, str(img))
    vk = tmp_path / "vk"
    run("cryptsetup", "luksDump", "-q", "--dump-volume-key", "--key-file", str(keyfile),
        "--volume-key-file", str(vk), str(img))
    return img, vk.read_bytes()


def _encrypt_into(img: Path, key: bytes, cipher: str, mode: str, sector: int,
                  data: bytes) -> None:
    enc = SectorCipher(cipher, mode, key, sector).encrypt(0, data)
    patch_file(img, DATA_OFFSET, enc)


ARGON = ("--pbkdf-force-iterations", "4", "--pbkdf-memory", "16384", "--pbkdf-parallel", "1")


@pytest.mark.parametrize("args,cipher,mode,sector", [
    (("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"), "aes", "xts-plain64", 512),
    (("--pbkdf", "argon2id", *ARGON), "aes", "xts-plain64", 4096),
    (("--pbkdf", "argon2i", *ARGON, "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"),
     "aes", "cbc-essiv:sha256", 4096),
], ids=["pbkdf2-512", "argon2id-4096", "argon2i-cbc-essiv"])
def test_reads_and_writes_cryptsetup_images(tmp_path: Path, args: tuple[str, ...],
                                            cipher: str, mode: str, sector: int) -> None:
    img, key = _format(tmp_path, *args, "--sector-size", str(sector))
    data = pattern(MiB, 1)
    _encrypt_into(img, key, cipher, mode, sector, data)
    with Luks.open(str(img), readonly=False, passphrase=PASS) as drv:
        assert drv.size == 4 * MiB and drv.granularity == sector
        assert drv.read(0, MiB) == data and drv.read(5, 3) == data[5:8]
        info = drv.info().format_specific
        assert info["cipher"] == f"{cipher}-{mode}" and info["sector-size"] == sector
        drv.write(MiB - 7, b"across a sector")
    plain = SectorCipher(cipher, mode, key, sector).decrypt(
        0, img.read_bytes()[DATA_OFFSET:DATA_OFFSET + 2 * MiB])
    assert plain[MiB - 7:MiB + 8] == b"across a sector" and plain[:MiB - 7] == data[:-7]
    with pytest.raises(BlockError, match="invalid passphrase"):
        Luks.open(str(img), passphrase="wrong")


def test_second_key_slot_and_second_header_copy(tmp_path: Path) -> None:
    img, key = _format(tmp_path, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                       "--sector-size", "512")
    other = tmp_path / "other"
    other.write_text("second passphrase")
    run("cryptsetup", "luksAddKey", "-q", "--key-file", str(tmp_path / "key"), "--pbkdf",
        "pbkdf2", "--pbkdf-force-iterations", "1000", str(img), str(other))
    data = pattern(65536, 2)
    _encrypt_into(img, key, "aes", "xts-plain64", 512, data)
    with Luks.open(str(img), passphrase="second passphrase") as drv:
        assert drv.slot == 1 and drv.read(0, 65536) == data
    broken = tmp_path / "broken.img"
    shutil.copyfile(img, broken)
    patch_file(broken, 4096 + 10, b"X")   # the first copy's JSON: its checksum fails
    with Luks.open(str(broken), passphrase=PASS) as drv:
        assert drv.header.at == 16384 and drv.read(0, 65536) == data
    patch_file(broken, 16384 + 4096 + 10, b"X")   # and the second's
    with pytest.raises(CorruptImageError, match="no header copy is intact"):
        Luks.open(str(broken), passphrase=PASS)


def test_fuzz_both_header_copies(tmp_path: Path) -> None:
    import random

    from vmforge.testing.corrupt import flip_bits, fuzz

    img, _ = _format(tmp_path, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
    seed = img.read_bytes()
    hot = [*range(0, 520), *range(4096, 4096 + 1500), *range(16384, 16384 + 520),
           *range(16384 + 4096, 16384 + 4096 + 1500)]
    rng = random.Random(8)

    class Opened(Luks):
        @classmethod
        def open(cls, path: str, *, readonly: bool = True, **options: object) -> Luks:
            return Luks.open(path, readonly=readonly, passphrase=PASS)

    outcomes = fuzz(Opened, seed, tmp_path / "bad.img",
                    lambda k, data: flip_bits(data, hot, 1 + k % 4, rng), rounds=80)
    assert outcomes["refused"] > 10 and outcomes["opened"] > 10, outcomes


@pytest.mark.parametrize("opts", [
    {"kdf": "pbkdf2", "sector_size": 512},
    {"kdf": "argon2id", "sector_size": 4096, "argon2_memory": 16384},
    {"kdf": "argon2i", "sector_size": 4096, "argon2_memory": 8192, "cipher_alg": "aes-128",
     "cipher_mode": "cbc", "ivgen_alg": "essiv"},
], ids=["pbkdf2-512", "argon2id-4096", "argon2i-aes128-cbc-essiv"])
def test_cryptsetup_accepts_what_vmforge_made(tmp_path: Path, opts: dict[str, Any]) -> None:
    img = tmp_path / "ours.img"
    Luks.create(str(img), 2 * MiB, passphrase=PASS, luks_version=2, iter_time=1, **opts)
    data = pattern(300000, 6)
    with Luks.open(str(img), readonly=False, passphrase=PASS) as drv:
        drv.write(777, data)
        payload, cipher, mode = drv.payload, drv.header.cipher, drv.header.mode
    dump = run("cryptsetup", "luksDump", str(img)).stdout
    assert "Version:       \t2" in dump and f"sector: {opts['sector_size']} [bytes]" in dump
    keyfile, bad = tmp_path / "key", tmp_path / "bad"
    keyfile.write_text(PASS)
    bad.write_text(PASS + "!")
    run("cryptsetup", "open", "--test-passphrase", "--key-file", str(keyfile), str(img))
    assert run("cryptsetup", "open", "--test-passphrase", "--key-file", str(bad), str(img),
               check=False).returncode != 0
    vk = tmp_path / "vk"
    run("cryptsetup", "luksDump", "-q", "--dump-volume-key", "--key-file", str(keyfile),
        "--volume-key-file", str(vk), str(img))
    # the data, decrypted with the volume key cryptsetup found in the key slot
    raw = img.read_bytes()[payload:payload + 2 * MiB]
    plain = SectorCipher(cipher, mode, vk.read_bytes(), opts["sector_size"]).decrypt(0, raw)
    assert plain[777:777 + len(data)] == data and not any(plain[777 + len(data):])


def _rewrite_json(img: Path, change: Any) -> None:
    """Change the JSON metadata of both header copies, their checksums made to hold."""
    import hashlib
    import json

    raw = bytearray(img.read_bytes())
    for at in (0, 16384):
        meta = json.loads(bytes(raw[at + 4096:at + 16384]).split(b"\0", 1)[0])
        change(meta)
        area = json.dumps(meta).encode().ljust(16384 - 4096, b"\0")
        head = bytearray(raw[at:at + 4096])
        head[448:512] = bytes(64)
        head[448:480] = hashlib.sha256(bytes(head) + area).digest()
        raw[at:at + 16384] = head + area
    img.write_bytes(raw)


@pytest.mark.parametrize("field,value,match", [
    ("memory", 4 << 20, "argon2 cost"), ("time", 100000, "argon2 cost"),
    ("cpus", 0, "argon2 cost"), ("salt", "not base64!", "base64"),
])
def test_crafted_key_slot_costs_refused(tmp_path: Path, field: str, value: Any,
                                        match: str) -> None:
    # a header whose checksum holds but asks for 4 GiB of memory, or hours, is refused
    img = tmp_path / "c.img"
    Luks.create(str(img), MiB, passphrase=PASS, luks_version=2, kdf="argon2id",
                argon2_memory=8192, iter_time=1)
    _rewrite_json(img, lambda meta: meta["keyslots"]["0"]["kdf"].update({field: value}))
    with pytest.raises(CorruptImageError, match=match) as info:
        Luks.open(str(img), passphrase=PASS)
    assert info.value.table == "LUKS2 metadata" and "c.img" in str(info.value)
    _rewrite_json(img, lambda meta: meta["segments"]["0"].update({"sector_size": 3000}))
    with pytest.raises(CorruptImageError, match="sector size 3000"):
        Luks.open(str(img), passphrase=PASS)
