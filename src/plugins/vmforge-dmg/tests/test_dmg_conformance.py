"""The dmg format passes vmforge's conformance kit, for each chunk compression."""

from vmforge.testing.blockkit import BlockDriverConformance


class TestDmgConformance(BlockDriverConformance):
    format_name = "dmg"


class TestDmgRawChunksConformance(BlockDriverConformance):
    format_name = "dmg"
    create_kwargs = {"compression": "raw", "chunk_size": 4096}


class TestDmgBzip2Conformance(BlockDriverConformance):
    format_name = "dmg"
    create_kwargs = {"compression": "bzip2", "chunk_size": 256 * 1024}


class TestDmgLzfseConformance(BlockDriverConformance):
    format_name = "dmg"
    create_kwargs = {"compression": "lzfse"}
