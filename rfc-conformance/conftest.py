"""Make runner.py and matrix.py importable: rfc-conformance/ is a directory, not a package."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
