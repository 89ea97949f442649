"""vmforge's own LUKS1 checks: the passphrase (wrong, missing, never shown),
choices qemu-img cannot check, unsupported ones refused clearly, the layout,
corrupt headers naming file and offset, and fuzzed headers failing cleanly."""

from __future__ import annotations

import logging
import random
import struct
from pathlib import Path

import pytest
from luks_helpers import PASSPHRASE

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.corrupt import flip_bits, fuzz, patch_file
from vmforge.testing.qemu_tools import pattern, vmforge_img
from vmforge_luks import Luks
from vmforge_luks.ciphers import af_merge, af_split

MiB = 1 << 20


def _make(path: Path, size: int = MiB, **opts: object) -> Path:
    Luks.create(str(path), size, passphrase=PASSPHRASE, iter_time=1, **opts)
    return path


def test_layout_as_qemu_img_lays_it_out(tmp_path: Path) -> None:
    img = _make(tmp_path / "a.luks", 3 * MiB)
    raw = img.read_bytes()
    assert raw[:8] == b"LUKS\xba\xbe\0\1"
    assert raw[8:11] == b"aes" and raw[40:52] == b"xts-plain64\0" and raw[72:79] == b"sha256\0"
    payload, key_bytes = struct.unpack_from(">II", raw, 104)
    assert key_bytes == 64 and payload == 4040          # 8 + 8 slots of 504 sectors
    starts = [struct.unpack_from(">I", raw, 208 + 48 * i + 40)[0] for i in range(8)]
    assert starts == [8 + 504 * i for i in range(8)]
    assert len(raw) == payload * 512 + 3 * MiB
    assert any(raw[payload * 512:])    # the payload is encrypted zeros, not zeros


@pytest.mark.parametrize("opts", [
    {"cipher_alg": "aes-192", "cipher_mode": "cbc"},
    {"cipher_alg": "aes-256", "cipher_mode": "ecb"},
    {"cipher_alg": "cast5-128", "cipher_mode": "cbc", "ivgen_alg": "essiv",
     "ivgen_hash_alg": "md5"},
], ids=["aes-192-cbc", "aes-256-ecb", "cast5-essiv-bad-hash"])
def test_other_choices_round_trip_or_are_refused(tmp_path: Path, opts: dict[str, str]) -> None:
    img = tmp_path / "c.luks"
    if opts.get("ivgen_hash_alg") == "md5":
        with pytest.raises(BlockError, match="md5"):
            _make(img, **opts)
        assert not img.exists()
        return
    _make(img, **opts)
    data = pattern(70001, 5)
    with Luks.open(str(img), readonly=False, passphrase=PASSPHRASE) as drv:
        drv.write(333, data)
    with Luks.open(str(img), passphrase=PASSPHRASE.encode()) as drv:
        assert drv.read(333, len(data)) == data and drv.read(0, 333) == bytes(333)


@pytest.mark.parametrize("cipher", ["serpent-256", "twofish-128"])
def test_ciphers_the_library_lacks_are_refused(tmp_path: Path, cipher: str) -> None:
    with pytest.raises(BlockError, match="not available in the cryptography library"):
        _make(tmp_path / "s.luks", cipher_alg=cipher)


def test_wrong_and_missing_passphrase(tmp_path: Path) -> None:
    img = _make(tmp_path / "p.luks")
    with pytest.raises(BlockError, match="invalid passphrase") as info:
        Luks.open(str(img), passphrase="not it")
    assert "p.luks" in str(info.value)
    with pytest.raises(BlockError, match="needs its passphrase"):
        Luks.open(str(img))
    with pytest.raises(BlockError, match="needs its passphrase"):
        Luks.create(str(tmp_path / "n.luks"), MiB, iter_time=1)


def test_a_secret_name_is_never_taken_for_the_passphrase(tmp_path: Path) -> None:
    # QEMU's key-secret=ID names a secret object (--object secret,id=ID,...): an id
    # nobody defined is refused and no image is made; the driver itself refuses it
    img = tmp_path / "s.luks"
    r = vmforge_img("create", "-f", "luks", "-o", "key-secret=sec0", str(img), "1M",
                    check=False)
    assert r.returncode != 0 and "no secret with id 'sec0'" in r.stderr and not img.exists()
    _make(img)
    with pytest.raises(BlockError, match="give the secret's data as the option passphrase"):
        Luks.open(str(img), key_secret="sec0")


def test_keys_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    img = _make(tmp_path / "k.luks")
    with Luks.open(str(img), passphrase=PASSPHRASE) as drv:
        shown = repr(drv) + str(drv.info().to_json()) + str(vars(drv))
    with pytest.raises(BlockError) as info:
        Luks.open(str(img), passphrase=PASSPHRASE + "x")
    shown += str(info.value) + caplog.text
    assert PASSPHRASE not in shown and "horse" not in shown


def test_af_split_merges_back() -> None:
    key = bytes(range(48))
    for hash_name in ("sha1", "sha256", "sha512"):
        material = af_split(key, 40, hash_name)
        assert len(material) == 48 * 40 and af_merge(material, 48, 40, hash_name) == key
        spoiled = bytes([material[0] ^ 1]) + material[1:]
        assert af_merge(spoiled, 48, 40, hash_name) != key


def test_mislabelled_and_foreign_files_refused(tmp_path: Path) -> None:
    img = _make(tmp_path / "v.luks")
    patch_file(img, 6, b"\0\2")   # a LUKS1 header called version 2: no LUKS2 header size
    with pytest.raises(CorruptImageError, match="header size") as info:
        Luks.open(str(img), passphrase=PASSPHRASE)
    assert info.value.table == "LUKS2 header" and info.value.offset == 8
    other = tmp_path / "x.raw"
    other.write_bytes(bytes(4096))
    with pytest.raises(BlockError, match="not in LUKS format"):
        Luks.open(str(other), passphrase=PASSPHRASE)


@pytest.mark.parametrize("at,value,match", [
    (164, b"\xff\xff\xff\xff", "master key digest iterations"),
    (104, b"\x7f\0\0\0", "payload"),
    (108, b"\0\0\0\x03", "master key of 3 bytes"),
    (208, b"\0\0\0\1", "neither enabled nor disabled"),
    (208 + 4, b"\xff\0\0\0", "iterations"),
    (208 + 40, b"\0\0\0\0", "material"),
    (208 + 44, b"\0\0\0\7", "stripes"),
])
def test_corrupt_fields_name_file_and_offset(tmp_path: Path, at: int, value: bytes,
                                             match: str) -> None:
    img = _make(tmp_path / "c.luks")
    patch_file(img, at, value)
    with pytest.raises(CorruptImageError, match=match) as info:
        Luks.open(str(img), passphrase=PASSPHRASE)
    assert info.value.offset is not None and at - 44 <= info.value.offset <= at
    assert "c.luks" in str(info.value)


def test_fuzz_header_and_key_material(tmp_path: Path) -> None:
    seed = _make(tmp_path / "seed.luks", 64 * 1024).read_bytes()
    hot = list(range(0, 260)) + list(range(4096, 4096 + 64))
    rng = random.Random(7)

    class Opened(Luks):
        @classmethod
        def open(cls, path: str, *, readonly: bool = True, **options: object) -> Luks:
            return Luks.open(path, readonly=readonly, passphrase=PASSPHRASE)

    outcomes = fuzz(Opened, seed, tmp_path / "bad.luks",
                    lambda k, data: flip_bits(data, hot, 1 + k % 2, rng), rounds=120)
    assert outcomes["refused"] > 40 and outcomes["opened"] > 10, outcomes
