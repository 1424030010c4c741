"""``python -m patchaudit.doctor``: the same as ``patchaudit doctor``."""

import sys

from . import main

sys.exit(main())
