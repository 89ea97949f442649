"""The luks format passes vmforge's conformance kit: its images are created with
a passphrase (create options) and opened with it."""

import pytest
from luks_helpers import KIT_OPTIONS, with_passphrase

from vmforge.block.driver import BlockDriver
from vmforge.testing.blockkit import BlockDriverConformance


class TestLuksConformance(BlockDriverConformance):
    format_name = "luks"
    create_kwargs = KIT_OPTIONS

    @pytest.fixture
    def driver_cls(self, block_format: str) -> type[BlockDriver]:
        return with_passphrase()


class TestLuksCbcEssivConformance(TestLuksConformance):
    create_kwargs = {**KIT_OPTIONS, "cipher_alg": "aes-128", "cipher_mode": "cbc",
                     "ivgen_alg": "essiv", "hash_alg": "sha1"}


class TestLuks2Conformance(TestLuksConformance):
    create_kwargs = {**KIT_OPTIONS, "luks_version": 2}
