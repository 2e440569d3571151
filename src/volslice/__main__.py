"""``python -m volslice ...`` is the ``volslice`` command (torchrun: ``torchrun ... -m volslice train ...``)."""

import sys

from volslice.cli import main

sys.exit(main())
