"""``python -m torch_rlprune``: the ``torch-rlprune`` command (see :mod:`torch_rlprune.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
