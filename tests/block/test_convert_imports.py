"""What a plain ``img convert`` imports: not the thread pool of compressed writes
(``concurrent.futures``, ~4 ms of start-up), only when ``-c`` asks for it."""

from __future__ import annotations

import json
import subprocess
import sys

_RUN = """
import json, sys
from vmforge.cli.main import main
status = main(sys.argv[1:])
print(json.dumps([status, "concurrent.futures" in sys.modules]))
"""


def _imports_pool(*argv: str) -> bool:
    out = subprocess.run([sys.executable, "-c", _RUN, *argv], capture_output=True,
                         text=True, check=True).stdout
    status, imported = json.loads(out.splitlines()[-1])
    assert status == 0
    return imported


def test_plain_convert_leaves_the_pool_of_compressed_writes_alone(tmp_path) -> None:
    src = tmp_path / "a.raw"
    src.write_bytes(b"data" * 40000)
    assert not _imports_pool("img", "convert", "-f", "raw", "-O", "qcow2", str(src),
                             str(tmp_path / "b.qcow2"))
    assert _imports_pool("img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(src),
                         str(tmp_path / "c.qcow2"))
