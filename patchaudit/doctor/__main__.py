"""``python -m patchaudit.doctor``: exactly ``patchaudit doctor`` (same errors and codes)."""

import sys

from ..cli import main

sys.exit(main(["doctor", *sys.argv[1:]]))
