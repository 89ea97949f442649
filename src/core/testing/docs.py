"""Run the Python example of a guide as a reader would: the one ```python block of
a Markdown file, saved as a script and run by this interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

__all__ = ["run_doc_example"]


def run_doc_example(doc: Path, tmp_path: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the single ```python block of ``doc`` (asserting there is exactly one) as a
    script in ``tmp_path``; its completed process, output captured as text."""
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert len(blocks) == 1, f"{doc.name}: {len(blocks)} python blocks, not 1"
    script = tmp_path / f"{doc.stem}.py"
    script.write_text(blocks[0])
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout)
