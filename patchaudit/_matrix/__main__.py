"""``python -m patchaudit._matrix``: regenerate (or ``--check``) docs/patch-matrix.md."""

import sys

from . import _main

sys.exit(_main())
