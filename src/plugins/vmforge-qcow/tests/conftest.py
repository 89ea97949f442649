"""Make the qcow test helpers (``qcow_oracle``) importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
