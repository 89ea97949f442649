"""The KVM board of docs/writing-a-machine.md runs as written: its guest prints
through the UART and ends through isa-debug-exit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-machine.md"


def test_the_guide_board_runs(kvm, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1
    script = tmp_path / "board.py"
    script.write_text(blocks[0])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "console b'hi\\n', exit status 67\n"
