"""Make the qcow2 test helpers (``qcow2_oracle``) importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
