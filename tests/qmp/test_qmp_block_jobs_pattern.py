"""The guest's checksummed disk pattern (``vmforge.testing.disk_pattern``) on the
host: a block says which block and generation it is and whether it is whole,
and a disk is checked block by block against what the guest logged."""

from __future__ import annotations

from vmforge.testing.disk_pattern import (
    BLOCK,
    block_bytes,
    check_block,
    parse_expect,
    spread_blocks,
    verify_image,
)


def test_block_names_itself() -> None:
    for n, g in [(0, 0), (7, 1), (123456, 99999999)]:
        data = block_bytes(n, g)
        assert len(data) == BLOCK
        assert data.startswith(f"VMF {n} {g} ".encode())
        assert check_block(data) == (n, g)


def test_torn_or_mixed_block_is_refused() -> None:
    new, old = block_bytes(5, 2), block_bytes(5, 1)
    assert check_block(new[:512] + old[512:]) is None      # header of one, rest of the other
    assert check_block(old[:512] + new[512:]) is None
    assert check_block(new[:-1] + b"x") is None
    assert check_block(new[:-512]) is None
    assert check_block(bytes(BLOCK)) is None


def test_verify_image_finds_lost_and_misplaced_writes() -> None:
    disk = bytearray(b"".join(block_bytes(n, 0) for n in range(8)))
    disk[2 * BLOCK:3 * BLOCK] = block_bytes(2, 3)
    disk[5 * BLOCK:6 * BLOCK] = block_bytes(6, 1)            # written at the wrong place
    disk[7 * BLOCK:] = bytes(BLOCK)

    def read(offset: int, length: int) -> bytes:
        return bytes(disk[offset:offset + length])

    assert verify_image(read, {2: 3}, 7, lambda n: 0) == [
        "block 5: (6, 1) instead of (5, 0)"]
    assert verify_image(read, {2: 4}, 8, lambda n: None if n == 7 else 0) == [
        "block 2: (2, 3) instead of (2, 4)", "block 5: (6, 1) instead of (5, 0)"]


def test_expect_and_spread() -> None:
    assert parse_expect("vmf_expect\r\n3:1\r\n10:4\r\nVMF-END\r\n9:9") == {3: 1, 10: 4}
    blocks = spread_blocks(4096, 64)
    assert len(blocks) == 64 and len(set(blocks)) == 64
    assert max(blocks) > 3900 and min(blocks) < 64 and blocks != sorted(blocks)
