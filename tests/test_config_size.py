"""``-m`` sizes are read without re (start-up time) as the regular expression read them."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from vmforge.config import ConfigError, MachineConfig, size_parts
from vmforge.pci.hotplug import valid_id

SIZE = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[kmgtpe](?:i?b)?|b)?",
                  re.IGNORECASE)


def _regex(value: str) -> tuple[str, str | None] | None:
    match = SIZE.fullmatch(value)
    return None if match is None else (match["number"], match["unit"])


def test_size_parts_as_the_regex() -> None:
    words = ["", "512", "1.5G", ".5g", "1.", ".", "..5", "1..5", "256M", "256 M", "256\tMiB",
             "2gb", "2GiB", "3B", "3b", "3ib", "3kb ", "1e", "1E", "1x", "M", "-1", "1 2",
             "٣M", "1K", "4 ", " 4", "4iB", "4Mi", "10TB", "7p", "0"]
    alphabet = "0123456789.kmgtpebiKMGTPEBI x\t"
    rng = random.Random(7)
    words += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 7)))
              for _ in range(3000)]
    words += ["".join(p) for p in itertools.product("1.kbi ", repeat=3)]
    for word in words:
        assert size_parts(word) == _regex(word), repr(word)


def test_parse_memory_unchanged() -> None:
    assert MachineConfig.parse_memory("256M") == 256 << 20
    assert MachineConfig.parse_memory("512") == 512 << 20
    assert MachineConfig.parse_memory("1.5G") == 3 << 29
    assert MachineConfig.parse_memory("size=2GiB") == 2 << 30
    with pytest.raises(ConfigError, match="is not a size"):
        MachineConfig.parse_memory("1x")


def test_valid_id_as_the_regex() -> None:
    pattern = re.compile(r"[A-Za-z][A-Za-z0-9._-]*\Z")
    rng = random.Random(3)
    alphabet = "aZ09._-/ é\n"
    words = ["", "a", "a1", "1a", "a-b.c_d", "a\n", "é", "ab/c"] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 5))) for _ in range(2000)]
    for word in words:
        assert valid_id(word) == bool(pattern.match(word)), repr(word)
